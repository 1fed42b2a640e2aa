//! Approximate nearest-neighbour search for large galleries: an HNSW graph (the `usearch`
//! crate, Unum's USearch) over every enrolled embedding, persisted beside the gallery file so
//! that a restart loads it instead of rebuilding it.
//!
//! The persisted index is a folder `<gallery>.index/` holding USearch's file and a `meta.json`
//! that names the gallery content it was built from (a SHA-256 over every name and embedding,
//! in order), the build parameters and the SHA-256 of the index file. An index whose
//! fingerprint, parameters or file do not match is stale: it is rebuilt and written again (into
//! a temporary folder renamed over the old one). A folder that cannot be written is not an
//! error; the index is then rebuilt at every start.

use super::{Match, Person};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use usearch::{IndexOptions, MetricKind, ScalarKind};

const META_FORMAT: &str = "vigil-gallery-index";
const META_VERSION: u32 = 1;
const FILE: &str = "hnsw.usearch";

/// Squared Euclidean distance, summed in eight lanes so the compiler vectorises it. Exact
/// search orders by it (the same order as the distance) and reports its square root.
pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// HNSW build and search parameters (`gallery.index` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node and layer (the M of the paper).
    pub m: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Candidate list size while searching.
    pub ef_search: usize,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Meta {
    format: String,
    version: u32,
    fingerprint: String,
    rows: usize,
    dim: usize,
    m: usize,
    ef_construction: usize,
    /// SHA-256 of the index file.
    sha256: String,
}

/// What the gallery's content hashes to: names and embeddings in order.
pub fn fingerprint(people: &[Person]) -> String {
    let mut h = Sha256::new();
    for p in people {
        h.update((p.name.len() as u64).to_le_bytes());
        h.update(p.name.as_bytes());
        h.update((p.embeddings.len() as u64).to_le_bytes());
        for e in &p.embeddings {
            for v in e {
                h.update(v.to_le_bytes());
            }
        }
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

/// Where the index of the gallery at `gallery` is kept.
pub fn index_dir(gallery: &Path) -> PathBuf {
    let mut s = gallery.as_os_str().to_owned();
    s.push(".index");
    PathBuf::from(s)
}

/// How an index came to be, for the log and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Built,
    Loaded,
}

/// An HNSW graph over every embedding (keyed by row); each row remembers its person.
pub struct HnswIndex {
    hnsw: usearch::Index,
    owner: Vec<u32>,
    names: Vec<String>,
    dim: usize,
    params: HnswParams,
}

fn rows(people: &[Person]) -> (Vec<u32>, Vec<&[f32]>) {
    let mut owner = Vec::new();
    let mut data = Vec::new();
    for (i, p) in people.iter().enumerate() {
        for e in &p.embeddings {
            owner.push(i as u32);
            data.push(e.as_slice());
        }
    }
    (owner, data)
}

impl HnswIndex {
    fn empty(dim: usize, params: HnswParams) -> anyhow::Result<usearch::Index> {
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::L2sq,
            quantization: ScalarKind::F32,
            connectivity: params.m,
            expansion_add: params.ef_construction,
            expansion_search: params.ef_search,
            multi: false,
        };
        usearch::Index::new(&options).map_err(|e| anyhow::anyhow!("cannot create the index: {e}"))
    }

    /// Builds the graph over every embedding, on every core.
    pub fn build(people: &[Person], params: HnswParams) -> anyhow::Result<HnswIndex> {
        let (owner, data) = rows(people);
        let dim = data.first().map_or(0, |d| d.len());
        let hnsw = Self::empty(dim.max(1), params)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        hnsw.reserve_capacity_and_threads(data.len().max(1), threads)
            .map_err(|e| anyhow::anyhow!("cannot reserve the index: {e}"))?;
        let failed = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (hnsw, data, failed) = (&hnsw, &data, &failed);
                s.spawn(move || {
                    for row in (t..data.len()).step_by(threads) {
                        if let Err(e) = hnsw.add(row as u64, data[row]) {
                            *failed.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap() {
            bail!("cannot add to the index: {e}");
        }
        Ok(HnswIndex {
            hnsw,
            owner,
            names: people.iter().map(|p| p.name.clone()).collect(),
            dim,
            params,
        })
    }

    /// Loads the persisted index of `people` from `dir` if it is there and current; `Ok(None)`
    /// when it is missing or stale, an error when it cannot be read.
    pub fn load(
        dir: &Path,
        people: &[Person],
        fingerprint: &str,
        params: HnswParams,
    ) -> anyhow::Result<Option<HnswIndex>> {
        let meta_path = dir.join("meta.json");
        let bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("cannot read {}: {e}", meta_path.display()),
        };
        let Ok(meta) = serde_json::from_slice::<Meta>(&bytes) else {
            return Ok(None);
        };
        let (owner, data) = rows(people);
        let dim = data.first().map_or(0, |d| d.len());
        if meta.format != META_FORMAT
            || meta.version != META_VERSION
            || meta.fingerprint != fingerprint
            || meta.rows != data.len()
            || meta.dim != dim
            || meta.m != params.m
            || meta.ef_construction != params.ef_construction
        {
            return Ok(None);
        }
        let file = dir.join(FILE);
        if !file.is_file() || file_sha256(&file)? != meta.sha256 {
            return Ok(None);
        }
        let hnsw = Self::empty(dim.max(1), params)?;
        let Some(path) = file.to_str() else {
            bail!("{}: the index path is not UTF-8", file.display());
        };
        if hnsw.load(path).is_err() || hnsw.size() != owner.len() {
            return Ok(None);
        }
        hnsw.change_expansion_search(params.ef_search);
        Ok(Some(HnswIndex {
            hnsw,
            owner,
            names: people.iter().map(|p| p.name.clone()).collect(),
            dim,
            params,
        }))
    }

    /// Writes the index into `dir` (replacing what is there) by way of a temporary folder.
    pub fn save(&self, dir: &Path, fingerprint: &str) -> anyhow::Result<()> {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dir.file_name().context("the index path has no file name")?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> anyhow::Result<()> {
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir(&tmp)?;
            let file = tmp.join(FILE);
            let path = file.to_str().context("the index path is not UTF-8")?;
            self.hnsw.save(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            std::fs::File::open(&file)?.sync_all()?;
            let sha256 = file_sha256(&file)?;
            let meta = Meta {
                format: META_FORMAT.into(),
                version: META_VERSION,
                fingerprint: fingerprint.into(),
                rows: self.owner.len(),
                dim: self.dim,
                m: self.params.m,
                ef_construction: self.params.ef_construction,
                sha256,
            };
            let meta_path = tmp.join("meta.json");
            std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta)?)?;
            std::fs::File::open(&meta_path)?.sync_all()?;
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            std::fs::rename(&tmp, dir)?;
            std::fs::File::open(&parent)?.sync_all()?;
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            e.context(format!("cannot write the gallery index {}", dir.display()))
        })
    }

    /// Changes the candidate list size of later searches.
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef;
        self.hnsw.change_expansion_search(ef);
    }

    pub fn len(&self) -> usize {
        self.owner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }
}

