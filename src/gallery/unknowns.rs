//! Unknown faces grouped: every `face.unknown` carries an `unknown_id`, shared by the tracks of
//! one unseen person (any camera, this run or a later one), so a user can name them once.
//!
//! Grouping is incremental: a track that ends unknown joins the group holding the embedding
//! nearest to one of its own, when that distance is below `faces.match_threshold` (the test a
//! gallery match passes, so a named group is later named the same way) and none of the group's
//! tracks was in view at the same time (two faces in one frame are two people), and opens a
//! new group otherwise. Groups live in `<gallery>.unknowns.json` beside the gallery: bounded
//! (`faces.unknowns.max_groups`, the least recently seen evicted first; a few tracks per group,
//! the oldest dropped), written crash-safely under the gallery's lock, and refused by name when
//! damaged. Naming a group (`vigil gallery name-unknown`) enrols its embeddings and retires its
//! id, so a running vigil that saves its groups later does not bring it back.

use super::lock::FileLock;
use super::named::NamedTracks;
use super::track::{distinct, TrackFaces};
use super::{side, GalleryError};
use crate::config::{CalibrationConfig, UnknownsConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FORMAT: &str = "vigil-unknowns";
/// Retired ids remembered (named groups), so a save by a running vigil does not revive them.
const MAX_RETIRED: usize = 1024;
/// Least time between two saves by a running vigil; the rest is written at its end.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The same for the faces of named tracks (a larger file, needed only by calibration).
const SAVE_NAMED_EVERY: Duration = Duration::from_secs(30);

/// `<gallery>.unknowns.json`.
pub fn path(gallery: &Path) -> PathBuf {
    side::path(gallery, "unknowns")
}

/// One unseen person, as far as grouping can tell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    /// Tracks that joined it, all told (only the latest few are kept).
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub streams: Vec<String>,
    /// The latest snapshot of one of its faces, when snapshots are on.
    pub snapshot: Option<String>,
    pub tracks: Vec<TrackFaces>,
}

impl Group {
    pub fn embeddings(&self) -> impl Iterator<Item = &Vec<f32>> + Clone {
        self.tracks.iter().flat_map(|t| &t.embeddings)
    }

    /// Distance from the nearest of `faces` to the nearest of the group's embeddings.
    fn distance(&self, faces: &[Vec<f32>]) -> f32 {
        let mut best = f32::INFINITY;
        for g in self.embeddings() {
            for f in faces {
                best = best.min(super::distance(f, g));
            }
        }
        best
    }

    /// Whether one of the group's tracks was in view with `s` (the same run and stream, their
    /// times overlapping, another track): two faces in one frame are two people, however near
    /// their embeddings (small, blurred faces of a crowd can all be).
    fn seen_beside(&self, s: &Seen) -> bool {
        self.tracks
            .iter()
            .any(|t| t.beside(s.run, s.stream, s.track_id, s.first, s.last))
    }

    /// As listed: everything but the embeddings.
    pub fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "count": self.count, "first_seen": self.first_seen,
            "last_seen": self.last_seen, "streams": self.streams, "snapshot": self.snapshot,
            "embeddings": self.embeddings().count(),
        })
    }
}

/// The groups file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Unknowns {
    pub next_id: u64,
    /// Least recently seen first.
    pub groups: Vec<Group>,
    /// Ids of groups that were named.
    pub retired: Vec<String>,
}

/// A track that ended unknown.
pub struct Seen<'a> {
    pub stream: &'a str,
    pub track_id: u64,
    pub run: &'a str,
    pub first: f64,
    pub last: f64,
    pub embeddings: &'a [Vec<f32>],
    pub snapshot: Option<&'a str>,
}

impl Unknowns {
    pub fn load(gallery: &Path, model: &str, dim: usize) -> Result<Unknowns, GalleryError> {
        let u: Option<Unknowns> =
            side::read(&path(gallery), FORMAT, model, dim, |u: &Unknowns| {
                for g in &u.groups {
                    side::check_embeddings(
                        &format!("group {}", crate::echo::echo(&g.id)),
                        dim,
                        g.embeddings(),
                    )?;
                }
                Ok(())
            })?;
        Ok(u.unwrap_or_default())
    }

