//! The one-shot gallery: people enrolled from one photo or more, persisted in one file, and
//! searched for verification (1:1, "is this X?") and identification (1:N, "who is this?").
//!
//! The file is JSON with a format tag and version. Writes are crash-safe: a temporary file in
//! the same folder, fsync, rename over the old one, fsync the folder. A file that is not a
//! vigil gallery, is corrupt, or comes from another embedder is refused and never overwritten.
//! Search goes through [`Index`], so an approximate index can replace [`ExactIndex`] later.

pub mod image;
pub mod ops;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: &str = "vigil-gallery";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("gallery {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("gallery {path} is not a vigil gallery file or is corrupt ({reason}); it was left untouched")]
    Corrupt { path: PathBuf, reason: String },
    #[error("gallery {path} holds {found}-value embeddings from `{model}`, but the embedder gives {want}; it was left untouched")]
    Foreign {
        path: PathBuf,
        model: String,
        found: usize,
        want: usize,
    },
    #[error("invalid name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("no one named {name:?} in the gallery {path}")]
    Unknown { name: String, path: PathBuf },
}

/// One enrolled person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    pub name: String,
    /// One descriptor per enrolment photo.
    pub embeddings: Vec<Vec<f32>>,
    /// Where each embedding came from (file names, for `list`).
    pub sources: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    format: String,
    version: u32,
    model: String,
    dim: usize,
    people: Vec<Person>,
}

/// A match: who and how far.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub name: String,
    pub distance: f32,
}

/// Nearest-person search over the gallery's embeddings.
pub trait Index: Send + Sync {
    /// The `k` nearest people (each person once, by their nearest embedding), nearest first.
    fn search(&self, query: &[f32], k: usize) -> Vec<Match>;
}

/// Exhaustive search: exact, and fast enough for thousands of people.
pub struct ExactIndex {
    rows: Vec<(usize, Vec<f32>)>,
    names: Vec<String>,
}

impl ExactIndex {
    pub fn new(people: &[Person]) -> ExactIndex {
        let names = people.iter().map(|p| p.name.clone()).collect();
        let rows = people
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.embeddings.iter().map(move |e| (i, e.clone())))
            .collect();
        ExactIndex { rows, names }
    }
}

impl Index for ExactIndex {
    fn search(&self, query: &[f32], k: usize) -> Vec<Match> {
        let mut best = vec![f32::INFINITY; self.names.len()];
        for (i, e) in &self.rows {
            let d = crate::face::distance(query, e);
            if d < best[*i] {
                best[*i] = d;
            }
        }
        let mut out: Vec<Match> = best
            .into_iter()
            .enumerate()
            .filter(|(_, d)| d.is_finite())
            .map(|(i, d)| Match {
                name: self.names[i].clone(),
                distance: d,
            })
            .collect();
        out.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        out.truncate(k);
        out
    }
}

/// The gallery file and its people.
#[derive(Debug)]
pub struct Gallery {
    pub path: PathBuf,
    pub model: String,
    pub dim: usize,
    pub people: Vec<Person>,
}

