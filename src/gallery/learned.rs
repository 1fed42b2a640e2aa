//! What the user taught the gallery, applied where faces are searched:
//!
//! - negative examples (`vigil gallery reject --name NAME IMAGE`), in
//!   `<gallery>.negatives.json`: a face nearer to one of NAME's negatives than to NAME's own
//!   embeddings is never named NAME;
//! - the tuned projection head (`vigil gallery tune`), in `<gallery>.head.json` with its earlier
//!   versions and figures: when one is active, the query and every gallery embedding are
//!   projected before distances are taken. The gallery keeps the raw embeddings, so a rollback
//!   (or a refused tune) loses nothing.
//!
//! [`Learned`] wraps the gallery's [`Index`] with both, so the face worker, `identify` and the
//! API all get them from one place.

use super::side;
use super::{Gallery, GalleryError, Index, Match, Person};
use crate::config::{GalleryIndexConfig, IndexKind};
use crate::echo::echo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Negatives kept per person; the oldest go first.
pub const MAX_NEGATIVES_PER_PERSON: usize = 256;
/// Head versions kept; the oldest go first.
pub const MAX_HEAD_VERSIONS: usize = 8;

const NEGATIVES: &str = "vigil-negatives";
const HEAD: &str = "vigil-head";

/// `<gallery>.negatives.json`.
pub fn negatives_path(gallery: &Path) -> PathBuf {
    side::path(gallery, "negatives")
}

/// `<gallery>.head.json`.
pub fn head_path(gallery: &Path) -> PathBuf {
    side::path(gallery, "head")
}

/// Faces that are not a given person.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Negatives {
    pub people: Vec<Person>,
}

impl Negatives {
    pub fn load(gallery: &Path, model: &str, dim: usize) -> Result<Negatives, GalleryError> {
        let n: Option<Negatives> = side::read(
            &negatives_path(gallery),
            NEGATIVES,
            model,
            dim,
            |n: &Negatives| {
                for p in &n.people {
                    side::check_embeddings(
                        &format!("the negatives of {:?}", crate::echo::echo(&p.name)),
                        dim,
                        &p.embeddings,
                    )?;
                }
                Ok(())
            },
        )?;
        Ok(n.unwrap_or_default())
    }

    pub fn save(&self, gallery: &Path, model: &str, dim: usize) -> Result<(), GalleryError> {
        side::write(&negatives_path(gallery), NEGATIVES, model, dim, self)
    }

    /// Adds a negative example of `name`; returns how many that person has now.
    pub fn add(&mut self, name: &str, embedding: Vec<f32>, source: String) -> usize {
        let p = match self.people.iter_mut().position(|p| p.name == name) {
            Some(i) => &mut self.people[i],
            None => {
                self.people.push(Person {
                    name: name.into(),
                    embeddings: vec![],
                    sources: vec![],
                });
                self.people.last_mut().expect("just pushed")
            }
        };
        p.embeddings.push(embedding);
        p.sources.push(source);
        if p.embeddings.len() > MAX_NEGATIVES_PER_PERSON {
            p.embeddings.remove(0);
            p.sources.remove(0);
        }
        p.embeddings.len()
    }

    pub fn of(&self, name: &str) -> &[Vec<f32>] {
        self.people
            .iter()
            .find(|p| p.name == name)
            .map_or(&[], |p| p.embeddings.as_slice())
    }
}

/// The figures a head was judged by.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    /// The false-accept rate the true-accept rates are measured at.
    pub far: f64,
    /// Held-out true-accept rate with the raw embeddings, and with the head.
    pub heldout_tar_raw: f64,
    pub heldout_tar_head: f64,
    /// Held-out pairs measured.
    pub heldout_genuine: usize,
    pub heldout_impostor: usize,
    /// Training: embeddings, triplets with a positive loss at the start and at the end, loss
    /// at the start and at the end.
    pub train_embeddings: usize,
    pub positive_triplets_before: usize,
    pub positive_triplets_after: usize,
    pub loss_before: f64,
    pub loss_after: f64,
}

