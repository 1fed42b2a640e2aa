//! The gallery in PostgreSQL (plain PostgreSQL 15, no extension), through the pure-Rust
//! `postgres` client without TLS.
//!
//! Tables (all prefixed `vigil_`, so a database shared with other software is safe):
//! - `vigil_schema_version (version)`: one row; a version newer than this binary knows is
//!   refused, an older one is migrated in one transaction under an advisory lock.
//! - `vigil_meta (store_id, model, dim)`: one row; the embedder the store was made with (a node
//!   with another is refused) and the identity a cache keeps beside its watermark.
//! - `vigil_changes (id bigserial, kind, name, at)`: the change log; `enroll` and `remove`
//!   (the tombstone of a removal stays in the log).
//! - `vigil_people (name, since_change)` and `vigil_embeddings (id, change_id, name,
//!   embedding bytea, source)`: the current gallery. An embedding is its little-endian f32
//!   values; `change_id` is the enrolment that added it, so a node reads the embeddings of the
//!   changes past its watermark. A removal deletes the person's rows.
//!
//! Every write is one transaction that first takes `pg_advisory_xact_lock(WRITE_LOCK)`: ids are
//! then taken and committed one writer at a time, in id order, so a reader that sees change N
//! has seen every change before N (a rolled-back writer only leaves a gap). Every commit sends
//! `NOTIFY vigil_gallery` with its last change id.
//!
//! The URL's password never leaves this module in the clear: every error is built from
//! [`crate::url::redact`] and [`crate::url::scrub`].

use super::diff::Op;
use crate::config::GalleryPostgresConfig;
use postgres::{Client, IsolationLevel, NoTls};
use std::str::FromStr;
use std::time::Duration;

/// The schema this binary writes and reads.
pub const SCHEMA_VERSION: i32 = 1;
/// `pg_advisory_xact_lock` keys: schema creation and migration; every change.
const MIGRATE_LOCK: i64 = 0x7669_6769_6c00_0001;
const WRITE_LOCK: i64 = 0x7669_6769_6c00_0002;
/// The NOTIFY channel.
pub const CHANNEL: &str = "vigil_gallery";

/// Each migration takes the schema from the version before it to its own number.
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE vigil_meta (
    store_id text NOT NULL,
    model text NOT NULL,
    dim integer NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE vigil_changes (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('enroll', 'remove')),
    name text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE vigil_people (
    name text PRIMARY KEY,
    since_change bigint NOT NULL REFERENCES vigil_changes (id)
);
CREATE TABLE vigil_embeddings (
    id bigserial PRIMARY KEY,
    change_id bigint NOT NULL REFERENCES vigil_changes (id),
    name text NOT NULL REFERENCES vigil_people (name),
    embedding bytea NOT NULL,
    source text NOT NULL
);
CREATE INDEX vigil_embeddings_change ON vigil_embeddings (change_id);
CREATE INDEX vigil_embeddings_name ON vigil_embeddings (name);
"#];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Refused, timed out, or the login failed: the store is down for this node.
    #[error("cannot connect to the gallery store {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// Connected, then a query failed or the connection dropped.
    #[error("gallery store {url}: {what}: {reason}")]
    Failed {
        url: String,
        what: &'static str,
        reason: String,
    },
    #[error("gallery store {url} has schema version {found}, newer than this vigil knows ({SCHEMA_VERSION}): upgrade vigil on this node (the store was left untouched)")]
    Newer { url: String, found: i32 },
    #[error("gallery store {url} holds {dim}-value embeddings from `{model}`, but this node's embedder is `{want_model}` with {want_dim}: use the same embedder on every node")]
    Foreign {
        url: String,
        model: String,
        dim: i32,
        want_model: String,
        want_dim: usize,
    },
    #[error("gallery store {url}: {reason}")]
    Data { url: String, reason: String },
    /// Down at a node's first start: there is nothing to identify from.
    #[error("{source}; there is no local cache of it at {} to start from (a node's first start needs the store)", .path.display())]
    NoCache {
        source: Box<StoreError>,
        path: std::path::PathBuf,
    },
    /// A gallery file with people of its own beside a store with people of its own.
    #[error("{} holds {people} people but is not a cache of the gallery store {url}, which has people of its own: enrol them through the store, or move the file away to use it as a cache (nothing was changed)", .path.display())]
    NotACache {
        path: std::path::PathBuf,
        people: usize,
        url: String,
    },
}

