//! `vigil explain`: which parts of a clip drove a label, by occlusion (docs/actions.md).
//!
//! The clip the model saw at a moment of a file is cut as a run cuts it. It is split into a
//! grid of space-time cells (time chunks of frames x rows x columns of the 224x224 crop);
//! each cell in turn is filled with the model's mean input (127.5, which the I3D graph maps to
//! 0, the middle of its [-1, 1] range) and the masked clips go through the model in batches.
//! A cell's importance for a label is how much its probability drops when the cell is hidden
//! (negative: hiding the cell raised it). One set of forward passes gives the maps of every
//! label asked for, custom actions included (their scores come from the features output).
//!
//! Written to the output folder: `explain.json` (the grid of importances per label),
//! `explain.png` (a contact sheet: one tile per time cell, its middle frame with the first
//! label's map over it) and `explain.mp4` (every frame of the clip with its map).
//!
//! With `deletion`, a faithfulness check: the probability after masking the 20% most
//! important cells at once, against masking 20% random cells (a few draws).

use crate::action::classifier::Classifier;
use crate::action::clip::{Clip, Crop};
use crate::action::custom::{CustomFile, CustomScorer};
use crate::action::offline::clips_of_file;
use crate::config::Loaded;
use anyhow::{bail, Context};
use opencv::core::{self as cv, Mat, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, videoio};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The grid: time chunks, rows, columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl std::str::FromStr for Grid {
    type Err = String;
    fn from_str(s: &str) -> Result<Grid, String> {
        let v: Vec<usize> = s
            .split('x')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{s:?}: expected TxHxW, e.g. 4x4x4"))?;
        match v[..] {
            [t, h, w]
                if (1..=64).contains(&t) && (1..=32).contains(&h) && (1..=32).contains(&w) =>
            {
                Ok(Grid { t, h, w })
            }
            _ => Err(format!(
                "{s:?}: expected TxHxW with T 1..=64 and H, W 1..=32"
            )),
        }
    }
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.t, self.h, self.w)
    }
}

impl Grid {
    /// Cells, one forward pass each.
    pub fn cells(&self) -> usize {
        self.t * self.h * self.w
    }
}

/// What to explain.
pub struct Request<'a> {
    pub video: &'a Path,
    pub at: f64,
    /// Labels (the model's or custom actions'); empty: the model's top label.
    pub labels: Vec<String>,
    pub out: &'a Path,
    pub grid: Grid,
    pub deletion: bool,
}

/// One label's column in the model's output: a class or a custom action.
#[derive(Clone)]
enum Target {
    Class(usize),
    Custom(usize),
}

