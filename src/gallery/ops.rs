//! What `vigil gallery ...` does: each operation returns one JSON value (printed as is with
//! `--json`, summarised otherwise). Enrolment is all or nothing: if any photo fails, the
//! gallery file is not touched.

use super::{image, Gallery};
use crate::config::{self, Problems};
use crate::face::detector::Detection;
use crate::face::worker::{faces_in, FaceModels};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A loaded gallery with the models that made it.
pub struct GallerySession {
    models: FaceModels,
    pub gallery: Gallery,
    threshold: f32,
    max_pixels: u64,
    index: config::GalleryIndexConfig,
}

/// Loads the config's face models and gallery. Only the `faces`, `gallery` and `runtime`
/// sections matter here; problems elsewhere (a missing video) do not block gallery work.
pub fn open(config_path: &Path) -> Result<GallerySession, Problems> {
    let loaded = config::load(config_path)?;
    let relevant = |p: &config::Problem| {
        ["faces", "gallery", "runtime"]
            .iter()
            .any(|s| p.path.starts_with(s))
    };
    let mut problems: Vec<config::Problem> = config::validate(&loaded)
        .into_iter()
        .filter(relevant)
        .collect();
    if loaded.config.faces.detector.is_none() && loaded.config.faces.embedder.is_none() {
        problems.push(loaded.problem(
            "faces",
            "the gallery needs `faces.detector` and `faces.embedder`",
        ));
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let (models, gallery) = crate::pipeline::load_faces(&loaded).map_err(|p| Problems(vec![p]))?;
    Ok(GallerySession {
        models,
        gallery,
        threshold: loaded.config.faces.match_threshold,
        max_pixels: loaded.config.gallery.max_image_pixels,
        index: loaded.config.gallery.index.clone(),
    })
}

fn box_json(d: &Detection) -> Value {
    json!(d.bbox.map(|v| v.round()))
}

impl GallerySession {
    /// Every face in the photo, largest first, with its descriptor.
    fn faces(&mut self, path: &Path) -> anyhow::Result<Vec<(Detection, Vec<f32>)>> {
        let img = image::load(path, self.max_pixels)?;
        faces_in(&mut self.models, &img)
            .with_context(|| format!("{}: face analysis failed", path.display()))
    }

    /// The one face to use from a photo: the only one, or the one chosen by `face` (0 is the
    /// largest) when there are several.
    fn one_face(
        &mut self,
        path: &Path,
        face: Option<usize>,
    ) -> anyhow::Result<(Detection, Vec<f32>)> {
        let mut faces = self.faces(path)?;
        match (faces.len(), face) {
            (0, _) => bail!("{}: no face found", path.display()),
            (1, None) => Ok(faces.remove(0)),
            (n, None) => {
                let list: Vec<String> = faces
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("{i}: box {:?}", f.0.bbox.map(|v| v.round() as i32)))
                    .collect();
                bail!(
                    "{}: {n} faces found, largest first ({}); pick one with --face N",
                    path.display(),
                    list.join("; ")
                )
            }
            (n, Some(i)) if i >= n => bail!(
                "{}: --face {i} asked for, but only {n} faces were found",
                path.display()
            ),
            (_, Some(i)) => Ok(faces.swap_remove(i)),
        }
    }

    pub fn enroll(
        &mut self,
        name: &str,
        images: &[PathBuf],
        face: Option<usize>,
    ) -> anyhow::Result<Value> {
        super::validate_name(name)?;
        let mut added = Vec::new();
        for path in images {
            let (det, desc) = self.one_face(path, face)?;
            added.push((path, det, desc));
        }
        let mut report = Vec::new();
        for (path, det, desc) in added {
            report.push(json!({"image": path.display().to_string(), "box": box_json(&det), "probability": det.prob}));
            self.gallery
                .enroll(name, desc, path.display().to_string())?;
        }
        self.gallery.save()?;
        let total = self.gallery.person(name)?.embeddings.len();
        Ok(
            json!({"enrolled": name, "photos": report, "embeddings": total, "gallery": self.gallery.path.display().to_string()}),
        )
    }

    pub fn list(&self) -> Value {
        let people: Vec<Value> = self
            .gallery
            .people
            .iter()
            .map(
                |p| json!({"name": p.name, "embeddings": p.embeddings.len(), "sources": p.sources}),
            )
            .collect();
        json!({"gallery": self.gallery.path.display().to_string(), "people": people})
    }

    pub fn remove(&mut self, name: &str) -> anyhow::Result<Value> {
        let p = self.gallery.remove(name)?;
        self.gallery.save()?;
        Ok(json!({"removed": p.name, "embeddings": p.embeddings.len()}))
    }

    /// Who is each face in the photo (1:N), nearest `k` people per face, faces left to right.
    pub fn identify(&mut self, path: &Path, k: usize) -> anyhow::Result<Value> {
        let mut faces = self.faces(path)?;
        faces.sort_by(|a, b| a.0.bbox[0].total_cmp(&b.0.bbox[0]));
        let index = self.gallery.index(&self.index)?;
        let out: Vec<Value> = faces
            .iter()
            .map(|(d, desc)| {
                let matches = index.search(desc, k);
                let identity = matches
                    .first()
                    .filter(|m| m.distance < self.threshold)
                    .map(|m| m.name.clone());
                let candidates: Vec<Value> = matches
                    .iter()
                    .map(|m| json!({"identity": m.name, "distance": m.distance}))
                    .collect();
                json!({"box": box_json(d), "identity": identity, "candidates": candidates})
            })
            .collect();
        Ok(json!({"image": path.display().to_string(), "threshold": self.threshold, "faces": out}))
    }

    /// Is the (largest, or chosen) face in the photo `name`? (1:1)
    pub fn verify(
        &mut self,
        name: &str,
        path: &Path,
        face: Option<usize>,
    ) -> anyhow::Result<Value> {
        let person = self.gallery.person(name)?.clone();
        let mut faces = self.faces(path)?;
        if faces.is_empty() {
            bail!("{}: no face found", path.display());
        }
        let (det, desc) = match face {
            Some(i) if i >= faces.len() => bail!(
                "{}: --face {i} asked for, but only {} faces were found",
                path.display(),
                faces.len()
            ),
            Some(i) => faces.swap_remove(i),
            None => faces.remove(0),
        };
        let distance = person
            .embeddings
            .iter()
            .map(|e| crate::face::distance(&desc, e))
            .fold(f32::INFINITY, f32::min);
        let same = distance < self.threshold;
        Ok(
            json!({"identity": name, "image": path.display().to_string(), "box": box_json(&det), "distance": distance, "threshold": self.threshold, "same": same}),
        )
    }
}