impl StoreError {
    /// A store that is down or dropped the connection, as against one that answered "no".
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. } | StoreError::Failed { .. }
        )
    }
}

/// How to reach the store, and what this node's embedder is.
#[derive(Clone)]
pub struct PgStore {
    url: String,
    config: postgres::Config,
    pub model: String,
    pub dim: usize,
    pub poll: Duration,
}

/// A connection whose schema and embedder were checked.
pub struct Conn {
    pub client: Client,
    pub store_id: String,
}

/// What the log holds past a watermark, or the whole gallery.
#[derive(Debug, Default)]
pub struct Batch {
    /// Operations in change order.
    pub ops: Vec<Op>,
    /// The last change they include (the new watermark).
    pub last: i64,
    /// Commit time of the last change, seconds since the epoch (0 when there is none).
    pub last_at: f64,
}

fn to_bytes(e: &[f32]) -> Vec<u8> {
    e.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn from_bytes(b: &[u8], dim: usize) -> Option<Vec<f32>> {
    (b.len() == dim * 4).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

impl PgStore {
    pub fn new(
        cfg: &GalleryPostgresConfig,
        model: &str,
        dim: usize,
    ) -> Result<PgStore, StoreError> {
        let url = cfg.url.trim().to_string();
        let mut config = postgres::Config::from_str(&url).map_err(|e| StoreError::Data {
            url: crate::url::redact(&url),
            reason: format!(
                "not a usable URL: {}",
                crate::url::scrub(&e.to_string(), &url)
            ),
        })?;
        config
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("vigil");
        Ok(PgStore {
            url,
            config,
            model: model.into(),
            dim,
            poll: Duration::from_millis(cfg.poll_ms),
        })
    }

    /// The URL as it may be shown.
    pub fn shown(&self) -> String {
        crate::url::redact(&self.url)
    }

    /// A client error as it may be shown: its causes, the password scrubbed.
    pub fn describe(&self, e: &postgres::Error) -> String {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let more = s.to_string();
            if !text.contains(&more) {
                text = format!("{text}: {more}");
            }
            source = s.source();
        }
        crate::url::scrub(&text, &self.url)
    }

    fn failed(&self, what: &'static str) -> impl Fn(postgres::Error) -> StoreError + '_ {
        move |e| StoreError::Failed {
            url: self.shown(),
            what,
            reason: self.describe(&e),
        }
    }

    /// Connects, creates or migrates the schema, and checks the embedder.
    pub fn connect(&self) -> Result<Conn, StoreError> {
        let mut client = self
            .config
            .connect(NoTls)
            .map_err(|e| StoreError::Unreachable {
                url: self.shown(),
                reason: self.describe(&e),
            })?;
        let store_id = self.prepare(&mut client)?;
        Ok(Conn { client, store_id })
    }

    fn prepare(&self, client: &mut Client) -> Result<String, StoreError> {
        let f = self.failed("preparing the schema");
        let mut tx = client.transaction().map_err(&f)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .map_err(&f)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS vigil_schema_version (version integer NOT NULL)",
        )
        .map_err(&f)?;
        let rows = tx
            .query("SELECT version FROM vigil_schema_version", &[])
            .map_err(&f)?;
        let found: i32 = rows.iter().map(|r| r.get::<_, i32>(0)).max().unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                url: self.shown(),
                found,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(m).map_err(&f)?;
            tracing::info!(
                "gallery store {}: schema migrated to version {}",
                self.shown(),
                i + 1
            );
        }
        if found < SCHEMA_VERSION {
            tx.execute("DELETE FROM vigil_schema_version", &[])
                .map_err(&f)?;
            tx.execute(
                "INSERT INTO vigil_schema_version (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .map_err(&f)?;
        }
        let meta = tx
            .query("SELECT store_id, model, dim FROM vigil_meta", &[])
            .map_err(&f)?;
        let store_id = match meta.first() {
            Some(r) => {
                let (model, dim): (String, i32) = (r.get(1), r.get(2));
                if model != self.model || dim as usize != self.dim {
                    return Err(StoreError::Foreign {
                        url: self.shown(),
                        model: crate::echo::echo(&model).into_owned(),
                        dim,
                        want_model: self.model.clone(),
                        want_dim: self.dim,
                    });
                }
                r.get::<_, String>(0)
            }
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                tx.execute(
                    "INSERT INTO vigil_meta (store_id, model, dim) VALUES ($1, $2, $3)",
                    &[&id, &self.model, &(self.dim as i32)],
                )
                .map_err(&f)?;
                id
            }
        };
        tx.commit().map_err(&f)?;
        Ok(store_id)
    }

    /// The changes after `mark`, in order, read in one snapshot.
    pub fn changes_since(&self, client: &mut Client, mark: i64) -> Result<Batch, StoreError> {
        let f = self.failed("reading changes");
        let mut tx = read_snapshot(client).map_err(&f)?;
        let batch = self.changes_in(&mut tx, mark)?;
        tx.commit().map_err(&f)?;
        Ok(batch)
    }

    /// The whole gallery and the change it is current to, read in one snapshot (a fresh node,
    /// or a cache of another store).
    pub fn snapshot(&self, client: &mut Client) -> Result<Batch, StoreError> {
        let f = self.failed("reading the gallery");
        let mut tx = read_snapshot(client).map_err(&f)?;
        let last = tx
            .query_one(
                "SELECT coalesce(max(id), 0), coalesce(extract(epoch FROM max(at))::float8, 0) \
                 FROM vigil_changes",
                &[],
            )
            .map_err(&f)?;
        let rows = tx
            .query(
                "SELECT name, embedding, source FROM vigil_embeddings ORDER BY id",
                &[],
            )
            .map_err(&f)?;
        tx.commit().map_err(&f)?;
        let mut order: Vec<String> = Vec::new();
        let mut by: std::collections::HashMap<String, Vec<(Vec<f32>, String)>> =
            std::collections::HashMap::new();
        for r in &rows {
            let name: String = r.get(0);
            let e = self.embedding(r.get::<_, &[u8]>(1))?;
            let slot = by.entry(name.clone()).or_insert_with(|| {
                order.push(name);
                Vec::new()
            });
            slot.push((e, r.get(2)));
        }
        drop(rows);
        let ops = order
            .into_iter()
            .map(|name| {
                let embeddings = by.remove(&name).unwrap_or_default();
                Op::Enroll { name, embeddings }
            })
            .collect();
        Ok(Batch {
            ops,
            last: last.get(0),
            last_at: last.get(1),
        })
    }

    fn embedding(&self, b: &[u8]) -> Result<Vec<f32>, StoreError> {
        from_bytes(b, self.dim).ok_or_else(|| StoreError::Data {
            url: self.shown(),
            reason: format!(
                "an embedding of {} bytes, not {} values of 4 bytes",
                b.len(),
                self.dim
            ),
        })
    }

    /// Writes `ops` as one transaction: every operation or none. `under_lock` runs after the
    /// write lock is taken and before anything is written (the caller catches up there, so
    /// what it writes is decided on the latest gallery) and returns the operations to write.
    /// Returns the last change id written (None when there was nothing to write) and what
    /// `under_lock` returned.
    pub fn write<R>(
        &self,
        conn: &mut Conn,
        under_lock: impl FnOnce(&mut postgres::Transaction) -> anyhow::Result<(Vec<Op>, R)>,
    ) -> anyhow::Result<(Option<i64>, R)> {
        let f = self.failed("writing a change");
        let mut tx = conn.client.transaction().map_err(&f)?;
        tx.batch_execute("SET LOCAL lock_timeout = '10s'")
            .map_err(&f)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .map_err(&f)?;
        let (ops, r) = under_lock(&mut tx)?;
        let mut last = None;
        for op in &ops {
            let (kind, name) = match op {
                Op::Enroll { name, .. } => ("enroll", name),
                Op::Remove { name } => ("remove", name),
            };
            let id: i64 = tx
                .query_one(
                    "INSERT INTO vigil_changes (kind, name) VALUES ($1, $2) RETURNING id",
                    &[&kind, name],
                )
                .map_err(&f)?
                .get(0);
            match op {
                Op::Enroll { name, embeddings } => {
                    tx.execute(
                        "INSERT INTO vigil_people (name, since_change) VALUES ($1, $2) \
                         ON CONFLICT (name) DO NOTHING",
                        &[name, &id],
                    )
                    .map_err(&f)?;
                    for (e, source) in embeddings {
                        tx.execute(
                            "INSERT INTO vigil_embeddings (change_id, name, embedding, source) \
                             VALUES ($1, $2, $3, $4)",
                            &[&id, name, &to_bytes(e), source],
                        )
                        .map_err(&f)?;
                    }
                }
                Op::Remove { name } => {
                    tx.execute("DELETE FROM vigil_embeddings WHERE name = $1", &[name])
                        .map_err(&f)?;
                    tx.execute("DELETE FROM vigil_people WHERE name = $1", &[name])
                        .map_err(&f)?;
                }
            }
            last = Some(id);
        }
        if let Some(id) = last {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id.to_string()])
                .map_err(&f)?;
        }
        tx.commit().map_err(&f)?;
        Ok((last, r))
    }

    /// The changes after `mark` seen from inside a write transaction (under the write lock, so
    /// nothing can commit between its two reads).
    pub fn changes_in(
        &self,
        tx: &mut postgres::Transaction,
        mark: i64,
    ) -> Result<Batch, StoreError> {
        let f = self.failed("reading changes");
        let changes = tx
            .query(
                "SELECT id, kind, name, extract(epoch FROM at)::float8 FROM vigil_changes \
                 WHERE id > $1 ORDER BY id",
                &[&mark],
            )
            .map_err(&f)?;
        let rows = tx
            .query(
                "SELECT change_id, embedding, source FROM vigil_embeddings \
                 WHERE change_id > $1 ORDER BY change_id, id",
                &[&mark],
            )
            .map_err(&f)?;
        let mut added: std::collections::HashMap<i64, Vec<(Vec<f32>, String)>> =
            std::collections::HashMap::new();
        for r in &rows {
            let e = self.embedding(r.get::<_, &[u8]>(1))?;
            added
                .entry(r.get::<_, i64>(0))
                .or_default()
                .push((e, r.get(2)));
        }
        let mut batch = Batch {
            last: mark,
            ..Batch::default()
        };
        for c in &changes {
            let (id, kind, name): (i64, &str, String) = (c.get(0), c.get(1), c.get(2));
            batch.ops.push(match kind {
                "remove" => Op::Remove { name },
                _ => Op::Enroll {
                    name,
                    embeddings: added.remove(&id).unwrap_or_default(),
                },
            });
            batch.last = id;
            batch.last_at = c.get(3);
        }
        Ok(batch)
    }

    /// Has the store any change at all (a cache with people of its own may seed an empty one).
    pub fn is_empty(&self, client: &mut Client) -> Result<bool, StoreError> {
        let f = self.failed("reading the change log");
        let n: i64 = client
            .query_one("SELECT count(*) FROM vigil_changes", &[])
            .map_err(&f)?
            .get(0);
        Ok(n == 0)
    }
}

/// A read-only transaction that sees one snapshot of the store (REPEATABLE READ).
fn read_snapshot(client: &mut Client) -> Result<postgres::Transaction<'_>, postgres::Error> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_travel_as_exact_little_endian_bytes() {
        let e = vec![0.1f32, -0.25, 3e-8, f32::MAX];
        assert_eq!(from_bytes(&to_bytes(&e), 4), Some(e));
        assert_eq!(from_bytes(&[0; 12], 4), None, "a short row is refused");
    }

    #[test]
    fn the_password_of_a_bad_url_is_not_repeated_in_its_error() {
        let cfg = GalleryPostgresConfig {
            url: "postgres://vigil:s3cr3t-pw@127.0.0.1:notaport/db".into(),
            connect_timeout_ms: 100,
            poll_ms: 100,
        };
        let e = PgStore::new(&cfg, "m", 4)
            .err()
            .expect("a bad port")
            .to_string();
        assert!(!e.contains("s3cr3t-pw"), "{e}");
        assert!(e.contains("postgres://vigil:***@"), "{e}");
    }
}
