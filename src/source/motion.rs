//! The motion gate's detector: frame differencing at low resolution against a running-average
//! background, as Frigate's motion detector does.
//!
//! Each frame is shrunk (bilinear, at most [`WIDTH`] pixels wide), turned grey and blurred;
//! a pixel *changed* when it differs from the background by more than `threshold` grey levels,
//! and the frame *moves* when more than `min_area` of its pixels changed. The background follows
//! the frames with a time constant of [`ADAPT_S`] media seconds, so light that changes slowly
//! (dawn, a cloud) never counts, and something that stops moving becomes background. Shrinking
//! averages a few pixels and the 5x5 blur 25 of those: sensor noise, independent from pixel to
//! pixel and frame to frame, is cut to a fraction of its size, well below a threshold.
//!
//! The gate is *open* while frames move and for `hold` after the last one that did, and for
//! `hold` after the first frame (a stream, or a new epoch after a reconnection, starts open, so
//! what is in view then is looked at once even if it never moves).

use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;

/// Widest frame the detector looks at, pixels (a 1280x720 frame becomes 160x90).
pub const WIDTH: i32 = 160;
/// Time constant of the background's running average, media seconds.
pub const ADAPT_S: f64 = 0.5;

/// The detector's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionParams {
    /// Grey levels a pixel must differ from the background by to count as changed.
    pub threshold: u8,
    /// Fraction of the pixels that must change for the frame to move.
    pub min_area: f64,
    /// Seconds the gate stays open after the last motion.
    pub hold_s: f64,
}

impl MotionParams {
    pub fn from_config(c: &crate::config::MotionConfig) -> MotionParams {
        MotionParams {
            threshold: c.threshold,
            min_area: c.min_area,
            hold_s: c.hold_ms as f64 / 1000.0,
        }
    }
}

/// What one frame showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    /// This frame moved.
    pub moving: bool,
    /// The gate is open: this frame moved, or one did less than `hold` ago, or the stream
    /// started less than `hold` ago.
    pub open: bool,
    /// Fraction of the pixels that changed.
    pub changed: f64,
}

/// One stream's motion detector.
pub struct MotionDetector {
    p: MotionParams,
    small: Mat,
    grey: Mat,
    blurred: Mat,
    /// The background, one value per pixel of the shrunk frame (empty before the first frame).
    background: Vec<f32>,
    size: Size,
    last_pts: f64,
    /// Media time until which the gate stays open.
    open_until: f64,
}

impl MotionDetector {
    pub fn new(p: MotionParams) -> MotionDetector {
        MotionDetector {
            p,
            small: Mat::default(),
            grey: Mat::default(),
            blurred: Mat::default(),
            background: Vec::new(),
            size: Size::new(0, 0),
            last_pts: 0.0,
            open_until: f64::NEG_INFINITY,
        }
    }

    /// Forgets the background (a new epoch: another connection, another pass): the next frame
    /// starts afresh, with the gate open.
    pub fn reset(&mut self) {
        self.background.clear();
    }