    pub fn save(&self, gallery: &Path, model: &str, dim: usize) -> Result<(), GalleryError> {
        side::write(&path(gallery), FORMAT, model, dim, self)
    }

    /// Puts a track into its group (an existing one within `threshold`, or a new one); returns
    /// the group's id.
    pub fn assign(&mut self, s: &Seen, threshold: f32, cfg: &UnknownsConfig) -> String {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let nearest = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.seen_beside(s))
            .map(|(i, g)| (i, g.distance(s.embeddings)))
            .filter(|(_, d)| *d < threshold)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        let mut g = match nearest {
            Some(i) => self.groups.remove(i),
            None => {
                self.next_id += 1;
                Group {
                    id: format!("u{}", self.next_id),
                    count: 0,
                    first_seen: now.clone(),
                    last_seen: now.clone(),
                    streams: vec![],
                    snapshot: None,
                    tracks: vec![],
                }
            }
        };
        g.count += 1;
        g.last_seen = now;
        if !g.streams.iter().any(|x| x == s.stream) {
            g.streams.push(s.stream.to_string());
        }
        if let Some(snap) = s.snapshot {
            g.snapshot = Some(snap.to_string());
        }
        let kept = distinct(s.embeddings, g.embeddings());
        if !kept.is_empty() {
            g.tracks.push(TrackFaces {
                stream: s.stream.to_string(),
                track_id: s.track_id,
                run: s.run.to_string(),
                first: s.first,
                last: s.last,
                embeddings: kept,
            });
        }
        while g.tracks.len() > cfg.tracks_per_group.max(1) {
            g.tracks.remove(0);
        }
        let id = g.id.clone();
        self.groups.push(g);
        while self.groups.len() > cfg.max_groups.max(1) {
            self.groups.remove(0);
        }
        id
    }

    /// Removes a group for good (it was named).
    pub fn retire(&mut self, id: &str) -> Option<Group> {
        let i = self.groups.iter().position(|g| g.id == id)?;
        self.retired.push(id.to_string());
        if self.retired.len() > MAX_RETIRED {
            self.retired.remove(0);
        }
        Some(self.groups.remove(i))
    }
}

/// The groups of a running vigil: assigned in memory, saved at most every second and at the
/// end, each save merged with what `name-unknown` retired on disk meanwhile. It also keeps the
/// faces of named tracks ([`super::named`]), saved at most every 30 s and at the end.
pub struct UnknownStore {
    gallery: PathBuf,
    model: String,
    dim: usize,
    cfg: UnknownsConfig,
    calibration: CalibrationConfig,
    threshold: f32,
    /// Names this run in the groups file.
    run: String,
    state: Mutex<State>,
}

struct State {
    u: Unknowns,
    dirty: bool,
    saved: Option<Instant>,
    named: NamedTracks,
    named_dirty: bool,
    named_saved: Option<Instant>,
}