/// Names become JSON strings and log fields: no control characters, no path separators, and
/// not blank.
pub fn validate_name(name: &str) -> Result<(), GalleryError> {
    let bad = |reason: &str| {
        Err(GalleryError::Name {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.trim().is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > 128 {
        return bad("longer than 128 characters");
    }
    if name.trim() != name {
        return bad("it starts or ends with spaces");
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || *c == '/' || *c == '\\')
    {
        return bad(&format!(
            "it contains {c:?} (no control characters or path separators)"
        ));
    }
    Ok(())
}

impl Gallery {
    /// Opens the gallery at `path`; a missing file is an empty gallery. `model` and `dim`
    /// describe the embedder, and a file made by another is refused.
    pub fn open(path: &Path, model: &str, dim: usize) -> Result<Gallery, GalleryError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Gallery {
                    path: path.to_path_buf(),
                    model: model.into(),
                    dim,
                    people: vec![],
                })
            }
            Err(e) => {
                return Err(GalleryError::File {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        let corrupt = |reason: String| GalleryError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let f: FileV1 = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if f.format != FORMAT {
            return Err(corrupt(format!(
                "format is {:?}, expected {FORMAT:?}",
                f.format
            )));
        }
        if f.version != VERSION {
            return Err(corrupt(format!(
                "format version {} is not supported (this vigil reads version {VERSION})",
                f.version
            )));
        }
        if f.model != model || f.dim != dim {
            return Err(GalleryError::Foreign {
                path: path.to_path_buf(),
                model: f.model,
                found: f.dim,
                want: dim,
            });
        }
        for p in &f.people {
            validate_name(&p.name).map_err(|e| corrupt(e.to_string()))?;
            if p.embeddings.is_empty()
                || p.embeddings
                    .iter()
                    .any(|e| e.len() != dim || e.iter().any(|v| !v.is_finite()))
            {
                return Err(corrupt(format!(
                    "person {:?} has a malformed embedding",
                    p.name
                )));
            }
        }
        Ok(Gallery {
            path: path.to_path_buf(),
            model: f.model,
            dim,
            people: f.people,
        })
    }

    /// Adds embeddings to `name`, creating the person if new.
    pub fn enroll(
        &mut self,
        name: &str,
        embedding: Vec<f32>,
        source: String,
    ) -> Result<(), GalleryError> {
        validate_name(name)?;
        match self.people.iter_mut().find(|p| p.name == name) {
            Some(p) => {
                p.embeddings.push(embedding);
                p.sources.push(source);
            }
            None => self.people.push(Person {
                name: name.into(),
                embeddings: vec![embedding],
                sources: vec![source],
            }),
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<Person, GalleryError> {
        let i = self
            .people
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| GalleryError::Unknown {
                name: name.into(),
                path: self.path.clone(),
            })?;
        Ok(self.people.remove(i))
    }

    pub fn person(&self, name: &str) -> Result<&Person, GalleryError> {
        self.people
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| GalleryError::Unknown {
                name: name.into(),
                path: self.path.clone(),
            })
    }

    pub fn index(&self) -> ExactIndex {
        ExactIndex::new(&self.people)
    }

    /// Writes the gallery crash-safely.
    pub fn save(&self) -> Result<(), GalleryError> {
        let err = |reason: String| GalleryError::File {
            path: self.path.clone(),
            reason,
        };
        let file = FileV1 {
            format: FORMAT.into(),
            version: VERSION,
            model: self.model.clone(),
            dim: self.dim,
            people: self.people.clone(),
        };
        let json = serde_json::to_vec(&file).map_err(|e| err(e.to_string()))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .ok_or_else(|| err("is not a file path".into()))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(v: f32) -> Vec<f32> {
        vec![v; 4]
    }

    #[test]
    fn saves_and_reloads_people_and_searches_them_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = Gallery::open(&path, "m", 4).unwrap();
        g.enroll("Ada", emb(0.0), "a.jpg".into()).unwrap();
        g.enroll("Bob", emb(1.0), "b.jpg".into()).unwrap();
        g.enroll("Ada", emb(0.2), "a2.jpg".into()).unwrap();
        g.save().unwrap();
        let g = Gallery::open(&path, "m", 4).unwrap();
        assert_eq!(g.people.len(), 2);
        let m = g.index().search(&emb(0.25), 5);
        assert_eq!(m[0].name, "Ada");
        assert!(
            (m[0].distance - 0.1).abs() < 1e-6,
            "nearest of Ada's two embeddings: {m:?}"
        );
        assert_eq!(m[1].name, "Bob");
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        for (content, want) in [
            ("{not json", "corrupt"),
            (
                "{\"format\":\"other\",\"version\":1,\"model\":\"m\",\"dim\":4,\"people\":[]}",
                "expected \"vigil-gallery\"",
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = Gallery::open(&path, "m", 4).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("left untouched"), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
        let mut g = Gallery::open(&dir.path().join("new.json"), "m", 4).unwrap();
        g.enroll("Ada", emb(0.0), "a.jpg".into()).unwrap();
        g.save().unwrap();
        let e = Gallery::open(&dir.path().join("new.json"), "other-model", 128)
            .unwrap_err()
            .to_string();
        assert!(e.contains("from `m`"), "{e}");
    }

    #[test]
    fn names_with_separators_or_control_characters_are_refused() {
        for bad in ["", " Ada", "a/b", "a\\b", "x\ny", "tab\t"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("Lin-Manuel Miranda").is_ok());
    }
}