    /// Looks at the frame shown at media time `pts` (BGR or grey, 8 bits).
    pub fn update(&mut self, pts: f64, image: &Mat) -> opencv::Result<Motion> {
        let (w, h) = (image.cols(), image.rows());
        if w <= 0 || h <= 0 {
            return Err(opencv::Error::new(
                opencv::core::StsBadArg,
                "an empty frame".to_string(),
            ));
        }
        let size = if w > WIDTH {
            Size::new(
                WIDTH,
                ((h as f64 * WIDTH as f64 / w as f64).round() as i32).max(1),
            )
        } else {
            Size::new(w, h)
        };
        let grey_src = if size.width != w || size.height != h {
            // Bilinear: it reads only the pixels next to each output pixel, so it costs the same
            // whatever the frame's size (INTER_AREA reads them all: 7x the time at 640x360).
            // The noise it keeps, the blur takes out.
            imgproc::resize(
                image,
                &mut self.small,
                size,
                0.0,
                0.0,
                imgproc::INTER_LINEAR,
            )?;
            &self.small
        } else {
            image
        };
        let grey = if grey_src.channels() == 3 {
            imgproc::cvt_color_def(grey_src, &mut self.grey, imgproc::COLOR_BGR2GRAY)?;
            &self.grey
        } else {
            grey_src
        };
        imgproc::gaussian_blur_def(grey, &mut self.blurred, Size::new(5, 5), 0.0)?;
        let px = self.blurred.data_bytes()?;
        if self.background.len() != px.len() || self.size != size {
            // The first frame (or the first after a reset or a change of size) is background.
            self.background = px.iter().map(|&v| v as f32).collect();
            self.size = size;
            self.last_pts = pts;
            self.open_until = pts + self.p.hold_s;
            return Ok(Motion {
                moving: false,
                open: true,
                changed: 0.0,
            });
        }
        let dt = (pts - self.last_pts).clamp(0.001, 1.0);
        self.last_pts = pts;
        let alpha = (1.0 - (-dt / ADAPT_S).exp()) as f32;
        let threshold = self.p.threshold as f32;
        let mut changed = 0usize;
        for (b, &v) in self.background.iter_mut().zip(px) {
            let d = v as f32 - *b;
            changed += usize::from(d.abs() > threshold);
            *b += alpha * d;
        }
        let changed = changed as f64 / px.len() as f64;
        let moving = changed > self.p.min_area;
        if moving {
            self.open_until = self.open_until.max(pts + self.p.hold_s);
        }
        Ok(Motion {
            moving,
            open: moving || pts <= self.open_until,
            changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Rect, Scalar, CV_8UC3};

    /// A fixed, textured 640x360 scene (so that noise and motion have something to act on).
    fn scene() -> Mat {
        let mut m = Mat::new_rows_cols_with_default(360, 640, CV_8UC3, Scalar::all(0.0)).unwrap();
        let data = m.data_bytes_mut().unwrap();
        for (i, px) in data.chunks_exact_mut(3).enumerate() {
            let (x, y) = (i % 640, i / 640);
            let v = (64 + (x / 20 + y / 15) % 4 * 30 + (x * 7 + y * 3) % 23) as u8;
            px.copy_from_slice(&[v, v.wrapping_add(10), v.wrapping_sub(5)]);
        }
        m
    }

    /// Deterministic normal deviates (Box-Muller over SplitMix64).
    struct Noise(u64);
    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-12), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// `base` plus Gaussian noise of standard deviation `sigma`, fresh for every pixel and
    /// channel, and `offset` grey levels added everywhere.
    fn noisy(base: &Mat, sigma: f64, offset: f64, rng: &mut Noise) -> Mat {
        let mut m = base.try_clone().unwrap();
        for v in m.data_bytes_mut().unwrap() {
            *v = (*v as f64 + offset + sigma * rng.normal())
                .round()
                .clamp(0.0, 255.0) as u8;
        }
        m
    }

    fn params() -> MotionParams {
        MotionParams::from_config(&crate::config::MotionConfig::default())
    }

    #[test]
    fn sensor_noise_on_a_still_frame_is_not_motion() {
        let (base, mut rng) = (scene(), Noise(1));
        let mut d = MotionDetector::new(params());
        let mut worst: f64 = 0.0;
        for i in 0..75 {
            let m = d
                .update(i as f64 / 25.0, &noisy(&base, 8.0, 0.0, &mut rng))
                .unwrap();
            if i > 0 {
                assert!(!m.moving, "frame {i}: {m:?}");
                worst = worst.max(m.changed);
            }
            // Open for the hold after the start (2 s), closed after.
            assert_eq!(m.open, i as f64 / 25.0 <= 2.0, "frame {i}: {m:?}");
        }
        assert!(worst < params().min_area, "{worst}");
    }

    #[test]
    fn a_moving_block_is_motion_and_the_gate_holds_after_it_stops() {
        let (base, mut rng) = (scene(), Noise(2));
        let mut d = MotionDetector::new(params());
        let mut log = Vec::new();
        // 4 s still, 1 s of a 60x60 block crossing the frame, then 3 s still again.
        for i in 0..200 {
            let t = i as f64 / 25.0;
            let mut f = noisy(&base, 4.0, 0.0, &mut rng);
            if (100..125).contains(&i) {
                let x = 50 + (i - 100) * 20;
                Mat::roi_mut(&mut f, Rect::new(x, 150, 60, 60))
                    .unwrap()
                    .set_to_def(&Scalar::new(250.0, 250.0, 250.0, 0.0))
                    .unwrap();
            }
            log.push((i, t, d.update(t, &f).unwrap()));
        }
        // Every frame with the block moves; none before it. Once it has gone, the background
        // forgets it within a second (where it stood it had begun to blend in).
        let last = log
            .iter()
            .filter(|l| l.2.moving)
            .map(|l| l.1)
            .fold(0.0, f64::max);
        assert!((4.96..6.0).contains(&last), "last motion at {last} s");
        for (i, t, m) in &log {
            assert_eq!(
                m.moving,
                (100..125).contains(i) || *t <= last && *i >= 100,
                "at {t} s: {m:?}"
            );
            // Open for the hold after the start, and from the block until the hold after it.
            let open = *t <= 2.0 || (4.0..=last + 2.0 + 1e-9).contains(t);
            assert_eq!(m.open, open, "at {t} s: {m:?}");
        }
    }

    #[test]
    fn a_slow_change_of_light_is_not_motion_a_sudden_one_is() {
        let (base, mut rng) = (scene(), Noise(3));
        let mut d = MotionDetector::new(params());
        // 40 grey levels brighter over 5 s (8 a second), with noise.
        for i in 0..=125 {
            let t = i as f64 / 25.0;
            let m = d
                .update(t, &noisy(&base, 4.0, 40.0 * t / 5.0, &mut rng))
                .unwrap();
            assert!(!m.moving, "at {t} s: {m:?}");
        }
        // The lights go off: 40 levels at once.
        let m = d.update(5.04, &noisy(&base, 4.0, 0.0, &mut rng)).unwrap();
        assert!(m.moving && m.open, "{m:?}");
    }

    #[test]
    fn a_reset_starts_a_new_background_with_the_gate_open() {
        let mut d = MotionDetector::new(params());
        let base = scene();
        for i in 0..100 {
            d.update(i as f64 / 25.0, &base).unwrap();
        }
        assert!(!d.update(4.0, &base).unwrap().open);
        d.reset();
        // Another scene after the reset: background, not motion, and the gate opens anew.
        let other = noisy(&base, 0.0, 60.0, &mut Noise(4));
        let m = d.update(4.04, &other).unwrap();
        assert!(!m.moving && m.open, "{m:?}");
        assert!(!d.update(4.08, &other).unwrap().moving);
    }

    #[test]
    fn small_and_grey_frames_are_taken_as_they_are() {
        let mut d = MotionDetector::new(params());
        let grey =
            Mat::new_rows_cols_with_default(48, 64, opencv::core::CV_8UC1, Scalar::all(100.0))
                .unwrap();
        d.update(0.0, &grey).unwrap();
        let mut moved = grey.try_clone().unwrap();
        Mat::roi_mut(&mut moved, Rect::new(0, 0, 32, 24))
            .unwrap()
            .set_to_def(&Scalar::all(200.0))
            .unwrap();
        let m = d.update(0.04, &moved).unwrap();
        assert!(m.moving && m.changed > 0.1, "{m:?}");
        assert!(d.update(0.08, &Mat::default()).is_err());
    }
}