impl UnknownStore {
    /// Reads the groups and named tracks beside `gallery` (a damaged file is an error).
    pub fn open(
        gallery: &Path,
        model: &str,
        dim: usize,
        cfg: &UnknownsConfig,
        calibration: &CalibrationConfig,
        threshold: f32,
    ) -> Result<UnknownStore, GalleryError> {
        let u = Unknowns::load(gallery, model, dim)?;
        let named = NamedTracks::load(gallery, model, dim)?;
        Ok(UnknownStore {
            gallery: gallery.to_path_buf(),
            model: model.into(),
            dim,
            cfg: cfg.clone(),
            calibration: calibration.clone(),
            threshold,
            run: uuid::Uuid::now_v7().to_string(),
            state: Mutex::new(State {
                u,
                dirty: false,
                saved: None,
                named,
                named_dirty: false,
                named_saved: Some(Instant::now()),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Groups a track that ended unknown; its group's id.
    pub fn assign(
        &self,
        stream: &str,
        track_id: u64,
        first: f64,
        last: f64,
        embeddings: &[Vec<f32>],
        snapshot: Option<&str>,
    ) -> Option<String> {
        if embeddings.is_empty() || !self.cfg.enabled {
            return None;
        }
        let mut st = self.state();
        let seen = Seen {
            stream,
            track_id,
            run: &self.run,
            first,
            last,
            embeddings,
            snapshot,
        };
        let id = st.u.assign(&seen, self.threshold, &self.cfg);
        st.dirty = true;
        if st.saved.is_none_or(|t| t.elapsed() >= SAVE_EVERY) {
            self.save(&mut st);
        }
        Some(id)
    }

    /// Keeps the faces of a track named `name` (for calibration).
    pub fn keep_named(
        &self,
        name: &str,
        stream: &str,
        track_id: u64,
        first: f64,
        last: f64,
        embeddings: &[Vec<f32>],
    ) {
        if embeddings.is_empty() || self.calibration.tracks_per_person == 0 {
            return;
        }
        let t = TrackFaces {
            stream: stream.to_string(),
            track_id,
            run: self.run.clone(),
            first,
            last,
            embeddings: embeddings.to_vec(),
        };
        let mut st = self.state();
        st.named.keep(name, t, &self.calibration);
        st.named_dirty = true;
        if st
            .named_saved
            .is_none_or(|t| t.elapsed() >= SAVE_NAMED_EVERY)
        {
            self.save_named(&mut st);
        }
    }

    /// Writes what is not saved yet.
    pub fn flush(&self) {
        let mut st = self.state();
        if st.dirty {
            self.save(&mut st);
        }
        if st.named_dirty {
            self.save_named(&mut st);
        }
    }

    fn save_named(&self, st: &mut State) {
        let result = FileLock::take(&self.gallery)
            .and_then(|_lock| st.named.save(&self.gallery, &self.model, self.dim));
        st.named_saved = Some(Instant::now());
        match result {
            Ok(()) => st.named_dirty = false,
            Err(e) => tracing::warn!("cannot save the faces of named tracks: {e}; kept in memory"),
        }
    }

    fn save(&self, st: &mut State) {
        let result = (|| {
            let _lock = FileLock::take(&self.gallery)?;
            let disk = Unknowns::load(&self.gallery, &self.model, self.dim)?;
            for id in disk.retired {
                if !st.u.retired.contains(&id) {
                    st.u.retire(&id);
                    if !st.u.retired.contains(&id) {
                        st.u.retired.push(id);
                    }
                }
            }
            st.u.next_id = st.u.next_id.max(disk.next_id);
            st.u.save(&self.gallery, &self.model, self.dim)
        })();
        st.saved = Some(Instant::now());
        match result {
            Ok(()) => st.dirty = false,
            Err(e) => tracing::warn!("cannot save the unknown-face groups: {e}; kept in memory"),
        }
    }

    /// The groups, least recently seen first.
    pub fn list(&self) -> Vec<serde_json::Value> {
        self.state().u.groups.iter().map(Group::info).collect()
    }

    pub fn get(&self, id: &str) -> Option<Group> {
        self.state().u.groups.iter().find(|g| g.id == id).cloned()
    }

    /// Retires a group (named) and saves at once.
    pub fn retire(&self, id: &str) -> Option<Group> {
        let mut st = self.state();
        let g = st.u.retire(id);
        self.save(&mut st);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(e: &'a [Vec<f32>], track: u64) -> Seen<'a> {
        Seen {
            stream: "cam",
            track_id: track,
            run: "r",
            // Each track in view for a second of its own.
            first: track as f64 * 10.0,
            last: track as f64 * 10.0 + 1.0,
            embeddings: e,
            snapshot: None,
        }
    }

    #[test]
    fn tracks_within_the_threshold_share_a_group_and_others_open_one() {
        let cfg = UnknownsConfig::default();
        let mut u = Unknowns::default();
        let a = u.assign(&seen(&[vec![0.0, 0.0]], 1), 0.6, &cfg);
        let b = u.assign(&seen(&[vec![2.0, 0.0]], 2), 0.6, &cfg);
        let a2 = u.assign(&seen(&[vec![5.0, 5.0], vec![0.3, 0.0]], 3), 0.6, &cfg);
        assert_ne!(a, b);
        assert_eq!(a, a2, "one of its faces is near the group");
        assert_eq!(u.groups.len(), 2);
        assert_eq!(u.groups[1].count, 2, "the last seen is last");
    }

    #[test]
    fn a_track_never_joins_a_group_that_was_in_view_with_it() {
        let cfg = UnknownsConfig::default();
        let mut u = Unknowns::default();
        fn at<'a>(e: &'a [Vec<f32>], track: u64, first: f64, last: f64, run: &'a str) -> Seen<'a> {
            Seen {
                first,
                last,
                run,
                ..seen(e, track)
            }
        }
        let (e, near) = (vec![vec![0.0, 0.0]], vec![vec![0.1, 0.0]]);
        let (e, near) = (e.as_slice(), near.as_slice());
        let a = u.assign(&at(e, 1, 7.6, 7.6, "r"), 0.6, &cfg);
        // Near in embedding, but on screen with track 1: another person.
        let b = u.assign(&at(near, 2, 7.6, 7.6, "r"), 0.6, &cfg);
        assert_ne!(a, b);
        // Track 1 again (its identity re-checked later): its own group.
        assert_eq!(u.assign(&at(e, 1, 7.6, 9.0, "r"), 0.6, &cfg), a);
        // Later in the same run, or at the same media time in another run: may be the same.
        let later = u.assign(&at(e, 3, 12.0, 13.0, "r"), 0.6, &cfg);
        let other_run = u.assign(&at(e, 4, 7.6, 7.6, "s"), 0.6, &cfg);
        assert_eq!(
            (later.as_str(), other_run.as_str()),
            (a.as_str(), a.as_str())
        );
    }

    #[test]
    fn groups_are_bounded_and_the_least_recently_seen_goes_first() {
        let cfg = UnknownsConfig {
            max_groups: 2,
            tracks_per_group: 2,
            ..UnknownsConfig::default()
        };
        let mut u = Unknowns::default();
        let first = u.assign(&seen(&[vec![0.0, 0.0]], 1), 0.6, &cfg);
        let second = u.assign(&seen(&[vec![5.0, 0.0]], 2), 0.6, &cfg);
        u.assign(&seen(&[vec![0.1, 0.0]], 3), 0.6, &cfg);
        u.assign(&seen(&[vec![0.2, 0.0]], 4), 0.6, &cfg);
        u.assign(&seen(&[vec![9.0, 0.0]], 5), 0.6, &cfg);
        let ids: Vec<&str> = u.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(
            ids,
            [first.as_str(), "u3"],
            "{second} was seen least recently"
        );
        assert_eq!(u.groups[0].tracks.len(), 2);
        assert_eq!(u.groups[0].count, 3);
    }

    #[test]
    fn a_group_named_on_disk_is_not_revived_by_a_running_save() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g.json");
        let cfg = UnknownsConfig::default();
        let calibration = CalibrationConfig::default();
        let store = UnknownStore::open(&g, "m", 2, &cfg, &calibration, 0.6).unwrap();
        let id = store
            .assign("cam", 1, 0.0, 1.0, &[vec![0.0, 0.0]], None)
            .unwrap();
        // `vigil gallery name-unknown` in another process.
        let mut disk = Unknowns::load(&g, "m", 2).unwrap();
        assert!(disk.retire(&id).is_some());
        disk.save(&g, "m", 2).unwrap();
        std::thread::sleep(SAVE_EVERY);
        let other = store
            .assign("cam", 2, 0.0, 1.0, &[vec![3.0, 0.0]], None)
            .unwrap();
        assert_ne!(other, id);
        let disk = Unknowns::load(&g, "m", 2).unwrap();
        let ids: Vec<&str> = disk.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, [other.as_str()]);
        std::fs::write(path(&g), "{\"format\":").unwrap();
        let e = UnknownStore::open(&g, "m", 2, &cfg, &calibration, 0.6)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("g.json.unknowns.json") && e.contains("damaged"),
            "{e}"
        );
    }
}
