//! What the gallery's own faces say about the match threshold: distances between two faces of
//! one person (genuine pairs) and of two people (impostor pairs), the threshold that keeps
//! false accepts at a target rate, and the false-accept and false-reject rates at the
//! configured threshold (docs/faces.md explains how to read them).
//!
//! A threshold at a false-accept rate (FAR) of 0.001 needs a thousand impostor pairs to mean
//! anything: with `n` pairs and none accepted, a rate below about `3 / n` cannot be shown (the
//! "rule of three"), so the report says plainly when the data are too few.

use serde::Serialize;

/// Fewest genuine pairs from which a false-reject rate is worth printing without a warning.
pub const MIN_GENUINE: usize = 10;
/// Histogram bin width, Euclidean distance.
pub const BIN: f32 = 0.05;
/// Histogram bins: distances from 0 to 1.5 (larger ones count in the last bin).
pub const BINS: usize = 30;

/// Distances of every pair of embeddings: same label (genuine) and different label (impostor).
pub fn pairs(labels: &[usize], embeddings: &[&[f32]]) -> (Vec<f32>, Vec<f32>) {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            let d = super::distance(embeddings[i], embeddings[j]);
            if labels[i] == labels[j] {
                genuine.push(d);
            } else {
                impostor.push(d);
            }
        }
    }
    (genuine, impostor)
}

/// The largest threshold at which at most `far` of the impostor distances fall below it (a
/// face is accepted when its distance is below the threshold): the `floor(far * n)`-th
/// smallest impostor distance. `None` without impostor pairs.
pub fn threshold_at_far(impostor: &[f32], far: f64) -> Option<f32> {
    let mut s = impostor.to_vec();
    s.sort_by(f32::total_cmp);
    let allowed = (far * s.len() as f64).floor() as usize;
    s.get(allowed.min(s.len().saturating_sub(1))).copied()
}

/// Fraction of `d` below `t` (accepted).
pub fn below(d: &[f32], t: f32) -> f64 {
    if d.is_empty() {
        return 0.0;
    }
    d.iter().filter(|&&x| x < t).count() as f64 / d.len() as f64
}

/// A distance distribution in a few numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pairs: usize,
    pub min: Option<f32>,
    pub p5: Option<f32>,
    pub median: Option<f32>,
    pub p95: Option<f32>,
    pub max: Option<f32>,
    /// Pairs per bin of [`BIN`] from 0 ([`BINS`] bins, the last open-ended).
    pub histogram: Vec<usize>,
}

fn summary(d: &[f32]) -> Summary {
    let mut s = d.to_vec();
    s.sort_by(f32::total_cmp);
    let q = |p: f64| (!s.is_empty()).then(|| s[((s.len() - 1) as f64 * p).round() as usize]);
    let mut histogram = vec![0; BINS];
    for &x in &s {
        histogram[((x / BIN) as usize).min(BINS - 1)] += 1;
    }
    Summary {
        pairs: s.len(),
        min: q(0.0),
        p5: q(0.05),
        median: q(0.5),
        p95: q(0.95),
        max: q(1.0),
        histogram,
    }
}

/// What `vigil gallery calibrate` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// The false-accept rate asked for.
    pub target_far: f64,
    /// The threshold that keeps false accepts at `target_far` on these pairs (`None` without
    /// impostor pairs).
    pub threshold: Option<f32>,
    /// False rejects at that threshold (`None` without genuine pairs).
    pub frr_at_threshold: Option<f64>,
    /// `faces.match_threshold`, and the rates measured at it.
    pub configured_threshold: f32,
    pub far_at_configured: Option<f64>,
    pub frr_at_configured: Option<f64>,
    pub genuine: Summary,
    pub impostor: Summary,
    /// Plain sentences when the data are too few to trust the figures.
    pub warnings: Vec<String>,
}

