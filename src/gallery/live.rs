//! The gallery of a running vigil, and every change to a gallery file.
//!
//! - Every change (enrol, remove; from the CLI, the API, or another process) is one
//!   read-modify-write under an exclusive lock on `<gallery>.lock`: the file is read again
//!   under the lock, changed and saved crash-safely, so two enrolments at the same moment are
//!   both kept.
//! - A running vigil searches a [`SharedIndex`]. A change to the gallery is applied to it at
//!   once after a change this process made, within half a second of a change another process
//!   made to the file (its size, time and inode are polled), and as each batch of a shared
//!   store arrives. The HNSW index takes the change in place ([`super::ann`]: the new rows are
//!   added, the removed ones tombstoned, while searches go on; nothing is copied); an exact
//!   index, a change of corrections (negatives, head), or a change too large for in place
//!   builds a new index, swapped in whole (an `Arc` behind a lock held for a pointer copy; the
//!   face worker never waits for a build). Another process's change is read against the HNSW
//!   index person by person, as at opening, keeping only who changed: at a million people the
//!   file's embeddings are never all held beside the index.
//! - An index changed in place is written to `<gallery>.index/` at most once a minute as
//!   changes come ([`PERSIST_EVERY`]) and when the watcher stops, so a restart loads it; one
//!   written earlier is loaded and brought up to date in place anyway.

pub use super::lock::FileLock;
use super::{Gallery, GalleryError, Index};
use crate::config::GalleryIndexConfig;
use crate::shutdown::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Shortest time between two writes of an index changed in place while running.
pub const PERSIST_EVERY: Duration = Duration::from_secs(60);

/// The index the face worker searches, replaced whole when the gallery changes.
pub struct SharedIndex {
    current: RwLock<Arc<dyn Index>>,
}

impl SharedIndex {
    pub fn new(ix: Arc<dyn Index>) -> SharedIndex {
        SharedIndex {
            current: RwLock::new(ix),
        }
    }

    /// The index as of now (a pointer copy).
    pub fn get(&self) -> Arc<dyn Index> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, ix: Arc<dyn Index>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = ix;
    }
}

/// How a file looked when last read: a change to any of these is a change of the file.
#[derive(Debug, Clone, PartialEq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

/// The gallery file and the corrections searched with it (negatives, the tuned head).
type Stamp = [Option<FileStamp>; 3];

fn stamp(path: &Path) -> Option<Stamp> {
    Some([
        file_stamp(path),
        file_stamp(&super::learned::negatives_path(path)),
        file_stamp(&super::learned::head_path(path)),
    ])
}

/// Opens the gallery at `path` under its lock, applies `change`, and saves it; a failed change
/// leaves the file untouched. Returns what `change` returned and the gallery as saved.
pub fn update_file<R>(
    path: &Path,
    model: &str,
    dim: usize,
    change: impl FnOnce(&mut Gallery) -> Result<R, GalleryError>,
) -> Result<(R, Gallery), GalleryError> {
    let _lock = FileLock::take(path)?;
    let mut g = Gallery::open(path, model, dim)?;
    let r = change(&mut g)?;
    g.save()?;
    Ok((r, g))
}

/// A person as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PersonInfo {
    pub name: String,
    pub embeddings: usize,
    pub sources: Vec<String>,
}

/// A gallery file kept in memory with its index, up to date with the file.
pub struct LiveGallery {
    pub path: PathBuf,
    model: String,
    dim: usize,
    cfg: GalleryIndexConfig,
    index: Arc<SharedIndex>,
    people: RwLock<Arc<Vec<PersonInfo>>>,
    seen: Mutex<Option<Stamp>>,
    /// The groups of unknown faces, when grouping is on.
    unknowns: std::sync::OnceLock<Arc<super::unknowns::UnknownStore>>,
    /// With `gallery.postgres`: the shared store's copy, which `path` caches.
    replica: Option<Arc<super::store::Replica>>,
    /// How the index in use was last built or loaded.
    report: Mutex<super::IndexReport>,
    /// When the index was last written (or built, or loaded).
    persisted_at: Mutex<Instant>,
}

