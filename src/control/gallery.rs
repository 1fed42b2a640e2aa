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
use crate::gallery::{live, Gallery, GalleryError, LiveGallery};
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
    })
}

/// The operations of a running vigil, on its live gallery, with models of their own (the face
/// worker's are busy on its thread).
pub fn live(
    loaded: &config::Loaded,
    gallery: Arc<LiveGallery>,
) -> Result<GalleryOps, config::Problem> {
    let (models, _) = crate::pipeline::load_faces(loaded)?;
    Ok(GalleryOps {
        models,
        store: Store::Live(gallery),
        threshold: loaded.config.faces.match_threshold,
        max_pixels: loaded.config.gallery.max_image_pixels,
        pick: "?face=N",
    })
}

fn box_json(d: &Detection) -> Value {
    json!(d.bbox.map(|v| v.round()))
}

/// A photo given to an operation: a file (CLI) or bytes (API), with how to name it.
pub enum Photo<'a> {
    File(&'a Path),
    Bytes { label: &'a str, bytes: &'a [u8] },
}

impl Photo<'_> {
    fn label(&self) -> String {
        match self {
            Photo::File(p) => p.display().to_string(),
            Photo::Bytes { label, .. } => label.to_string(),
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
        self.file().display().to_string()
    }

    fn file(&self) -> &Path {
        match &self.store {
            Store::File { path, .. } => path,
            Store::Live(g) => &g.path,
        }
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
        match std::fs::read(chips::path(self.file(), e)) {
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
            if let Err(e) = chips::save(self.file(), &desc, &chip, size) {
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

    pub fn remove(&mut self, name: &str) -> Result<Value, OpError> {
        let p = self.update(|g| g.remove(name))?;
        chips::remove(self.file(), &p.embeddings);
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
            } => Gallery::open(path, model, *dim)?.index(index)?,
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
        let distance = embeddings
            .iter()
            .map(|e| crate::face::distance(&desc, e))
            .fold(f32::INFINITY, f32::min);
        let same = distance < self.threshold;
        Ok(
            json!({"identity": name, "image": image, "box": box_json(&det), "distance": distance, "threshold": self.threshold, "same": same}),
        )
    }
}