impl super::Index for HnswIndex {
    fn search(&self, query: &[f32], k: usize) -> Vec<Match> {
        if self.owner.is_empty() || k == 0 {
            return vec![];
        }
        // Rows, not people, are searched: ask for enough rows that `k` distinct people are
        // among them even when people have several embeddings.
        let want = if self.owner.len() == self.names.len() {
            k
        } else {
            self.params.ef_search.max(k)
        };
        let Ok(found) = self.hnsw.search(query, want.min(self.owner.len())) else {
            return vec![];
        };
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(k);
        for (key, d) in found.keys.iter().zip(&found.distances) {
            let Some(&who) = self.owner.get(*key as usize) else {
                continue;
            };
            if seen.insert(who) {
                out.push(Match {
                    name: self.names[who as usize].clone(),
                    distance: d.max(0.0).sqrt(),
                });
                if out.len() == k {
                    break;
                }
            }
        }
        out
    }

    fn kind(&self) -> &'static str {
        "hnsw"
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Gallery, Index};
    use super::*;
    use crate::config::{GalleryIndexConfig, IndexKind};

    /// Deterministic pseudo-random embeddings (values in about -0.1..0.1).
    fn embedding(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    }

    fn gallery(path: &Path, n: usize) -> Gallery {
        let mut g = Gallery::open(path, "m", 32).unwrap();
        for i in 0..n {
            g.enroll(&format!("p{i}"), embedding(i as u64, 32), "s".into())
                .unwrap();
        }
        g
    }

    fn hnsw_config() -> GalleryIndexConfig {
        GalleryIndexConfig {
            kind: IndexKind::Hnsw,
            ..Default::default()
        }
    }

    #[test]
    fn hnsw_finds_what_exact_search_finds_with_the_same_distances() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = gallery(&dir.path().join("g.json"), 3000);
        // Two people with a second embedding each: results stay one entry per person.
        g.enroll("p1", embedding(90_001, 32), "s2".into()).unwrap();
        g.enroll("p2", embedding(90_002, 32), "s2".into()).unwrap();
        let params = HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
        };
        let ix = HnswIndex::build(&g.people, params).unwrap();
        let exact = super::super::ExactIndex::new(&g.people);
        assert_eq!(ix.len(), 3002);
        let mut agree = 0;
        for i in 0..500u64 {
            let mut q = embedding(i * 7, 32);
            q[0] += 0.01;
            let (h, e) = (ix.search(&q, 3), exact.search(&q, 3));
            assert_eq!(h.len(), 3);
            let names: std::collections::HashSet<_> = h.iter().map(|m| &m.name).collect();
            assert_eq!(names.len(), 3, "one entry per person: {h:?}");
            if h[0].name == e[0].name {
                agree += 1;
                assert!((h[0].distance - e[0].distance).abs() < 1e-4, "{h:?} {e:?}");
            }
        }
        assert!(
            agree >= 495,
            "HNSW top-1 agreed with exact search {agree} times of 500"
        );
        let found = ix.search(&embedding(90_002, 32), 1);
        assert_eq!(found[0].name, "p2");
        assert!(found[0].distance < 1e-3);
    }

    #[test]
    fn the_index_is_persisted_reused_and_rebuilt_when_stale_or_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let mut g = gallery(&path, 500);
        g.save().unwrap();
        let cfg = hnsw_config();
        let ix = g.index(&cfg).unwrap();
        assert_eq!(ix.kind(), "hnsw");
        let idir = index_dir(&path);
        let file = idir.join(FILE);
        let meta = std::fs::read_to_string(idir.join("meta.json")).unwrap();
        let written = std::fs::metadata(&file).unwrap().modified().unwrap();

        // Current: loaded, not rebuilt (the file is not written again).
        let fp = fingerprint(&g.people);
        let params = HnswParams {
            m: cfg.m,
            ef_construction: cfg.ef_construction,
            ef_search: cfg.ef_search,
        };
        assert!(HnswIndex::load(&idir, &g.people, &fp, params)
            .unwrap()
            .is_some());
        let again = g.index(&cfg).unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            written
        );
        assert_eq!(again.search(&embedding(7, 32), 1)[0].name, "p7");

        // Stale: a new person makes the stored index out of date; it is rebuilt with them.
        g.enroll("Newcomer", embedding(77_777, 32), "n".into())
            .unwrap();
        let fp2 = fingerprint(&g.people);
        assert_ne!(fp, fp2);
        assert!(HnswIndex::load(&idir, &g.people, &fp2, params)
            .unwrap()
            .is_none());
        let ix = g.index(&cfg).unwrap();
        assert_eq!(ix.search(&embedding(77_777, 32), 1)[0].name, "Newcomer");
        assert_ne!(
            std::fs::read_to_string(idir.join("meta.json")).unwrap(),
            meta
        );
        // Other build parameters also make it stale.
        let other = HnswParams { m: 8, ..params };
        assert!(HnswIndex::load(&idir, &g.people, &fp2, other)
            .unwrap()
            .is_none());

        // Damaged: bytes changed in the index file, or the file cut short, or meta garbage.
        for damage in 0..3 {
            let mut bytes = std::fs::read(&file).unwrap();
            match damage {
                0 => {
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0xff;
                    std::fs::write(&file, &bytes).unwrap();
                }
                1 => std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap(),
                _ => std::fs::write(idir.join("meta.json"), b"{garbage").unwrap(),
            }
            assert!(HnswIndex::load(&idir, &g.people, &fp2, params)
                .unwrap()
                .is_none());
            let ix = g.index(&cfg).unwrap();
            assert_eq!(ix.search(&embedding(77_777, 32), 1)[0].name, "Newcomer");
            assert!(HnswIndex::load(&idir, &g.people, &fp2, params)
                .unwrap()
                .is_some());
        }
    }

    #[test]
    fn auto_chooses_hnsw_above_the_configured_size_and_exact_below() {
        let dir = tempfile::tempdir().unwrap();
        let g = gallery(&dir.path().join("g.json"), 100);
        let mut cfg = GalleryIndexConfig {
            hnsw_above: 100,
            persist: false,
            ..Default::default()
        };
        assert_eq!(g.index(&cfg).unwrap().kind(), "exact");
        cfg.hnsw_above = 99;
        assert_eq!(g.index(&cfg).unwrap().kind(), "hnsw");
        assert!(
            !index_dir(&g.path).exists(),
            "persist: false writes nothing"
        );
        cfg.kind = IndexKind::Exact;
        assert_eq!(g.index(&cfg).unwrap().kind(), "exact");
    }

    #[test]
    fn an_unwritable_index_folder_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let g = gallery(&path, 50);
        // A file where the index folder should be: the index cannot be written there.
        std::fs::write(index_dir(&path), b"in the way").unwrap();
        let ix = g.index(&hnsw_config()).unwrap();
        assert_eq!(ix.search(&embedding(3, 32), 1)[0].name, "p3");
        assert_eq!(std::fs::read(index_dir(&path)).unwrap(), b"in the way");
    }

    #[test]
    fn squared_l2_matches_the_plain_sum_for_any_length() {
        for n in [0, 1, 7, 8, 9, 128, 131] {
            let (a, b) = (embedding(1, n), embedding(2, n));
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!(
                (squared_l2(&a, &b) - plain).abs() <= 1e-6 * (1.0 + plain),
                "{n}"
            );
        }
    }
}