fn info(p: &super::Person) -> PersonInfo {
    PersonInfo {
        name: p.name.clone(),
        embeddings: p.embeddings.len(),
        sources: p.sources.clone(),
    }
}

fn listing(g: &Gallery) -> Arc<Vec<PersonInfo>> {
    Arc::new(g.people.iter().map(info).collect())
}

impl LiveGallery {
    /// Reads the gallery and builds (or loads) its index.
    pub fn open(
        path: &Path,
        model: &str,
        dim: usize,
        cfg: &GalleryIndexConfig,
    ) -> anyhow::Result<LiveGallery> {
        let seen = stamp(path);
        // From the persisted index when there is one: the file's people are then read one at
        // a time and only those the index lacks are kept.
        let mut people = Vec::new();
        let learned = super::learned::Learned::open_persisted(path, model, dim, cfg, &mut |p| {
            people.push(info(p))
        })?;
        let learned = match learned {
            Some(l) => l,
            None => {
                let g = Gallery::open(path, model, dim)?;
                people = g.people.iter().map(info).collect();
                super::learned::Learned::build(&g, cfg)?
            }
        };
        let report = Mutex::new(learned.report.clone());
        let index: Arc<dyn Index> = Arc::new(learned);
        Ok(LiveGallery {
            report,
            persisted_at: Mutex::new(Instant::now()),
            path: path.to_path_buf(),
            model: model.into(),
            dim,
            cfg: cfg.clone(),
            index: Arc::new(SharedIndex::new(index)),
            people: RwLock::new(Arc::new(people)),
            seen: Mutex::new(seen),
            unknowns: std::sync::OnceLock::new(),
            replica: None,
        })
    }

    /// The gallery of a shared store (`gallery.postgres`), cached at `path`: caught up now (or
    /// started from the cache while the store is down), and kept current by [`Self::watch`].
    pub fn open_shared(
        path: &Path,
        store: super::store::PgStore,
        cfg: &GalleryIndexConfig,
    ) -> anyhow::Result<LiveGallery> {
        let (model, dim) = (store.model.clone(), store.dim);
        let replica = super::store::Replica::open(path, store)?;
        let (index, people, report) = replica.with(|g| -> anyhow::Result<_> {
            let learned = super::learned::Learned::build(g, cfg)?;
            let report = learned.report.clone();
            let ix: Arc<dyn Index> = Arc::new(learned);
            Ok((ix, listing(g), report))
        })?;
        Ok(LiveGallery {
            report: Mutex::new(report),
            persisted_at: Mutex::new(Instant::now()),
            path: path.to_path_buf(),
            model,
            dim,
            cfg: cfg.clone(),
            index: Arc::new(SharedIndex::new(index)),
            people: RwLock::new(people),
            seen: Mutex::new(stamp(path)),
            unknowns: std::sync::OnceLock::new(),
            replica: Some(Arc::new(replica)),
        })
    }

    /// The shared store's copy, with `gallery.postgres`.
    pub fn replica(&self) -> Option<&Arc<super::store::Replica>> {
        self.replica.as_ref()
    }

    /// Groups unknown faces into `store` (once).
    pub fn attach_unknowns(&self, store: Arc<super::unknowns::UnknownStore>) {
        let _ = self.unknowns.set(store);
    }

    pub fn unknowns(&self) -> Option<&Arc<super::unknowns::UnknownStore>> {
        self.unknowns.get()
    }

    /// The index the face worker searches.
    pub fn index(&self) -> Arc<SharedIndex> {
        self.index.clone()
    }

