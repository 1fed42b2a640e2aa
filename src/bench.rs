//! Measurements behind `vigil bench`: each prints one JSON object, so a script can set them
//! beside a peer measured in the same run (see `scripts/bench.py`).

use crate::action::clip::{Clip, ClipWindow, Preprocess};
use crate::action::sampler::Sampler;
use crate::pipeline::Prepared;
use crate::source::file::FileReader;
use crate::source::FrameReader;
use anyhow::{bail, Context};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Decodes a whole file through the source stage; returns frames and seconds.
pub fn decode(path: &Path) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut r = FileReader::open(path)?;
    let mut frames = 0u64;
    while r.next_frame()?.is_some() {
        frames += 1;
    }
    r.finish(frames)?;
    let secs = started.elapsed().as_secs_f64();
    let info = r.info();
    Ok(serde_json::json!({
        "file": path.display().to_string(), "width": info.width, "height": info.height,
        "frames": frames, "seconds": secs, "fps": frames as f64 / secs,
    }))
}

/// The first clip of the config's first stream, preprocessed as a run would.
fn first_clip(p: &Prepared) -> anyhow::Result<Clip> {
    let a = &p.loaded.config.action;
    let s = p.streams.first().context("the config has no stream")?;
    let path = s
        .file()
        .context("the first stream is not a file: the benchmark needs a recorded clip")?;
    let mut r = FileReader::open(path)?;
    let mut sampler = Sampler::new(a.sample_fps);
    let mut prep = Preprocess::new(a.resize_short_side, a.crop);
    let mut window = ClipWindow::new(0, a.frames, a.stride, a.sample_fps);
    let mut picked = Vec::new();
    while let Some((t, m)) = r.next_frame()? {
        sampler.push(t, std::sync::Arc::new(m), |m, t| {
            picked.push((m.clone(), t))
        });
        for (m, t) in picked.drain(..) {
            if let Some(c) = window.push(t, prep.apply(&m)?) {
                return Ok(c);
            }
        }
    }
    window.finish().context("the stream has no frames")
}

/// Times the classifier on one real clip repeated `batch` times, `runs` calls after a warm-up.
/// With `dump`, writes the exact input tensor (f32 little-endian, `[batch, 3, T, side, side]`)
/// so a peer can be fed the same bytes.
pub fn classify(
    mut p: Prepared,
    runs: usize,
    batch: usize,
    dump: Option<&Path>,
) -> anyhow::Result<serde_json::Value> {
    let clip = first_clip(&p)?;
    let Some(a) = p.action.as_mut() else {
        bail!("the action branch is disabled in this config")
    };
    let clips: Vec<&Clip> = (0..batch).map(|_| &clip).collect();
    let probs = a.classifier.classify(&clips)?;
    if let Some(path) = dump {
        let t = a.classifier.input_tensor();
        let mut f = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for v in t {
            f.write_all(&v.to_le_bytes())?;
        }
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        a.classifier.classify(&clips)?;
        times.push(started.elapsed().as_secs_f64());
    }
    let total: f64 = times.iter().sum();
    let (top, score) = probs[0]
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, v)| if v > b.1 { (i, v) } else { b });
    Ok(serde_json::json!({
        "model": a.classifier.name, "frames": p.loaded.config.action.frames, "batch": batch, "runs": runs,
        "threads": p.loaded.config.runtime.intra_threads,
        "seconds_per_call": times, "clips_per_s": (runs * batch) as f64 / total,
        "top1": a.labels.get(top), "top1_score": score,
    }))
}

/// Runs the whole pipeline as configured (meant for a faces-only config with a `file` sink) and
/// times it from the first frame to the last event, model loading excluded. Reports frames per
/// second and which identities the events named.
pub fn faces(p: Prepared) -> anyhow::Result<serde_json::Value> {
    let sink = p.loaded.config.sinks.iter().find_map(|s| match s {
        crate::config::SinkConfig::File { path, .. } => Some(p.loaded.resolve(path)),
        _ => None,
    });
    let Some(sink) = sink else {
        bail!("the config needs a `file` sink to count identities")
    };
    let before = std::fs::read_to_string(&sink)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let opts = crate::pipeline::RunOptions::default();
    let summary = crate::pipeline::run(p, &opts, stop)?;
    let secs = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&sink)
        .with_context(|| format!("cannot read {}", sink.display()))?;
    let mut named: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut unknown, mut tracks) = (0u64, std::collections::BTreeSet::new());
    for line in text.lines().skip(before) {
        let e: serde_json::Value = serde_json::from_str(line)?;
        match e["type"].as_str() {
            Some("face.identified") => {
                *named
                    .entry(e["identity"].as_str().unwrap_or("").to_string())
                    .or_default() += 1
            }
            Some("face.unknown") => unknown += 1,
            _ => continue,
        }
        tracks.insert((e["stream"].to_string(), e["track_id"].as_u64()));
    }
    Ok(serde_json::json!({
        "frames": summary.frames, "seconds": secs, "fps": summary.frames as f64 / secs,
        "identified_events": named, "unknown_events": unknown, "tracks_reported": tracks.len(),
        "ok": summary.ok(),
    }))
}