/// Calibrates from genuine and impostor distances.
pub fn calibrate(genuine: &[f32], impostor: &[f32], far: f64, configured: f32) -> Calibration {
    let threshold = threshold_at_far(impostor, far);
    let frr = |t: f32| (!genuine.is_empty()).then(|| 1.0 - below(genuine, t));
    let mut warnings = Vec::new();
    if genuine.is_empty() {
        warnings.push("no genuine pairs (two photos of one person): the false-reject rate cannot be estimated; enrol a second photo of some people".to_string());
    } else if genuine.len() < MIN_GENUINE {
        warnings.push(format!(
            "only {} genuine pair(s) (two photos of one person): the false-reject rate is a guess below {MIN_GENUINE}; enrol a second or third photo of more people",
            genuine.len()
        ));
    }
    let needed = (3.0 / far).ceil() as usize;
    if impostor.is_empty() {
        warnings.push("no impostor pairs (photos of two different people): no threshold can be set; enrol a second person".to_string());
    } else if impostor.len() < needed {
        warnings.push(format!(
            "only {} impostor pair(s) (photos of two people): a false-accept rate of {far} needs about {needed}; the threshold is then the distance of the closest two different people seen, and the real rate may be as high as {:.3}",
            impostor.len(),
            (3.0 / impostor.len().max(1) as f64).min(1.0)
        ));
    }
    Calibration {
        target_far: far,
        threshold,
        frr_at_threshold: threshold.and_then(frr),
        configured_threshold: configured,
        far_at_configured: (!impostor.is_empty()).then(|| below(impostor, configured)),
        frr_at_configured: frr(configured),
        genuine: summary(genuine),
        impostor: summary(impostor),
        warnings,
    }
}

/// True-accept rate at the threshold that keeps `far` on `impostor`: how often one person's
/// two faces match while strangers match at most that often. 0 without pairs of either kind.
pub fn tar_at_far(genuine: &[f32], impostor: &[f32], far: f64) -> f64 {
    match threshold_at_far(impostor, far) {
        Some(t) if !genuine.is_empty() => below(genuine, t),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_admits_at_most_the_target_share_of_impostors() {
        let impostor: Vec<f32> = (0..1000).map(|i| 0.5 + i as f32 * 0.001).collect();
        let genuine: Vec<f32> = (0..100).map(|i| 0.2 + i as f32 * 0.004).collect();
        let c = calibrate(&genuine, &impostor, 0.01, 0.6);
        let t = c.threshold.unwrap();
        assert!(below(&impostor, t) <= 0.01, "{t}");
        assert!(below(&impostor, t + 0.0011) > 0.01, "the largest such: {t}");
        // Genuine distances 0.2..0.596: those at or above t are rejected.
        let rejected = genuine.iter().filter(|&&g| g >= t).count() as f64 / 100.0;
        assert!((c.frr_at_threshold.unwrap() - rejected).abs() < 1e-9);
        assert!(rejected > 0.0);
        let far = c.far_at_configured.unwrap();
        assert!((far - 0.1).abs() <= 0.001, "0.5..0.6 of 0.5..1.5: {far}");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.genuine.histogram.iter().sum::<usize>(), 100);
    }

    #[test]
    fn too_few_pairs_are_said_plainly_and_none_give_no_threshold() {
        let c = calibrate(&[0.3], &[0.9, 1.0], 0.001, 0.6);
        assert_eq!(c.threshold, Some(0.9));
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[1].contains("needs about 3000"),
            "{:?}",
            c.warnings
        );
        let c = calibrate(&[], &[], 0.001, 0.6);
        assert_eq!(
            (c.threshold, c.far_at_configured, c.frr_at_configured),
            (None, None, None)
        );
    }

    #[test]
    fn pairs_split_by_label() {
        let e: Vec<Vec<f32>> = vec![vec![0.0, 0.0], vec![0.0, 0.3], vec![1.0, 0.0]];
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let (g, i) = pairs(&[7, 7, 8], &refs);
        assert_eq!(g.len(), 1);
        assert!((g[0] - 0.3).abs() < 1e-6);
        assert_eq!(i.len(), 2);
    }
}