/// One trained head: `y = W x`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadVersion {
    pub version: u32,
    pub created: String,
    pub margin: f32,
    pub squared: bool,
    /// `W`, one row per output value.
    #[serde(with = "super::embeddings")]
    pub matrix: Vec<Vec<f32>>,
    pub figures: Figures,
}

impl HeadVersion {
    pub fn project(&self, x: &[f32]) -> Vec<f32> {
        self.matrix
            .iter()
            .map(|row| row.iter().zip(x).map(|(w, v)| w * v).sum())
            .collect()
    }
}

/// The heads file: every kept version, which one is active (none: raw embeddings), and the
/// states before, for `--rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Heads {
    pub active: Option<u32>,
    /// Earlier values of `active`, latest last.
    pub history: Vec<Option<u32>>,
    pub versions: Vec<HeadVersion>,
}

impl Heads {
    pub fn load(gallery: &Path, model: &str, dim: usize) -> Result<Heads, GalleryError> {
        let h: Option<Heads> = side::read(&head_path(gallery), HEAD, model, dim, |h: &Heads| {
            for v in &h.versions {
                let out = v.matrix.len();
                if out == 0 || out > dim * 4 {
                    return Err(format!("head version {} has {out} rows", v.version));
                }
                side::check_embeddings(&format!("head version {}", v.version), dim, &v.matrix)?;
            }
            if let Some(a) = h.active {
                if !h.versions.iter().any(|v| v.version == a) {
                    return Err(format!("the active head version {a} is not in the file"));
                }
            }
            Ok(())
        })?;
        Ok(h.unwrap_or_default())
    }

    pub fn save(&self, gallery: &Path, model: &str, dim: usize) -> Result<(), GalleryError> {
        side::write(&head_path(gallery), HEAD, model, dim, self)
    }

    pub fn current(&self) -> Option<&HeadVersion> {
        let a = self.active?;
        self.versions.iter().find(|v| v.version == a)
    }

    /// Adds `v` as a new version and makes it the active one.
    pub fn adopt(&mut self, mut v: HeadVersion) -> u32 {
        let n = self.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        v.version = n;
        self.versions.push(v);
        self.history.push(self.active);
        self.active = Some(n);
        while self.versions.len() > MAX_HEAD_VERSIONS {
            let gone = self.versions.remove(0).version;
            for h in &mut self.history {
                if *h == Some(gone) {
                    *h = None;
                }
            }
        }
        if self.history.len() > 4 * MAX_HEAD_VERSIONS {
            self.history.remove(0);
        }
        n
    }

    /// Goes back to the state before the last adoption (or rollback's undo); the state now, or
    /// `Err` when there is nothing to go back to.
    pub fn rollback(&mut self) -> Result<Option<u32>, String> {
        let prev = self
            .history
            .pop()
            .ok_or("nothing to roll back: no head was ever adopted")?;
        self.active = prev;
        Ok(prev)
    }
}

/// The negatives and the active head of one gallery, ready to apply.
pub struct Corrections {
    head: Option<HeadVersion>,
    /// Each person's negatives, projected when a head is active.
    negatives: HashMap<String, Vec<Vec<f32>>>,
}

impl Corrections {
    /// Reads `<gallery>.negatives.json` and `<gallery>.head.json` (absent: no corrections).
    pub fn load(gallery: &Path, model: &str, dim: usize) -> Result<Corrections, GalleryError> {
        let negatives = Negatives::load(gallery, model, dim)?;
        let head = Heads::load(gallery, model, dim)?.current().cloned();
        let negatives = negatives
            .people
            .into_iter()
            .filter(|p| !p.embeddings.is_empty())
            .map(|p| {
                let e = match &head {
                    Some(h) => p.embeddings.iter().map(|e| h.project(e)).collect(),
                    None => p.embeddings,
                };
                (p.name, e)
            })
            .collect();
        Ok(Corrections { head, negatives })
    }

