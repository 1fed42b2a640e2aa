//! Sinks write each event as one JSON line. A write is flushed to the OS before the next event,
//! and files are fsynced when the run ends, so an interrupted run leaves complete lines.

use super::deliver::{Mqtt, Publisher, SpooledSink, Webhook};
use super::nats::{Nats, NatsOptions};
use super::spool::{Fsync, Spool};
use crate::config::{FsyncPolicy, SinkConfig, SpoolConfig};
use crate::metrics::Metrics;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("sink {name}: {source}")]
pub struct SinkError {
    pub name: String,
    #[source]
    pub source: io::Error,
}

/// One destination for events.
pub trait Sink: Send {
    /// Short name for logs and the `sink` metric label.
    fn name(&self) -> &'static str;
    /// Writes one JSON line.
    fn write_line(&mut self, line: &str) -> io::Result<()>;
    /// Makes everything written durable.
    fn close(&mut self) -> io::Result<()>;
}

struct Stdout;

impl Sink for Stdout {
    fn name(&self) -> &'static str {
        "stdout"
    }
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }
    fn close(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

struct JsonlFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Rotation: the size limit, the files kept, and the current size.
    max_bytes: Option<u64>,
    keep: u32,
    size: u64,
}

impl JsonlFile {
    fn open(path: PathBuf, max_bytes: Option<u64>, keep: u32) -> io::Result<JsonlFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(JsonlFile {
            path,
            file,
            buf: Vec::with_capacity(512),
            max_bytes,
            keep,
            size,
        })
    }

    /// `events.jsonl` -> `events.jsonl.1`, `.1` -> `.2`, ... up to `keep`; then a new file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                if numbered(n).exists() {
                    fs::rename(numbered(n), numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Sink for JsonlFile {
    fn name(&self) -> &'static str {
        "file"
    }
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        // One write call per line: a reader never sees half a line from a partial buffer flush.
        self.buf.clear();
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        let len = self.buf.len() as u64;
        if self
            .max_bytes
            .is_some_and(|max| self.size > 0 && self.size + len > max)
        {
            self.rotate().map_err(|e| {
                io::Error::new(e.kind(), format!("rotate {}: {e}", self.path.display()))
            })?;
        }
        self.file.write_all(&self.buf)?;
        self.size += len;
        Ok(())
    }
    fn close(&mut self) -> io::Result<()> {
        self.file
            .sync_all()
            .map_err(|e| io::Error::new(e.kind(), format!("fsync {}: {e}", self.path.display())))
    }
}

/// Opens every configured sink; relative paths resolve against the config's folder. Network
/// sinks open their spool and start their delivery thread.
pub fn open_sinks(
    configs: &[SinkConfig],
    resolve: impl Fn(&Path) -> PathBuf,
    metrics: &Arc<Metrics>,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for c in configs {
        let name = c.name();
        let spooled = |spool: &SpoolConfig, publisher: Box<dyn Publisher>| {
            let dir = resolve(
                spool
                    .dir
                    .as_deref()
                    .unwrap_or(Path::new(&format!("spool/{name}"))),
            );
            let err = |e: io::Error| SinkError {
                name: name.to_string(),
                source: e,
            };
            let fsync = match spool.fsync {
                FsyncPolicy::Always => Fsync::Always,
                FsyncPolicy::Interval => {
                    Fsync::Every(Duration::from_millis(spool.fsync_interval_ms))
                }
                FsyncPolicy::Never => Fsync::Never,
            };
            let s = Spool::open_with(&dir, spool.max_bytes, fsync).map_err(err)?;
            if s.depth() > 0 {
                tracing::info!(
                    sink = name,
                    "{} events spooled by an earlier run will be delivered first",
                    s.depth()
                );
            }
            let drain = Duration::from_millis(spool.drain_ms);
            SpooledSink::start(name, s, publisher, drain, metrics.clone())
                .map(|s| Box::new(s) as Box<dyn Sink>)
                .map_err(err)
        };
        match c {
            SinkConfig::Stdout => sinks.push(Box::new(Stdout)),
            SinkConfig::File {
                path,
                max_bytes,
                keep,
            } => {
                let path = resolve(path);
                let f =
                    JsonlFile::open(path.clone(), *max_bytes, *keep).map_err(|e| SinkError {
                        name: format!("file {}", path.display()),
                        source: e,
                    })?;
                sinks.push(Box::new(f));
            }
            SinkConfig::Mqtt {
                host,
                port,
                topic_prefix,
                client_id,
                username,
                password,
                timeout_ms,
                spool,
            } => {
                let credentials = username
                    .as_ref()
                    .map(|u| (u.clone(), password.clone().unwrap_or_default()));
                let timeout = Duration::from_millis(*timeout_ms);
                let mqtt = Mqtt::new(host, *port, client_id, topic_prefix, credentials, timeout);
                sinks.push(spooled(spool, Box::new(mqtt))?);
            }
            SinkConfig::Webhook {
                url,
                secret,
                timeout_ms,
                spool,
            } => {
                let timeout = Duration::from_millis(*timeout_ms);
                let hook = Webhook::new(url, timeout, secret.as_deref());
                sinks.push(spooled(spool, Box::new(hook))?);
            }
            SinkConfig::Nats(n) => {
                let nats = Nats::new(NatsOptions {
                    url: n.url.clone(),
                    prefix: n.prefix.clone(),
                    jetstream: n.jetstream.clone(),
                    create: n.create_stream,
                    duplicate_window: Duration::from_secs(n.duplicate_window_s),
                    timeout: Duration::from_millis(n.timeout_ms),
                })
                .map_err(|e| SinkError {
                    name: name.to_string(),
                    source: e,
                })?;
                sinks.push(spooled(&n.spool, Box::new(nats))?);
            }
        }
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sink_rotates_at_its_size_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = JsonlFile::open(path.clone(), Some(4096), 2).unwrap();
        let line = |i: usize| format!("{{\"n\":{i:04},\"pad\":\"{}\"}}", "x".repeat(80));
        for i in 0..200 {
            f.write_line(&line(i)).unwrap();
        }
        f.close().unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        assert!(!numbered(3).exists(), "only `keep` old files");
        let (old2, old1, now) = (read(numbered(2)), read(numbered(1)), read(path.clone()));
        for text in [&old2, &old1, &now] {
            assert!(text.len() <= 4096, "{}", text.len());
            assert!(text.ends_with('\n'));
        }
        // Oldest to newest, the three files hold the last lines written, in order.
        let all: Vec<&str> = [&old2, &old1, &now]
            .iter()
            .flat_map(|t| t.lines())
            .collect();
        let expect: Vec<String> = (200 - all.len()..200).map(line).collect();
        assert_eq!(all, expect);
    }
}
