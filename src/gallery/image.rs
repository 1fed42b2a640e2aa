//! Loading a photo for enrolment or search: the format and the pixel count are read from the
//! header first, so an image that claims to be enormous is refused before any decoding.

use opencv::core::{Mat, Vector};
use opencv::imgcodecs;
use opencv::prelude::*;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: {reason}", crate::echo::echo(.path))]
    Read { path: String, reason: String },
    #[error("{}: not a JPEG, PNG or BMP image", crate::echo::echo(.path))]
    Format { path: String },
    #[error("{}: the header is truncated or malformed ({format})", crate::echo::echo(.path))]
    Header { path: String, format: &'static str },
    #[error("{}: {width}x{height} is {pixels} pixels, over the limit of {limit} (gallery.max_image_pixels)", crate::echo::echo(.path))]
    TooLarge {
        path: String,
        width: u64,
        height: u64,
        pixels: u64,
        limit: u64,
    },
    #[error("{}: the {format} data cannot be decoded (corrupt or truncated)", crate::echo::echo(.path))]
    Decode { path: String, format: &'static str },
}

/// Width and height from the header, with the format's name.
fn header_size(b: &[u8]) -> Option<Result<(&'static str, u64, u64), &'static str>> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        if b.len() < 24 || &b[12..16] != b"IHDR" {
            return Some(Err("PNG"));
        }
        let w = u32::from_be_bytes(b[16..20].try_into().ok()?) as u64;
        let h = u32::from_be_bytes(b[20..24].try_into().ok()?) as u64;
        return Some(Ok(("PNG", w, h)));
    }
    if b.starts_with(&[0xFF, 0xD8]) {
        // Walk the marker segments to the first start-of-frame.
        let mut i = 2;
        while i + 4 <= b.len() {
            if b[i] != 0xFF {
                return Some(Err("JPEG"));
            }
            let marker = b[i + 1];
            if marker == 0xFF {
                i += 1;
                continue;
            }
            let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
            let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
            if is_sof {
                if i + 9 > b.len() {
                    return Some(Err("JPEG"));
                }
                let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u64;
                let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u64;
                return Some(Ok(("JPEG", w, h)));
            }
            if len < 2 {
                return Some(Err("JPEG"));
            }
            i += 2 + len;
        }
        return Some(Err("JPEG"));
    }
    if b.starts_with(b"BM") {
        if b.len() < 26 {
            return Some(Err("BMP"));
        }
        let w = i32::from_le_bytes(b[18..22].try_into().ok()?).unsigned_abs() as u64;
        let h = i32::from_le_bytes(b[22..26].try_into().ok()?).unsigned_abs() as u64;
        return Some(Ok(("BMP", w, h)));
    }
    None
}

/// Reads and decodes an image as BGR, refusing it before decoding when its header claims more
/// than `max_pixels`.
pub fn load(path: &Path, max_pixels: u64) -> Result<Mat, ImageError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ImageError::Read {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    decode(&bytes, &p, max_pixels)
}

/// Decodes image bytes (`label` names them in errors) as BGR, refusing them before decoding
/// when the header claims more than `max_pixels`.
pub fn decode(bytes: &[u8], label: &str, max_pixels: u64) -> Result<Mat, ImageError> {
    let p = label.to_string();
    let (format, width, height) = match header_size(bytes) {
        None => return Err(ImageError::Format { path: p }),
        Some(Err(format)) => return Err(ImageError::Header { path: p, format }),
        Some(Ok(v)) => v,
    };
    let pixels = width * height;
    if pixels > max_pixels {
        return Err(ImageError::TooLarge {
            path: p,
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    if pixels == 0 {
        return Err(ImageError::Header { path: p, format });
    }
    let buf = Vector::<u8>::from_slice(bytes);
    match imgcodecs::imdecode(&buf, imgcodecs::IMREAD_COLOR) {
        Ok(m) if !m.empty() => Ok(m),
        _ => Err(ImageError::Decode { path: p, format }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend(w.to_be_bytes());
        b.extend(h.to_be_bytes());
        b.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn a_huge_claimed_size_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("huge.png");
        std::fs::write(&f, png_header(20000, 20000)).unwrap();
        let e = load(&f, 40_000_000).unwrap_err().to_string();
        assert!(
            e.contains("20000x20000 is 400000000 pixels, over the limit of 40000000"),
            "{e}"
        );
    }

    #[test]
    fn a_jpeg_header_is_read_from_its_frame_marker() {
        // SOI, an APP0 segment of 16 bytes, then SOF0 with height 480 and width 640.
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
        b.extend([0u8; 14]);
        b.extend([0xFF, 0xC0, 0, 17, 8, 0x01, 0xE0, 0x02, 0x80, 3]);
        assert_eq!(header_size(&b), Some(Ok(("JPEG", 640, 480))));
    }

    #[test]
    fn text_and_truncated_images_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("notes.jpg");
        std::fs::write(&t, "hello").unwrap();
        assert!(load(&t, 1000)
            .unwrap_err()
            .to_string()
            .contains("not a JPEG, PNG or BMP image"));
        let c = dir.path().join("cut.png");
        std::fs::write(&c, png_header(10, 10)).unwrap();
        assert!(load(&c, 1000)
            .unwrap_err()
            .to_string()
            .contains("cannot be decoded"));
    }

    #[test]
    fn random_headers_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let magics: [&[u8]; 3] = [b"\x89PNG\r\n\x1a\n", &[0xFF, 0xD8], b"BM"];
        let (mut ok, mut bad) = (
            std::collections::HashMap::new(),
            std::collections::HashMap::new(),
        );
        for i in 0..20_000 {
            let mut b = magics[i % 3].to_vec();
            let len = (next() % 64) as usize;
            b.extend((0..len).map(|_| next() as u8));
            // Sprinkle JPEG markers so the segment walk gets exercised.
            if i % 3 == 1 && i % 2 == 0 && b.len() > 4 {
                let at = 2 + (next() as usize % (b.len() - 3));
                b[at] = 0xFF;
            }
            match header_size(&b) {
                Some(Ok((format, _, _))) => *ok.entry(format).or_insert(0) += 1,
                Some(Err(format)) => *bad.entry(format).or_insert(0) += 1,
                None => panic!("a known magic was not recognised: {b:?}"),
            }
        }
        // The walk saw well-formed and malformed headers of every format.
        for f in ["PNG", "JPEG", "BMP"] {
            assert!(
                bad.get(f).copied().unwrap_or(0) > 0,
                "{f}: no malformed header seen"
            );
        }
        assert!(
            ok.get("BMP").copied().unwrap_or(0) > 0 && ok.get("JPEG").copied().unwrap_or(0) > 0,
            "{ok:?}"
        );
    }
}