    /// An embedding as the index sees it.
    pub fn project<'a>(&self, q: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        match &self.head {
            Some(h) => h.project(q).into(),
            None => q.into(),
        }
    }

    /// Whether a (projected) face at `distance` from `name` is nearer to one of `name`'s
    /// negatives, and so must not be named `name`.
    pub fn vetoed(&self, name: &str, projected: &[f32], distance: f32) -> bool {
        self.negatives.get(name).is_some_and(|negs| {
            negs.iter()
                .any(|n| super::distance(projected, n) < distance)
        })
    }

    pub fn head_version(&self) -> Option<u32> {
        self.head.as_ref().map(|h| h.version)
    }
}

/// The gallery's index with the user's corrections applied.
pub struct Learned {
    inner: Arc<dyn Index>,
    pub corrections: Corrections,
    /// How the index was come by.
    pub report: super::IndexReport,
}

impl Learned {
    /// Loads the negatives and the head beside `g` and builds the index over the (projected)
    /// embeddings.
    pub fn build(g: &Gallery, cfg: &GalleryIndexConfig) -> anyhow::Result<Learned> {
        let corrections = Corrections::load(&g.path, &g.model, g.dim)?;
        let (dir, project) = index_place(&g.path, &corrections);
        let (inner, report) = g.open_index(cfg, dir, project)?;
        Ok(Learned {
            inner,
            corrections,
            report,
        })
    }

    /// [`Self::build`] for the gallery file at `path`, started from its persisted HNSW index:
    /// the index is loaded first, and the file is then read person by person, each person the
    /// index already holds unchanged dropped as soon as it is read. Only the others (enrolled
    /// or changed since the index was written) are kept, to be brought in in place, so every
    /// embedding is never held beside the index (at a million people the file's embeddings
    /// alone take about 1 GiB once parsed). `each` sees every person as read.
    ///
    /// `Ok(None)` when there is nothing to start from: exact search configured, no file, no
    /// usable persisted index, a gallery small enough for exact search, or one too far from
    /// the index to catch up in place; the caller then reads the file whole and builds. An
    /// error is a file that cannot be read or is refused, as [`Gallery::open`] says it.
    pub fn open_persisted(
        path: &Path,
        model: &str,
        dim: usize,
        cfg: &GalleryIndexConfig,
        each: &mut dyn FnMut(&Person),
    ) -> anyhow::Result<Option<Learned>> {
        if !cfg.persist || cfg.kind == IndexKind::Exact || !path.is_file() {
            return Ok(None);
        }
        let started = Instant::now();
        let corrections = Corrections::load(path, model, dim)?;
        let (dir, project) = index_place(path, &corrections);
        let (proj, rows_dim) = match project {
            Some((p, d)) => (Some(p), d),
            None => (None, dim),
        };
        let params = super::ann::HnswParams::from_config(cfg);
        let ix = match super::ann::HnswIndex::load(&dir, rows_dim, params, proj) {
            Ok(Some(ix)) => ix,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!("{e:#}; reading the gallery whole");
                return Ok(None);
            }
        };
        let Against { held, others, rows } = scan_against(path, model, dim, &ix, each)?;
        if !super::wants_hnsw(cfg, rows) {
            return Ok(None);
        }
        let mut report = super::IndexReport {
            kind: "hnsw",
            origin: None,
            rows,
            seconds: 0.0,
            dir: Some(dir.clone()),
            removed: 0,
            added: 0,
        };
        match ix.follow_from(&others, held) {
            Ok(super::ann::Followed::InPlace { removed, added }) => {
                let ix = super::adopt_loaded(ix, &dir, removed, added, &mut report, started);
                Ok(Some(Learned {
                    inner: Arc::new(ix),
                    corrections,
                    report,
                }))
            }
            Ok(super::ann::Followed::Rebuild) => {
                tracing::info!(
                    "gallery index {} is too far behind the gallery to catch up in place: building it",
                    dir.display()
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!("{e:#}; building the gallery index again");
                Ok(None)
            }
        }
    }

    pub fn head_version(&self) -> Option<u32> {
        self.corrections.head_version()
    }
}