/// What can go wrong explaining a clip; the first two are the caller's mistakes.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("label {label:?} is neither one of the model's labels ({labels}) nor a custom action{custom}")]
    UnknownLabel {
        label: String,
        labels: String,
        custom: String,
    },
    #[error("grid {t}x{h}x{w} has more cells along an axis than the clip has frames ({frames}) or pixels ({side})")]
    Grid {
        t: usize,
        h: usize,
        w: usize,
        frames: usize,
        side: usize,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The labels a map can be asked for: the model's and the custom actions'.
#[derive(Clone)]
pub struct Labels {
    pub model: Arc<Vec<String>>,
    /// `source` of the model's labels (`kinetics400`).
    pub source: Arc<str>,
    pub custom: Option<Arc<CustomScorer>>,
    /// For messages: the label file and the custom-actions file.
    pub model_file: PathBuf,
    pub custom_file: PathBuf,
}

impl Labels {
    /// Each asked label's column, name and source, or the first label that is neither.
    fn resolve(&self, asked: &[String]) -> Result<Vec<(Target, String, String)>, ExplainError> {
        asked
            .iter()
            .map(|l| {
                if let Some(i) = self.model.iter().position(|x| x == l) {
                    Ok((Target::Class(i), l.clone(), self.source.to_string()))
                } else if let Some(i) = self
                    .custom
                    .as_ref()
                    .and_then(|c| c.names.iter().position(|x| x == l))
                {
                    Ok((
                        Target::Custom(i),
                        l.clone(),
                        crate::action::custom::SOURCE.to_string(),
                    ))
                } else {
                    Err(ExplainError::UnknownLabel {
                        label: crate::echo::echo(l).into_owned(),
                        labels: self.model_file.display().to_string(),
                        custom: match &self.custom {
                            Some(_) => format!(" in {}", self.custom_file.display()),
                            None => format!(" ({} holds none)", self.custom_file.display()),
                        },
                    })
                }
            })
            .collect()
    }

    /// Checks that every label in `asked` can be explained.
    pub fn check(&self, asked: &[String]) -> Result<(), ExplainError> {
        self.resolve(asked).map(|_| ())
    }
}

/// The maps of one clip, before drawing.
pub struct Explained {
    pub grid: Grid,
    pub frames: usize,
    pub side: usize,
    names: Vec<String>,
    sources: Vec<String>,
    base: Vec<f32>,
    /// importance[label][cell]
    importance: Vec<Vec<f32>>,
    deletion: Vec<Option<Value>>,
}

impl Explained {
    /// The JSON every caller writes: grid, mask, passes and one map per label.
    pub fn to_json(&self) -> Value {
        let g = self.grid;
        let maps: Vec<Value> = self
            .importance
            .iter()
            .enumerate()
            .map(|(l, imp)| {
                let grid3: Vec<Vec<Vec<f32>>> = (0..g.t)
                    .map(|t| {
                        (0..g.h)
                            .map(|y| (0..g.w).map(|x| imp[(t * g.h + y) * g.w + x]).collect())
                            .collect()
                    })
                    .collect();
                let mut m = json!({
                    "label": self.names[l], "source": self.sources[l], "score": self.base[l],
                    "importance": grid3,
                });
                if let Some(d) = &self.deletion[l] {
                    m["deletion"] = d.clone();
                }
                m
            })
            .collect();
        json!({
            "grid": {"t": g.t, "h": g.h, "w": g.w, "frames": self.frames, "side": self.side},
            "mask": "mean input (127.5)", "forward_passes": 1 + g.cells(),
            "maps": maps,
        })
    }

    /// Draws the first label's map: the contact sheet (`png`) and the video (`mp4`, when
    /// OpenCV can write one here: whether it did).
    pub fn draw(&self, crops: &[Crop], png: &Path, mp4: &Path) -> anyhow::Result<bool> {
        draw_sheet(
            crops,
            &self.importance[0],
            self.grid,
            &self.names[0],
            self.base[0],
            png,
        )?;
        Ok(
            match draw_video(crops, &self.importance[0], self.grid, mp4) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("cannot write {}: {e:#}", mp4.display());
                    false
                }
            },
        )
    }
}

/// The model (its own session) and the labels it can explain: made once, used for many clips.
pub struct Explainer {
    classifier: Classifier,
    labels: Labels,
    /// Masked clips per forward pass.
    batch: usize,
}

/// The config's `action.model` section.
fn model_section(loaded: &Loaded) -> anyhow::Result<&crate::config::ActionModelConfig> {
    loaded.config.action.model.as_ref().context("action.model")
}

impl Explainer {
    /// A session of the config's action model with `intra_threads` (0: the config's
    /// `runtime.intra_threads`), and the config's custom actions.
    pub fn load(loaded: &Loaded, intra_threads: usize) -> anyhow::Result<Explainer> {
        let custom_path = crate::pipeline::custom_actions_path(loaded);
        let file = CustomFile::load(&custom_path)?.filter(|f| !f.actions.is_empty());
        let custom = file.as_ref().map(|f| Arc::new(CustomScorer::new(f)));
        let mut e = Self::with_custom(loaded, intra_threads, custom)?;
        if let Some(f) = &file {
            let dim = e.enable_features(loaded)?;
            f.check_model(&custom_path, &e.classifier.name, dim)?;
        }
        Ok(e)
    }

