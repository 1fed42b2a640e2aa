//! `vigil gallery tune`: fits a projection head on the gallery's frozen embeddings with
//! batch-all triplet loss ([`super::triplet`]) and keeps it only when it verifies better.
//!
//! - Positives: two embeddings of one enrolled person (named unknown groups are enrolled
//!   people), two faces of one track of an unknown group.
//! - Negatives: embeddings of two people; a person and a photo rejected as them
//!   (`vigil gallery reject`); two tracks of one run and one stream that were in view at the
//!   same time (two faces in one frame are two people).
//! - Judged on a held-out split: `faces.tune.holdout` of each person's embeddings (at least
//!   one, for people with two or more) are queries against the rest; the head is adopted only
//!   if the true-accept rate of those queries, at the threshold that keeps the false-accept rate
//!   at `faces.tune.far`, goes up. Otherwise the raw embeddings stay.
//! - The adopted head is scaled so that the threshold at that false-accept rate on the
//!   training faces is the same as with the raw embeddings: `faces.match_threshold` keeps its
//!   meaning.

use super::calibrate::{tar_at_far, threshold_at_far};
use super::learned::{Figures, HeadVersion, Negatives};
use super::track::TrackFaces;
use super::triplet::{self, Fit, Relations};
use super::unknowns::Unknowns;
use super::Gallery;
use crate::config::TuneConfig;

/// Most enrolled embeddings trained and judged on (people are sampled above that).
pub const MAX_PERSON_EMBEDDINGS: usize = 1500;
/// Most embeddings of unknown groups' tracks trained on.
pub const MAX_TRACK_EMBEDDINGS: usize = 300;

/// What one embedding is, for the relations.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// An enrolled person's (index into the gallery's people).
    Person(usize),
    /// A photo rejected as this person.
    Rejected(usize),
    /// A face of this (group, track).
    Track(usize, usize),
}

/// The outcome: a head to adopt, or the reason it was not, with the figures either way.
pub struct Outcome {
    pub head: Option<HeadVersion>,
    pub figures: Option<Figures>,
    pub reason: String,
}

/// A small deterministic generator for the split (the same gallery splits the same way).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Genuine and impostor distances of `queries` against `gallery` (person-labelled), after
/// `f` maps each embedding.
fn verification(
    queries: &[(usize, Vec<f32>)],
    gallery: &[(usize, Vec<f32>)],
    f: &dyn Fn(&[f32]) -> Vec<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let g: Vec<(usize, Vec<f32>)> = gallery.iter().map(|(l, e)| (*l, f(e))).collect();
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (lq, q) in queries {
        let q = f(q);
        for (lg, e) in &g {
            let d = super::distance(&q, e);
            if lq == lg {
                genuine.push(d);
            } else {
                impostor.push(d);
            }
        }
    }
    (genuine, impostor)
}

fn overlaps(a: &TrackFaces, b: &TrackFaces) -> bool {
    a.beside(&b.run, &b.stream, b.track_id, b.first, b.last)
}

