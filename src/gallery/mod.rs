//! The one-shot gallery: people enrolled from one photo or more, persisted in one file, and
//! searched for verification (1:1, "is this X?") and identification (1:N, "who is this?").
//!
//! The file is JSON with a format tag and version. Version 2 stores each embedding as the
//! base64 of its little-endian f32 values (a million people load in seconds); version 1 files
//! (plain number arrays) are still read, and written back as version 2. Writes are crash-safe:
//! a temporary file in the same folder, fsync, rename over the old one, fsync the folder. A file
//! that is not a vigil gallery, is corrupt, or comes from another embedder is refused and never
//! overwritten.
//!
//! Search goes through [`Index`]: [`ExactIndex`] scans every embedding; above a configurable
//! size [`ann::HnswIndex`] searches an HNSW graph that is persisted beside the file.
//!
//! What the gallery learns from its user (docs/faces.md) lives in files beside it ([`side`]):
//! [`calibrate`] measures the threshold on the gallery's own faces; [`unknowns`] groups unknown
//! faces per person; [`learned`] applies negative examples and the tuned head at search time;
//! [`tune`] fits that head with the batch-all triplet loss of [`triplet`].
//!
//! With `gallery.postgres`, [`store`] makes PostgreSQL the gallery shared by every node and the
//! file this node's cache of it (docs/scaling.md).

pub mod ann;
pub mod calibrate;
pub mod chips;
pub mod image;
pub mod learned;
pub mod live;
pub mod lock;
pub mod named;
mod read;
mod rerank_rows;
pub mod side;
mod slot_names;
pub mod store;
pub mod track;
pub mod triplet;
pub mod tune;
pub mod unknowns;

pub use live::{LiveGallery, SharedIndex};

use crate::config::{GalleryIndexConfig, IndexKind};
use crate::echo::echo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const FORMAT: &str = "vigil-gallery";
const VERSION: u32 = 2;

/// Largest gallery file read, bytes: 4 GiB, about five million people of one 128-value
/// embedding each. A larger file is refused before it is read.
pub const MAX_GALLERY_BYTES: u64 = 4 << 30;
/// Longest person name in a file, bytes (a valid one has at most 128 characters), and longest
/// photo source: longer ones are refused as they are parsed, before being copied.
pub const MAX_NAME_BYTES: usize = 512;
pub const MAX_SOURCE_BYTES: usize = 4096;
/// Most values in one embedding read from a file (its dimension is checked after).
pub const MAX_EMBEDDING_VALUES: usize = 16384;

#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    #[error("gallery {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("gallery {path} is not a vigil gallery file or is corrupt ({reason}); it was left untouched")]
    Corrupt { path: PathBuf, reason: String },
    #[error("gallery {path} holds {found}-value embeddings from `{model}`, but the embedder gives {want}; it was left untouched")]
    Foreign {
        path: PathBuf,
        model: String,
        found: usize,
        want: usize,
    },
    #[error("invalid name {:?}: {reason}", echo(.name))]
    Name { name: String, reason: String },
    #[error("no one named {:?} in the gallery {path}", echo(.name))]
    Unknown { name: String, path: PathBuf },
    #[error("gallery {path} is {size} bytes; at most {MAX_GALLERY_BYTES} are read (it was left untouched)")]
    TooLarge { path: PathBuf, size: u64 },
    /// A file beside the gallery (negatives, unknown groups, tuned heads) cannot be read.
    #[error("{path} is damaged ({reason}); it was left untouched and the gallery was not changed: repair it, or move it away to start that part afresh")]
    Damaged { path: PathBuf, reason: String },
    /// The shared gallery store (`gallery.postgres`) cannot take a change now; nothing changed.
    #[error("{reason}; nothing was changed (the change is refused while the gallery store is unreachable: retry when it is back)")]
    StoreUnavailable { reason: String },
}