/// A gallery file read person by person against a loaded HNSW index ([`scan_against`]).
pub(super) struct Against {
    /// The slots of the people the file lists, each marked as read (whether or not the index
    /// holds their embeddings unchanged).
    pub held: Vec<bool>,
    /// The people the index does not hold as they are (enrolled, given more photos, or
    /// rewritten since it was written), to be brought in in place.
    pub others: Vec<Person>,
    /// Embeddings in the file.
    pub rows: usize,
}

/// Reads the gallery file at `path` person by person against `ix`, keeping only the people
/// `ix` does not already hold unchanged: every embedding of the file is never held beside
/// the index. `each` sees every person as read. Refuses what [`Gallery::open`] refuses (a
/// person listed twice included), as it says it; no file is an empty gallery.
pub(super) fn scan_against(
    path: &Path,
    model: &str,
    dim: usize,
    ix: &super::ann::HnswIndex,
    each: &mut dyn FnMut(&Person),
) -> Result<Against, GalleryError> {
    let mut held = vec![false; ix.slots()];
    let mut others: Vec<Person> = Vec::new();
    let mut other_names = std::collections::HashSet::new();
    let mut rows = 0;
    Gallery::scan(path, model, dim, &mut |p| {
        each(&p);
        rows += p.embeddings.len();
        let twice = || format!("person {:?} is listed twice", echo(&p.name));
        match ix.holds(&p.name, &p.embeddings) {
            Some((slot, same)) => {
                if std::mem::replace(&mut held[slot as usize], true) {
                    return Err(twice());
                }
                if !same {
                    others.push(p);
                }
            }
            None => {
                if !other_names.insert(p.name.clone()) {
                    return Err(twice());
                }
                others.push(p);
            }
        }
        Ok(())
    })?;
    Ok(Against { held, others, rows })
}

