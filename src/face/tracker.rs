//! Per-stream face tracks by box overlap (IoU). A person in view is embedded a bounded number
//! of times, matched against the gallery, and reported once per track, and again only if the
//! decision changes (unknown becomes a name, or one name becomes another).

use super::detector::Detection;
use crate::gallery::Match;
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone)]
pub struct TrackerParams {
    /// Smallest overlap for a detection to continue a track.
    pub iou_threshold: f32,
    /// A track not seen for this long (media seconds) is closed.
    pub max_gap_s: f64,
    /// Most embeddings computed per track.
    pub embeds_per_track: usize,
    /// Embeddings gathered before the first decision (fewer if the track ends sooner).
    pub decide_after: usize,
    /// Distance below which a match names the person.
    pub match_threshold: f32,
    /// Once its embeddings are spent, a track is embedded again this often (media seconds; 0
    /// never), so that someone else taking the same place is noticed.
    pub reverify_s: f64,
}

/// What a track concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub track_id: u64,
    /// `None` for an unknown face.
    pub identity: Option<String>,
    /// Distance to the nearest enrolled person (absent with an empty gallery).
    pub distance: Option<f32>,
    /// The second nearest person's distance.
    pub runner_up: Option<Match>,
    pub bbox: [f32; 4],
    pub media_time: f64,
    /// Index of the detection in the frame that led to this decision (for snapshots).
    pub detection: Option<usize>,
    /// The track's latest embeddings (at most `embeds_per_track`), for grouping unknown faces.
    pub embeddings: Vec<Vec<f32>>,
    /// When the track was first seen (media seconds).
    pub first_seen: f64,
}

#[derive(Debug)]
struct Track {
    id: u64,
    bbox: [f32; 4],
    last_seen: f64,
    embeds: usize,
    /// When the last embedding was made (media seconds).
    last_embed: f64,
    /// The nearest matches of the latest `decide_after` embeddings: decisions follow the face
    /// as it is now, so a different person in the same place is noticed.
    recent: VecDeque<Vec<Match>>,
    /// The latest embeddings themselves.
    descs: VecDeque<Vec<f32>>,
    first_seen: f64,
    reported: Option<Option<String>>,
}

pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

