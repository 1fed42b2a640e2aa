//! Faces of named tracks, kept for calibration: `<gallery>.tracks.json`.
//!
//! A gallery enrolled from one photo a person has no genuine pair (two faces of one person), so
//! `vigil gallery calibrate` cannot estimate false rejects from it. A running vigil keeps the
//! faces of the latest few tracks it named per person (`faces.calibration`); calibration pairs
//! them with the person's photos and with each other. They were named because they matched, so
//! they show how far accepted faces lie from the photos, not how many faces were missed: a
//! false-reject rate on them is a lower bound (docs/faces.md).
//!
//! Bounded (tracks per person, people, faces per track; the least recently seen go first),
//! written crash-safely under the gallery's lock with the unknown groups, refused by name when
//! damaged. Tracks of a name no longer in the gallery are ignored.

use super::side;
use super::track::{distinct, TrackFaces};
use super::GalleryError;
use crate::config::CalibrationConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FORMAT: &str = "vigil-named-tracks";
/// Most distinct faces kept of one track.
pub const FACES_PER_TRACK: usize = 8;

/// `<gallery>.tracks.json`.
pub fn path(gallery: &Path) -> PathBuf {
    side::path(gallery, "tracks")
}

/// One person's kept tracks, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersonTracks {
    pub name: String,
    pub tracks: Vec<TrackFaces>,
}

/// The file: people least recently seen first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamedTracks {
    pub people: Vec<PersonTracks>,
}

impl NamedTracks {
    pub fn load(gallery: &Path, model: &str, dim: usize) -> Result<NamedTracks, GalleryError> {
        let n: Option<NamedTracks> =
            side::read(&path(gallery), FORMAT, model, dim, |n: &NamedTracks| {
                for p in &n.people {
                    side::check_embeddings(
                        &format!("person {}", crate::echo::echo(&p.name)),
                        dim,
                        p.tracks.iter().flat_map(|t| &t.embeddings),
                    )?;
                }
                Ok(())
            })?;
        Ok(n.unwrap_or_default())
    }

    pub fn save(&self, gallery: &Path, model: &str, dim: usize) -> Result<(), GalleryError> {
        side::write(&path(gallery), FORMAT, model, dim, self)
    }

    /// Keeps a named track's faces (a track named again adds its new faces to its entry).
    pub fn keep(&mut self, name: &str, t: TrackFaces, cfg: &CalibrationConfig) {
        let mut p = match self.people.iter().position(|p| p.name == name) {
            Some(i) => self.people.remove(i),
            None => PersonTracks {
                name: name.to_string(),
                tracks: vec![],
            },
        };
        let same =
            |k: &TrackFaces| k.run == t.run && k.stream == t.stream && k.track_id == t.track_id;
        let mut new = distinct(&t.embeddings, p.tracks.iter().flat_map(|k| &k.embeddings));
        match p.tracks.iter().position(same) {
            Some(i) => {
                let mut k = p.tracks.remove(i);
                k.last = k.last.max(t.last);
                k.embeddings.append(&mut new);
                k.embeddings.truncate(FACES_PER_TRACK);
                p.tracks.push(k);
            }
            None if !new.is_empty() => {
                new.truncate(FACES_PER_TRACK);
                p.tracks.push(TrackFaces {
                    embeddings: new,
                    ..t
                });
            }
            // Only faces kept already: the person was seen again, nothing more to keep.
            None => {}
        }
        while p.tracks.len() > cfg.tracks_per_person {
            p.tracks.remove(0);
        }
        self.people.push(p);
        while self.people.len() > cfg.max_people.max(1) {
            self.people.remove(0);
        }
    }

    /// The kept faces of `name`.
    pub fn faces<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Vec<f32>> {
        self.people
            .iter()
            .filter(move |p| p.name == name)
            .flat_map(|p| p.tracks.iter().flat_map(|t| &t.embeddings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: u64, e: Vec<Vec<f32>>) -> TrackFaces {
        TrackFaces {
            stream: "cam".into(),
            track_id: id,
            run: "r".into(),
            first: id as f64,
            last: id as f64 + 1.0,
            embeddings: e,
        }
    }

    #[test]
    fn tracks_are_kept_per_person_bounded_and_merged_by_track() {
        let cfg = CalibrationConfig {
            tracks_per_person: 2,
            max_people: 2,
        };
        let mut n = NamedTracks::default();
        n.keep("ann", track(1, vec![vec![0.0, 0.0], vec![0.0, 0.0]]), &cfg);
        assert_eq!(n.faces("ann").count(), 1, "one copy of a still picture");
        n.keep("ann", track(1, vec![vec![0.5, 0.0]]), &cfg);
        assert_eq!(n.people[0].tracks.len(), 1, "the same track, named again");
        assert_eq!(n.faces("ann").count(), 2);
        n.keep("ann", track(9, vec![vec![0.5, 0.0]]), &cfg);
        assert_eq!(
            n.people[0].tracks.len(),
            1,
            "the same picture in another track"
        );
        n.keep("ann", track(2, vec![vec![1.0, 0.0]]), &cfg);
        n.keep("ann", track(3, vec![vec![2.0, 0.0]]), &cfg);
        let ids: Vec<u64> = n.people[0].tracks.iter().map(|t| t.track_id).collect();
        assert_eq!(ids, [2, 3], "the oldest track goes first");
        n.keep("bob", track(4, vec![vec![9.0, 0.0]]), &cfg);
        n.keep("cy", track(5, vec![vec![7.0, 0.0]]), &cfg);
        let names: Vec<&str> = n.people.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bob", "cy"], "ann was seen least recently");
        assert_eq!(n.faces("ann").count(), 0);
    }

    #[test]
    fn a_damaged_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g.json");
        let cfg = CalibrationConfig::default();
        let mut n = NamedTracks::default();
        n.keep("ann", track(1, vec![vec![0.0, 0.0]]), &cfg);
        n.save(&g, "m", 2).unwrap();
        assert_eq!(
            NamedTracks::load(&g, "m", 2).unwrap().faces("ann").count(),
            1
        );
        let e = NamedTracks::load(&g, "m", 3).err().unwrap().to_string();
        assert!(e.contains("g.json.tracks.json"), "{e}");
        std::fs::write(path(&g), "{\"format\":").unwrap();
        let e = NamedTracks::load(&g, "m", 2).err().unwrap().to_string();
        assert!(
            e.contains("g.json.tracks.json") && e.contains("damaged"),
            "{e}"
        );
    }
}
