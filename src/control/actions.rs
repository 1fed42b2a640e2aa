//! Custom-action operations for `vigil actions`: teach one from example clips, list, remove
//! (docs/actions.md). Each returns one JSON value. A running vigil reads the custom-actions
//! file when it starts: restart it to use a change.

use crate::action::classifier::Classifier;
use crate::action::custom::{self, CustomFile, Example};
use crate::action::offline::clips_of_file;
use crate::config::{self, Loaded, Problems};
use crate::pipeline as prepare;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Loads a config and checks the parts the action model needs.
pub fn load_config(config: &Path) -> Result<Loaded, Problems> {
    let loaded = config::load(config)?;
    let problems: Vec<_> = config::validate(&loaded)
        .into_iter()
        .filter(|p| p.path.starts_with("action") || p.path.starts_with("runtime"))
        .collect();
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(loaded)
}

/// The config's action model with its features output on, ready to run offline.
pub fn load_model(loaded: &Loaded) -> anyhow::Result<(prepare::PreparedAction, usize)> {
    let Some(m) = &loaded.config.action.model else {
        bail!(
            "{}: action.model is not set: custom actions live on the action model's features",
            loaded.file.display()
        );
    };
    let mut a = prepare::load_action_model(loaded).map_err(|p| anyhow::anyhow!("{p}"))?;
    let dim = a.classifier.enable_features(&m.features)?;
    Ok((a, dim))
}

/// Every clip's features (and probabilities) of one file, in batches of `action.max_batch`.
pub fn file_features(
    c: &mut Classifier,
    loaded: &Loaded,
    path: &Path,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let cfg = &loaded.config.action;
    let clips = clips_of_file(path, cfg, false, None).map_err(anyhow::Error::msg)?;
    let mut out = Vec::with_capacity(clips.len());
    for chunk in clips.chunks(cfg.batch()) {
        let refs: Vec<_> = chunk.iter().map(|c| &c.clip).collect();
        let (_, f) = c.classify_with_features(&refs)?;
        out.extend(f.context("the model gave no features")?);
    }
    Ok(out)
}

fn open_file(loaded: &Loaded) -> anyhow::Result<(PathBuf, Option<CustomFile>)> {
    let path = prepare::custom_actions_path(loaded);
    let file = CustomFile::load(&path)?;
    Ok((path, file))
}

/// `vigil actions teach`.
pub fn teach(
    loaded: &Loaded,
    name: &str,
    examples: &[PathBuf],
    negatives: &[PathBuf],
) -> anyhow::Result<Value> {
    custom::check_name(name).map_err(|e| anyhow::anyhow!("--name {name:?}: {e}"))?;
    if examples.is_empty() {
        bail!("teaching needs at least one example clip");
    }
    // The file is read (and a damaged one refused) before minutes of inference.
    let (path, file) = open_file(loaded)?;
    let (mut a, dim) = load_model(loaded)?;
    let model = a.classifier.name.clone();
    let mut file = file.unwrap_or_else(|| CustomFile::empty(&model, dim));
    file.check_model(&path, &model, dim)?;
    let mut read = |files: &[PathBuf]| -> anyhow::Result<Vec<Example>> {
        files
            .iter()
            .map(|f| {
                let feats = file_features(&mut a.classifier, loaded, f)?;
                Ok(Example::new(&feats))
            })
            .collect()
    };
    let pos = read(examples)?;
    let neg = read(negatives)?;
    let shown =
        |fs: &[PathBuf]| -> Vec<String> { fs.iter().map(|f| f.display().to_string()).collect() };
    let action = custom::teach(name, &pos, &neg, dim, shown(examples), shown(negatives));
    let replaced = file.actions.iter().any(|x| x.name == name);
    file.actions.retain(|x| x.name != name);
    file.actions.push(action.clone());
    file.save(&path)?;
    let c = &action.calibration;
    Ok(json!({
        "name": name, "file": path.display().to_string(), "replaced": replaced,
        "model": model, "threshold": action.threshold, "method": c.method,
        "examples": examples.iter().zip(&pos).map(|(f, e)| json!({"file": f.display().to_string(), "clips": e.clips.len()})).collect::<Vec<_>>(),
        "negatives": negatives.iter().zip(&neg).map(|(f, e)| json!({"file": f.display().to_string(), "clips": e.clips.len()})).collect::<Vec<_>>(),
        "positive_scores": c.positive_scores, "negative_scores": c.negative_scores,
        "positives_above": c.positives_above, "negatives_below": c.negatives_below,
        "loo_accuracy": c.loo_accuracy,
    }))
}

/// `vigil actions list`.
pub fn list(loaded: &Loaded) -> anyhow::Result<Value> {
    let (path, file) = open_file(loaded)?;
    let actions: Vec<Value> = file
        .iter()
        .flat_map(|f| &f.actions)
        .map(|a| {
            json!({
                "name": a.name, "threshold": a.threshold, "method": a.calibration.method,
                "examples": a.examples, "negatives": a.negatives,
                "positives_above": a.calibration.positives_above,
                "positives": a.calibration.positive_scores.len(),
                "negatives_below": a.calibration.negatives_below,
                "negative_clips": a.calibration.negative_scores.len(),
                "loo_accuracy": a.calibration.loo_accuracy,
            })
        })
        .collect();
    Ok(json!({
        "file": path.display().to_string(),
        "model": file.as_ref().map(|f| f.model.clone()),
        "actions": actions,
    }))
}

/// `vigil actions remove`.
pub fn remove(loaded: &Loaded, name: &str) -> anyhow::Result<Value> {
    let (path, file) = open_file(loaded)?;
    let Some(mut file) = file else {
        bail!(
            "{}: no custom actions (the file does not exist)",
            path.display()
        );
    };
    let before = file.actions.len();
    file.actions.retain(|a| a.name != name);
    if file.actions.len() == before {
        let names: Vec<&str> = file.actions.iter().map(|a| a.name.as_str()).collect();
        bail!(
            "{}: no custom action {name:?} (it has: {})",
            path.display(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        );
    }
    file.save(&path)?;
    Ok(json!({"removed": name, "file": path.display().to_string(), "left": file.actions.len()}))
}
