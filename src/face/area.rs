//! Shrinking a rectangle of a BGR 8-bit image with OpenCV's `INTER_AREA` weights, straight
//! into the planar RGB floats MTCNN's networks take.
//!
//! OpenCV's own area resize (the fractional-scale path, `ResizeArea_Invoker`) walks a table of
//! source-to-destination weights one pixel and channel at a time, and re-reads a source row
//! that straddles two destination rows for each of them: on the Hamilton clip's 640x360
//! frames the nine pyramid levels took about 8 ms a frame, about a fifth of a full search's CPU
//! time. Here the same weights are applied rows first: each source row is added into its one
//! or two destination rows' accumulators whole (a loop over contiguous bytes that the compiler
//! vectorises), and only the reduced row is then summed across, once per destination row. The
//! weights are OpenCV's (`computeResizeAreaTab`), and each value is rounded to an 8-bit level
//! as OpenCV's resize does, so the networks see what they saw before: only a value within
//! float rounding of a half can land on the other level (the test below compares with OpenCV).

/// A rectangle of a BGR 8-bit image whose rows start `step` bytes apart in `data`.
pub(super) struct View<'a> {
    pub data: &'a [u8],
    pub step: usize,
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl<'a> View<'a> {
    /// The rectangle at (`x`, `y`), `w` x `h`, of this view (inside it: the caller clips).
    pub fn part(&self, x: i32, y: i32, w: i32, h: i32) -> View<'a> {
        View {
            data: self.data,
            step: self.step,
            x: self.x + x as usize,
            y: self.y + y as usize,
            w: w as usize,
            h: h as usize,
        }
    }
}

/// The buffers one shrink works in, kept by the caller so a search's many levels and crops
/// reuse them instead of allocating four vectors each.
#[derive(Default)]
pub(super) struct Scratch {
    xs: Vec<(usize, usize, f32)>,
    ys: Vec<(usize, usize, f32)>,
    acc: Vec<f32>,
    across: Vec<f32>,
}

/// Fills `tab` with one axis's weights as OpenCV's `computeResizeAreaTab` makes them:
/// (destination index, source index, weight), in destination then source order; each
/// destination index is the mean of the source cells it covers.
fn weights(src: usize, dst: usize, tab: &mut Vec<(usize, usize, f32)>) {
    let scale = scale(src, dst).0;
    tab.clear();
    for d in 0..dst {
        let f1 = d as f64 * scale;
        let f2 = f1 + scale;
        let cell = scale.min(src as f64 - f1);
        let mut s2 = f2.floor() as usize;
        s2 = s2.min(src - 1);
        let s1 = (f1.ceil() as usize).min(s2);
        if s1 as f64 - f1 > 1e-3 {
            tab.push((d, s1 - 1, ((s1 as f64 - f1) / cell) as f32));
        }
        for s in s1..s2 {
            tab.push((d, s, (1.0 / cell) as f32));
        }
        if f2 - s2 as f64 > 1e-3 {
            tab.push((d, s2, ((f2 - s2 as f64).min(1.0).min(cell) / cell) as f32));
        }
    }
}

/// `v` (a weighted mean of 8-bit values) rounded half to even and saturated to 0..=255.
/// Adding and taking away 1.5 * 2^23 leaves no fraction bits, so the addition rounds as the
/// FPU does, to nearest even: what `round_ties_even` gives, without its call to `rintf` (x86-64's
/// baseline has no rounding instruction), which took a fifth of this module's time.
#[inline]
fn level(v: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    ((v + SHIFT) - SHIFT).clamp(0.0, 255.0)
}

/// OpenCV's scale of one axis, and whether it is a whole number (its fast path then).
fn scale(src: usize, dst: usize) -> (f64, bool) {
    let scale = 1.0 / (dst as f64 / src as f64);
    (scale, (scale - scale.round()).abs() < f64::EPSILON)
}