pub struct Tracker {
    p: TrackerParams,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(p: TrackerParams) -> Tracker {
        Tracker {
            p,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Assigns this frame's detections to tracks (greedy, highest overlap first), opens tracks
    /// for the rest and closes stale ones. Returns, per detection, its track and whether it
    /// should be embedded; and the decisions of tracks closed now.
    pub fn observe(&mut self, t: f64, dets: &[Detection]) -> (Vec<(u64, bool)>, Vec<Decision>) {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (di, d) in dets.iter().enumerate() {
            for (ti, tr) in self.tracks.iter().enumerate() {
                let o = iou(&d.bbox, &tr.bbox);
                if o >= self.p.iou_threshold {
                    pairs.push((o, di, ti));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut det_track: Vec<Option<usize>> = vec![None; dets.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, di, ti) in pairs {
            if det_track[di].is_none() && !taken[ti] {
                det_track[di] = Some(ti);
                taken[ti] = true;
            }
        }
        let mut out = Vec::with_capacity(dets.len());
        for (di, d) in dets.iter().enumerate() {
            let ti = match det_track[di] {
                Some(ti) => ti,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        bbox: d.bbox,
                        last_seen: t,
                        embeds: 0,
                        last_embed: f64::NEG_INFINITY,
                        recent: VecDeque::new(),
                        descs: VecDeque::new(),
                        first_seen: t,
                        reported: None,
                    });
                    self.next_id += 1;
                    self.tracks.len() - 1
                }
            };
            let tr = &mut self.tracks[ti];
            tr.bbox = d.bbox;
            tr.last_seen = t;
            let reverify = self.p.reverify_s > 0.0 && t - tr.last_embed >= self.p.reverify_s;
            out.push((tr.id, tr.embeds < self.p.embeds_per_track || reverify));
        }
        let max_gap = self.p.max_gap_s;
        let closed = self.close_where(|tr| t - tr.last_seen > max_gap, t);
        (out, closed)
    }

    /// Records one embedding and its nearest matches for `track_id`; returns a decision when
    /// the track reports for the first time or changes its mind.
    pub fn matched(
        &mut self,
        track_id: u64,
        desc: &[f32],
        matches: &[Match],
        detection: usize,
        t: f64,
    ) -> Option<Decision> {
        let p = self.p.clone();
        let tr = self.tracks.iter_mut().find(|tr| tr.id == track_id)?;
        if !desc.is_empty() {
            tr.descs.push_back(desc.to_vec());
            while tr.descs.len() > p.embeds_per_track.max(1) {
                tr.descs.pop_front();
            }
        }
        tr.embeds += 1;
        tr.last_embed = t;
        tr.recent.push_back(matches.to_vec());
        while tr.recent.len() > p.decide_after.max(1) {
            tr.recent.pop_front();
        }
        let d = match &tr.reported {
            None if tr.embeds < p.decide_after => return None,
            None => decide(tr, &p, t, Some(detection)),
            // After the first report, only a new name is news: a known face that looks worse
            // for a while (profile, blur) does not become unknown again. An unknown face is
            // named by its best recent look, as at first; a named one is renamed only when
            // most of the recent looks say the new name, so one look that happens to fall just
            // inside someone else's threshold does not rename the person in view.
            Some(before) => {
                let d = decide(tr, &p, t, Some(detection));
                match &d.identity {
                    Some(name)
                        if d.identity != *before
                            && (before.is_none() || most_say(tr, name, &p)) =>
                    {
                        d
                    }
                    _ => return None,
                }
            }
        };
        tr.reported = Some(d.identity.clone());
        Some(d)
    }

    /// Boxes of the open tracks, where to look for them in the next frame.
    pub fn boxes(&self) -> Vec<[f32; 4]> {
        self.tracks.iter().map(|t| t.bbox).collect()
    }

    /// Whether a track of this id is open and not reported yet: closing it will report it.
    pub fn undecided(&self, id: u64) -> bool {
        self.tracks
            .iter()
            .any(|t| t.id == id && t.reported.is_none())
    }

    /// Closes every track (end of stream), reporting those that never did.
    pub fn finish(&mut self, t: f64) -> Vec<Decision> {
        self.close_where(|_| true, t)
    }

    fn close_where(&mut self, stale: impl Fn(&Track) -> bool, t: f64) -> Vec<Decision> {
        let p = self.p.clone();
        let mut out = Vec::new();
        self.tracks.retain(|tr| {
            if !stale(tr) {
                return true;
            }
            if tr.reported.is_none() && tr.embeds > 0 {
                out.push(decide(tr, &p, t.min(tr.last_seen), None));
            }
            false
        });
        out
    }
}

/// Whether `name` is the nearest match, within the threshold, of more than half of the
/// track's recent embeddings.
fn most_say(tr: &Track, name: &str, p: &TrackerParams) -> bool {
    let says = tr
        .recent
        .iter()
        .filter(|ms| {
            ms.iter()
                .min_by(|a, b| a.distance.total_cmp(&b.distance))
                .is_some_and(|m| m.name == name && m.distance < p.match_threshold)
        })
        .count();
    2 * says > tr.recent.len()
}

fn decide(tr: &Track, p: &TrackerParams, t: f64, detection: Option<usize>) -> Decision {
    let mut best: HashMap<&String, f32> = HashMap::new();
    for m in tr.recent.iter().flatten() {
        let e = best.entry(&m.name).or_insert(f32::INFINITY);
        *e = e.min(m.distance);
    }
    let mut ranked: Vec<(&String, f32)> = best.into_iter().collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    let nearest = ranked.first();
    let identity = nearest
        .filter(|(_, d)| *d < p.match_threshold)
        .map(|(n, _)| (*n).clone());
    Decision {
        track_id: tr.id,
        identity,
        distance: nearest.map(|(_, d)| *d),
        runner_up: ranked.get(1).map(|(n, d)| Match {
            name: (*n).clone(),
            distance: *d,
        }),
        bbox: tr.bbox,
        media_time: t,
        detection,
        embeddings: tr.descs.iter().cloned().collect(),
        first_seen: tr.first_seen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32) -> Detection {
        Detection {
            bbox: [x, 0.0, x + 100.0, 100.0],
            prob: 1.0,
            landmarks: [[0.0; 2]; 5],
        }
    }

    fn params() -> TrackerParams {
        TrackerParams {
            iou_threshold: 0.3,
            max_gap_s: 1.0,
            embeds_per_track: 3,
            decide_after: 2,
            match_threshold: 0.6,
            reverify_s: 0.0,
        }
    }

    fn m(name: &str, d: f32) -> Match {
        Match {
            name: name.into(),
            distance: d,
        }
    }

    #[test]
    fn a_moving_face_keeps_its_track_and_is_reported_once() {
        let mut tr = Tracker::new(params());
        let mut decisions = Vec::new();
        for i in 0..10 {
            let (assigned, closed) = tr.observe(i as f64 * 0.1, &[det(i as f32 * 5.0)]);
            assert!(closed.is_empty());
            assert_eq!(assigned[0].0, 1, "frame {i} stays on track 1");
            if assigned[0].1 {
                decisions.extend(tr.matched(
                    1,
                    &[],
                    &[m("ada", 0.4), m("bob", 0.8)],
                    0,
                    i as f64 * 0.1,
                ));
            }
        }
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!(decisions[0].identity.as_deref(), Some("ada"));
        assert_eq!(decisions[0].runner_up, Some(m("bob", 0.8)));
        assert!(tr.finish(1.0).is_empty(), "already reported");
    }

    #[test]
    fn embeddings_per_track_are_bounded() {
        let mut tr = Tracker::new(params());
        let mut embeds = 0;
        for i in 0..20 {
            let (a, _) = tr.observe(i as f64 * 0.04, &[det(0.0)]);
            if a[0].1 {
                embeds += 1;
                tr.matched(a[0].0, &[], &[m("ada", 0.9)], 0, 0.0);
            }
        }
        assert_eq!(embeds, 3);
    }

    #[test]
    fn a_changed_mind_is_reported_again() {
        let mut tr = Tracker::new(TrackerParams {
            embeds_per_track: 5,
            ..params()
        });
        tr.observe(0.0, &[det(0.0)]);
        assert_eq!(
            tr.matched(1, &[], &[m("ada", 0.7)], 0, 0.0),
            None,
            "waits for two embeddings"
        );
        let first = tr
            .matched(1, &[], &[m("ada", 0.65)], 0, 0.1)
            .expect("decides after two");
        assert_eq!(
            first.identity, None,
            "0.65 is above the 0.6 threshold: unknown"
        );
        assert_eq!(
            tr.matched(1, &[], &[m("ada", 0.62)], 0, 0.2),
            None,
            "still unknown: no new event"
        );
        let second = tr
            .matched(1, &[], &[m("ada", 0.41)], 0, 0.3)
            .expect("now known");
        assert_eq!(second.identity.as_deref(), Some("ada"));
    }

    #[test]
    fn two_faces_get_two_tracks_and_a_lost_track_is_closed_with_its_decision() {
        let mut tr = Tracker::new(params());
        let (a, _) = tr.observe(0.0, &[det(0.0), det(500.0)]);
        assert_eq!((a[0].0, a[1].0), (1, 2));
        tr.matched(2, &[], &[m("bob", 0.3)], 1, 0.0);
        let (_, closed) = tr.observe(2.0, &[det(0.0)]);
        assert_eq!(closed.len(), 1, "track 2 was gone for 2 s");
        assert_eq!(
            (closed[0].track_id, closed[0].identity.as_deref()),
            (2, Some("bob"))
        );
    }

    #[test]
    fn someone_else_in_the_same_place_is_noticed_by_reverification() {
        let p = TrackerParams {
            embeds_per_track: 2,
            reverify_s: 1.0,
            ..params()
        };
        let mut tr = Tracker::new(p);
        let mut decisions = Vec::new();
        let mut embeds = 0;
        for i in 0..40 {
            let t = i as f64 * 0.1;
            let (a, _) = tr.observe(t, &[det(0.0)]);
            if a[0].1 {
                embeds += 1;
                // Ada until 1.5 s, then Bob sits down in her place: Bob is named once most of
                // the recent looks (both of the two kept) are his, at the second re-check.
                let seen = if t < 1.5 {
                    [m("ada", 0.4), m("bob", 0.9)]
                } else {
                    [m("bob", 0.35), m("ada", 0.9)]
                };
                decisions.extend(tr.matched(a[0].0, &[], &seen, 0, t));
            }
        }
        let names: Vec<Option<&str>> = decisions.iter().map(|d| d.identity.as_deref()).collect();
        assert_eq!(names, vec![Some("ada"), Some("bob")], "{decisions:?}");
        assert_eq!(decisions[1].media_time, 3.1, "{decisions:?}");
        assert_eq!(
            embeds,
            2 + 3,
            "two to start, then one a second (at 1.1 s, 2.1 s and 3.1 s)"
        );
    }

    #[test]
    fn one_look_just_inside_someone_elses_threshold_does_not_rename_the_person() {
        // Every frame embedded (as with `embeds_per_track` unbounded), three looks decide; the
        // Hamilton clip did this: a performer turning away matched another enrolled person at
        // 0.59 once, nearer than his own best of the three looks.
        let p = TrackerParams {
            embeds_per_track: 1_000,
            decide_after: 3,
            ..params()
        };
        let mut tr = Tracker::new(p);
        let mut names = Vec::new();
        for i in 0..12 {
            let t = i as f64 * 0.04;
            let (a, _) = tr.observe(t, &[det(0.0)]);
            let seen = match i {
                6 => [m("obama", 0.59), m("lin", 0.64)],
                7 | 8 => [m("lin", 0.61), m("obama", 0.7)],
                _ => [m("lin", 0.5), m("obama", 0.75)],
            };
            names.extend(
                tr.matched(a[0].0, &[], &seen, 0, t)
                    .map(|d| (d.identity, d.media_time)),
            );
        }
        assert_eq!(names, vec![(Some("lin".to_string()), 0.08)]);
        // When most of the recent looks do say someone else, that is news.
        for i in 12..15 {
            let t = i as f64 * 0.04;
            let (a, _) = tr.observe(t, &[det(0.0)]);
            names.extend(
                tr.matched(a[0].0, &[], &[m("obama", 0.45), m("lin", 0.7)], 0, t)
                    .map(|d| (d.identity, d.media_time)),
            );
        }
        assert_eq!(
            names[1..],
            [(Some("obama".to_string()), 0.52)],
            "two of three looks"
        );
    }

    #[test]
    fn a_known_face_that_looks_worse_for_a_while_is_not_reported_unknown() {
        let p = TrackerParams {
            embeds_per_track: 10,
            ..params()
        };
        let mut tr = Tracker::new(p);
        tr.observe(0.0, &[det(0.0)]);
        assert!(tr.matched(1, &[], &[m("ada", 0.4)], 0, 0.0).is_none());
        assert_eq!(
            tr.matched(1, &[], &[m("ada", 0.4)], 0, 0.1)
                .unwrap()
                .identity
                .as_deref(),
            Some("ada")
        );
        assert!(tr.matched(1, &[], &[m("ada", 0.8)], 0, 0.2).is_none());
        assert!(
            tr.matched(1, &[], &[m("ada", 0.8)], 0, 0.3).is_none(),
            "a profile view is not news"
        );
    }
}
