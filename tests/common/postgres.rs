//! A real PostgreSQL 15 (Debian's `postgresql-15`) for tests: initdb in a temporary folder, a
//! free loopback port, password (SCRAM) logins over TCP, trust only on its private socket. As
//! root (CI, this machine) the server runs as `nobody` through `runuser`, since PostgreSQL
//! refuses to run as root. Stopped when dropped, also when the test panics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The superuser and its password (tests give vigil its own login, see [`Postgres::user`]).
pub const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-pw";

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// `program args...`, as `nobody` when running as root.
fn as_owner(program: &str) -> Command {
    let path = Path::new(BIN).join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postgres {
    /// A new server with a database `vigil`, or `None` (and a note) where PostgreSQL 15 is not
    /// installed; under CI (`CI` set) that is a failure, since the set-up installs it.
    pub fn start() -> Option<Postgres> {
        if !Path::new(BIN).join("initdb").exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{BIN}/initdb is missing under CI: the set-up installs postgresql-15");
            }
            eprintln!("skipped: PostgreSQL 15 is not installed ({BIN}/initdb)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("vigil-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the PostgreSQL folder");
        }
        let pw = dir.path().join("pw");
        std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
        if is_root() {
            Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(&pw)
                .status()
                .unwrap();
        }
        ok(
            "initdb",
            as_owner("initdb")
                .arg("-D")
                .arg(dir.path().join("data"))
                .args([
                    "-U",
                    ADMIN,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", pw.display()))
                .args(["-E", "UTF8", "--no-sync", "--no-instructions"])
                .output()
                .unwrap(),
        );
        let mut pg = Postgres {
            port: super::free_port(),
            dir,
            running: false,
        };
        pg.start_server();
        pg.sql("postgres", "CREATE DATABASE vigil");
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server again (on the same port) after [`Self::stop`].
    pub fn start_server(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        ok(
            "pg_ctl start",
            as_owner("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-o", &opts, "-w", "-t", "60", "-l"])
                .arg(self.dir.path().join("log"))
                .arg("start")
                .output()
                .unwrap(),
        );
        self.running = true;
    }

    /// Stops the server (fast: open connections are cut, as in an outage).
    pub fn stop(&mut self) {
        if self.running {
            let _ = as_owner("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "fast", "-w", "stop"])
                .output();
            self.running = false;
        }
    }

    /// Runs SQL as the superuser over the private socket; returns psql's unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        ok(
            &format!("psql {sql}"),
            as_owner("psql")
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &self.port.to_string(), "-U", ADMIN, "-d", db])
                .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
                .output()
                .unwrap(),
        )
    }

    /// Creates a login `name` with `password` that owns database `vigil`'s public schema.
    pub fn user(&self, name: &str, password: &str) {
        self.sql(
            "postgres",
            &format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"),
        );
        self.sql("vigil", &format!("GRANT ALL ON SCHEMA public TO {name}"));
    }

    /// `postgres://user:password@127.0.0.1:PORT/vigil`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/vigil", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = as_owner("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
