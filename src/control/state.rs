//! Runtime changes that survive a restart: the streams added and removed over the API, in
//! `<api.state_dir>/streams.json`. The config file is never rewritten: at start, the config's
//! streams minus those removed (or replaced) over the API, plus those added over the API, run.
//! Every change is written crash-safely (a temporary file, fsync, rename, fsync of the folder):
//! a kill at any moment leaves the old state or the new one, never a torn file.

use crate::config::StreamConfig;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: &str = "vigil-state";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path} is not a vigil state file or is damaged ({reason}); move it away to start without the API's changes")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    /// Streams added over the API, in the order added.
    added: Vec<StreamConfig>,
    /// Ids of config streams removed (or replaced by an added one) over the API.
    removed: Vec<String>,
}

/// The persisted streams of one state folder.
pub struct State {
    path: PathBuf,
    file: File,
}

impl State {
    /// Reads `dir/streams.json` (none yet: nothing changed), creating `dir`.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = dir.join("streams.json");
        let io = |e: std::io::Error| StateError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| StateError::Io {
            path: dir.to_path_buf(),
            reason: format!("cannot create the state folder: {e}"),
        })?;
        let file = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File {
                format: FORMAT.into(),
                version: 1,
                ..File::default()
            },
            Err(e) => return Err(io(e)),
            Ok(m) if m.len() > 64 << 20 => {
                return Err(StateError::Corrupt {
                    path,
                    reason: format!("{} bytes, over the 64 MiB a state file can be", m.len()),
                })
            }
            Ok(_) => {
                let bytes = std::fs::read(&path).map_err(io)?;
                let f: File = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                if f.format != FORMAT || f.version != 1 {
                    return Err(StateError::Corrupt {
                        path,
                        reason: format!("format {:?} version {}", f.format, f.version),
                    });
                }
                f
            }
        };
        Ok(State { path, file })
    }

    /// Streams added over the API.
    pub fn added(&self) -> &[StreamConfig] {
        &self.file.added
    }

    /// Whether the config's stream `id` was removed or replaced over the API.
    pub fn is_removed(&self, id: &str) -> bool {
        self.file.removed.iter().any(|r| r == id)
    }

    /// Records a stream added over the API; `in_config` when the config lists that id too.
    pub fn add(&mut self, s: &StreamConfig, in_config: bool) -> Result<(), StateError> {
        self.file.added.retain(|a| a.id != s.id);
        self.file.added.push(s.clone());
        if in_config && !self.is_removed(&s.id) {
            self.file.removed.push(s.id.clone());
        }
        self.save()
    }

    /// Records a stream removed over the API.
    pub fn remove(&mut self, id: &str, in_config: bool) -> Result<(), StateError> {
        self.file.added.retain(|a| a.id != id);
        if in_config && !self.is_removed(id) {
            self.file.removed.push(id.to_string());
        }
        self.save()
    }

    fn save(&self) -> Result<(), StateError> {
        crate::durable::replace(&self.path, |f| {
            serde_json::to_writer_pretty(&mut *f, &self.file)?;
            f.write_all(b"\n")
        })
        .map_err(|e| StateError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str) -> StreamConfig {
        StreamConfig {
            id: id.into(),
            url: format!("/videos/{id}.mp4"),
            branches: None,
            realtime: false,
            looped: true,
            motion: None,
        }
    }

    #[test]
    fn added_and_removed_streams_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::load(dir.path()).unwrap();
        s.add(&stream("a"), false).unwrap();
        s.add(&stream("b"), false).unwrap();
        s.remove("a", false).unwrap();
        s.remove("gym", true).unwrap();
        s.add(&stream("door"), true).unwrap();
        let s = State::load(dir.path()).unwrap();
        let ids: Vec<&str> = s.added().iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["b", "door"]);
        assert!(s.added()[0].looped);
        assert!(s.is_removed("gym") && s.is_removed("door") && !s.is_removed("b"));
    }

    #[test]
    fn a_damaged_state_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("streams.json"), "{\"format\": 3").unwrap();
        let e = State::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("streams.json is not a vigil state file"), "{e}");
    }
}
