//! The faces of one track, as the files beside the gallery keep them (unknown groups, named
//! tracks), and which two tracks were in view together.

use serde::{Deserialize, Serialize};

/// Embeddings of one track nearer than this to one kept already are the same picture.
const DUPLICATE: f32 = 0.01;

/// One track's faces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrackFaces {
    pub stream: String,
    pub track_id: u64,
    /// Which run of vigil saw it (two tracks of one run and stream that overlap in time are
    /// two people).
    pub run: String,
    /// Media seconds the track was first and last seen.
    pub first: f64,
    pub last: f64,
    #[serde(with = "super::embeddings")]
    pub embeddings: Vec<Vec<f32>>,
}

impl TrackFaces {
    /// Whether this track and another (`run`, `stream`, `track_id`, seen from `first` to
    /// `last`) were in view at the same time: two faces in one frame are two people.
    pub fn beside(&self, run: &str, stream: &str, track_id: u64, first: f64, last: f64) -> bool {
        self.run == run
            && self.stream == stream
            && self.track_id != track_id
            && self.first <= last
            && first <= self.last
    }
}

/// `embeddings` without near copies. A still picture gives the same embedding frame after
/// frame: one copy is kept, so calibration does not count a photo against itself as two faces.
/// The same across tracks: a picture seen again (a still camera, a file run twice) is not a
/// second face of its person, so `embeddings` near one of `had` are left out too.
pub fn distinct<'a>(
    embeddings: &[Vec<f32>],
    had: impl Iterator<Item = &'a Vec<f32>> + Clone,
) -> Vec<Vec<f32>> {
    let mut kept: Vec<Vec<f32>> = Vec::new();
    for e in embeddings {
        let new = |k: &Vec<f32>| super::distance(k, e) >= DUPLICATE;
        if kept.iter().all(new) && had.clone().all(new) {
            kept.push(e.clone());
        }
    }
    kept
}