    pub fn people(&self) -> Arc<Vec<PersonInfo>> {
        self.people
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Embeddings of `name`, if enrolled.
    pub fn embeddings_of(&self, name: &str) -> anyhow::Result<Option<Vec<Vec<f32>>>> {
        if let Some(r) = &self.replica {
            return Ok(r.with(|g| g.person(name).ok().map(|p| p.embeddings.clone())));
        }
        let g = Gallery::open(&self.path, &self.model, self.dim)?;
        Ok(g.person(name).ok().map(|p| p.embeddings.clone()))
    }

    /// Applies `change` to the file (under its lock) and swaps the index in before returning:
    /// the next face decision uses it.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut Gallery) -> Result<R, GalleryError>,
    ) -> anyhow::Result<R> {
        if let Some(rep) = &self.replica {
            return rep.update(change, &|g| self.install(g));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (r, g) = update_file(&self.path, &self.model, self.dim, change)?;
        self.install(&g)?;
        *seen = stamp(&self.path);
        Ok(r)
    }

    /// The gallery file as it is now.
    pub fn read(&self) -> Result<Gallery, GalleryError> {
        if let Some(r) = &self.replica {
            return Ok(r.with(|g| g.clone()));
        }
        Gallery::open(&self.path, &self.model, self.dim)
    }

    /// The embedder's name and dimension the gallery was made with.
    pub fn model(&self) -> (&str, usize) {
        (&self.model, self.dim)
    }

    /// Reads the corrections again after a change made in this process.
    pub fn reload(&self) -> anyhow::Result<()> {
        if let Some(r) = &self.replica {
            return r.with(|g| self.rebuild(g));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let g = {
            let _lock = FileLock::take(&self.path)?;
            self.read()?
        };
        self.rebuild(&g)?;
        *seen = stamp(&self.path);
        Ok(())
    }

    /// How the index in use was last built or loaded.
    pub fn index_report(&self) -> super::IndexReport {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Brings the index in line with `g`: in place when the index can (see the module's
    /// opening), else by building a new one.
    fn install(&self, g: &Gallery) -> anyhow::Result<()> {
        let current = self.index.get();
        let same_kind = (current.kind() == "hnsw") == super::wants_hnsw(&self.cfg, g.embeddings());
        if same_kind {
            let started = Instant::now();
            match current.follow(&g.people) {
                Ok(true) => {
                    self.changed_in_place(&current, listing(g), started);
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("{e:#}; building the gallery index again"),
            }
        }
        self.rebuild(g)
    }

    /// After `current` took a change in place: the listing swapped in, and the index written
    /// if it was not for [`PERSIST_EVERY`].
    fn changed_in_place(
        &self,
        current: &Arc<dyn Index>,
        people: Arc<Vec<PersonInfo>>,
        started: Instant,
    ) {
        tracing::info!(
            "gallery index brought up to date in place in {:.3} s",
            started.elapsed().as_secs_f64()
        );
        *self.people.write().unwrap_or_else(|p| p.into_inner()) = people;
        let mut at = self.persisted_at.lock().unwrap_or_else(|p| p.into_inner());
        if at.elapsed() >= PERSIST_EVERY {
            *at = Instant::now();
            if let Err(e) = current.persist() {
                tracing::warn!("{e:#}; it is caught up in place at the next start");
            }
        }
    }

    /// Brings the HNSW index in use in line with the file as another process left it, reading
    /// the file person by person against the index and keeping only who changed, so the
    /// file's embeddings are never all held beside the index (as at opening:
    /// [`super::learned::Learned::open_persisted`]). Must be called under `seen`, the
    /// corrections unchanged. The people now listed and the file's stamp as read; `Ok(None)`
    /// when it cannot be done so (exact search, a gallery now small enough for it, too much
    /// changed, or the index refused the change): the caller reads the file whole.
    fn follow_file(&self) -> anyhow::Result<Option<(usize, Option<Stamp>)>> {
        let current = self.index.get();
        let Some(ix) = current.hnsw() else {
            return Ok(None);
        };
        let started = Instant::now();
        let mut people = Vec::new();
        let (read, after) = {
            let _lock = FileLock::take(&self.path)?;
            let read =
                super::learned::scan_against(&self.path, &self.model, self.dim, ix, &mut |p| {
                    people.push(info(p))
                })?;
            (read, stamp(&self.path))
        };
        if !super::wants_hnsw(&self.cfg, read.rows) {
            return Ok(None);
        }
        match ix.follow_from(&read.others, read.held) {
            Ok(super::ann::Followed::InPlace { .. }) => {
                let n = people.len();
                self.changed_in_place(&current, Arc::new(people), started);
                Ok(Some((n, after)))
            }
            Ok(super::ann::Followed::Rebuild) => Ok(None),
            Err(e) => {
                tracing::warn!("{e:#}; building the gallery index again");
                Ok(None)
            }
        }
    }

    /// Builds (or loads) the index of `g` with its corrections, and swaps it in.
    fn rebuild(&self, g: &Gallery) -> anyhow::Result<()> {
        let learned = super::learned::Learned::build(g, &self.cfg)?;
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = learned.report.clone();
        let ix: Arc<dyn Index> = Arc::new(learned);
        self.index.set(ix);
        *self.people.write().unwrap_or_else(|p| p.into_inner()) = listing(g);
        Ok(())
    }

    /// Writes the index if it changed in place since it was last written (at shutdown).
    pub fn persist(&self) {
        *self.persisted_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        match self.index.get().persist() {
            Ok(true) => tracing::info!("gallery index written with its in-place changes"),
            Ok(false) => {}
            Err(e) => tracing::warn!("{e:#}; it is caught up in place at the next start"),
        }
    }

    /// Reads the file again if it changed since last read; true when it did. With the HNSW
    /// index and the corrections unchanged, the file is read person by person against the
    /// index and only who changed is kept ([`Self::follow_file`]); otherwise it is read whole.
    pub fn refresh(&self) -> anyhow::Result<bool> {
        let now = stamp(&self.path);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if now == *seen {
            return Ok(false);
        }
        // A change of the negatives or the head changes every row searched: built again.
        let corrections_changed = match (&now, &*seen) {
            (Some(a), Some(b)) => a[1..] != b[1..],
            _ => true,
        };
        // Read under the lock, so a half-finished change by another process is never seen
        // (the rename makes that impossible anyway; the lock also orders us after it).
        let followed = if corrections_changed {
            None
        } else {
            self.follow_file()?
        };
        let (people, after) = match followed {
            Some(done) => done,
            None => {
                let (g, after) = {
                    let _lock = FileLock::take(&self.path)?;
                    let g = Gallery::open(&self.path, &self.model, self.dim)?;
                    (g, stamp(&self.path))
                };
                if corrections_changed {
                    self.rebuild(&g)?;
                } else {
                    self.install(&g)?;
                }
                (g.people.len(), after)
            }
        };
        tracing::info!(
            "gallery {} changed on disk: {people} people now",
            self.path.display()
        );
        *seen = after;
        Ok(true)
    }

    /// Polls the file every `every` until `stop`, swapping the index in when it changed; with
    /// a shared store, follows the store instead (its own notifications and `poll_ms`).
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
        stop: Shutdown,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        if let Some(r) = &self.replica {
            let g = self.clone();
            let sync = r.run(stop, move |gallery| g.install(gallery))?;
            let g = self.clone();
            // Writes the index once the sync thread has stopped.
            return std::thread::Builder::new()
                .name("gallery-persist".into())
                .spawn(move || {
                    let _ = sync.join();
                    g.persist();
                });
        }
        let g = self.clone();
        std::thread::Builder::new()
            .name("gallery-watch".into())
            .spawn(move || {
                let mut failing = false;
                while stop.sleep(every) {
                    match g.refresh() {
                        Ok(_) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(
                                "cannot reload the gallery: {e:#}; still using the one loaded"
                            );
                        }
                        Err(_) => {}
                    }
                }
                g.persist();
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_changes_under_the_lock_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    update_file(&path, "m", 4, |g| {
                        g.enroll(&format!("p{i}"), vec![i as f32; 4], "x".into())
                    })
                    .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let g = Gallery::open(&path, "m", 4).unwrap();
        assert_eq!(g.people.len(), 8);
    }

    #[test]
    fn a_change_made_by_someone_else_is_picked_up_and_searched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        let cfg = GalleryIndexConfig::default();
        let live = LiveGallery::open(&path, "m", 4, &cfg).unwrap();
        assert!(live.index().get().search(&[1.0; 4], 1).is_empty());
        update_file(&path, "m", 4, |g| g.enroll("Ada", vec![1.0; 4], "a".into())).unwrap();
        assert!(live.refresh().unwrap());
        let found = live.index().get().search(&[1.0; 4], 1);
        assert_eq!(found[0].name, "Ada");
        assert!(!live.refresh().unwrap(), "nothing changed since");
    }

    #[test]
    fn a_rejection_made_by_another_process_is_applied_by_a_running_gallery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        update_file(&path, "m", 2, |g| {
            g.enroll("Ada", vec![0.0, 0.0], "a".into())
        })
        .unwrap();
        let live = LiveGallery::open(&path, "m", 2, &GalleryIndexConfig::default()).unwrap();
        assert_eq!(live.index().get().search(&[0.3, 0.0], 1)[0].name, "Ada");
        let mut n = super::super::learned::Negatives::default();
        n.add("Ada", vec![0.35, 0.0], "not ada".into());
        n.save(&path, "m", 2).unwrap();
        assert!(live.refresh().unwrap(), "the negatives file changed");
        assert!(live.index().get().search(&[0.3, 0.0], 1).is_empty());
        assert_eq!(live.index().get().search(&[0.05, 0.0], 1)[0].name, "Ada");
    }

    fn hnsw() -> GalleryIndexConfig {
        GalleryIndexConfig {
            kind: crate::config::IndexKind::Hnsw,
            ..Default::default()
        }
    }

    /// A distinct pseudo-random embedding per `i`.
    fn e(i: u32) -> Vec<f32> {
        let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (0..8)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    /// A gallery file of `n` people, p0 to p{n-1}, one embedding each.
    fn enrolled(n: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        update_file(&path, "m", 8, |g| {
            (0..n).try_for_each(|i| g.enroll(&format!("p{i}"), e(i), "s".into()))
        })
        .unwrap();
        (dir, path)
    }

    /// What another process changes below: one enrolled (Ada), one given a second photo (p7),
    /// one removed (p3), one rewritten (p9: same name, another face).
    fn change_four(path: &Path) {
        update_file(path, "m", 8, |g| {
            g.enroll("Ada", e(1000), "a".into())?;
            g.enroll("p7", e(1007), "second".into())?;
            g.remove("p3")?;
            g.remove("p9")?;
            g.enroll("p9", e(1009), "new".into())
        })
        .unwrap();
    }

    /// `live` searches and lists 300 people as [`change_four`] left them.
    fn four_changed(live: &LiveGallery) {
        let ix = live.index().get();
        assert_eq!(ix.search(&e(1000), 1)[0].name, "Ada");
        assert_eq!(ix.search(&e(1007), 1)[0].name, "p7");
        assert_eq!(ix.search(&e(7), 1)[0].name, "p7");
        assert_eq!(ix.search(&e(1009), 1)[0].name, "p9");
        assert!(ix.search(&e(3), 10).iter().all(|m| m.name != "p3"));
        assert!(
            ix.search(&e(9), 1)[0].distance > 0.0,
            "p9's old face is gone"
        );
        // The listing is the file's, every person with their count and sources.
        let people = live.people();
        assert_eq!(people.len(), 300);
        let p7 = people.iter().find(|p| p.name == "p7").unwrap();
        assert_eq!(
            (p7.embeddings, p7.sources.clone()),
            (2, vec!["s".to_string(), "second".into()])
        );
        assert!(people.iter().all(|p| p.name != "p3"));
    }

    /// The gallery file at `path` as JSON, and p5's entry in it.
    fn doc_and_p5(path: &Path) -> (serde_json::Value, serde_json::Value) {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let p5 = doc["people"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "p5")
            .unwrap()
            .clone();
        (doc, p5)
    }

    #[test]
    fn enrolment_and_removal_change_a_running_hnsw_index_in_place_and_a_restart_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.json");
        update_file(&path, "m", 8, |g| {
            (0..200).try_for_each(|i| g.enroll(&format!("p{i}"), e(i), "s".into()))
        })
        .unwrap();
        let live = Arc::new(LiveGallery::open(&path, "m", 8, &hnsw()).unwrap());
        assert_eq!(
            live.index_report().origin,
            Some(super::super::ann::Origin::Built)
        );
        let before = live.index().get();
        live.update(|g| g.enroll("Ada", e(1000), "a".into()))
            .unwrap();
        live.update(|g| g.remove("p3").map(|_| ())).unwrap();
        let after = live.index().get();
        assert!(
            Arc::ptr_eq(&before, &after),
            "the same index, changed in place"
        );
        assert_eq!(after.search(&e(1000), 1)[0].name, "Ada");
        assert!(after.search(&e(3), 10).iter().all(|m| m.name != "p3"));

        // Another process's change to the file: also in place.
        update_file(&path, "m", 8, |g| g.enroll("Bob", e(2000), "b".into())).unwrap();
        assert!(live.refresh().unwrap());
        assert!(Arc::ptr_eq(&before, &live.index().get()));
        assert_eq!(live.index().get().search(&e(2000), 1)[0].name, "Bob");

        // Stopping writes the index; a restart loads it as it is.
        let stop = crate::shutdown::Shutdown::new();
        let watcher = live.watch(Duration::from_millis(20), stop.clone()).unwrap();
        stop.cancel(crate::shutdown::Why::Exit);
        watcher.join().unwrap();
        let again = LiveGallery::open(&path, "m", 8, &hnsw()).unwrap();
        assert_eq!(
            again.index_report().origin,
            Some(super::super::ann::Origin::Loaded)
        );
        let ix = again.index().get();
        assert_eq!(ix.search(&e(2000), 1)[0].name, "Bob");
        assert!(ix.search(&e(3), 10).iter().all(|m| m.name != "p3"));
    }

    #[test]
    fn another_process_change_is_read_against_the_running_index_keeping_only_who_changed() {
        let (dir, path) = enrolled(300);
        let live = LiveGallery::open(&path, "m", 8, &hnsw()).unwrap();
        let before = live.index().get();
        change_four(&path);
        // The path `refresh` takes first: the file read against the index, in place.
        let (people, after) = live.follow_file().unwrap().expect("read against the index");
        assert_eq!((people, after), (300, stamp(&path)));
        let ix = live.index().get();
        assert!(
            Arc::ptr_eq(&before, &ix),
            "the same index, changed in place"
        );
        four_changed(&live);
        // Read again with nothing changed: nothing to do, the same people.
        assert_eq!(live.follow_file().unwrap().map(|d| d.0), Some(300));
        assert_eq!(ix.search(&e(1000), 1)[0].name, "Ada");

        // A file written by hand with a person listed twice: refused as opening refuses it,
        // and the running index keeps what it had.
        let text = std::fs::read_to_string(&path).unwrap();
        let (mut doc, p5) = doc_and_p5(&path);
        doc["people"].as_array_mut().unwrap().push(p5);
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let plain = Gallery::open(&path, "m", 8).unwrap_err().to_string();
        let refused = live.refresh().unwrap_err();
        assert!(plain.contains("person \"p5\" is listed twice"), "{plain}");
        assert_eq!(format!("{refused:#}"), plain);
        assert_eq!(live.index().get().search(&e(5), 1)[0].name, "p5");
        assert_eq!(live.people().len(), 300);

        // Too much changed to do in place (more rows than the index holds): read whole and
        // built again, through `refresh`.
        std::fs::write(&path, &text).unwrap();
        update_file(&path, "m", 8, |g| {
            (0..1400).try_for_each(|i| g.enroll(&format!("q{i}"), e(5000 + i), "q".into()))
        })
        .unwrap();
        assert!(live.follow_file().unwrap().is_none());
        assert!(live.refresh().unwrap());
        assert!(!Arc::ptr_eq(&before, &live.index().get()), "built again");
        assert_eq!(live.index().get().search(&e(5100), 1)[0].name, "q100");
        assert_eq!(live.people().len(), 1700);

        // An exact index is never read against: the file is read whole.
        let small = dir.path().join("small.json");
        update_file(&small, "m", 8, |g| g.enroll("Ada", e(1), "a".into())).unwrap();
        let exact = LiveGallery::open(&small, "m", 8, &GalleryIndexConfig::default()).unwrap();
        assert_eq!(exact.index().get().kind(), "exact");
        assert!(exact.follow_file().unwrap().is_none());
    }

    #[test]
    fn opening_from_the_persisted_index_keeps_only_what_changed_and_refuses_what_open_refuses() {
        use super::super::ann::Origin;
        let (_dir, path) = enrolled(300);
        drop(LiveGallery::open(&path, "m", 8, &hnsw()).unwrap());

        // While no vigil runs.
        change_four(&path);
        let live = LiveGallery::open(&path, "m", 8, &hnsw()).unwrap();
        let report = live.index_report();
        assert_eq!(report.origin, Some(Origin::CaughtUp));
        // Ada's row, p7's second and p9's new one come in; p3 and p9's old slot go.
        assert_eq!((report.added, report.removed, report.rows), (3, 2, 301));
        four_changed(&live);
        drop(live);
        let again = LiveGallery::open(&path, "m", 8, &hnsw()).unwrap();
        assert_eq!(again.index_report().origin, Some(Origin::Loaded));
        // That was the path taken: the file read against the persisted index, each person
        // seen once.
        let mut seen = 0;
        let learned =
            super::super::learned::Learned::open_persisted(&path, "m", 8, &hnsw(), &mut |_| {
                seen += 1
            })
            .unwrap();
        assert!(learned.is_some());
        assert_eq!(seen, 300);

        // A file written by hand with a person listed twice is refused as a plain open
        // refuses it, whether the index holds that person or not.
        let twice = |name: &str| format!("person {name:?} is listed twice");
        // p5, which the index holds; Zed, whom it does not.
        let (mut doc, p5) = doc_and_p5(&path);
        let mut zed = p5.clone();
        zed["name"] = "Zed".into();
        for (name, extra) in [("p5", vec![p5]), ("Zed", vec![zed.clone(), zed])] {
            let mut doc = doc.clone();
            doc["people"].as_array_mut().unwrap().extend(extra);
            std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
            let plain = Gallery::open(&path, "m", 8).unwrap_err().to_string();
            let live = LiveGallery::open(&path, "m", 8, &hnsw()).err().unwrap();
            assert!(plain.contains(&twice(name)), "{plain}");
            assert_eq!(format!("{live:#}"), plain);
        }
        // Another embedder's file: refused as such, not read against the index.
        doc["model"] = "other".into();
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
        let plain = Gallery::open(&path, "m", 8).unwrap_err().to_string();
        let live = LiveGallery::open(&path, "m", 8, &hnsw()).err().unwrap();
        assert!(plain.contains("other"), "{plain}");
        assert_eq!(format!("{live:#}"), plain);
    }
}
