//! Custom actions: actions the user teaches from a few example clips, scored on the action
//! model's pooled `features` output (docs/actions.md).
//!
//! Each action is a prototype: the mean of its examples' feature vectors, each example the
//! mean of its clips' L2-normalised features. A clip's score is its cosine similarity to the
//! prototype, mapped through a logistic so that the taught threshold becomes 0.5:
//! `1 / (1 + exp(-(cos - threshold) / TEMPERATURE))`. A prototype rather than a linear head:
//! with one to a handful of examples a linear head has 1024 weights to fit from a few points
//! and needs negatives to mean anything, while a prototype needs neither and its one free
//! number, the threshold, is set from held-out scores.
//!
//! The threshold comes from leave-one-out scores: each example's clips against the prototype
//! of the other examples (with a single example: each of its clips against the mean of its
//! other clips), and each negative's clips against the whole prototype. It is the cut that
//! classifies most of those clips right (balanced over positives and negatives), in the middle
//! of the widest gap among equally good cuts. Without negatives it sits `NO_NEGATIVE_MARGIN`
//! below the lowest held-out positive. The reported accuracy is a proper leave-one-out: each
//! example and each negative is held out in turn, prototype and threshold are fitted on the
//! rest, and the held-out clips are classified.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The custom-actions file's format version.
pub const FILE_VERSION: u32 = 1;
/// Width of the logistic that maps cosine similarity to a score: 0.04 above the threshold
/// scores 0.88, 0.04 below 0.12.
pub const TEMPERATURE: f32 = 0.02;
/// Without negatives: how far below the lowest held-out positive the threshold goes.
pub const NO_NEGATIVE_MARGIN: f32 = 0.05;

/// Events of custom actions carry this `source`; the model's own labels carry the model's.
pub const SOURCE: &str = "custom";

/// One taught action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomAction {
    pub name: String,
    /// Unit-length mean feature of the examples.
    pub prototype: Vec<f32>,
    /// Cosine similarity at which the score is 0.5.
    pub threshold: f32,
    /// How the threshold was found, and how well it did.
    pub calibration: Calibration,
    /// The example and negative files, as given.
    pub examples: Vec<String>,
    #[serde(default)]
    pub negatives: Vec<String>,
}

/// What teaching measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// `leave_one_out` (negatives given) or `no_negatives`.
    pub method: String,
    /// Held-out clip scores (cosine) of the examples, and of the negatives.
    pub positive_scores: Vec<f32>,
    pub negative_scores: Vec<f32>,
    /// Held-out clips on the right side of the threshold.
    pub positives_above: usize,
    pub negatives_below: usize,
    /// Leave-one-out accuracy over clips, each example or negative held out in turn with the
    /// prototype and threshold fitted on the rest; absent when there is too little to hold
    /// out (fewer than two examples, or no negatives).
    pub loo_accuracy: Option<f32>,
}

/// The custom-actions file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomFile {
    pub version: u32,
    /// The model whose features the prototypes live in (its file stem).
    pub model: String,
    pub dim: usize,
    pub actions: Vec<CustomAction>,
}

#[derive(Debug, thiserror::Error)]
pub enum CustomError {
    #[error("{}: cannot read the custom-actions file: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: the custom-actions file is damaged: {reason} (fix it, or move it away and teach again)", .path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("{}: cannot write the custom-actions file: {reason}", .path.display())]
    Write { path: PathBuf, reason: String },
    #[error("{}: its actions were taught on the features of {file_model} ({file_dim}-d), but the configured model is {model} ({dim}-d); teach them again", .path.display())]
    Model {
        path: PathBuf,
        file_model: String,
        file_dim: usize,
        model: String,
        dim: usize,
    },
}

/// The default custom-actions file of a config: `<stem>.actions.json` beside it.
pub fn default_path(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map_or("vigil".into(), |s| s.to_string_lossy().into_owned());
    config.with_file_name(format!("{stem}.actions.json"))
}

impl CustomFile {
    pub fn empty(model: &str, dim: usize) -> CustomFile {
        CustomFile {
            version: FILE_VERSION,
            model: model.into(),
            dim,
            actions: Vec::new(),
        }
    }

