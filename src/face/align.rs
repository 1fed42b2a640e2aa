//! Alignment: the least-squares similarity (rotation, uniform scale, translation; never a
//! reflection) that takes MTCNN's five points onto the template of the dlib embedder's chip,
//! then a bilinear warp to that chip. Like dlib, the image is halved first while the warp
//! would shrink the face by more than 2x, so the chip is not aliased.

use opencv::core::{Mat, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;

/// dlib's `get_face_chip(size=150, padding=0.25)` positions of the five MTCNN points, in
/// chip pixels (MODELS.md section 3).
pub const DLIB_TEMPLATE_150: [[f64; 2]; 5] = [
    [47.549, 46.599],
    [100.476, 46.599],
    [74.013, 76.563],
    [50.415, 103.023],
    [97.610, 103.023],
];

/// `dst = a * src + t` with `a` a complex number (scale and rotation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a_re: f64,
    pub a_im: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    pub fn scale(&self) -> f64 {
        self.a_re.hypot(self.a_im)
    }

    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.a_re * p[0] - self.a_im * p[1] + self.tx,
            self.a_im * p[0] + self.a_re * p[1] + self.ty,
        ]
    }
}

/// Least-squares similarity from `src` to `dst` (Umeyama's solution restricted to 2-D, where
/// it has this closed form in complex numbers: a = sum(conj(z) w) / sum(|z|^2) on centred
/// points). No reflection can come out of it.
pub fn fit_similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Similarity {
    let n = src.len() as f64;
    let mean = |p: &[[f64; 2]]| {
        p.iter()
            .fold([0.0, 0.0], |m, q| [m[0] + q[0] / n, m[1] + q[1] / n])
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut num_re, mut num_im, mut den) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (zx, zy) = (s[0] - ms[0], s[1] - ms[1]);
        let (wx, wy) = (d[0] - md[0], d[1] - md[1]);
        // conj(z) * w
        num_re += zx * wx + zy * wy;
        num_im += zx * wy - zy * wx;
        den += zx * zx + zy * zy;
    }
    let (a_re, a_im) = if den > 0.0 {
        (num_re / den, num_im / den)
    } else {
        (1.0, 0.0)
    };
    let t = [
        md[0] - (a_re * ms[0] - a_im * ms[1]),
        md[1] - (a_im * ms[0] + a_re * ms[1]),
    ];
    Similarity {
        a_re,
        a_im,
        tx: t[0],
        ty: t[1],
    }
}

/// Warps the face with landmarks `points` (image pixels) in `bgr` to a `size` x `size` chip,
/// returned as interleaved RGB bytes.
pub fn chip(bgr: &Mat, points: &[[f32; 2]; 5], size: i32) -> opencv::Result<Vec<u8>> {
    let scale_t = size as f64 / 150.0;
    let dst: Vec<[f64; 2]> = DLIB_TEMPLATE_150
        .iter()
        .map(|p| [p[0] * scale_t, p[1] * scale_t])
        .collect();
    let mut src: Vec<[f64; 2]> = points.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let mut t = fit_similarity(&src, &dst);
    let mut halved = Mat::default();
    let mut img: &Mat = bgr;
    let mut tmp = Mat::default();
    while t.scale() < 0.5 && img.cols() > 2 * size && img.rows() > 2 * size {
        imgproc::pyr_down_def(img, &mut tmp)?;
        std::mem::swap(&mut halved, &mut tmp);
        img = &halved;
        // pyrDown maps pixel centre x to (x - 0.5) / 2 in the smaller image's centres.
        for p in &mut src {
            *p = [(p[0] + 0.5) / 2.0 - 0.5, (p[1] + 0.5) / 2.0 - 0.5];
        }
        t = fit_similarity(&src, &dst);
    }
    let m = Mat::from_slice_2d(&[[t.a_re, -t.a_im, t.tx], [t.a_im, t.a_re, t.ty]])?;
    let mut out = Mat::default();
    imgproc::warp_affine(
        img,
        &mut out,
        &m,
        Size::new(size, size),
        imgproc::INTER_LINEAR,
        opencv::core::BORDER_CONSTANT,
        Scalar::all(0.0),
    )?;
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&out, &mut rgb, imgproc::COLOR_BGR2RGB)?;
    Ok(rgb.data_bytes()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_rotation_scale_and_shift() {
        let truth = Similarity {
            a_re: 0.5 * 0.3f64.cos(),
            a_im: 0.5 * 0.3f64.sin(),
            tx: 12.0,
            ty: -7.0,
        };
        let src = [
            [10.0, 20.0],
            [60.0, 22.0],
            [35.0, 50.0],
            [15.0, 80.0],
            [58.0, 81.0],
        ];
        let dst: Vec<[f64; 2]> = src.iter().map(|p| truth.apply(*p)).collect();
        let t = fit_similarity(&src, &dst);
        for (a, b) in [
            (t.a_re, truth.a_re),
            (t.a_im, truth.a_im),
            (t.tx, truth.tx),
            (t.ty, truth.ty),
        ] {
            assert!((a - b).abs() < 1e-9, "{t:?} vs {truth:?}");
        }
    }

    #[test]
    fn a_mirrored_face_is_not_matched_by_a_reflection() {
        // The best fit to a mirror image would be a reflection at full scale; a similarity can
        // only shrink towards the centroid instead.
        let src = [
            [10.0, 20.0],
            [60.0, 22.0],
            [35.0, 50.0],
            [15.0, 80.0],
            [58.0, 81.0],
        ];
        let dst: Vec<[f64; 2]> = src.iter().map(|p| [-p[0], p[1]]).collect();
        assert!(fit_similarity(&src, &dst).scale() < 0.9);
    }

    #[test]
    fn the_chip_puts_the_landmarks_on_the_template() {
        use opencv::core::{Point, CV_8UC3};
        // Landmarks at twice the template size, shifted: white dots on black, 400x400.
        let mut img = Mat::new_rows_cols_with_default(400, 400, CV_8UC3, Scalar::all(0.0)).unwrap();
        let pts: Vec<[f32; 2]> = DLIB_TEMPLATE_150
            .iter()
            .map(|p| [(p[0] * 2.0 + 50.0) as f32, (p[1] * 2.0 + 30.0) as f32])
            .collect();
        for p in &pts {
            imgproc::circle(
                &mut img,
                Point::new(p[0].round() as i32, p[1].round() as i32),
                4,
                Scalar::all(255.0),
                -1,
                imgproc::LINE_8,
                0,
            )
            .unwrap();
        }
        let chip = chip(&img, &pts.try_into().unwrap(), 150).unwrap();
        assert_eq!(chip.len(), 150 * 150 * 3);
        for p in DLIB_TEMPLATE_150 {
            let (x, y) = (p[0].round() as usize, p[1].round() as usize);
            assert!(chip[(y * 150 + x) * 3] > 200, "no landmark at {x},{y}");
        }
        let dark = chip[(10 * 150 + 10) * 3];
        assert_eq!(dark, 0, "the background stays black");
    }
}
