//! Gallery operations, for `vigil gallery` and the API alike: each returns one JSON value
//! (printed as is with `--json`, summarised otherwise, or answered over HTTP). Enrolment is all
//! or nothing: if any photo fails, the gallery file is not touched. Every change is one
//! read-modify-write of the file under its lock (`gallery::live`), so changes made at the same
//! moment by several processes are all kept; in a running vigil, the face worker uses a change
//! from its next decision on.

use crate::config::{self, Problems};
use crate::echo::echo;
use crate::face::align;
use crate::face::detector::Detection;
use crate::face::worker::{faces_in, FaceModels};
use crate::gallery::chips;
use crate::gallery::image::{self, ImageError};
use crate::gallery::learned::{Corrections, Heads, Learned, Negatives};
use crate::gallery::named::NamedTracks;
use crate::gallery::unknowns::Unknowns;
use crate::gallery::{calibrate, live, Gallery, GalleryError, LiveGallery};
use opencv::core::Mat;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// Why an operation failed; the API maps each to a status and code.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{}: no face found", echo(.image))]
    NoFace { image: String },
    #[error("{}: {} faces found, largest first ({}); pick one with {pick}", echo(.image), .boxes.len(), list_boxes(.boxes))]
    SeveralFaces {
        image: String,
        boxes: Vec<[f32; 4]>,
        /// How to pick: `--face N` or `?face=N`.
        pick: &'static str,
    },
    #[error("{}: face {asked} asked for, but only {found} faces were found", echo(.image))]
    NoSuchFace {
        image: String,
        asked: usize,
        found: usize,
    },
    #[error(transparent)]
    Gallery(#[from] GalleryError),
    #[error("{}: face analysis failed: {reason}", echo(.image))]
    Analysis { image: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

fn list_boxes(boxes: &[[f32; 4]]) -> String {
    boxes
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i}: box {:?}", b.map(|v| v.round() as i32)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A face found in a photo, with its descriptor.
type Face = (Detection, Vec<f32>);

/// Where the gallery lives for these operations.
enum Store {
    /// The CLI: the file, read again for every operation.
    File {
        path: std::path::PathBuf,
        model: String,
        dim: usize,
        index: config::GalleryIndexConfig,
    },
    /// A running vigil: the gallery its face worker searches.
    Live(Arc<LiveGallery>),
}

/// The face models and the gallery they fill.
pub struct GalleryOps {
    models: FaceModels,
    store: Store,
    threshold: f32,
    max_pixels: u64,
    /// How to ask for one face among several (`--face N` or `?face=N`).
    pick: &'static str,
    /// How `tune` fits its head.
    tune: config::TuneConfig,
}

/// Loads the config's face models and gallery for `vigil gallery`. Only the `faces`, `gallery`
/// and `runtime` sections matter here; problems elsewhere (a missing video) do not block
/// gallery work.
pub fn open(config_path: &Path) -> Result<GalleryOps, Problems> {
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
    if loaded.config.gallery.postgres.is_some() {
        // The shared store: this node's cache caught up, every change one transaction.
        let g = &loaded.config.gallery;
        let live = crate::gallery::store::open_live(&gallery.path, &gallery.model, gallery.dim, g)
            .map_err(|e| Problems(vec![loaded.problem("gallery.postgres", format!("{e:#}"))]))?;
        return Ok(GalleryOps {
            models,
            store: Store::Live(Arc::new(live)),
            threshold: loaded.config.faces.match_threshold,
            max_pixels: loaded.config.gallery.max_image_pixels,
            pick: "--face N",
            tune: loaded.config.faces.tune.clone(),
        });
    }
    Ok(GalleryOps {
        models,
        store: Store::File {
            path: gallery.path.clone(),
            model: gallery.model.clone(),
            dim: gallery.dim,
            index: loaded.config.gallery.index.clone(),
        },
        threshold: loaded.config.faces.match_threshold,
        max_pixels: loaded.config.gallery.max_image_pixels,
        pick: "--face N",
        tune: loaded.config.faces.tune.clone(),
    })
}

/// The operations of a running vigil, on its live gallery, with models of their own (the face
/// worker's are busy on its thread).
pub fn live(
    loaded: &config::Loaded,
    gallery: Arc<LiveGallery>,
) -> Result<GalleryOps, config::Problem> {
    let models = crate::pipeline::load_face_models(loaded)?;
    Ok(GalleryOps {
        models,
        store: Store::Live(gallery),
        threshold: loaded.config.faces.match_threshold,
        max_pixels: loaded.config.gallery.max_image_pixels,
        pick: "?face=N",
        tune: loaded.config.faces.tune.clone(),
    })
}

/// `img` with a grey border of half its size on every side.
fn framed(img: &opencv::core::Mat) -> opencv::Result<opencv::core::Mat> {
    use opencv::prelude::*;
    let (w, h) = (img.cols() / 2, img.rows() / 2);
    let mut out = opencv::core::Mat::default();
    opencv::core::copy_make_border(
        img,
        &mut out,
        h,
        h,
        w,
        w,
        opencv::core::BORDER_CONSTANT,
        opencv::core::Scalar::all(127.0),
    )?;
    Ok(out)
}

fn box_json(d: &Detection) -> Value {
    json!(d.bbox.map(|v| v.round()))
}

/// A photo given to an operation: a file (CLI) or bytes (API), with how to name it.
pub enum Photo<'a> {
    File(&'a Path),
    Bytes {
        label: &'a str,
        bytes: &'a [u8],
    },
    /// A face snapshot: cut tight around the face, so it is framed with a border before the
    /// detector looks (MTCNN rarely finds a face that fills the whole picture).
    Crop {
        label: &'a str,
        bytes: &'a [u8],
    },
}

impl Photo<'_> {
    fn label(&self) -> String {
        match self {
            Photo::File(p) => p.display().to_string(),
            Photo::Bytes { label, .. } | Photo::Crop { label, .. } => label.to_string(),
        }
    }
}

impl GalleryOps {
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Every face in the photo, largest first, with its descriptor.
    fn faces(&mut self, photo: &Photo) -> Result<Vec<(Detection, Vec<f32>)>, OpError> {
        Ok(self.faces_and_image(photo)?.1)
    }

    /// The decoded photo, and every face in it, largest first, with its descriptor.
    fn faces_and_image(&mut self, photo: &Photo) -> Result<(Mat, Vec<Face>), OpError> {
        let img = match photo {
            Photo::File(p) => image::load(p, self.max_pixels)?,
            Photo::Bytes { label, bytes } => image::decode(bytes, label, self.max_pixels)?,
            Photo::Crop { label, bytes } => framed(&image::decode(bytes, label, self.max_pixels)?)
                .map_err(|e| OpError::Analysis {
                    image: label.to_string(),
                    reason: e.to_string(),
                })?,
        };
        let faces = faces_in(&mut self.models, &img).map_err(|e| OpError::Analysis {
            image: photo.label(),
            reason: e.to_string(),
        })?;
        Ok((img, faces))
    }

    /// The one face to use from a photo: the only one, or the one chosen by `face` (0 is the
    /// largest) when there are several.
    fn one_face_and_image(
        &mut self,
        photo: &Photo,
        face: Option<usize>,
    ) -> Result<(Mat, Detection, Vec<f32>), OpError> {
        let (img, mut faces) = self.faces_and_image(photo)?;
        let with = |(d, e): (Detection, Vec<f32>)| (img, d, e);
        let image = photo.label();
        match (faces.len(), face) {
            (0, _) => Err(OpError::NoFace { image }),
            (1, None) => Ok(with(faces.remove(0))),
            (_, None) => Err(OpError::SeveralFaces {
                image,
                boxes: faces.iter().map(|f| f.0.bbox.map(|v| v.round())).collect(),
                pick: self.pick,
            }),
            (n, Some(i)) if i >= n => Err(OpError::NoSuchFace {
                image,
                asked: i,
                found: n,
            }),
            (_, Some(i)) => Ok(with(faces.swap_remove(i))),
        }
    }

    fn update<R>(
        &self,
        change: impl FnOnce(&mut Gallery) -> Result<R, GalleryError>,
    ) -> Result<R, OpError> {
        match &self.store {
            Store::File {
                path, model, dim, ..
            } => Ok(live::update_file(path, model, *dim, change)?.0),
            Store::Live(g) => g
                .update(change)
                .map_err(|e| match e.downcast::<GalleryError>() {
                    Ok(e) => OpError::Gallery(e),
                    Err(e) => OpError::Other(e),
                }),
        }
    }

    fn path(&self) -> String {
        self.gallery_path().display().to_string()
    }

    fn embeddings_of(&self, name: &str) -> Result<Vec<Vec<f32>>, OpError> {
        Ok(match &self.store {
            Store::File {
                path, model, dim, ..
            } => Gallery::open(path, model, *dim)?
                .person(name)?
                .embeddings
                .clone(),
            Store::Live(g) => g
                .embeddings_of(name)?
                .ok_or_else(|| GalleryError::Unknown {
                    name: name.into(),
                    path: g.path.clone(),
                })?,
        })
    }

    /// The aligned chip of an enrolled face, as a JPEG (`None` for an enrolment made before
    /// chips were kept).
    pub fn chip(&self, name: &str, n: usize) -> Result<Option<Vec<u8>>, OpError> {
        let embeddings = self.embeddings_of(name)?;
        let Some(e) = embeddings.get(n) else {
            return Ok(None);
        };
        match std::fs::read(chips::path(&self.gallery_path(), e)) {
            Ok(b) => Ok(Some(b)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(OpError::Other(anyhow::anyhow!(
                "cannot read the chip of {name}: {err}"
            ))),
        }
    }

    pub fn enroll(
        &mut self,
        name: &str,
        photos: &[Photo],
        face: Option<usize>,
    ) -> Result<Value, OpError> {
        crate::gallery::validate_name(name)?;
        let mut added = Vec::new();
        let mut kept = Vec::new();
        let size = self.models.embedder.size;
        for photo in photos {
            let (img, det, desc) = self.one_face_and_image(photo, face)?;
            match align::chip(&img, &det.landmarks, size as i32) {
                Ok(chip) => kept.push((desc.clone(), chip)),
                Err(e) => tracing::warn!("no thumbnail for {}: {}", photo.label(), e.message),
            }
            added.push((photo.label(), det, desc));
        }
        let report: Vec<Value> = added
            .iter()
            .map(|(image, det, _)| json!({"image": image, "box": box_json(det), "probability": det.prob}))
            .collect();
        let total = self.update(|g| {
            for (image, _, desc) in added {
                g.enroll(name, desc, image)?;
            }
            Ok(g.person(name)?.embeddings.len())
        })?;
        for (desc, chip) in kept {
            if let Err(e) = chips::save(&self.gallery_path(), &desc, &chip, size) {
                tracing::warn!("cannot keep the chip of {}: {e}", echo(name));
            }
        }
        Ok(json!({"enrolled": name, "photos": report, "embeddings": total, "gallery": self.path()}))
    }

    pub fn list(&self) -> Result<Value, OpError> {
        let people: Vec<Value> = match &self.store {
            Store::File {
                path, model, dim, ..
            } => Gallery::open(path, model, *dim)?
                .people
                .iter()
                .map(|p| json!({"name": p.name, "embeddings": p.embeddings.len(), "sources": p.sources}))
                .collect(),
            Store::Live(g) => g
                .people()
                .iter()
                .map(|p| json!({"name": p.name, "embeddings": p.embeddings, "sources": p.sources}))
                .collect(),
        };
        Ok(json!({"gallery": self.path(), "people": people}))
    }

    /// Builds the search index ahead of a run and keeps it where `run` loads it from (with a
    /// shared store, after this node's cache has caught up: opening did that). Exact search
    /// has nothing to build; an index already current is loaded and said so.
    pub fn index(&self) -> Result<Value, OpError> {
        let report = match &self.store {
            Store::File {
                path,
                model,
                dim,
                index,
            } => {
                let g = {
                    let _lock = live::FileLock::take(path)?;
                    Gallery::open(path, model, *dim)?
                };
                Learned::build(&g, index)?.report
            }
            Store::Live(g) => g.index_report(),
        };
        let store = match &self.store {
            Store::Live(g) => g.replica().map(|r| r.shown()),
            Store::File { .. } => None,
        };
        Ok(json!({
            "gallery": self.path(),
            "store": store,
            "kind": report.kind,
            "origin": report.origin,
            "rows": report.rows,
            "seconds": report.seconds,
            "dir": report.dir,
            "removed": report.removed,
            "added": report.added,
        }))
    }

    pub fn remove(&mut self, name: &str) -> Result<Value, OpError> {
        let p = self.update(|g| g.remove(name))?;
        chips::remove(&self.gallery_path(), &p.embeddings);
        Ok(json!({"removed": p.name, "embeddings": p.embeddings.len()}))
    }

    /// Who is each face in the photo (1:N), nearest `k` people per face, faces left to right.
    pub fn identify(&mut self, photo: &Photo, k: usize) -> Result<Value, OpError> {
        let mut faces = self.faces(photo)?;
        faces.sort_by(|a, b| a.0.bbox[0].total_cmp(&b.0.bbox[0]));
        let index = match &self.store {
            Store::File {
                path,
                model,
                dim,
                index,
            } => Arc::new(Learned::build(&Gallery::open(path, model, *dim)?, index)?),
            Store::Live(g) => g.index().get(),
        };
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
                let distance = matches.first().map(|m| m.distance);
                json!({"box": box_json(d), "identity": identity, "distance": distance, "candidates": candidates})
            })
            .collect();
        Ok(json!({"image": photo.label(), "threshold": self.threshold, "faces": out}))
    }

    /// Is the (largest, or chosen) face in the photo `name`? (1:1)
    pub fn verify(
        &mut self,
        name: &str,
        photo: &Photo,
        face: Option<usize>,
    ) -> Result<Value, OpError> {
        let embeddings = self.embeddings_of(name)?;
        let mut faces = self.faces(photo)?;
        let image = photo.label();
        if faces.is_empty() {
            return Err(OpError::NoFace { image });
        }
        let (det, desc) = match face {
            Some(i) if i >= faces.len() => {
                return Err(OpError::NoSuchFace {
                    image,
                    asked: i,
                    found: faces.len(),
                })
            }
            Some(i) => faces.swap_remove(i),
            None => faces.remove(0),
        };
        let (_, model, dim) = self.file();
        let c = Corrections::load(&self.gallery_path(), &model, dim)?;
        let q = c.project(&desc);
        let distance = embeddings
            .iter()
            .map(|e| crate::face::distance(&q, &c.project(e)))
            .fold(f32::INFINITY, f32::min);
        // A face nearer to one of the person's negative examples is not them.
        let rejected = c.vetoed(name, &q, distance);
        let same = distance < self.threshold && !rejected;
        Ok(
            json!({"identity": name, "image": image, "box": box_json(&det), "distance": distance, "threshold": self.threshold, "same": same, "negative_nearer": rejected}),
        )
    }

    /// The gallery file, its embedder's name and dimension.
    fn file(&self) -> (std::path::PathBuf, String, usize) {
        match &self.store {
            Store::File {
                path, model, dim, ..
            } => (path.clone(), model.clone(), *dim),
            Store::Live(g) => {
                let (m, d) = g.model();
                (g.path.clone(), m.to_string(), d)
            }
        }
    }

    fn gallery_path(&self) -> std::path::PathBuf {
        self.file().0
    }

    fn read(&self) -> Result<Gallery, GalleryError> {
        let (path, model, dim) = self.file();
        Gallery::open(&path, &model, dim)
    }

    /// After a change to a file beside the gallery: a running vigil uses it from its next
    /// decision (another process's watcher sees the file change).
    fn corrections_changed(&self) -> Result<(), OpError> {
        if let Store::Live(g) = &self.store {
            g.reload()?;
        }
        Ok(())
    }

    /// Genuine and impostor distances from the gallery's people (with the kept faces of tracks
    /// named as them, and the faces of unknown groups, each group taken as one person), the
    /// threshold at `far`, and the rates at the configured threshold.
    pub fn calibrate(&self, far: f64) -> Result<Value, OpError> {
        if !(far > 0.0 && far < 1.0) {
            return Err(OpError::Invalid {
                field: "far",
                message: format!("the false-accept rate must be between 0 and 1, not {far}"),
            });
        }
        let g = self.read()?;
        let (path, model, dim) = self.file();
        let groups = Unknowns::load(&path, &model, dim)?;
        let mut labels = Vec::new();
        let mut embeddings: Vec<&[f32]> = Vec::new();
        for (i, p) in g.people.iter().enumerate() {
            for e in &p.embeddings {
                labels.push(i);
                embeddings.push(e);
            }
        }
        // Faces of tracks a running vigil named, as more faces of their person.
        let named = NamedTracks::load(&path, &model, dim)?;
        let mut from_tracks = 0;
        for (i, p) in g.people.iter().enumerate() {
            for e in named.faces(&p.name) {
                labels.push(i);
                embeddings.push(e);
                from_tracks += 1;
            }
        }
        let mut grouped = 0;
        for (i, grp) in groups.groups.iter().enumerate() {
            for e in grp.embeddings() {
                labels.push(g.people.len() + i);
                embeddings.push(e);
                grouped += 1;
            }
        }
        let (genuine, impostor) = calibrate::pairs(&labels, &embeddings);
        let c = calibrate::calibrate(&genuine, &impostor, far, self.threshold);
        let mut v = serde_json::to_value(&c).map_err(anyhow::Error::from)?;
        v["gallery"] = json!(path.display().to_string());
        v["people"] = json!(g.people.len());
        v["embeddings"] = json!(g.embeddings());
        v["unknown_group_embeddings"] = json!(grouped);
        v["named_track_embeddings"] = json!(from_tracks);
        Ok(v)
    }

    /// The groups of unknown faces: those of the running vigil, or of the file.
    pub fn unknowns(&self) -> Result<Value, OpError> {
        let (path, model, dim) = self.file();
        let groups = match &self.store {
            Store::Live(g) if g.unknowns().is_some() => {
                g.unknowns().map(|u| u.list()).unwrap_or_default()
            }
            _ => Unknowns::load(&path, &model, dim)?
                .groups
                .iter()
                .map(|g| g.info())
                .collect(),
        };
        Ok(json!({
            "file": crate::gallery::unknowns::path(&path).display().to_string(),
            "groups": groups,
        }))
    }

    /// Enrols the faces of unknown group `id` under `name` and retires the group.
    pub fn name_unknown(&mut self, id: &str, name: &str) -> Result<Value, OpError> {
        crate::gallery::validate_name(name)?;
        let (path, model, dim) = self.file();
        let live = match &self.store {
            Store::Live(g) => g.unknowns().cloned(),
            Store::File { .. } => None,
        };
        let group = match &live {
            Some(u) => u.get(id),
            None => Unknowns::load(&path, &model, dim)?
                .groups
                .into_iter()
                .find(|g| g.id == id),
        }
        .ok_or_else(|| {
            OpError::NotFound(format!(
                "no unknown group `{}` (see `vigil gallery unknowns`)",
                echo(id)
            ))
        })?;
        let added: Vec<(Vec<f32>, String)> = group
            .tracks
            .iter()
            .flat_map(|t| {
                t.embeddings.iter().map(move |e| {
                    (
                        e.clone(),
                        format!("unknown {id}: stream {} track {}", t.stream, t.track_id),
                    )
                })
            })
            .collect();
        let count = added.len();
        let total = self.update(|g| {
            for (e, source) in added {
                g.enroll(name, e, source)?;
            }
            Ok(g.person(name)?.embeddings.len())
        })?;
        match &live {
            Some(u) => {
                u.retire(id);
            }
            None => {
                let _lock = live::FileLock::take(&path)?;
                let mut u = Unknowns::load(&path, &model, dim)?;
                u.retire(id);
                u.save(&path, &model, dim)?;
            }
        }
        Ok(
            json!({"id": id, "enrolled": name, "added": count, "embeddings": total, "gallery": path.display().to_string()}),
        )
    }

    /// Fits a projection head and adopts it if held-out verification improves.
    pub fn tune(&mut self) -> Result<Value, OpError> {
        let (path, model, dim) = self.file();
        // Read under the lock; trained without it (enrolments go on meanwhile).
        let (g, negatives, unknowns) = {
            let _lock = live::FileLock::take(&path)?;
            (
                Gallery::open(&path, &model, dim)?,
                Negatives::load(&path, &model, dim)?,
                Unknowns::load(&path, &model, dim)?,
            )
        };
        let outcome = crate::gallery::tune::tune(&g, &negatives, &unknowns, &self.tune);
        let version = match &outcome.head {
            Some(h) => {
                let _lock = live::FileLock::take(&path)?;
                let mut heads = Heads::load(&path, &model, dim)?;
                let v = heads.adopt(h.clone());
                heads.save(&path, &model, dim)?;
                Some(v)
            }
            None => {
                // A damaged heads file is said now, not at the next adoption.
                Heads::load(&path, &model, dim)?;
                None
            }
        };
        self.corrections_changed()?;
        let f = &outcome.figures;
        let summary = match (version, f) {
            (Some(v), Some(f)) => format!(
                "head version {v} adopted: held-out true-accept rate {:.3} -> {:.3} at a false-accept rate of {} ({} genuine, {} impostor pairs); `vigil gallery tune --rollback` undoes it",
                f.heldout_tar_raw, f.heldout_tar_head, f.far, f.heldout_genuine, f.heldout_impostor
            ),
            _ => format!("no head adopted: {}", outcome.reason),
        };
        Ok(json!({
            "adopted": version.is_some(),
            "version": version,
            "reason": outcome.reason,
            "figures": outcome.figures,
            "file": crate::gallery::learned::head_path(&path).display().to_string(),
            "summary": summary,
        }))
    }

    /// Restores the head state before the last tune (or rollback).
    pub fn rollback(&mut self) -> Result<Value, OpError> {
        let (path, model, dim) = self.file();
        let active = {
            let _lock = live::FileLock::take(&path)?;
            let mut heads = Heads::load(&path, &model, dim)?;
            let active = heads.rollback().map_err(|m| OpError::Invalid {
                field: "rollback",
                message: m,
            })?;
            heads.save(&path, &model, dim)?;
            active
        };
        self.corrections_changed()?;
        let summary = match active {
            Some(v) => format!("head version {v} is in use again"),
            None => "the raw embeddings are in use again (no head)".to_string(),
        };
        Ok(json!({"active": active, "summary": summary}))
    }

    /// Records the (only, or chosen) face of the photo as not being `name`.
    pub fn reject(
        &mut self,
        name: &str,
        photo: &Photo,
        face: Option<usize>,
    ) -> Result<Value, OpError> {
        let (_, det, desc) = self.one_face_and_image(photo, face)?;
        self.reject_embedding(name, desc, photo.label(), Some(box_json(&det)))
    }

    /// Records `embedding` as not being `name`, who must be enrolled.
    pub fn reject_embedding(
        &mut self,
        name: &str,
        embedding: Vec<f32>,
        source: String,
        bbox: Option<Value>,
    ) -> Result<Value, OpError> {
        let (path, model, dim) = self.file();
        let count = {
            let _lock = live::FileLock::take(&path)?;
            Gallery::open(&path, &model, dim)?.person(name)?;
            let mut n = Negatives::load(&path, &model, dim)?;
            let count = n.add(name, embedding, source.clone());
            n.save(&path, &model, dim)?;
            count
        };
        self.corrections_changed()?;
        Ok(json!({
            "rejected": name, "image": source, "box": bbox, "negatives": count,
            "file": crate::gallery::learned::negatives_path(&path).display().to_string(),
        }))
    }
}