/// Euclidean distance between two descriptors: the gallery's metric.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// One enrolled person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    #[serde(deserialize_with = "bounded::name")]
    pub name: String,
    /// One descriptor per enrolment photo.
    #[serde(with = "embeddings")]
    pub embeddings: Vec<Vec<f32>>,
    /// Where each embedding came from (file names, for `list`).
    #[serde(deserialize_with = "bounded::sources")]
    pub sources: Vec<String>,
}

/// Strings of a gallery file checked for length before they are copied out of the file's bytes.
mod bounded {
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use std::fmt;

    struct Bounded {
        what: &'static str,
        max: usize,
    }

    impl Visitor<'_> for Bounded {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a {} of at most {} bytes", self.what, self.max)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.len() > self.max {
                return Err(E::custom(format!(
                    "a {} of {} bytes (at most {})",
                    self.what,
                    v.len(),
                    self.max
                )));
            }
            Ok(v.to_owned())
        }
    }

    pub fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_str(Bounded {
            what: "name",
            max: super::MAX_NAME_BYTES,
        })
    }

    struct Sources;
    impl<'de> Visitor<'de> for Sources {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of photo sources")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = a.next_element_seed(Source)? {
                out.push(s);
            }
            Ok(out)
        }
    }

    struct Source;
    impl<'de> de::DeserializeSeed<'de> for Source {
        type Value = String;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_str(Bounded {
                what: "photo source",
                max: super::MAX_SOURCE_BYTES,
            })
        }
    }

    pub fn sources<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(Sources)
    }
}

/// Embeddings on disk: written as base64 of little-endian f32 (version 2), read from that or
/// from arrays of numbers (version 1).
pub(crate) mod embeddings {
    use base64::Engine;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        let mut bytes = Vec::new();
        for e in v {
            bytes.clear();
            bytes.extend(e.iter().flat_map(|x| x.to_le_bytes()));
            seq.serialize_element(&base64::engine::general_purpose::STANDARD.encode(&bytes))?;
        }
        seq.end()
    }

    struct One;
    impl<'de> Visitor<'de> for One {
        type Value = Vec<f32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an embedding: base64 of little-endian f32 values, or an array of numbers")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<f32>, E> {
            if v.len() > super::MAX_EMBEDDING_VALUES * 4 / 3 * 4 + 4 {
                return Err(E::custom(format!(
                    "an embedding of {} base64 characters (at most {} values)",
                    v.len(),
                    super::MAX_EMBEDDING_VALUES
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| E::custom(format!("embedding is not valid base64: {e}")))?;
            if bytes.len() % 4 != 0 {
                return Err(E::custom(format!(
                    "embedding has {} bytes, not a whole number of f32 values",
                    bytes.len()
                )));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Vec<f32>, A::Error> {
            let mut out = Vec::with_capacity(a.size_hint().unwrap_or(128));
            while let Some(x) = a.next_element::<f32>()? {
                if out.len() == super::MAX_EMBEDDING_VALUES {
                    return Err(de::Error::custom(format!(
                        "an embedding of more than {} values",
                        super::MAX_EMBEDDING_VALUES
                    )));
                }
                out.push(x);
            }
            Ok(out)
        }
    }

    struct Embedding(Vec<f32>);
    impl<'de> serde::Deserialize<'de> for Embedding {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(One).map(Embedding)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f32>>, D::Error> {
        let v: Vec<Embedding> = serde::Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|e| e.0).collect())
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'a str,
    version: u32,
    model: &'a str,
    dim: usize,
    people: &'a [Person],
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<&'a SyncMark>,
}

/// Where a local cache of a shared gallery store stands (`gallery.postgres`): which store it
/// copies and the last change of that store it holds. Saved in the same file as the people, so
/// the two never disagree after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncMark {
    /// The store's identity (made when its schema was created).
    pub store: String,
    /// The last change applied: every change up to it, none after it.
    pub change: i64,
}

/// A match: who and how far.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub name: String,
    pub distance: f32,
}

/// Nearest-person search over the gallery's embeddings.
pub trait Index: Send + Sync {
    /// The `k` nearest people (each person once, by their nearest embedding), nearest first.
    fn search(&self, query: &[f32], k: usize) -> Vec<Match>;
    /// `exact` or `hnsw`, for logs and the benchmark.
    fn kind(&self) -> &'static str;
    /// Brings the index in line with `people` in place while searches go on; false when it
    /// cannot (the caller builds it again). Only the HNSW index can (`ann`).
    fn follow(&self, _people: &[Person]) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// Writes the index where it is kept if it changed since it was last written; true when
    /// it wrote.
    fn persist(&self) -> anyhow::Result<bool> {
        Ok(false)
    }
    /// The HNSW index underneath, which can say what it holds ([`ann::HnswIndex::holds`]) so
    /// a changed file is read against it instead of whole; `None` for exact search.
    fn hnsw(&self) -> Option<&ann::HnswIndex> {
        None
    }
}

/// Whether `cfg` asks for the HNSW index over `rows` embeddings.
pub fn wants_hnsw(cfg: &GalleryIndexConfig, rows: usize) -> bool {
    match cfg.kind {
        IndexKind::Exact => false,
        IndexKind::Hnsw => true,
        IndexKind::Auto => rows > cfg.hnsw_above,
    }
}

/// How [`Gallery::open_index`] came by its index, for the log and `vigil gallery index`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexReport {
    /// `exact` or `hnsw`.
    pub kind: &'static str,
    /// How the HNSW index came to be (none for exact search).
    pub origin: Option<ann::Origin>,
    /// Embeddings indexed.
    pub rows: usize,
    /// Seconds taken (loading, catching up or building, and writing).
    pub seconds: f64,
    /// Where it is kept, when it is.
    pub dir: Option<PathBuf>,
    /// Brought up to date in place after loading: people removed or rewritten, rows added.
    pub removed: usize,
    pub added: usize,
}