    /// Reads `path`; `None` when there is no such file. A file that does not parse or whose
    /// values are out of shape is refused, naming it.
    pub fn load(path: &Path) -> Result<Option<CustomFile>, CustomError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CustomError::Read {
                    path: path.into(),
                    reason: e.to_string(),
                })
            }
        };
        let damaged = |reason: String| CustomError::Damaged {
            path: path.into(),
            reason,
        };
        let f: CustomFile = serde_json::from_slice(&text).map_err(|e| damaged(e.to_string()))?;
        f.check().map_err(damaged)?;
        Ok(Some(f))
    }

    fn check(&self) -> Result<(), String> {
        if self.version != FILE_VERSION {
            return Err(format!(
                "version {} (this vigil reads {FILE_VERSION})",
                self.version
            ));
        }
        if self.dim == 0 {
            return Err("dim is 0".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.actions.iter().enumerate() {
            if let Err(e) = check_name(&a.name) {
                return Err(format!("actions[{i}].name: {e}"));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(format!("actions[{i}]: the name {:?} comes twice", a.name));
            }
            if a.prototype.len() != self.dim {
                return Err(format!(
                    "actions[{i}] ({}): prototype has {} values, dim is {}",
                    a.name,
                    a.prototype.len(),
                    self.dim
                ));
            }
            let norm = a.prototype.iter().map(|v| v * v).sum::<f32>().sqrt();
            if !a.prototype.iter().all(|v| v.is_finite()) || (norm - 1.0).abs() > 1e-3 {
                return Err(format!(
                    "actions[{i}] ({}): prototype is not a finite unit vector",
                    a.name
                ));
            }
            if !a.threshold.is_finite() || !(-1.0..=1.0).contains(&a.threshold) {
                return Err(format!(
                    "actions[{i}] ({}): threshold {} is not a cosine in -1..1",
                    a.name, a.threshold
                ));
            }
        }
        Ok(())
    }

    /// Refuses a file taught on another model.
    pub fn check_model(&self, path: &Path, model: &str, dim: usize) -> Result<(), CustomError> {
        if self.model != model || self.dim != dim {
            return Err(CustomError::Model {
                path: path.into(),
                file_model: self.model.clone(),
                file_dim: self.dim,
                model: model.into(),
                dim,
            });
        }
        Ok(())
    }

    /// Writes the file crash-safely (temporary, fsync, rename). A symbolic link at `path` is
    /// refused rather than followed.
    pub fn save(&self, path: &Path) -> Result<(), CustomError> {
        let err = |reason: String| CustomError::Write {
            path: path.into(),
            reason,
        };
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.file_type().is_symlink() {
                return Err(err(
                    "it is a symbolic link; vigil does not write through links".into(),
                ));
            }
        }
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        crate::durable::replace(path, |w| std::io::Write::write_all(w, &json))
            .map_err(|e| err(e.to_string()))
    }
}

/// A name must be printable, 1..=64 characters, and not start or end with spaces.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 64 {
        return Err("must be 1..=64 characters".into());
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err("must be printable, without leading or trailing spaces".into());
    }
    Ok(())
}

/// Scores clips against every action of a file.
#[derive(Debug, Clone)]
pub struct CustomScorer {
    pub names: Vec<String>,
    prototypes: Vec<Vec<f32>>,
    thresholds: Vec<f32>,
    pub dim: usize,
}

impl CustomScorer {
    pub fn new(file: &CustomFile) -> CustomScorer {
        CustomScorer {
            names: file.actions.iter().map(|a| a.name.clone()).collect(),
            prototypes: file.actions.iter().map(|a| a.prototype.clone()).collect(),
            thresholds: file.actions.iter().map(|a| a.threshold).collect(),
            dim: file.dim,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Each action's score (0..1, 0.5 at its threshold) for one clip's features.
    pub fn score(&self, features: &[f32]) -> Vec<f32> {
        let f = normalised(features);
        self.prototypes
            .iter()
            .zip(&self.thresholds)
            .map(|(p, t)| logistic(dot(&f, p), *t))
            .collect()
    }
}

/// The score of a cosine similarity against a threshold.
pub fn logistic(cos: f32, threshold: f32) -> f32 {
    1.0 / (1.0 + (-(cos - threshold) / TEMPERATURE).exp())
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `v` scaled to unit length (zeros stay zeros).
pub fn normalised(v: &[f32]) -> Vec<f32> {
    let n = dot(v, v).sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter().map(|x| x / n).collect()
    } else {
        vec![0.0; v.len()]
    }
}

/// The unit-length mean of unit vectors.
fn mean_direction<'a>(vs: impl IntoIterator<Item = &'a Vec<f32>>, dim: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; dim];
    for v in vs {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    normalised(&sum)
}

/// One example (or negative): its clips' normalised features.
#[derive(Debug, Clone)]
pub struct Example {
    pub clips: Vec<Vec<f32>>,
}

impl Example {
    pub fn new(features: &[Vec<f32>]) -> Example {
        Example {
            clips: features.iter().map(|f| normalised(f)).collect(),
        }
    }