impl Index for Learned {
    fn search(&self, query: &[f32], k: usize) -> Vec<Match> {
        let c = &self.corrections;
        let q = c.project(query);
        if c.negatives.is_empty() {
            return self.inner.search(&q, k);
        }
        // Each vetoed person leaves room for the next one.
        let mut found = self.inner.search(&q, k + c.negatives.len().min(64));
        found.retain(|m| !c.vetoed(&m.name, &q, m.distance));
        found.truncate(k);
        found
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn follow(&self, people: &[Person]) -> anyhow::Result<bool> {
        self.inner.follow(people)
    }

    fn persist(&self) -> anyhow::Result<bool> {
        self.inner.persist()
    }

    fn hnsw(&self) -> Option<&super::ann::HnswIndex> {
        self.inner.hnsw()
    }
}

/// Where the index of the gallery at `path` is kept, and the projection its rows take: with
/// a tuned head, its HNSW index (when one is used) is kept apart from the raw one, in
/// `<gallery>.head<N>.index/`, so switching heads never rebuilds the other.
fn index_place(
    path: &Path,
    corrections: &Corrections,
) -> (PathBuf, Option<(super::ann::Projection, usize)>) {
    match &corrections.head {
        None => (super::ann::index_dir(path), None),
        Some(h) => {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".head{}", h.version));
            let dir = super::ann::index_dir(&path.with_file_name(name));
            let head = h.clone();
            let project: super::ann::Projection = Arc::new(move |e: &[f32]| head.project(e));
            (dir, Some((project, h.matrix.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gallery(dir: &Path) -> Gallery {
        let mut g = Gallery::open(&dir.join("g.json"), "m", 2).unwrap();
        g.enroll("Ada", vec![0.0, 0.0], "a".into()).unwrap();
        g.enroll("Bob", vec![1.0, 0.0], "b".into()).unwrap();
        g.save().unwrap();
        g
    }

    #[test]
    fn a_face_nearer_a_negative_of_ada_is_never_named_ada() {
        let dir = tempfile::tempdir().unwrap();
        let g = gallery(dir.path());
        let cfg = GalleryIndexConfig::default();
        let q = [0.3, 0.3];
        let before = Learned::build(&g, &cfg).unwrap().search(&q, 2);
        assert_eq!(before[0].name, "Ada");
        let mut n = Negatives::default();
        n.add("Ada", vec![0.35, 0.35], "wrong.jpg".into());
        n.save(&g.path, "m", 2).unwrap();
        let after = Learned::build(&g, &cfg).unwrap().search(&q, 2);
        assert_eq!(after.len(), 1, "{after:?}");
        assert_eq!(after[0].name, "Bob", "Ada vetoed, Bob next");
        // A face nearer to Ada than to her negative is still Ada.
        let near = Learned::build(&g, &cfg).unwrap().search(&[0.05, 0.0], 1);
        assert_eq!(near[0].name, "Ada");
    }

    /// A head's figures; the tests here look only at its matrix.
    fn figures() -> Figures {
        Figures {
            far: 0.001,
            heldout_tar_raw: 0.5,
            heldout_tar_head: 0.9,
            heldout_genuine: 1,
            heldout_impostor: 1,
            train_embeddings: 2,
            positive_triplets_before: 1,
            positive_triplets_after: 0,
            loss_before: 1.0,
            loss_after: 0.0,
        }
    }

    #[test]
    fn an_active_head_projects_queries_and_gallery_and_rollback_restores_raw() {
        let dir = tempfile::tempdir().unwrap();
        let g = gallery(dir.path());
        let cfg = GalleryIndexConfig::default();
        let mut h = Heads::default();
        let figures = figures();
        // Keeps only the second value: Ada (0,0) and Bob (1,0) become one point.
        let v = HeadVersion {
            version: 0,
            created: "now".into(),
            margin: 0.2,
            squared: false,
            matrix: vec![vec![0.0, 1.0]],
            figures,
        };
        assert_eq!(h.adopt(v), 1);
        h.save(&g.path, "m", 2).unwrap();
        let l = Learned::build(&g, &cfg).unwrap();
        assert_eq!(l.head_version(), Some(1));
        let m = l.search(&[1.0, 0.0], 2);
        assert_eq!(m[0].distance, 0.0);
        assert_eq!(m[1].distance, 0.0, "both project to 0: {m:?}");
        let mut h = Heads::load(&g.path, "m", 2).unwrap();
        assert_eq!(h.rollback(), Ok(None));
        assert!(h.rollback().is_err());
        h.save(&g.path, "m", 2).unwrap();
        let l = Learned::build(&g, &cfg).unwrap();
        assert_eq!(l.head_version(), None);
        assert_eq!(l.search(&[1.0, 0.0], 1)[0].name, "Bob");
    }

    #[test]
    fn with_a_head_the_hnsw_index_takes_projected_rows_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = gallery(dir.path());
        let cfg = GalleryIndexConfig {
            kind: crate::config::IndexKind::Hnsw,
            ..Default::default()
        };
        let figures = figures();
        // Doubles the first value and drops the second.
        let mut h = Heads::default();
        h.adopt(HeadVersion {
            version: 0,
            created: "now".into(),
            margin: 0.2,
            squared: false,
            matrix: vec![vec![2.0, 0.0]],
            figures,
        });
        h.save(&g.path, "m", 2).unwrap();
        let l = Learned::build(&g, &cfg).unwrap();
        assert_eq!((l.kind(), l.head_version()), ("hnsw", Some(1)));
        g.enroll("Cy", vec![3.0, 9.0], "c".into()).unwrap();
        assert!(l.follow(&g.people).unwrap(), "changed in place");
        let m = l.search(&[3.0, -5.0], 1);
        assert_eq!(m[0].name, "Cy");
        assert!(m[0].distance < 1e-6, "projected on both sides: {m:?}");
        // A new build loads the head's own folder (written at the first build) and adds Cy.
        let again = Learned::build(&g, &cfg).unwrap();
        assert_eq!(
            again.report.origin,
            Some(super::super::ann::Origin::CaughtUp)
        );
        assert!(again.report.dir.unwrap().ends_with("g.json.head1.index"));
    }
}