    /// A session of the config's action model with `intra_threads` (0: the config's), scoring
    /// `custom` (the running pipeline's custom actions, already checked against the model).
    pub fn with_custom(
        loaded: &Loaded,
        intra_threads: usize,
        custom: Option<Arc<CustomScorer>>,
    ) -> anyhow::Result<Explainer> {
        let mut l = loaded.clone();
        if intra_threads > 0 {
            l.config.runtime.intra_threads = intra_threads;
        }
        let a = crate::pipeline::load_action_model(&l).map_err(|p| anyhow::anyhow!("{p}"))?;
        let m = model_section(loaded)?;
        let mut e = Explainer {
            classifier: a.classifier,
            labels: Labels {
                model: a.labels,
                source: a.source,
                custom,
                model_file: loaded.resolve(&m.labels),
                custom_file: crate::pipeline::custom_actions_path(loaded),
            },
            batch: loaded.config.action.batch(),
        };
        if e.labels.custom.is_some() {
            e.enable_features(loaded)?;
        }
        Ok(e)
    }

    fn enable_features(&mut self, loaded: &Loaded) -> anyhow::Result<usize> {
        let m = model_section(loaded)?;
        Ok(self.classifier.enable_features(&m.features)?)
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Ends the forward pass in progress (and every later one) with an error: for shutdown.
    pub fn canceller(&self) -> Arc<ort::session::RunOptions> {
        self.classifier.canceller()
    }

    /// The maps of the clip `crops` (the model's clip length, each `side`x`side` RGB) for
    /// `asked` labels (none: the model's top label), on `grid`; with `deletion`, the
    /// faithfulness check too.
    pub fn explain(
        &mut self,
        crops: &[Crop],
        asked: &[String],
        grid: Grid,
        deletion: bool,
    ) -> Result<Explained, ExplainError> {
        let (frames, side) = self.classifier.clip_shape();
        let g = grid;
        if g.t > frames || g.h > side || g.w > side {
            return Err(ExplainError::Grid {
                t: g.t,
                h: g.h,
                w: g.w,
                frames,
                side,
            });
        }
        if crops.len() != frames || crops.iter().any(|c| c.len() != side * side * 3) {
            return Err(anyhow::anyhow!(
                "the clip has {} frames of {} bytes; the model takes {frames} of {side}x{side} RGB",
                crops.len(),
                crops.first().map_or(0, |c| c.len())
            )
            .into());
        }
        let mut resolved = self.labels.resolve(asked)?;
        let clip = Clip {
            stream: 0,
            index: 0,
            frames: crops.to_vec(),
            start: 0.0,
            end: 0.0,
            captured: None,
            keyframe: None,
        };
        // The clip's tensor as a run feeds it, and its scores: one forward pass.
        let (base_probs, base_feats) = self
            .classifier
            .classify_with_features(&[&clip])
            .map_err(anyhow::Error::from)?;
        let base_input = self.classifier.input_tensor().to_vec();
        let custom = self.labels.custom.clone();
        let base_custom = match (&custom, &base_feats) {
            (Some(s), Some(f)) => s.score(&f[0]),
            _ => Vec::new(),
        };
        if resolved.is_empty() {
            let top = base_probs[0]
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map_or(0, |(i, _)| i);
            resolved.push((
                Target::Class(top),
                self.labels.model[top].clone(),
                self.labels.source.to_string(),
            ));
        }
        let targets: Vec<Target> = resolved.iter().map(|r| r.0.clone()).collect();
        let base: Vec<f32> = targets
            .iter()
            .map(|t| match t {
                Target::Class(k) => base_probs[0][*k],
                Target::Custom(k) => base_custom.get(*k).copied().unwrap_or(0.0),
            })
            .collect();

        // One masked clip per cell, built a batch at a time.
        let shape = (frames, side);
        let scores = score(
            &mut self.classifier,
            custom.as_deref(),
            &targets,
            &base_input,
            shape,
            g,
            &(0..g.cells()).map(|c| vec![c]).collect::<Vec<_>>(),
            self.batch,
        )?;
        let importance: Vec<Vec<f32>> = (0..targets.len())
            .map(|l| scores.iter().map(|s| base[l] - s[l]).collect())
            .collect();
        let mut checks = Vec::new();
        for (l, imp) in importance.iter().enumerate() {
            checks.push(if deletion {
                Some(self::deletion(
                    &mut self.classifier,
                    custom.as_deref(),
                    &targets[l],
                    imp,
                    &base_input,
                    shape,
                    g,
                    self.batch,
                )?)
            } else {
                None
            });
        }
        let (names, sources) = resolved.into_iter().map(|(_, n, s)| (n, s)).unzip();
        Ok(Explained {
            grid: g,
            frames,
            side,
            names,
            sources,
            base,
            importance,
            deletion: checks,
        })
    }
}

/// Fills cell `c` of the first clip in a `[n, 3, T, S, S]` tensor with the mean input.
fn mask_cell(buf: &mut [f32], frames: usize, side: usize, g: Grid, c: usize) {
    let (ti, rest) = (c / (g.h * g.w), c % (g.h * g.w));
    let (hi, wi) = (rest / g.w, rest % g.w);
    let span = |i: usize, n: usize, len: usize| (i * len / n, (i + 1) * len / n);
    let (t0, t1) = span(ti, g.t, frames);
    let (y0, y1) = span(hi, g.h, side);
    let (x0, x1) = span(wi, g.w, side);
    for ch in 0..3 {
        for t in t0..t1 {
            let plane = &mut buf[(ch * frames + t) * side * side..][..side * side];
            for y in y0..y1 {
                plane[y * side + x0..y * side + x1].fill(MEAN_INPUT);
            }
        }
    }
}

/// The I3D graph maps input x to x / 127.5 - 1: 127.5 is its zero.
pub const MEAN_INPUT: f32 = 127.5;

/// Scores of every target for the base clip with each set of cells in `masks` hidden, in
/// batches (only one batch of masked clips is in memory at a time).
#[allow(clippy::too_many_arguments)]
fn score(
    c: &mut Classifier,
    custom: Option<&CustomScorer>,
    targets: &[Target],
    base: &[f32],
    (frames, side): (usize, usize),
    g: Grid,
    masks: &[Vec<usize>],
    batch: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(masks.len());
    let mut flat: Vec<f32> = Vec::new();
    for chunk in masks.chunks(batch.max(1)) {
        flat.clear();
        for cells in chunk {
            let at = flat.len();
            flat.extend_from_slice(base);
            for &cell in cells {
                mask_cell(&mut flat[at..], frames, side, g, cell);
            }
        }
        let (probs, feats) = c.classify_tensor(&flat)?;
        for (i, p) in probs.iter().enumerate() {
            let cs = match (custom, &feats) {
                (Some(s), Some(f)) => s.score(&f[i]),
                _ => Vec::new(),
            };
            out.push(
                targets
                    .iter()
                    .map(|t| match t {
                        Target::Class(k) => p[*k],
                        Target::Custom(k) => cs.get(*k).copied().unwrap_or(0.0),
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// A small deterministic generator for the random masks (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// `k` distinct indices below `n`.
    fn pick(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + (self.next() % (n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

/// Random draws of the deletion check.
pub const RANDOM_DRAWS: usize = 3;

/// Explains the clip at `req.at` of `req.video`; writes the JSON, PNG and MP4.
pub fn explain(loaded: &Loaded, req: &Request) -> anyhow::Result<Value> {
    let cfg = &loaded.config.action;
    let mut ex = Explainer::load(loaded, 0)?;
    let period = cfg.frames as f64 / cfg.sample_fps;
    let clips =
        clips_of_file(req.video, cfg, false, Some(req.at + period)).map_err(anyhow::Error::msg)?;
    // The clip whose middle is nearest the moment asked for.
    let fc = clips
        .iter()
        .min_by(|x, y| {
            let d = |c: &crate::action::clip::Clip| ((c.start + c.end) / 2.0 - req.at).abs();
            d(&x.clip).total_cmp(&d(&y.clip))
        })
        .context("no clip")?;
    if req.at > fc.clip.end + period {
        bail!(
            "{}: ends before {} s (its last clip ends at {:.2} s)",
            req.video.display(),
            req.at,
            fc.clip.end
        );
    }
    let ex = ex
        .explain(&fc.clip.frames, &req.labels, req.grid, req.deletion)
        .map_err(|e| match e {
            ExplainError::Grid { .. } => anyhow::anyhow!("--{e}"),
            ExplainError::UnknownLabel { .. } => anyhow::anyhow!("--{e}"),
            ExplainError::Other(e) => e,
        })?;
    std::fs::create_dir_all(req.out)
        .with_context(|| format!("cannot create {}", req.out.display()))?;
    let (png, mp4) = (req.out.join("explain.png"), req.out.join("explain.mp4"));
    let mp4_written = ex.draw(&fc.clip.frames, &png, &mp4)?;
    let mut v = ex.to_json();
    v["video"] = json!(req.video.display().to_string());
    v["at"] = json!(req.at);
    v["clip"] = json!({"start": fc.clip.start, "end": fc.clip.end});
    v["png"] = json!(png.display().to_string());
    v["mp4"] = json!(mp4_written.then(|| mp4.display().to_string()));
    let json_path = req.out.join("explain.json");
    let text = serde_json::to_vec_pretty(&v)?;
    crate::durable::replace(&json_path, |w| std::io::Write::write_all(w, &text))
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    Ok(v)
}

/// Probability after masking the top 20% cells, and after 20% random cells (several draws).
#[allow(clippy::too_many_arguments)]
fn deletion(
    c: &mut Classifier,
    custom: Option<&CustomScorer>,
    target: &Target,
    imp: &[f32],
    base: &[f32],
    shape: (usize, usize),
    g: Grid,
    batch: usize,
) -> anyhow::Result<Value> {
    let n = g.cells();
    let k = ((n as f32 * 0.2).round() as usize).max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|x, y| imp[*y].total_cmp(&imp[*x]));
    let mut sets = vec![order[..k].to_vec()];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..RANDOM_DRAWS {
        sets.push(rng.pick(n, k));
    }
    let s = score(
        c,
        custom,
        std::slice::from_ref(target),
        base,
        shape,
        g,
        &sets,
        batch,
    )?;
    let random: Vec<f32> = s[1..].iter().map(|v| v[0]).collect();
    Ok(json!({
        "cells_masked": k, "top": s[0][0], "random": random,
        "random_mean": random.iter().sum::<f32>() / random.len() as f32,
    }))
}

/// Per-pixel heat (0..255) of time cell `t`, `side` x `side`, normalised by the largest
/// importance over the whole map (negative importances show as 0).
fn heat(imp: &[f32], g: Grid, t: usize, side: usize) -> anyhow::Result<Mat> {
    let top = imp.iter().copied().fold(1e-6f32, f32::max);
    let mut m =
        Mat::new_rows_cols_with_default(side as i32, side as i32, cv::CV_8UC1, Scalar::all(0.0))?;
    for y in 0..side {
        for x in 0..side {
            let (hi, wi) = (y * g.h / side, x * g.w / side);
            let v = (imp[(t * g.h + hi) * g.w + wi].max(0.0) / top * 255.0).round() as u8;
            *m.at_2d_mut::<u8>(y as i32, x as i32)? = v;
        }
    }
    Ok(m)
}

/// A 224x224 RGB crop as a BGR image with the heat map of its time cell over it.
fn overlay(crop: &[u8], side: usize, heat_map: &Mat) -> anyhow::Result<Mat> {
    let rgb = Mat::from_slice(crop)?
        .reshape(3, side as i32)?
        .try_clone()?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut bgr, imgproc::COLOR_RGB2BGR)?;
    let mut colour = Mat::default();
    imgproc::apply_color_map(heat_map, &mut colour, imgproc::COLORMAP_JET)?;
    let mut out = Mat::default();
    cv::add_weighted_def(&bgr, 0.55, &colour, 0.45, 0.0, &mut out)?;
    Ok(out)
}

fn draw_sheet(
    frames: &[Crop],
    imp: &[f32],
    g: Grid,
    label: &str,
    score: f32,
    out: &Path,
) -> anyhow::Result<()> {
    let side = ((frames[0].len() / 3) as f64).sqrt() as usize;
    let mut tiles = Vector::<Mat>::new();
    for t in 0..g.t {
        let (t0, t1) = (t * frames.len() / g.t, (t + 1) * frames.len() / g.t);
        let mid = (t0 + t1.max(t0 + 1) - 1) / 2;
        let h = heat(imp, g, t, side)?;
        let mut tile = overlay(&frames[mid], side, &h)?;
        imgproc::put_text_def(
            &mut tile,
            &format!("frames {t0}-{}", t1.max(t0 + 1) - 1),
            cv::Point::new(6, side as i32 - 8),
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.45,
            Scalar::new(255.0, 255.0, 255.0, 0.0),
        )?;
        tiles.push(tile);
    }
    let mut row = Mat::default();
    cv::hconcat(&tiles, &mut row)?;
    // A caption strip above the tiles.
    let mut sheet = Mat::default();
    cv::copy_make_border(
        &row,
        &mut sheet,
        28,
        0,
        0,
        0,
        cv::BORDER_CONSTANT,
        Scalar::all(0.0),
    )?;
    imgproc::put_text_def(
        &mut sheet,
        &format!("{label} p={score:.3}: probability drop when each cell is hidden (red: large)"),
        cv::Point::new(6, 19),
        imgproc::FONT_HERSHEY_SIMPLEX,
        0.5,
        Scalar::new(255.0, 255.0, 255.0, 0.0),
    )?;
    if !imgcodecs::imwrite_def(out, &sheet)? {
        bail!("{}: OpenCV could not write the PNG", out.display());
    }
    Ok(())
}

fn draw_video(frames: &[Crop], imp: &[f32], g: Grid, out: &Path) -> anyhow::Result<()> {
    let side = ((frames[0].len() / 3) as f64).sqrt() as usize;
    let size = Size::new(side as i32, side as i32);
    let mut writer = None;
    for f in [*b"avc1", *b"mp4v"] {
        let code =
            videoio::VideoWriter::fourcc(f[0] as char, f[1] as char, f[2] as char, f[3] as char)?;
        let w = videoio::VideoWriter::new_with_backend(
            out,
            videoio::CAP_FFMPEG,
            code,
            25.0,
            size,
            true,
        )?;
        if w.is_opened()? {
            writer = Some(w);
            break;
        }
    }
    let Some(mut w) = writer else {
        bail!("OpenCV cannot write MP4 here");
    };
    for (i, f) in frames.iter().enumerate() {
        let t = (i * g.t / frames.len()).min(g.t - 1);
        let h = heat(imp, g, t, side)?;
        w.write(&overlay(f, side, &h)?)?;
    }
    w.release()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_masks_exactly_its_block_of_the_tensor() {
        let (frames, side) = (4, 6);
        let g: Grid = "2x3x2".parse().unwrap();
        let mut b = vec![0.0f32; 3 * frames * side * side];
        mask_cell(&mut b, frames, side, g, 7); // t 1, row 0, column 1
        let at =
            |c: usize, t: usize, y: usize, x: usize| b[((c * frames + t) * side + y) * side + x];
        assert_eq!(at(0, 2, 0, 3), MEAN_INPUT);
        assert_eq!(at(2, 3, 1, 5), MEAN_INPUT);
        assert_eq!(at(1, 1, 0, 3), 0.0, "another time chunk");
        assert_eq!(at(1, 2, 2, 3), 0.0, "another row");
        assert_eq!(at(1, 2, 0, 2), 0.0, "another column");
        let masked = b.iter().filter(|v| **v == MEAN_INPUT).count();
        assert_eq!(masked, 3 * 2 * 2 * 3);
        assert!("0x1x1".parse::<Grid>().is_err());
        assert!(Rng(1).pick(10, 3).iter().all(|&i| i < 10));
    }
}
