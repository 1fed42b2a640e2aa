//! Per-stream clip preparation: each sampled frame is resized (short side), centre-cropped and
//! turned to RGB once, then shared by every clip window that contains it.

use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;

/// An RGB crop, `side * side * 3` bytes, row-major, channels interleaved.
pub type Crop = Arc<[u8]>;

/// Resize-then-crop preprocessing with reusable scratch memory.
pub struct Preprocess {
    short_side: u32,
    side: u32,
    resized: Mat,
}

impl Preprocess {
    pub fn new(short_side: u32, crop: u32) -> Preprocess {
        Preprocess {
            short_side,
            side: crop,
            resized: Mat::default(),
        }
    }

    /// The size after resizing the short side of a `w` x `h` image to the target.
    pub fn resized_size(&self, w: i32, h: i32) -> (i32, i32) {
        let s = self.short_side as f64;
        if w <= h {
            (
                self.short_side as i32,
                ((h as f64) * s / w as f64).round() as i32,
            )
        } else {
            (
                ((w as f64) * s / h as f64).round() as i32,
                self.short_side as i32,
            )
        }
    }

    /// Preprocesses one BGR frame into an RGB crop.
    pub fn apply(&mut self, bgr: &Mat) -> opencv::Result<Crop> {
        let (w, h) = self.resized_size(bgr.cols(), bgr.rows());
        imgproc::resize(
            bgr,
            &mut self.resized,
            Size::new(w, h),
            0.0,
            0.0,
            imgproc::INTER_LINEAR,
        )?;
        let side = self.side as usize;
        let (x0, y0) = (((w as usize) - side) / 2, ((h as usize) - side) / 2);
        let step = self
            .resized
            .mat_step()
            .first()
            .copied()
            .unwrap_or(w as usize * 3);
        let data = self.resized.data_bytes()?;
        let mut out = vec![0u8; side * side * 3];
        for (y, row_out) in out.chunks_exact_mut(side * 3).enumerate() {
            let row = &data[(y0 + y) * step + x0 * 3..][..side * 3];
            for (o, i) in row_out.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                o[0] = i[2];
                o[1] = i[1];
                o[2] = i[0];
            }
        }
        Ok(out.into())
    }
}

/// A window of consecutive sampled frames from one stream.
#[derive(Clone)]
pub struct Clip {
    pub stream: usize,
    /// 0-based clip number within the stream.
    pub index: u64,
    pub frames: Vec<Crop>,
    /// Media time of the first frame, seconds.
    pub start: f64,
    /// Media time just after the last frame, seconds.
    pub end: f64,
    /// When the last frame was read from the source.
    pub captured: Option<std::time::Instant>,
    /// The middle frame as decoded, kept only when action snapshots are on.
    pub keyframe: Option<std::sync::Arc<opencv::core::Mat>>,
}

/// Cuts windows of `frames` sampled frames every `stride` sampled frames.
pub struct ClipWindow {
    stream: usize,
    frames: usize,
    stride: usize,
    period: f64,
    buf: VecDeque<(f64, Crop)>,
    pushed: u64,
    next_end: u64,
    emitted: u64,
}

impl ClipWindow {
    pub fn new(stream: usize, frames: usize, stride: usize, fps: f64) -> ClipWindow {
        ClipWindow {
            stream,
            frames,
            stride,
            period: 1.0 / fps,
            buf: VecDeque::with_capacity(frames),
            pushed: 0,
            next_end: frames as u64 - 1,
            emitted: 0,
        }
    }

    fn clip(&mut self) -> Clip {
        let start = self.buf.front().map_or(0.0, |f| f.0);
        let end = self.buf.back().map_or(0.0, |f| f.0) + self.period;
        let frames = self.buf.iter().map(|f| f.1.clone()).collect();
        self.emitted += 1;
        Clip {
            stream: self.stream,
            index: self.emitted - 1,
            frames,
            start,
            end,
            captured: None,
            keyframe: None,
        }
    }

