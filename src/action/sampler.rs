//! Resampling to a target rate by nearest timestamp, as DeepMind's I3D preprocessing does: for
//! each target time k/fps (from the first input's time on), the decoded frame closest to it. A source slower than the target
//! repeats frames; a faster one skips them.

/// Streaming nearest-timestamp resampler over items of type `T`.
pub struct Sampler<T> {
    period: f64,
    next_k: u64,
    prev: Option<(f64, T)>,
    /// Gap between the last two inputs, to decide how far past the last frame it still counts.
    last_gap: f64,
}

impl<T: Clone> Sampler<T> {
    pub fn new(fps: f64) -> Sampler<T> {
        Sampler {
            period: 1.0 / fps,
            next_k: 0,
            prev: None,
            last_gap: 0.0,
        }
    }

    fn target(&self) -> f64 {
        self.next_k as f64 * self.period
    }

    /// Feeds one input at media time `t`; `emit(item, target_time)` runs for each output.
    pub fn push(&mut self, t: f64, item: T, mut emit: impl FnMut(&T, f64)) {
        match &self.prev {
            Some((tp, _)) if t <= *tp => return, // not monotonic: a duplicate adds nothing
            // The grid starts at the first input's slot, not at 0: a live source's first
            // frame arrives whenever the connection came up.
            None if self.next_k == 0 => {
                self.next_k = (t.max(0.0) / self.period + 1e-6).floor() as u64;
            }
            _ => {}
        }
        while self.target() <= t {
            let tk = self.target();
            match &self.prev {
                Some((tp, p)) if tk - tp < t - tk => emit(p, tk),
                _ => emit(&item, tk),
            }
            self.next_k += 1;
        }
        if let Some((tp, _)) = &self.prev {
            self.last_gap = t - tp;
        }
        self.prev = Some((t, item));
    }

    /// At the end of the input: targets while the last frame is still on screen (one frame
    /// interval after its timestamp) take it, so the output lasts as long as the input.
    pub fn finish(&mut self, mut emit: impl FnMut(&T, f64)) {
        if let Some((tp, p)) = self.prev.take() {
            while self.target() < tp + self.last_gap - 1e-9 {
                emit(&p, self.target());
                self.next_k += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fps_in: f64, n: usize, fps_out: f64) -> Vec<(usize, f64)> {
        let mut s = Sampler::new(fps_out);
        let mut out = Vec::new();
        for i in 0..n {
            s.push(i as f64 / fps_in, i, |&v, t| out.push((v, t)));
        }
        s.finish(|&v, t| out.push((v, t)));
        out
    }

    #[test]
    fn a_stream_that_starts_late_is_not_padded_back_to_zero() {
        // A camera whose first frame arrives 3.01 s after vigil started reading it.
        let mut s = Sampler::new(25.0);
        let mut out = Vec::new();
        for i in 0..10 {
            s.push(3.01 + i as f64 * 0.04, i, |v, t| out.push((*v, t)));
        }
        assert_eq!(out.len(), 10, "{out:?}");
        assert_eq!(out[0].0, 0);
        assert!((out[0].1 - 3.0).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn the_same_rate_keeps_every_frame_once() {
        let out = run(25.0, 50, 25.0);
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_faster_source_is_thinned_to_the_nearest_frames() {
        // 50 fps to 25 fps keeps the even frames, which sit exactly on the targets.
        let out = run(50.0, 100, 25.0);
        assert_eq!(out.len(), 50);
        assert!(out.iter().all(|(v, _)| v % 2 == 0));
    }

    #[test]
    fn a_slower_source_repeats_frames_and_keeps_the_duration() {
        // 2 s of 10 fps video becomes 2 s of 25 fps: 50 frames, each input used 2 or 3 times.
        let out = run(10.0, 20, 25.0);
        assert_eq!(out.len(), 50);
        for (v, t) in &out {
            if *t <= 1.9 {
                assert!(
                    (*v as f64 / 10.0 - t).abs() <= 0.05 + 1e-9,
                    "frame {v} used for target {t}"
                );
            } else {
                assert_eq!(
                    *v, 19,
                    "past the last frame, the last frame stays on screen"
                );
            }
        }
    }

    #[test]
    fn the_29_97_to_25_conversion_picks_the_nearest_frame() {
        // 300 frames at 29.97 fps last 10.01 s: 251 targets at 25 fps (0.00 to 10.00 s).
        let out = run(29.97, 300, 25.0);
        assert_eq!(out.len(), 251);
        for (v, t) in &out[..250] {
            assert!(
                (*v as f64 / 29.97 - t).abs() <= 0.5 / 29.97 + 1e-9,
                "frame {v} for target {t}"
            );
        }
        assert_eq!(out[250].0, 299);
    }
}