/// Appends `src` shrunk to `w` x `h` (each no larger than the source's) as planar RGB floats,
/// each value an 8-bit level. Returns false, appending nothing, where OpenCV's `INTER_AREA`
/// does something else and the caller lets OpenCV do it: when either side would grow (it
/// interpolates), and when both scales are whole numbers (its fast path, which sums in integers
/// and rounds halves up: a crop of 48 pixels to R-Net's 24).
pub(super) fn shrink_to_planar_rgb(
    src: &View,
    w: usize,
    h: usize,
    out: &mut Vec<f32>,
    scratch: &mut Scratch,
) -> bool {
    if w == 0 || h == 0 || w > src.w || h > src.h {
        return false;
    }
    if scale(src.w, w).1 && scale(src.h, h).1 {
        return false;
    }
    let Scratch {
        xs,
        ys,
        acc,
        across,
    } = scratch;
    weights(src.w, w, xs);
    weights(src.h, h, ys);
    let plane = w * h;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let planes = &mut out[start..];
    acc.clear();
    acc.resize(src.w * 3, 0.0);
    across.clear();
    across.resize(w * 3, 0.0);
    let mut flush = |dy: usize, acc: &mut [f32], planes: &mut [f32]| {
        across.iter_mut().for_each(|v| *v = 0.0);
        for &(dx, sx, a) in xs.iter() {
            let (d, s) = (&mut across[dx * 3..dx * 3 + 3], &acc[sx * 3..sx * 3 + 3]);
            d[0] += a * s[0];
            d[1] += a * s[1];
            d[2] += a * s[2];
        }
        for (dx, px) in across.chunks_exact(3).enumerate() {
            let i = dy * w + dx;
            // BGR in, RGB planes out; rounded half to even, as OpenCV's cvRound, and saturated.
            planes[i] = level(px[2]);
            planes[plane + i] = level(px[1]);
            planes[2 * plane + i] = level(px[0]);
        }
        acc.iter_mut().for_each(|v| *v = 0.0);
    };
    let mut current = 0;
    for &(dy, sy, b) in ys.iter() {
        if dy != current {
            flush(current, acc, planes);
            current = dy;
        }
        let row = &src.data[(src.y + sy) * src.step + src.x * 3..][..src.w * 3];
        for (a, &p) in acc.iter_mut().zip(row) {
            *a += b * p as f32;
        }
    }
    flush(current, acc, planes);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Mat, Rect, Size, CV_8UC3};
    use opencv::imgproc;
    use opencv::prelude::*;

    /// A 640x360 BGR image with edges, gradients and noise (a fixed generator: no flat areas
    /// where every method agrees).
    fn image() -> Mat {
        let (w, h) = (640, 360);
        let mut m = Mat::new_rows_cols_with_default(h, w, CV_8UC3, 0.into()).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let data = m.data_bytes_mut().unwrap();
        for y in 0..h as usize {
            for x in 0..w as usize {
                for c in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let noise = (seed % 61) as i32 - 30;
                    let base = ((x * (c + 1) + y * 2) % 256) as i32
                        + if (x / 37 + y / 23) % 2 == 0 { 60 } else { -60 };
                    data[(y * w as usize + x) * 3 + c] = (base + noise).clamp(0, 255) as u8;
                }
            }
        }
        m
    }

    /// OpenCV's INTER_AREA of `rect` to `w` x `h`, as planar RGB floats.
    fn opencv(img: &Mat, rect: Rect, w: i32, h: i32) -> Vec<f32> {
        let roi = Mat::roi(img, rect).unwrap();
        let mut small = Mat::default();
        imgproc::resize(
            &roi,
            &mut small,
            Size::new(w, h),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )
        .unwrap();
        let mut out = Vec::new();
        super::super::detector::push_planar_rgb(&small, &mut out).unwrap();
        out
    }

    #[test]
    fn shrinking_gives_opencvs_inter_area_levels() {
        let img = image();
        let step = img.mat_step().first().copied().unwrap();
        let data = img.data_bytes().unwrap();
        // The MTCNN pyramid of a 640x360 frame, whole-number scales (2 and 3: left to OpenCV),
        // and crops of odd rectangles to R-Net's and O-Net's sides (one not square, clipped at
        // a border; those of 48 to 24 and 48 are whole-number scales too).
        let mut cases: Vec<(Rect, i32, i32)> = Vec::new();
        let mut scale = 0.6f32;
        while 360.0 * scale >= 12.0 {
            let full = Rect::new(0, 0, 640, 360);
            cases.push((
                full,
                (640.0 * scale + 1.0) as i32,
                (360.0 * scale + 1.0) as i32,
            ));
            scale *= 0.709;
        }
        cases.push((Rect::new(0, 0, 640, 360), 320, 120));
        for (x, y, s) in [
            (5, 7, 29),
            (100, 40, 57),
            (300, 150, 113),
            (17, 3, 48),
            (401, 99, 211),
        ] {
            cases.push((Rect::new(x, y, s, s), 24, 24));
            cases.push((Rect::new(x, y, s, s), 48, 48));
        }
        cases.push((Rect::new(590, 300, 50, 60), 24, 24));
        let (mut values, mut off) = (0usize, 0usize);
        let mut scratch = Scratch::default();
        for (rect, w, h) in cases {
            if rect.width < w || rect.height < h {
                continue;
            }
            let want = opencv(&img, rect, w, h);
            let view = View {
                data,
                step,
                x: rect.x as usize,
                y: rect.y as usize,
                w: rect.width as usize,
                h: rect.height as usize,
            };
            let mut got = vec![7.0]; // appended after what is there
            if rect.width % w == 0 && rect.height % h == 0 {
                assert!(!shrink_to_planar_rgb(
                    &view,
                    w as usize,
                    h as usize,
                    &mut got,
                    &mut scratch
                ));
                assert_eq!(got, [7.0], "{rect:?} to {w}x{h} is left to OpenCV");
                continue;
            }
            assert!(shrink_to_planar_rgb(
                &view,
                w as usize,
                h as usize,
                &mut got,
                &mut scratch
            ));
            assert_eq!(got.len(), want.len() + 1, "{rect:?} to {w}x{h}");
            assert_eq!(got[0], 7.0);
            for (g, o) in got[1..].iter().zip(&want) {
                assert!((g - o).abs() <= 1.0, "{rect:?} to {w}x{h}: {g} against {o}");
                off += usize::from(g != o);
            }
            values += want.len();
        }
        assert!(values > 500_000, "{values} values compared");
        assert!(
            off * 10_000 <= values,
            "{off} of {values} values differ from OpenCV's by a level"
        );
    }

    #[test]
    fn levels_round_half_to_even_and_saturate() {
        for v in [
            0.0f32, 0.5, 1.5, 2.5, 2.4999, 127.5, 128.5, 254.5, 254.51, 255.4, 300.0, -0.6,
        ] {
            assert_eq!(level(v), v.round_ties_even().clamp(0.0, 255.0), "{v}");
        }
    }

    #[test]
    fn growing_either_side_and_whole_number_scales_are_left_to_opencv() {
        let data = [0u8; 30 * 20 * 3];
        let view = View {
            data: &data,
            step: 90,
            x: 0,
            y: 0,
            w: 30,
            h: 20,
        };
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        let mut shrink =
            |w, h, out: &mut Vec<f32>| shrink_to_planar_rgb(&view, w, h, out, &mut scratch);
        assert!(!shrink(31, 10, &mut out));
        assert!(!shrink(10, 21, &mut out));
        assert!(!shrink(30, 20, &mut out));
        assert!(!shrink(15, 10, &mut out));
        assert!(out.is_empty());
        assert!(shrink(29, 20, &mut out));
        assert_eq!(out.len(), 29 * 20 * 3);
    }
}
