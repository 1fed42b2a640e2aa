//! The aligned face chip of every enrolment, kept beside the gallery for the console's
//! thumbnails: `<gallery file>.chips/<key>.jpg`, where the key is a hash of the embedding the
//! chip gave. The gallery file is not changed (an older vigil reads it as before), a chip is
//! found from its embedding alone, and a gallery enrolled before chips were kept simply has
//! none. Chips are written crash-safely after the gallery change is saved; failing to write one
//! never fails an enrolment.

use opencv::core::{Mat, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// The chips' folder of a gallery file.
pub fn dir(gallery: &Path) -> PathBuf {
    let mut name = gallery.file_name().unwrap_or_default().to_os_string();
    name.push(".chips");
    gallery.with_file_name(name)
}

/// The chip's file name for an embedding: the first 128 bits of the SHA-256 of its
/// little-endian bytes.
fn file_name(embedding: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in embedding {
        h.update(v.to_le_bytes());
    }
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.jpg")
}

pub fn path(gallery: &Path, embedding: &[f32]) -> PathBuf {
    dir(gallery).join(file_name(embedding))
}

/// Saves an aligned chip (RGB, `size` x `size`) as the embedding's JPEG.
pub fn save(gallery: &Path, embedding: &[f32], rgb: &[u8], size: usize) -> io::Result<()> {
    let err = |e: opencv::Error| io::Error::other(e.message);
    if rgb.len() != size * size * 3 {
        return Err(io::Error::other(format!(
            "a {size}x{size} chip has {} bytes",
            rgb.len()
        )));
    }
    let flat = Mat::from_slice(rgb).map_err(err)?;
    let img = flat.reshape(3, size as i32).map_err(err)?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&img, &mut bgr, imgproc::COLOR_RGB2BGR).map_err(err)?;
    let mut buf = Vector::<u8>::new();
    opencv::imgcodecs::imencode_def(".jpg", &bgr, &mut buf).map_err(err)?;
    let dir = dir(gallery);
    std::fs::create_dir_all(&dir)?;
    crate::durable::replace(&dir.join(file_name(embedding)), |f| {
        io::Write::write_all(f, buf.as_slice())
    })
}

/// Forgets the chips of removed embeddings (a chip already gone is not an error).
pub fn remove(gallery: &Path, embeddings: &[Vec<f32>]) {
    for e in embeddings {
        let p = path(gallery, e);
        if let Err(err) = std::fs::remove_file(&p) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {err}", p.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chip_is_kept_under_its_embedding_and_removed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let gallery = dir.path().join("people.json");
        let (a, b) = (vec![0.25f32; 128], vec![0.5f32; 128]);
        assert_ne!(path(&gallery, &a), path(&gallery, &b));
        // A red chip.
        let rgb: Vec<u8> = (0..150 * 150).flat_map(|_| [220u8, 20, 20]).collect();
        save(&gallery, &a, &rgb, 150).unwrap();
        let jpeg = std::fs::read(path(&gallery, &a)).unwrap();
        let img = opencv::imgcodecs::imdecode(
            &Vector::from_slice(&jpeg),
            opencv::imgcodecs::IMREAD_COLOR,
        )
        .unwrap();
        assert_eq!((img.cols(), img.rows()), (150, 150));
        let px = *img.at_2d::<opencv::core::Vec3b>(75, 75).unwrap();
        assert!(px[2] > 180 && px[0] < 60, "BGR {px:?}: red stays red");
        assert!(save(&gallery, &b, &rgb[..10], 150).is_err());
        remove(&gallery, &[a.clone(), b]);
        assert!(!path(&gallery, &a).exists());
    }
}
