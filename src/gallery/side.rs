//! Files that live beside the gallery and hold what vigil learned from its user: the negative
//! examples (`<gallery>.negatives.json`), the unknown-face groups (`<gallery>.unknowns.json`),
//! the faces of named tracks (`<gallery>.tracks.json`) and the tuned projection heads
//! (`<gallery>.head.json`).
//!
//! Each is one JSON object with a format tag, a version, and the embedder's name and dimension
//! (a file made by another embedder is refused, as the gallery is); each is written through
//! [`crate::durable::replace`], so a crash leaves the old file or the new one. A damaged file is
//! refused with an error that names it and is never overwritten: the gallery itself is not
//! touched by it, and vigil does not start on a half-understood correction.

use super::GalleryError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Largest side file read, bytes.
pub const MAX_SIDE_BYTES: u64 = 256 << 20;

/// `<gallery file name>.<what>.json` beside the gallery.
pub fn path(gallery: &Path, what: &str) -> PathBuf {
    let mut name = gallery.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}.json"));
    gallery.with_file_name(name)
}

#[derive(Serialize)]
struct Out<'a, T> {
    format: &'a str,
    version: u32,
    model: &'a str,
    dim: usize,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct In<T> {
    format: String,
    version: u32,
    model: String,
    dim: usize,
    #[serde(flatten)]
    body: T,
}

fn damaged(path: &Path, reason: impl Into<String>) -> GalleryError {
    GalleryError::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a side file; `None` when it does not exist. `check` validates what was read (its
/// error becomes the reason the file is refused).
pub fn read<T: DeserializeOwned>(
    path: &Path,
    format: &str,
    model: &str,
    dim: usize,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<Option<T>, GalleryError> {
    if let Ok(m) = std::fs::metadata(path) {
        if m.len() > MAX_SIDE_BYTES {
            return Err(damaged(
                path,
                format!("{} bytes, at most {MAX_SIDE_BYTES} are read", m.len()),
            ));
        }
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(GalleryError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let f: In<T> = serde_json::from_slice(&bytes)
        .map_err(|e| damaged(path, crate::echo::echo(&e.to_string()).into_owned()))?;
    if f.format != format {
        return Err(damaged(
            path,
            format!(
                "format is {:?}, expected {format:?}",
                crate::echo::echo(&f.format)
            ),
        ));
    }
    if f.version != 1 {
        return Err(damaged(
            path,
            format!(
                "format version {} is not supported (this vigil reads version 1)",
                f.version
            ),
        ));
    }
    if f.model != model || f.dim != dim {
        return Err(GalleryError::Foreign {
            path: path.to_path_buf(),
            model: crate::echo::echo(&f.model).into_owned(),
            found: f.dim,
            want: dim,
        });
    }
    check(&f.body).map_err(|r| damaged(path, r))?;
    Ok(Some(f.body))
}

/// Writes a side file crash-safely.
pub fn write<T: Serialize>(
    path: &Path,
    format: &str,
    model: &str,
    dim: usize,
    body: &T,
) -> Result<(), GalleryError> {
    let out = Out {
        format,
        version: 1,
        model,
        dim,
        body,
    };
    crate::durable::replace(path, |f| {
        serde_json::to_writer(f, &out).map_err(std::io::Error::from)
    })
    .map_err(|e| GalleryError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every embedding has `dim` finite values.
pub fn check_embeddings<'a>(
    what: &str,
    dim: usize,
    e: impl IntoIterator<Item = &'a Vec<f32>>,
) -> Result<(), String> {
    for v in e {
        if v.len() != dim || v.iter().any(|x| !x.is_finite()) {
            return Err(format!(
                "{what} has a malformed embedding ({} values, {dim} expected, or not finite)",
                v.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Body {
        items: Vec<u32>,
    }

    #[test]
    fn a_damaged_or_foreign_side_file_is_refused_by_name_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(&dir.path().join("g.json"), "things");
        assert!(p.ends_with("g.json.things.json"));
        assert_eq!(read::<Body>(&p, "t", "m", 4, |_| Ok(())).unwrap(), None);
        write(&p, "t", "m", 4, &Body { items: vec![1, 2] }).unwrap();
        let b = read::<Body>(&p, "t", "m", 4, |_| Ok(())).unwrap().unwrap();
        assert_eq!(b.items, [1, 2]);
        for (text, want) in [
            ("{\"format\":\"t\",\"vers", "EOF"),
            (
                "{\"format\":\"x\",\"version\":1,\"model\":\"m\",\"dim\":4,\"items\":[]}",
                "expected \"t\"",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read::<Body>(&p, "t", "m", 4, |_| Ok(()))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&p.display().to_string()) && e.contains(want),
                "{e}"
            );
            assert_eq!(std::fs::read_to_string(&p).unwrap(), text, "untouched");
        }
        write(&p, "t", "m", 4, &Body { items: vec![] }).unwrap();
        let e = read::<Body>(&p, "t", "other", 4, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("from `m`"), "{e}");
        let e = read::<Body>(&p, "t", "m", 4, |_| Err("no items".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no items") && e.contains("g.json.things.json"),
            "{e}"
        );
    }
}