/// Exhaustive search: exact; a scan of every embedding (about 25 ms per query at a million on
/// one core of the development machine).
pub struct ExactIndex {
    /// Every embedding, back to back.
    data: Vec<f32>,
    owner: Vec<u32>,
    dim: usize,
    names: Vec<String>,
}

impl ExactIndex {
    pub fn new(people: &[Person]) -> ExactIndex {
        let names = people.iter().map(|p| p.name.clone()).collect();
        let dim = people
            .iter()
            .find_map(|p| p.embeddings.first())
            .map_or(0, |e| e.len());
        let mut data = Vec::new();
        let mut owner = Vec::new();
        for (i, p) in people.iter().enumerate() {
            for e in &p.embeddings {
                data.extend_from_slice(e);
                owner.push(i as u32);
            }
        }
        ExactIndex {
            data,
            owner,
            dim,
            names,
        }
    }
}

impl Index for ExactIndex {
    fn search(&self, query: &[f32], k: usize) -> Vec<Match> {
        if self.dim == 0 || k == 0 {
            return vec![];
        }
        // Per person, the nearest of their embeddings; then the `k` nearest people.
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        let mut last: Option<(u32, f32)> = None;
        let flush = |who: u32, d: f32, best: &mut Vec<(u32, f32)>| {
            if best.len() == k && d >= best[k - 1].1 {
                return;
            }
            let at = best.partition_point(|b| b.1 <= d);
            best.insert(at, (who, d));
            best.truncate(k);
        };
        for (row, e) in self.data.chunks_exact(self.dim).enumerate() {
            let who = self.owner[row];
            let d = ann::squared_l2(query, e);
            match &mut last {
                Some((w, bd)) if *w == who => *bd = bd.min(d),
                _ => {
                    if let Some((w, bd)) = last {
                        flush(w, bd, &mut best);
                    }
                    last = Some((who, d));
                }
            }
        }
        if let Some((w, bd)) = last {
            flush(w, bd, &mut best);
        }
        best.into_iter()
            .map(|(who, d)| Match {
                name: self.names[who as usize].clone(),
                distance: d.sqrt(),
            })
            .collect()
    }

    fn kind(&self) -> &'static str {
        "exact"
    }
}