    fn direction(&self, dim: usize) -> Vec<f32> {
        mean_direction(&self.clips, dim)
    }
}

/// A fitted action: prototype and threshold, with the held-out scores behind the threshold.
#[derive(Debug, Clone)]
pub struct Fit {
    pub prototype: Vec<f32>,
    pub threshold: f32,
    pub positive_scores: Vec<f32>,
    pub negative_scores: Vec<f32>,
}

/// Fits a prototype and its threshold. `positives` must not be empty, nor its clips.
pub fn fit(positives: &[&Example], negatives: &[&Example], dim: usize) -> Fit {
    let dirs: Vec<Vec<f32>> = positives.iter().map(|e| e.direction(dim)).collect();
    let prototype = mean_direction(&dirs, dim);
    let mut positive_scores = Vec::new();
    if positives.len() >= 2 {
        for (i, e) in positives.iter().enumerate() {
            let rest = mean_direction(
                dirs.iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, d)| d),
                dim,
            );
            positive_scores.extend(e.clips.iter().map(|c| dot(c, &rest)));
        }
    } else {
        let clips = &positives[0].clips;
        for (i, c) in clips.iter().enumerate() {
            if clips.len() == 1 {
                // One clip in all: nothing to hold it out against but itself.
                positive_scores.push(dot(c, &prototype));
                continue;
            }
            let rest = mean_direction(
                clips
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, d)| d),
                dim,
            );
            positive_scores.push(dot(c, &rest));
        }
    }
    let negative_scores: Vec<f32> = negatives
        .iter()
        .flat_map(|e| e.clips.iter().map(|c| dot(c, &prototype)))
        .collect();
    let threshold = choose_threshold(&positive_scores, &negative_scores);
    Fit {
        prototype,
        threshold,
        positive_scores,
        negative_scores,
    }
}

/// The cut with the best balanced accuracy, in the middle of the widest gap among the best.
pub fn choose_threshold(pos: &[f32], neg: &[f32]) -> f32 {
    let lowest_pos = pos.iter().copied().fold(f32::INFINITY, f32::min);
    if neg.is_empty() {
        return (lowest_pos - NO_NEGATIVE_MARGIN).clamp(-1.0, 1.0);
    }
    let mut all: Vec<f32> = pos.iter().chain(neg).copied().collect();
    all.sort_by(f32::total_cmp);
    all.dedup();
    // Candidate cuts: between each pair of neighbouring scores, and beyond both ends.
    let mut cuts = vec![(all[0] - NO_NEGATIVE_MARGIN, NO_NEGATIVE_MARGIN)];
    for w in all.windows(2) {
        cuts.push(((w[0] + w[1]) / 2.0, (w[1] - w[0]) / 2.0));
    }
    cuts.push((all[all.len() - 1] + NO_NEGATIVE_MARGIN, NO_NEGATIVE_MARGIN));
    let balanced = |t: f32| {
        let tp = pos.iter().filter(|&&s| s >= t).count() as f32 / pos.len() as f32;
        let tn = neg.iter().filter(|&&s| s < t).count() as f32 / neg.len() as f32;
        (tp + tn) / 2.0
    };
    let mut best = (f32::MIN, f32::MIN, 0.0);
    for (t, gap) in cuts {
        let b = balanced(t);
        if b > best.0 + 1e-6 || ((b - best.0).abs() <= 1e-6 && gap > best.1) {
            best = (b, gap, t);
        }
    }
    best.2.clamp(-1.0, 1.0)
}

/// Leave-one-out accuracy over clips: each example and each negative held out in turn, the
/// action fitted on the rest, the held-out clips classified. `None` with fewer than two
/// examples or no negatives.
pub fn loo_accuracy(positives: &[Example], negatives: &[Example], dim: usize) -> Option<f32> {
    if positives.len() < 2 || negatives.is_empty() {
        return None;
    }
    let (mut right, mut total) = (0usize, 0usize);
    for (i, held) in positives.iter().enumerate() {
        let pos: Vec<&Example> = positives
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, e)| e)
            .collect();
        let neg: Vec<&Example> = negatives.iter().collect();
        let f = fit(&pos, &neg, dim);
        right += held
            .clips
            .iter()
            .filter(|c| dot(c, &f.prototype) >= f.threshold)
            .count();
        total += held.clips.len();
    }
    for (i, held) in negatives.iter().enumerate() {
        let pos: Vec<&Example> = positives.iter().collect();
        let neg: Vec<&Example> = negatives
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, e)| e)
            .collect();
        let f = fit(&pos, &neg, dim);
        right += held
            .clips
            .iter()
            .filter(|c| dot(c, &f.prototype) < f.threshold)
            .count();
        total += held.clips.len();
    }
    (total > 0).then(|| right as f32 / total as f32)
}

