//! Snapshot JPEGs, written by the events stage only. A snapshot never replaces an existing
//! file and never follows a link planted at its name: the JPEG is written to a fresh temporary
//! file in the folder, then hard-linked to its final name (which fails, rather than follows,
//! when anything is there already: the name then gets a `-N` suffix).

use opencv::core::{Mat, Vector};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `image` as `dir/<stem>.jpg` (or `<stem>-N.jpg` when taken); returns the path.
pub fn write(dir: &Path, stem: &str, image: &Mat) -> std::io::Result<PathBuf> {
    let mut buf = Vector::<u8>::new();
    let ok = opencv::imgcodecs::imencode_def(".jpg", image, &mut buf)
        .map_err(|e| std::io::Error::other(e.message))?;
    if !ok {
        return Err(std::io::Error::other("JPEG encoding failed"));
    }
    let tmp = dir.join(format!(
        ".{stem}.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let linked = (|| {
        f.write_all(buf.as_slice())?;
        drop(f);
        for n in 0..100u32 {
            let name = if n == 0 {
                format!("{stem}.jpg")
            } else {
                format!("{stem}-{n}.jpg")
            };
            let path = dir.join(name);
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "{stem}.jpg and 99 alternatives exist already"
        )))
    })();
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};

    #[test]
    fn a_link_planted_at_the_snapshot_name_is_left_alone_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious.txt");
        std::fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("cam-1.000-track1.jpg")).unwrap();
        let img = Mat::new_rows_cols_with_default(8, 8, CV_8UC3, Scalar::all(90.0)).unwrap();
        let path = write(dir.path(), "cam-1.000-track1", &img).unwrap();
        assert_eq!(path, dir.path().join("cam-1.000-track1-1.jpg"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(std::fs::read(&path).unwrap().starts_with(&[0xFF, 0xD8]));
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }
}