/// Fits and judges a head on the gallery, its negatives and its unknown groups.
pub fn tune(g: &Gallery, negatives: &Negatives, unknowns: &Unknowns, cfg: &TuneConfig) -> Outcome {
    let refuse = |reason: String, figures: Option<Figures>| Outcome {
        head: None,
        figures,
        reason,
    };
    // The split, over a deterministic sample of people when the gallery is large (each step
    // costs the square of the embeddings it trains on).
    let mut rng = SplitMix(0x5eed_7a11);
    let mut people: Vec<usize> = (0..g.people.len()).collect();
    for k in (1..people.len()).rev() {
        people.swap(k, (rng.next() % (k as u64 + 1)) as usize);
    }
    let mut total = 0;
    people.retain(|&i| {
        total += g.people[i].embeddings.len();
        total <= MAX_PERSON_EMBEDDINGS
    });
    people.sort_unstable();
    let mut heldout: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut kept: Vec<(usize, Vec<f32>)> = Vec::new();
    for &i in &people {
        let p = &g.people[i];
        let mut order: Vec<usize> = (0..p.embeddings.len()).collect();
        for k in (1..order.len()).rev() {
            order.swap(k, (rng.next() % (k as u64 + 1)) as usize);
        }
        let out = if order.len() >= 2 {
            ((order.len() as f64 * cfg.holdout).round() as usize).clamp(1, order.len() - 1)
        } else {
            0
        };
        for (r, &k) in order.iter().enumerate() {
            let e = (i, p.embeddings[k].clone());
            if r < out {
                heldout.push(e);
            } else {
                kept.push(e);
            }
        }
    }
    let raw = |e: &[f32]| e.to_vec();
    let (hg, hi) = verification(&heldout, &kept, &raw);
    if hg.is_empty() || hi.is_empty() {
        return refuse(
            format!(
                "too few faces to judge a head: {} held-out genuine and {} impostor pairs (enrol two or more photos of at least two people)",
                hg.len(),
                hi.len()
            ),
            None,
        );
    }

    let (x, rel) = training_set(g, &kept, negatives, unknowns);
    let n = x.len();
    if rel.triplets() == 0 {
        return refuse(
            "no training triplets: a person with two photos and someone else are needed".into(),
            None,
        );
    }
    let fit = Fit {
        out_dim: cfg.out_dim.min(g.dim),
        margin: cfg.margin as f64,
        squared: cfg.squared,
        steps: cfg.steps,
        learning_rate: cfg.learning_rate as f64,
    };
    let fitted = triplet::fit(&x, &rel, &fit);
    let w32: Vec<Vec<f32>> = fitted
        .w
        .iter()
        .map(|r| r.iter().map(|&v| v as f32).collect())
        .collect();
    let project = |e: &[f32]| -> Vec<f32> {
        w32.iter()
            .map(|row| row.iter().zip(e).map(|(a, b)| a * b).sum())
            .collect()
    };
    let (pg, pi) = verification(&heldout, &kept, &project);
    let far = cfg.far;
    let figures = Figures {
        far,
        heldout_tar_raw: tar_at_far(&hg, &hi, far),
        heldout_tar_head: tar_at_far(&pg, &pi, far),
        heldout_genuine: hg.len(),
        heldout_impostor: hi.len(),
        train_embeddings: n,
        positive_triplets_before: fitted.before.positive,
        positive_triplets_after: fitted.after.positive,
        loss_before: fitted.before.loss,
        loss_after: fitted.after.loss,
    };
    if figures.heldout_tar_head <= figures.heldout_tar_raw {
        return refuse(
            format!(
                "the head does not verify better on held-out faces (true-accept rate {:.3} with it, {:.3} without, at a false-accept rate of {far}); the raw embeddings stay",
                figures.heldout_tar_head, figures.heldout_tar_raw
            ),
            Some(figures),
        );
    }
    // Keep `faces.match_threshold` meaningful: the same threshold at `far` on the training
    // faces as the raw embeddings have.
    let (_, ti_raw) = verification(&kept, &kept, &raw);
    let (_, ti_head) = verification(&kept, &kept, &project);
    let scale = match (
        threshold_at_far(&ti_raw, far),
        threshold_at_far(&ti_head, far),
    ) {
        (Some(r), Some(h)) if r > 0.0 && h > 0.0 => r / h,
        _ => 1.0,
    };
    let matrix: Vec<Vec<f32>> = w32
        .iter()
        .map(|r| r.iter().map(|v| v * scale).collect())
        .collect();
    Outcome {
        head: Some(HeadVersion {
            version: 0,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            margin: cfg.margin,
            squared: cfg.squared,
            matrix,
            figures: figures.clone(),
        }),
        figures: Some(figures),
        reason: "held-out verification improved".into(),
    }
}