/// Teaches one action from its examples' and negatives' clip features.
pub fn teach(
    name: &str,
    positives: &[Example],
    negatives: &[Example],
    dim: usize,
    example_files: Vec<String>,
    negative_files: Vec<String>,
) -> CustomAction {
    let pos: Vec<&Example> = positives.iter().collect();
    let neg: Vec<&Example> = negatives.iter().collect();
    let f = fit(&pos, &neg, dim);
    let positives_above = f
        .positive_scores
        .iter()
        .filter(|&&s| s >= f.threshold)
        .count();
    let negatives_below = f
        .negative_scores
        .iter()
        .filter(|&&s| s < f.threshold)
        .count();
    CustomAction {
        name: name.into(),
        prototype: f.prototype,
        threshold: f.threshold,
        calibration: Calibration {
            method: if negatives.is_empty() {
                "no_negatives"
            } else {
                "leave_one_out"
            }
            .into(),
            positive_scores: f.positive_scores,
            negative_scores: f.negative_scores,
            positives_above,
            negatives_below,
            loo_accuracy: loo_accuracy(positives, negatives, dim),
        },
        examples: example_files,
        negatives: negative_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(vs: &[&[f32]]) -> Example {
        Example::new(&vs.iter().map(|v| v.to_vec()).collect::<Vec<_>>())
    }

    #[test]
    fn the_threshold_separates_held_out_positives_from_negatives() {
        let p = [
            ex(&[&[1.0, 0.1, 0.0], &[1.0, 0.0, 0.1]]),
            ex(&[&[0.9, 0.2, 0.0]]),
        ];
        let n = [ex(&[&[0.0, 1.0, 0.0], &[0.1, 0.0, 1.0]])];
        let a = teach("x", &p, &n, 3, vec![], vec![]);
        let c = &a.calibration;
        assert_eq!(c.positives_above, c.positive_scores.len());
        assert_eq!(c.negatives_below, c.negative_scores.len());
        let lo = c.positive_scores.iter().copied().fold(1.0, f32::min);
        let hi = c.negative_scores.iter().copied().fold(-1.0, f32::max);
        assert!(
            hi < a.threshold && a.threshold < lo,
            "{hi} {} {lo}",
            a.threshold
        );
        assert_eq!(c.loo_accuracy, Some(1.0));
        let s = CustomScorer::new(&CustomFile {
            version: 1,
            model: "m".into(),
            dim: 3,
            actions: vec![a],
        });
        assert!(s.score(&[2.0, 0.1, 0.05])[0] > 0.9);
        assert!(s.score(&[0.0, 3.0, 0.0])[0] < 0.1);
    }

    #[test]
    fn without_negatives_the_threshold_sits_below_the_lowest_positive() {
        let p = [ex(&[&[1.0, 0.0], &[0.8, 0.6]])];
        let a = teach("x", &p, &[], 2, vec![], vec![]);
        let lo = a
            .calibration
            .positive_scores
            .iter()
            .copied()
            .fold(1.0, f32::min);
        assert!((a.threshold - (lo - NO_NEGATIVE_MARGIN)).abs() < 1e-6);
        assert_eq!(a.calibration.method, "no_negatives");
        assert_eq!(a.calibration.loo_accuracy, None);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.actions.json");
        assert!(CustomFile::load(&p).unwrap().is_none());
        std::fs::write(&p, b"{\"version\": 1, \"mod").unwrap();
        let e = CustomFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("c.actions.json") && e.contains("damaged"), "{e}");
        let mut f = CustomFile::empty("m", 2);
        f.actions
            .push(teach("a", &[ex(&[&[1.0, 0.0]])], &[], 2, vec![], vec![]));
        f.save(&p).unwrap();
        assert_eq!(CustomFile::load(&p).unwrap().unwrap(), f);
        f.actions[0].prototype = vec![3.0, 0.0];
        f.save(&p).unwrap();
        let e = CustomFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("unit vector"), "{e}");
        let e = CustomFile::empty("other", 2).check_model(&p, "m", 2);
        assert!(e.unwrap_err().to_string().contains("other"));
        #[cfg(unix)]
        {
            let link = dir.path().join("link.json");
            std::os::unix::fs::symlink(&p, &link).unwrap();
            let e = CustomFile::empty("m", 2)
                .save(&link)
                .unwrap_err()
                .to_string();
            assert!(e.contains("symbolic link"), "{e}");
        }
    }
}
