//! `<gallery>.lock`: every change of a gallery file, or of a file beside it, is made while
//! holding it (the gallery itself, its unknown groups, negatives and heads).

use super::GalleryError;
use std::path::{Path, PathBuf};

/// Holds `<gallery>.lock` exclusively while alive: every change of the gallery or of a file
/// beside it is made under it.
pub struct FileLock(std::fs::File);

impl FileLock {
    pub fn take(gallery: &Path) -> Result<FileLock, GalleryError> {
        let path = lock_path(gallery);
        let err = |e: std::io::Error| GalleryError::File {
            path: path.clone(),
            reason: format!("cannot lock the gallery: {e}"),
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        f.lock().map_err(err)?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// `<gallery>.lock`, beside the gallery file.
pub fn lock_path(gallery: &Path) -> PathBuf {
    let mut name = gallery.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    gallery.with_file_name(name)
}