/// The gallery file and its people.
#[derive(Debug, Clone)]
pub struct Gallery {
    pub path: PathBuf,
    pub model: String,
    pub dim: usize,
    pub people: Vec<Person>,
    /// Set when the file is the local cache of a shared store.
    pub sync: Option<SyncMark>,
    /// Position of each person in `people`.
    by_name: HashMap<String, usize>,
}

/// Names become JSON strings and log fields: no control characters, no path separators, and
/// not blank.
pub fn validate_name(name: &str) -> Result<(), GalleryError> {
    let bad = |reason: &str| {
        Err(GalleryError::Name {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.trim().is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > 128 {
        return bad("longer than 128 characters");
    }
    if name.trim() != name {
        return bad("it starts or ends with spaces");
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || *c == '/' || *c == '\\')
    {
        return bad(&format!(
            "it contains {c:?} (no control characters or path separators)"
        ));
    }
    Ok(())
}

impl Gallery {
    /// An empty gallery that will be saved at `path`.
    pub fn empty(path: &Path, model: &str, dim: usize) -> Gallery {
        Gallery {
            path: path.to_path_buf(),
            model: model.into(),
            dim,
            people: vec![],
            sync: None,
            by_name: HashMap::new(),
        }
    }

    /// Opens the gallery at `path`; a missing file is an empty gallery. `model` and `dim`
    /// describe the embedder, and a file made by another is refused.
    pub fn open(path: &Path, model: &str, dim: usize) -> Result<Gallery, GalleryError> {
        let mut people = Vec::new();
        let mut by_name = HashMap::new();
        let Some(sync) = Self::scan(path, model, dim, &mut |p| {
            if by_name.contains_key(&p.name) {
                return Err(format!("person {:?} is listed twice", echo(&p.name)));
            }
            by_name.insert(p.name.clone(), people.len());
            people.push(p);
            Ok(())
        })?
        else {
            return Ok(Gallery::empty(path, model, dim));
        };
        people.shrink_to_fit();
        Ok(Gallery {
            path: path.to_path_buf(),
            model: model.to_string(),
            dim,
            people,
            sync,
            by_name,
        })
    }

    /// Reads the gallery file at `path` as [`Self::open`] does, handing each person to `each`
    /// as soon as it is read and checked, before the next is parsed: a caller that keeps only
    /// some of them (see [`LiveGallery::open`]) never holds every embedding at once. `each`
    /// checks what only it can (names listed twice) and says why a person is refused; the
    /// first fault is reported once the file as a whole is known to be a gallery of this
    /// embedder, so a file of another embedder is refused as such. `Ok(None)` when there is
    /// no file (an empty gallery); else the file's sync mark.
    pub fn scan(
        path: &Path,
        model: &str,
        dim: usize,
        each: &mut dyn FnMut(Person) -> Result<(), String>,
    ) -> Result<Option<Option<SyncMark>>, GalleryError> {
        clean_stale_temporaries(path);
        if let Ok(m) = std::fs::metadata(path) {
            if m.is_dir() {
                return Err(GalleryError::File {
                    path: path.to_path_buf(),
                    reason: "it is a directory, not a gallery file".into(),
                });
            }
            if m.len() > MAX_GALLERY_BYTES {
                return Err(GalleryError::TooLarge {
                    path: path.to_path_buf(),
                    size: m.len(),
                });
            }
        }
        // Parsed as it is read: the file's bytes (717 MiB at a million people) are never held
        // beside the people parsed from them.
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(GalleryError::File {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        let corrupt = |reason: String| GalleryError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let mut fault: Option<String> = None;
        let mut check = |p: Person| {
            if fault.is_some() {
                return;
            }
            if let Err(e) = validate_name(&p.name) {
                fault = Some(e.to_string());
            } else if p.embeddings.is_empty()
                || p.embeddings
                    .iter()
                    .any(|e| e.len() != dim || e.iter().any(|v| !v.is_finite()))
            {
                fault = Some(format!(
                    "person {:?} has a malformed embedding",
                    echo(&p.name)
                ));
            } else if let Err(e) = each(p) {
                fault = Some(e);
            }
        };
        let f = read::read(std::io::BufReader::with_capacity(1 << 20, file), &mut check)
            .map_err(|e| corrupt(echo(&e.to_string()).into_owned()))?;
        if f.format != FORMAT {
            return Err(corrupt(format!(
                "format is {:?}, expected {FORMAT:?}",
                echo(&f.format)
            )));
        }
        if f.version != VERSION && f.version != 1 {
            return Err(corrupt(format!(
                "format version {} is not supported (this vigil reads version {VERSION})",
                f.version
            )));
        }
        if f.model != model || f.dim != dim {
            return Err(GalleryError::Foreign {
                path: path.to_path_buf(),
                model: echo(&f.model).into_owned(),
                found: f.dim,
                want: dim,
            });
        }
        if let Some(reason) = fault {
            return Err(corrupt(reason));
        }
        Ok(Some(f.sync))
    }

    /// Adds embeddings to `name`, creating the person if new.
    pub fn enroll(
        &mut self,
        name: &str,
        embedding: Vec<f32>,
        source: String,
    ) -> Result<(), GalleryError> {
        validate_name(name)?;
        if embedding.len() != self.dim {
            return Err(GalleryError::File {
                path: self.path.clone(),
                reason: format!(
                    "an embedding of {} values given for {:?}, the gallery holds {}",
                    embedding.len(),
                    echo(name),
                    self.dim
                ),
            });
        }
        match self.by_name.get(name) {
            Some(&i) => {
                let p = &mut self.people[i];
                p.embeddings.push(embedding);
                p.sources.push(source);
            }
            None => {
                self.by_name.insert(name.into(), self.people.len());
                self.people.push(Person {
                    name: name.into(),
                    embeddings: vec![embedding],
                    sources: vec![source],
                })
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<Person, GalleryError> {
        let i = self.position(name)?;
        let p = self.people.remove(i);
        self.by_name.remove(name);
        for (j, q) in self.people.iter().enumerate().skip(i) {
            self.by_name.insert(q.name.clone(), j);
        }
        Ok(p)
    }

    fn position(&self, name: &str) -> Result<usize, GalleryError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| GalleryError::Unknown {
                name: name.into(),
                path: self.path.clone(),
            })
    }

    pub fn person(&self, name: &str) -> Result<&Person, GalleryError> {
        Ok(&self.people[self.position(name)?])
    }

    /// Embeddings in the gallery (a person may have several).
    pub fn embeddings(&self) -> usize {
        self.people.iter().map(|p| p.embeddings.len()).sum()
    }

    /// The search the config asks for: exact, or the HNSW index (loaded from beside the file
    /// and brought up to date in place, else built and, with `persist`, written there).
    pub fn index(&self, cfg: &GalleryIndexConfig) -> anyhow::Result<Arc<dyn Index>> {
        Ok(self.open_index(cfg, ann::index_dir(&self.path), None)?.0)
    }

    /// [`Self::index`], kept in `dir`, over the rows `project` makes of the embeddings (with
    /// their length) when given; says how it came by it.
    pub fn open_index(
        &self,
        cfg: &GalleryIndexConfig,
        dir: PathBuf,
        project: Option<(ann::Projection, usize)>,
    ) -> anyhow::Result<(Arc<dyn Index>, IndexReport)> {
        let rows = self.embeddings();
        let started = Instant::now();
        let mut report = IndexReport {
            kind: "exact",
            origin: None,
            rows,
            seconds: 0.0,
            dir: None,
            removed: 0,
            added: 0,
        };
        if !wants_hnsw(cfg, rows) {
            let ix = match &project {
                None => ExactIndex::new(&self.people),
                Some((p, _)) => {
                    let people: Vec<Person> = self
                        .people
                        .iter()
                        .map(|q| Person {
                            name: q.name.clone(),
                            embeddings: q.embeddings.iter().map(|e| p(e)).collect(),
                            sources: vec![],
                        })
                        .collect();
                    ExactIndex::new(&people)
                }
            };
            report.seconds = started.elapsed().as_secs_f64();
            return Ok((Arc::new(ix), report));
        }
        report.kind = "hnsw";
        let params = ann::HnswParams::from_config(cfg);
        let (proj, dim) = match project {
            Some((p, d)) => (Some(p), d),
            None => (None, self.dim),
        };
        if cfg.persist {
            report.dir = Some(dir.clone());
            match ann::HnswIndex::load(&dir, dim, params, proj.clone()) {
                Ok(Some(ix)) => match ix.follow(&self.people) {
                    Ok(ann::Followed::InPlace { removed, added }) => {
                        let ix = adopt_loaded(ix, &dir, removed, added, &mut report, started);
                        return Ok((Arc::new(ix), report));
                    }
                    Ok(ann::Followed::Rebuild) => tracing::info!(
                        "gallery index {} is too far behind the gallery to catch up in place: building it",
                        dir.display()
                    ),
                    Err(e) => tracing::warn!("{e:#}; building the gallery index again"),
                },
                Ok(None) => tracing::info!(
                    "gallery index {} is missing, damaged or made with other parameters: building it",
                    dir.display()
                ),
                Err(e) => tracing::warn!("{e:#}; building the gallery index again"),
            }
        }
        let mut ix = ann::HnswIndex::build(&self.people, dim, params, proj)?;
        tracing::info!(
            "gallery HNSW index built over {rows} embeddings in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        report.origin = Some(ann::Origin::Built);
        if cfg.persist {
            match ix.save(&dir) {
                Ok(()) => ix.keep_in(dir),
                Err(e) => {
                    report.dir = None;
                    tracing::warn!("{e:#}; it will be built again at the next start")
                }
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok((Arc::new(ix), report))
    }

    /// Writes the gallery crash-safely.
    pub fn save(&self) -> Result<(), GalleryError> {
        let err = |reason: String| GalleryError::File {
            path: self.path.clone(),
            reason,
        };
        let file = FileOut {
            format: FORMAT,
            version: VERSION,
            model: &self.model,
            dim: self.dim,
            people: &self.people,
            sync: self.sync.as_ref(),
        };
        crate::durable::replace(&self.path, |f| {
            serde_json::to_writer(f, &file).map_err(std::io::Error::from)
        })
        .map_err(|e| err(e.to_string()))
    }
}

/// A persisted HNSW index loaded from `dir` and brought in line with the gallery in place
/// (`removed` people, `added` rows): kept in `dir` (written again when it changed), and
/// `report` filled in.
pub(super) fn adopt_loaded(
    mut ix: ann::HnswIndex,
    dir: &Path,
    removed: usize,
    added: usize,
    report: &mut IndexReport,
    started: Instant,
) -> ann::HnswIndex {
    let rows = report.rows;
    ix.keep_in(dir.to_path_buf());
    report.removed = removed;
    report.added = added;
    if removed + added == 0 {
        report.origin = Some(ann::Origin::Loaded);
        tracing::info!(
            "gallery index {} loaded: {rows} embeddings in {:.2} s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
    } else {
        report.origin = Some(ann::Origin::CaughtUp);
        tracing::info!(
            "gallery index {} loaded and brought up to date in place ({removed} people removed or rewritten, {added} embeddings added): {rows} embeddings in {:.2} s",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = ix.save(dir) {
            tracing::warn!("{e:#}; it will be caught up again at the next start");
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    ix
}

use crate::durable::temp_prefix;

/// Removes temporary files that saves of this gallery by processes no longer running left
/// behind (a kill -9 during the save of a 37 MB gallery left one of its size 4 times in 15).
/// A live process's temporary is never touched: its pid still has a `/proc` entry. Best effort:
/// a file that cannot be removed is left, and the gallery opens as usual.
fn clean_stale_temporaries(gallery: &Path) {
    let Some(name) = gallery.file_name() else {
        return;
    };
    let prefix = temp_prefix(&name.to_string_lossy());
    let dir = match gallery.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        let plain = entry.file_type().is_ok_and(|t| t.is_file());
        if !alive && plain {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    "removed {}, left by an interrupted save (process {pid})",
                    entry.path().display()
                ),
                Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(v: f32) -> Vec<f32> {
        vec![v; 4]
    }

    #[test]
    fn saves_and_reloads_people_and_searches_them_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = Gallery::open(&path, "m", 4).unwrap();
        g.enroll("Ada", emb(0.0), "a.jpg".into()).unwrap();
        g.enroll("Bob", emb(1.0), "b.jpg".into()).unwrap();
        g.enroll("Ada", emb(0.2), "a2.jpg".into()).unwrap();
        g.save().unwrap();
        let g = Gallery::open(&path, "m", 4).unwrap();
        assert_eq!(g.people.len(), 2);
        let m = ExactIndex::new(&g.people).search(&emb(0.25), 5);
        assert_eq!(m[0].name, "Ada");
        assert!(
            (m[0].distance - 0.1).abs() < 1e-6,
            "nearest of Ada's two embeddings: {m:?}"
        );
        assert_eq!(m[1].name, "Bob");
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        for (content, want) in [
            ("{not json", "corrupt"),
            (
                "{\"format\":\"other\",\"version\":1,\"model\":\"m\",\"dim\":4,\"people\":[]}",
                "expected \"vigil-gallery\"",
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = Gallery::open(&path, "m", 4).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("left untouched"), "{e}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
        // Cut short (read as a stream, the end of the file is found mid-person), trailing
        // bytes, or a folder where the file should be.
        let mut g = Gallery::open(&dir.path().join("new.json"), "m", 4).unwrap();
        g.enroll("Ada", emb(0.0), "a.jpg".into()).unwrap();
        g.save().unwrap();
        let whole = std::fs::read(dir.path().join("new.json")).unwrap();
        for (content, want) in [
            (&whole[..whole.len() - 9], "EOF while parsing"),
            (&[&whole[..], b" x"].concat()[..], "trailing characters"),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = Gallery::open(&path, "m", 4).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("left untouched"), "{e}");
        }
        let folder = dir.path().join("folder.json");
        std::fs::create_dir(&folder).unwrap();
        let e = Gallery::open(&folder, "m", 4).unwrap_err().to_string();
        assert!(
            e.contains("folder.json") && e.contains("is a directory"),
            "{e}"
        );
        let e = Gallery::open(&dir.path().join("new.json"), "other-model", 128)
            .unwrap_err()
            .to_string();
        assert!(e.contains("from `m`"), "{e}");
    }

    #[test]
    fn version_1_files_are_read_and_saved_as_version_2_with_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let v1 = r#"{"format":"vigil-gallery","version":1,"model":"m","dim":4,"people":[
            {"name":"Ada","embeddings":[[0.1,-0.25,3e-8,1.0]],"sources":["a.jpg"]}]}"#;
        std::fs::write(&path, v1).unwrap();
        let mut g = Gallery::open(&path, "m", 4).unwrap();
        let want = vec![0.1f32, -0.25, 3e-8, 1.0];
        assert_eq!(g.people[0].embeddings[0], want);
        g.enroll("Bob", emb(0.5), "b.jpg".into()).unwrap();
        g.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\":2"), "{text}");
        assert!(!text.contains("-0.25"), "embeddings are base64 now: {text}");
        let g = Gallery::open(&path, "m", 4).unwrap();
        assert_eq!(g.person("Ada").unwrap().embeddings[0], want, "bit-exact");
        assert_eq!(g.person("Bob").unwrap().embeddings[0], emb(0.5));
    }

    #[test]
    fn malformed_embeddings_and_duplicate_people_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let file = |people: &str| {
            format!(
                r#"{{"format":"vigil-gallery","version":2,"model":"m","dim":4,"people":[{people}]}}"#
            )
        };
        let ok =
            "{\"name\":\"Ada\",\"embeddings\":[\"AAAAAAAAAAAAAAAAAAAAAA==\"],\"sources\":[\"a\"]}";
        for (people, want) in [
            (
                ok.replace("AAAAAAAAAAAAAAAAAAAAAA==", "!!!"),
                "not valid base64",
            ),
            (
                ok.replace("AAAAAAAAAAAAAAAAAAAAAA==", "AAA="),
                "not a whole number",
            ),
            (
                ok.replace("AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAA="),
                "malformed embedding",
            ),
            (format!("{ok},{ok}"), "listed twice"),
        ] {
            std::fs::write(&path, file(&people)).unwrap();
            let e = Gallery::open(&path, "m", 4).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains("left untouched"),
                "{want}: {e}"
            );
        }
        std::fs::write(&path, file(ok)).unwrap();
        assert_eq!(
            Gallery::open(&path, "m", 4).unwrap().people[0].embeddings[0],
            vec![0.0; 4]
        );
    }

    #[test]
    fn enrolment_keeps_the_name_lookup_right_after_removals() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Gallery::open(&dir.path().join("g.json"), "m", 4).unwrap();
        for (i, n) in ["A", "B", "C", "D"].iter().enumerate() {
            g.enroll(n, emb(i as f32), "x".into()).unwrap();
        }
        g.remove("B").unwrap();
        g.enroll("D", emb(9.0), "y".into()).unwrap();
        assert_eq!(g.person("D").unwrap().embeddings.len(), 2);
        assert_eq!(g.person("C").unwrap().embeddings[0], emb(2.0));
        assert!(g.person("B").is_err());
        assert!(
            g.enroll("E", vec![0.0; 3], "z".into()).is_err(),
            "wrong length"
        );
        assert_eq!(g.embeddings(), 4);
    }

    #[test]
    fn temporaries_of_dead_saves_are_removed_at_open_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = Gallery::open(&path, "m", 4).unwrap();
        g.enroll("Ada", emb(0.0), "a.jpg".into()).unwrap();
        g.save().unwrap();
        // A pid that has ended: a child that was waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".g.json.tmp-{dead}"));
        let live = dir
            .path()
            .join(format!(".g.json.tmp-{}", std::process::id()));
        let other = dir.path().join(format!(".other.json.tmp-{dead}"));
        for f in [&stale, &live, &other] {
            std::fs::write(f, "half a gallery").unwrap();
        }
        let g = Gallery::open(&path, "m", 4).unwrap();
        assert_eq!(g.people.len(), 1);
        assert!(!stale.exists(), "a dead process's temporary is removed");
        assert!(live.exists(), "a running process's temporary is kept");
        assert!(
            other.exists(),
            "another gallery's temporary is not ours to remove"
        );
    }

    #[test]
    fn oversized_names_are_refused_while_parsing_and_never_echoed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let huge = "x".repeat(10 << 20);
        let file = format!(
            r#"{{"format":"vigil-gallery","version":2,"model":"m","dim":4,"people":[{{"name":"{huge}","embeddings":["AAAAAAAAAAAAAAAAAAAAAA=="],"sources":["a"]}}]}}"#
        );
        std::fs::write(&path, file).unwrap();
        let e = Gallery::open(&path, "m", 4).unwrap_err().to_string();
        assert!(
            e.contains("a name of 10485760 bytes (at most 512)"),
            "{}",
            echo(&e)
        );
        assert!(e.len() < 1000, "the error repeats {} bytes", e.len());
        let e = validate_name(&huge).unwrap_err().to_string();
        assert!(
            e.len() < 1000 && e.contains("longer than 128"),
            "{}",
            echo(&e)
        );
        let e = GalleryError::Unknown {
            name: huge.clone(),
            path: path.clone(),
        }
        .to_string();
        assert!(e.len() < 1000, "{}", echo(&e));
    }

    #[test]
    fn names_with_separators_or_control_characters_are_refused() {
        for bad in ["", " Ada", "a/b", "a\\b", "x\ny", "tab\t"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("Lin-Manuel Miranda").is_ok());
    }
}
