//! Sinks write each event as one JSON line. A write is flushed to the OS before the next event,
//! and files are fsynced when the run ends, so an interrupted run leaves complete lines.

use crate::config::SinkConfig;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
    fn name(&self) -> &str;
    /// Writes one JSON line.
    fn write_line(&mut self, line: &str) -> io::Result<()>;
    /// Makes everything written durable.
    fn close(&mut self) -> io::Result<()>;
}

struct Stdout;

impl Sink for Stdout {
    fn name(&self) -> &str {
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
}

impl Sink for JsonlFile {
    fn name(&self) -> &str {
        "file"
    }
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        // One write call per line: a reader never sees half a line from a partial buffer flush.
        self.buf.clear();
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        self.file.write_all(&self.buf)
    }
    fn close(&mut self) -> io::Result<()> {
        self.file
            .sync_all()
            .map_err(|e| io::Error::new(e.kind(), format!("fsync {}: {e}", self.path.display())))
    }
}

/// Opens every configured sink; relative paths resolve against `base`.
pub fn open_sinks(
    configs: &[SinkConfig],
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for c in configs {
        match c {
            SinkConfig::Stdout => sinks.push(Box::new(Stdout)),
            SinkConfig::File { path } => {
                let path = resolve(path);
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| SinkError {
                        name: format!("file {}", path.display()),
                        source: e,
                    })?;
                sinks.push(Box::new(JsonlFile {
                    path,
                    file,
                    buf: Vec::with_capacity(512),
                }));
            }
        }
    }
    Ok(sinks)
}