    /// Adds the sampled frame for target time `t`; returns a clip when one is complete.
    pub fn push(&mut self, t: f64, crop: Crop) -> Option<Clip> {
        if self.buf.len() == self.frames {
            self.buf.pop_front();
        }
        self.buf.push_back((t, crop));
        let i = self.pushed;
        self.pushed += 1;
        if i == self.next_end {
            self.next_end += self.stride as u64;
            return Some(self.clip());
        }
        None
    }

    /// At the end of a stream too short for one full window, a single clip padded by looping
    /// its frames (as I3D's own evaluation does), so a short file still gets classified.
    pub fn finish(&mut self) -> Option<Clip> {
        if self.emitted > 0 || self.buf.is_empty() {
            return None;
        }
        let real = self.buf.len();
        let mut clip = self.clip();
        clip.end = clip.start + real as f64 * self.period;
        let looped: Vec<Crop> = (0..self.frames)
            .map(|i| clip.frames[i % real].clone())
            .collect();
        clip.frames = looped;
        Some(clip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};

    fn crop(v: u8) -> Crop {
        vec![v; 3].into()
    }

    #[test]
    fn windows_slide_by_the_stride() {
        let mut w = ClipWindow::new(0, 4, 2, 25.0);
        let clips: Vec<Clip> = (0..10u8)
            .filter_map(|i| w.push(i as f64 / 25.0, crop(i)))
            .collect();
        let firsts: Vec<Vec<u8>> = clips
            .iter()
            .map(|c| c.frames.iter().map(|f| f[0]).collect())
            .collect();
        assert_eq!(
            firsts,
            vec![
                vec![0, 1, 2, 3],
                vec![2, 3, 4, 5],
                vec![4, 5, 6, 7],
                vec![6, 7, 8, 9]
            ]
        );
        assert!((clips[1].start - 0.08).abs() < 1e-9 && (clips[1].end - 0.24).abs() < 1e-9);
        assert_eq!(w.finish().map(|c| c.index), None);
    }

    #[test]
    fn a_stride_longer_than_the_window_skips_frames() {
        let mut w = ClipWindow::new(0, 2, 5, 25.0);
        let clips: Vec<Vec<u8>> = (0..12u8)
            .filter_map(|i| w.push(i as f64, crop(i)))
            .map(|c| c.frames.iter().map(|f| f[0]).collect())
            .collect();
        assert_eq!(clips, vec![vec![0, 1], vec![5, 6], vec![10, 11]]);
    }

    #[test]
    fn a_short_stream_gets_one_looped_clip() {
        let mut w = ClipWindow::new(3, 5, 5, 25.0);
        assert!(w.push(0.0, crop(7)).is_none());
        assert!(w.push(0.04, crop(8)).is_none());
        let c = w.finish().expect("one padded clip");
        assert_eq!(
            c.frames.iter().map(|f| f[0]).collect::<Vec<_>>(),
            vec![7, 8, 7, 8, 7]
        );
        assert_eq!(c.stream, 3);
        assert!((c.end - 0.08).abs() < 1e-9);
    }

    #[test]
    fn preprocessing_resizes_the_short_side_crops_the_centre_and_swaps_to_rgb() {
        // 640x360 BGR frame: left half blue, right half red. After resize to 455x256 and a
        // 224 centre crop, the crop's left edge is blue and its right edge red, as RGB.
        let mut img =
            Mat::new_rows_cols_with_default(360, 640, CV_8UC3, Scalar::new(255.0, 0.0, 0.0, 0.0))
                .unwrap();
        let mut right = Mat::roi_mut(&mut img, opencv::core::Rect::new(320, 0, 320, 360)).unwrap();
        right
            .set_to_def(&Scalar::new(0.0, 0.0, 255.0, 0.0))
            .unwrap();
        let mut p = Preprocess::new(256, 224);
        assert_eq!(p.resized_size(640, 360), (455, 256));
        let c = p.apply(&img).unwrap();
        assert_eq!(c.len(), 224 * 224 * 3);
        let px = |x: usize, y: usize| &c[(y * 224 + x) * 3..][..3];
        assert_eq!(px(0, 100), &[0, 0, 255]);
        assert_eq!(px(223, 100), &[255, 0, 0]);
    }
}