/// The training embeddings and their positives and negatives: the kept (not held-out) faces
/// of enrolled people, the photos rejected as one of them, and the faces of unknown groups'
/// tracks (the most recently seen groups first, up to [`MAX_TRACK_EMBEDDINGS`]).
fn training_set(
    g: &Gallery,
    kept: &[(usize, Vec<f32>)],
    negatives: &Negatives,
    unknowns: &Unknowns,
) -> (Vec<Vec<f32>>, Relations) {
    let mut x: Vec<Vec<f32>> = Vec::new();
    let mut kinds: Vec<Kind> = Vec::new();
    for (l, e) in kept {
        x.push(e.clone());
        kinds.push(Kind::Person(*l));
    }
    for n in &negatives.people {
        if let Some(i) = g.people.iter().position(|p| p.name == n.name) {
            for e in &n.embeddings {
                x.push(e.clone());
                kinds.push(Kind::Rejected(i));
            }
        }
    }
    let mut tracks: Vec<(usize, usize, &TrackFaces)> = unknowns
        .groups
        .iter()
        .enumerate()
        .rev()
        .flat_map(|(gi, grp)| {
            grp.tracks
                .iter()
                .enumerate()
                .map(move |(ti, t)| (gi, ti, t))
        })
        .collect();
    let mut total = 0;
    tracks.retain(|t| {
        total += t.2.embeddings.len();
        total <= MAX_TRACK_EMBEDDINGS
    });
    for &(gi, ti, t) in &tracks {
        for e in &t.embeddings {
            x.push(e.clone());
            kinds.push(Kind::Track(gi, ti));
        }
    }
    let track = |gi: usize, ti: usize| {
        tracks
            .iter()
            .find(|(a, b, _)| *a == gi && *b == ti)
            .map(|t| t.2)
    };
    let n = x.len();
    let mut rel = Relations {
        pos: vec![vec![]; n],
        neg: vec![vec![]; n],
    };
    for a in 0..n {
        for b in 0..n {
            if a == b {
                continue;
            }
            use Kind::*;
            match (kinds[a], kinds[b]) {
                (Person(p), Person(q)) if p == q => rel.pos[a].push(b),
                (Person(_), Person(_)) => rel.neg[a].push(b),
                (Person(p), Rejected(q)) | (Rejected(q), Person(p)) if p == q => rel.neg[a].push(b),
                (Track(g1, t1), Track(g2, t2)) if (g1, t1) == (g2, t2) => rel.pos[a].push(b),
                (Track(g1, t1), Track(g2, t2)) => {
                    if let (Some(s), Some(t)) = (track(g1, t1), track(g2, t2)) {
                        if overlaps(s, t) {
                            rel.neg[a].push(b);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    (x, rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::unknowns::Group;

    fn track(id: u64, run: &str, first: f64, last: f64, e: Vec<Vec<f32>>) -> TrackFaces {
        TrackFaces {
            stream: "cam".into(),
            track_id: id,
            run: run.into(),
            first,
            last,
            embeddings: e,
        }
    }

    #[test]
    fn rejections_are_negatives_of_their_person_and_co_visible_tracks_of_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Gallery::open(&dir.path().join("g.json"), "m", 2).unwrap();
        g.enroll("ada", vec![0.0, 0.0], "a".into()).unwrap();
        g.enroll("ada", vec![0.1, 0.0], "a2".into()).unwrap();
        g.enroll("bob", vec![1.0, 0.0], "b".into()).unwrap();
        let kept: Vec<(usize, Vec<f32>)> = vec![
            (0, vec![0.0, 0.0]),
            (0, vec![0.1, 0.0]),
            (1, vec![1.0, 0.0]),
        ];
        let mut negatives = Negatives::default();
        negatives.add("ada", vec![0.2, 0.2], "not ada".into());
        negatives.add("nobody", vec![0.3, 0.3], "ignored".into());
        let group = |id: &str, tracks: Vec<TrackFaces>| Group {
            id: id.into(),
            count: 1,
            first_seen: String::new(),
            last_seen: String::new(),
            streams: vec![],
            snapshot: None,
            tracks,
        };
        let unknowns = Unknowns {
            next_id: 3,
            retired: vec![],
            groups: vec![
                // Tracks 1 and 2 were on screen together in run r; track 3 was later.
                group(
                    "u1",
                    vec![track(
                        1,
                        "r",
                        0.0,
                        5.0,
                        vec![vec![5.0, 0.0], vec![5.1, 0.0]],
                    )],
                ),
                group(
                    "u2",
                    vec![
                        track(2, "r", 4.0, 6.0, vec![vec![9.0, 0.0]]),
                        track(3, "r", 8.0, 9.0, vec![vec![9.1, 0.0]]),
                    ],
                ),
            ],
        };
        let (x, rel) = training_set(&g, &kept, &negatives, &unknowns);
        // 3 enrolled, 1 rejection (of someone enrolled), 4 track faces, newest group first.
        assert_eq!(x.len(), 8);
        let at = |v: &[f32]| x.iter().position(|e| e.as_slice() == v).unwrap();
        let (ada, ada2, bob, not_ada) = (
            at(&[0.0, 0.0]),
            at(&[0.1, 0.0]),
            at(&[1.0, 0.0]),
            at(&[0.2, 0.2]),
        );
        assert_eq!(rel.pos[ada], [ada2]);
        assert!(rel.neg[ada].contains(&bob) && rel.neg[ada].contains(&not_ada));
        assert!(
            !rel.neg[bob].contains(&not_ada),
            "a rejection of Ada says nothing of Bob"
        );
        let (t1a, t1b, t2, t3) = (
            at(&[5.0, 0.0]),
            at(&[5.1, 0.0]),
            at(&[9.0, 0.0]),
            at(&[9.1, 0.0]),
        );
        assert_eq!(rel.pos[t1a], [t1b], "one track, one person");
        assert_eq!(rel.neg[t1a], [t2], "seen together with track 2 only");
        assert!(
            rel.pos[t2].is_empty() && rel.pos[t3].is_empty(),
            "one face each"
        );
        assert!(rel.neg[t3].is_empty(), "track 3 met no one");
    }
}
