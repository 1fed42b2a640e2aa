//! A node's copy of the shared gallery: the cache file (`gallery.path`) holds the people and the
//! watermark (the last change applied), saved together crash-safely, so a restart replays only
//! the changes after it and a cache never holds a change twice.
//!
//! - Catching up: a cache of this store reads the log after its watermark; a cache without
//!   one (a fresh node) or of another store reads the whole gallery once, in one snapshot.
//! - Staying current: one thread keeps a connection that LISTENs for the commits of every
//!   node and also looks past its watermark every `poll_ms` (a notification is lost while
//!   the connection is down; polling is the safety net), and installs each change in the
//!   running index through the callback it is given.
//! - The store down: the node searches its copy as it is; `vigil_gallery_store_up` is 0 and
//!   `vigil_gallery_sync_lag_seconds` counts the time since the node last knew it was current;
//!   a change is refused at once ([`GalleryError::StoreUnavailable`]); the thread reconnects
//!   every `poll_ms` and catches up from its watermark.
//! - A change (enrol, remove) connects, takes the write lock, catches up under it, applies the
//!   change to a copy of the now-current gallery, writes the difference in the same
//!   transaction, and applies it here once committed.

use super::diff::{self, Op};
use super::pg::{Batch, Conn, PgStore, StoreError};
use crate::gallery::lock::FileLock;
use crate::gallery::{validate_name, Gallery, GalleryError, SyncMark};
use crate::shutdown::Shutdown;
use postgres::fallible_iterator::FallibleIterator;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The store's two gauges (`vigil_gallery_store_up`, `vigil_gallery_sync_lag_seconds`).
pub type Gauges = (prometheus::IntGauge, prometheus::Gauge);

pub struct Replica {
    store: PgStore,
    path: PathBuf,
    gallery: Mutex<Gallery>,
    up: AtomicBool,
    /// When this node last knew it held every change of the store.
    current_at: Mutex<Instant>,
    gauges: OnceLock<Gauges>,
}

/// Callback that installs a changed gallery in the running index.
pub type OnChange<'a> = &'a (dyn Fn(&Gallery) -> anyhow::Result<()> + Sync);

impl Replica {
    /// Opens the cache at `path` and catches it up. With the store down (refused, timed out,
    /// login failed), a cache of it is used as it is, and said so; without one that is an
    /// error. A store with a newer schema or another embedder is always an error.
    pub fn open(path: &Path, store: PgStore) -> anyhow::Result<Replica> {
        let g = {
            let _lock = FileLock::take(path)?;
            Gallery::open(path, &store.model, store.dim)?
        };
        let r = Replica {
            store,
            path: path.to_path_buf(),
            gallery: Mutex::new(g),
            up: AtomicBool::new(false),
            current_at: Mutex::new(Instant::now()),
            gauges: OnceLock::new(),
        };
        let first = r
            .store
            .connect()
            .map_err(anyhow::Error::from)
            .and_then(|mut conn| {
                let mut g = r.lock();
                r.seed(&mut g, &mut conn)?;
                r.catch_up(&mut g, &mut conn)?;
                tracing::info!(
                    "gallery store {}: {} people, current to change {}; local cache {}",
                    r.store.shown(),
                    g.people.len(),
                    g.sync.as_ref().map_or(0, |m| m.change),
                    path.display()
                );
                Ok(())
            });
        match first {
            Ok(()) => r.up.store(true, Ordering::Relaxed),
            Err(e) => match e.downcast::<StoreError>() {
                Ok(e) if e.is_unreachable() => {
                    let g = r.lock();
                    let Some(mark) = &g.sync else {
                        return Err(StoreError::NoCache {
                            source: Box::new(e),
                            path: path.to_path_buf(),
                        }
                        .into());
                    };
                    tracing::warn!(
                        "{e}; starting from the local cache {} ({} people, as of change {}): identification goes on, changes are refused until the store is back, and this node catches up then",
                        path.display(),
                        g.people.len(),
                        mark.change
                    );
                }
                Ok(e) => return Err(e.into()),
                Err(e) => return Err(e),
            },
        }
        Ok(r)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gallery> {
        self.gallery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the gallery as this node has it now.
    pub fn with<R>(&self, f: impl FnOnce(&Gallery) -> R) -> R {
        f(&self.lock())
    }

    /// The store's URL as it may be shown.
    pub fn shown(&self) -> String {
        self.store.shown()
    }

    /// Whether the store answered last time, and seconds since this node was last current.
    pub fn status(&self) -> (bool, f64) {
        let at = *self.current_at.lock().unwrap_or_else(|p| p.into_inner());
        (self.up.load(Ordering::Relaxed), at.elapsed().as_secs_f64())
    }

    /// Reports the store's state through these gauges from now on.
    pub fn set_gauges(&self, g: Gauges) {
        let _ = self.gauges.set(g);
        self.tick();
    }

    fn tick(&self) {
        if let Some((up, lag)) = self.gauges.get() {
            let (is_up, secs) = self.status();
            up.set(is_up as i64);
            lag.set(if is_up { 0.0 } else { secs });
        }
    }

    fn current(&self) {
        *self.current_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// A gallery file that was never a cache (no watermark) but holds people seeds an empty
    /// store; beside a store that has people already it is refused, never dropped.
    fn seed(&self, g: &mut Gallery, conn: &mut Conn) -> anyhow::Result<()> {
        if g.sync.is_some() || g.people.is_empty() {
            return Ok(());
        }
        if !self.store.is_empty(&mut conn.client)? {
            return Err(StoreError::NotACache {
                path: self.path.clone(),
                people: g.people.len(),
                url: self.store.shown(),
            }
            .into());
        }
        let ops: Vec<Op> = g
            .people
            .iter()
            .map(|p| Op::Enroll {
                name: p.name.clone(),
                embeddings: p
                    .embeddings
                    .iter()
                    .cloned()
                    .zip(p.sources.iter().cloned())
                    .collect(),
            })
            .collect();
        let n = ops.len();
        self.store.write(conn, |_| Ok((ops, ())))?;
        // The snapshot that follows reads them back as the store has them.
        *g = Gallery::empty(&self.path, &g.model, g.dim);
        tracing::info!(
            "the gallery store {} was empty: seeded it with the {n} people of {}",
            self.store.shown(),
            self.path.display()
        );
        Ok(())
    }

    /// Applies what the store has past the cache's watermark (or all of it, for a fresh cache
    /// or one of another store); true when anything changed.
    fn catch_up(&self, g: &mut Gallery, conn: &mut Conn) -> anyhow::Result<bool> {
        let mark = g
            .sync
            .as_ref()
            .filter(|m| m.store == conn.store_id)
            .map(|m| m.change);
        let changed = match mark {
            Some(m) => {
                let started = Instant::now();
                let batch = self.store.changes_since(&mut conn.client, m)?;
                let n = batch.ops.len();
                let changed = self.apply(g, batch, false, &conn.store_id)?;
                if changed {
                    tracing::info!(
                        "gallery store {}: applied {n} changes after change {m} in {:.2} s (read and cache saved)",
                        self.store.shown(),
                        started.elapsed().as_secs_f64()
                    );
                }
                changed
            }
            None => {
                if g.sync.is_some() {
                    tracing::warn!(
                        "{} is a cache of another gallery store: reading {} whole",
                        self.path.display(),
                        self.store.shown()
                    );
                }
                let started = Instant::now();
                let batch = self.store.snapshot(&mut conn.client)?;
                let n = batch.ops.len();
                let changed = self.apply(g, batch, true, &conn.store_id)?;
                tracing::info!(
                    "gallery store {}: read {n} people whole in {:.2} s (read and cache saved)",
                    self.store.shown(),
                    started.elapsed().as_secs_f64()
                );
                changed
            }
        };
        self.current();
        Ok(changed)
    }

    /// Applies a batch (checked first, so it applies whole or not at all), moves the
    /// watermark, and saves the cache.
    fn apply(
        &self,
        g: &mut Gallery,
        batch: Batch,
        whole: bool,
        store_id: &str,
    ) -> anyhow::Result<bool> {
        let mark = SyncMark {
            store: store_id.to_string(),
            change: batch.last,
        };
        if !whole && batch.ops.is_empty() {
            return Ok(false);
        }
        for op in &batch.ops {
            let name = match op {
                Op::Enroll { name, .. } | Op::Remove { name } => name,
            };
            validate_name(name).map_err(|e| StoreError::Data {
                url: self.store.shown(),
                reason: format!("change {}: {e}", batch.last),
            })?;
        }
        if whole {
            *g = Gallery::empty(&self.path, &g.model, g.dim);
        }
        for op in batch.ops {
            diff::apply(g, op)?;
        }
        g.sync = Some(mark);
        self.save(g);
        Ok(true)
    }

    /// Saves the cache; a cache that cannot be written is said, and the node goes on from
    /// memory (the next save writes everything, and a restart replays from the older mark).
    fn save(&self, g: &Gallery) {
        let saved = FileLock::take(&self.path).and_then(|_lock| g.save());
        if let Err(e) = saved {
            tracing::warn!("cannot save the gallery cache: {e}; going on from memory");
        }
    }

    /// Catches up over `conn`, installing the gallery through `on_change` when it changed.
    fn sync(&self, conn: &mut Conn, on_change: OnChange) -> anyhow::Result<()> {
        let mut g = self.lock();
        if self.catch_up(&mut g, conn)? {
            tracing::info!(
                "gallery store {}: now at change {}, {} people",
                self.store.shown(),
                g.sync.as_ref().map_or(0, |m| m.change),
                g.people.len()
            );
            on_change(&g)?;
        }
        Ok(())
    }

    /// One change to the shared gallery, as one transaction. `change` is applied to the
    /// gallery as current under the store's write lock; what it changed is written; the result
    /// is installed through `on_change`. With the store down, nothing changes and the error is
    /// [`GalleryError::StoreUnavailable`].
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut Gallery) -> Result<R, GalleryError>,
        on_change: OnChange,
    ) -> anyhow::Result<R> {
        let unavailable = |e: anyhow::Error| -> anyhow::Error {
            match e.downcast::<StoreError>() {
                Ok(s) if s.is_unreachable() => GalleryError::StoreUnavailable {
                    reason: s.to_string(),
                }
                .into(),
                Ok(s) => s.into(),
                Err(e) => e,
            }
        };
        let mut g = self.lock();
        let mut conn = self
            .store
            .connect()
            .map_err(|e| unavailable(e.into()))
            .inspect_err(|_| self.up.store(false, Ordering::Relaxed))?;
        if g.sync.as_ref().is_none_or(|m| m.store != conn.store_id) {
            self.catch_up(&mut g, &mut conn).map_err(unavailable)?;
        }
        let store_id = conn.store_id.clone();
        let mark = g.sync.as_ref().map_or(0, |m| m.change);
        let (last, (r, ops)) = self
            .store
            .write(&mut conn, |tx| {
                let batch = self.store.changes_in(tx, mark)?;
                self.apply(&mut g, batch, false, &store_id)?;
                let mut after = g.clone();
                let r = change(&mut after)?;
                let ops = diff::diff(&g, &after);
                Ok((ops.clone(), (r, ops)))
            })
            .map_err(unavailable)?;
        if let Some(last) = last {
            let batch = Batch {
                ops,
                last,
                last_at: 0.0,
            };
            self.apply(&mut g, batch, false, &store_id)?;
        }
        self.current();
        self.up.store(true, Ordering::Relaxed);
        on_change(&g)?;
        Ok(r)
    }

    /// Keeps the copy current until `stop`: LISTEN for every node's commits, look past the
    /// watermark every `poll_ms` anyway, reconnect every `poll_ms` while the store is down.
    pub fn run(
        self: &Arc<Self>,
        stop: Shutdown,
        on_change: impl Fn(&Gallery) -> anyhow::Result<()> + Send + Sync + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("gallery-sync".into())
            .spawn(move || me.keep_current(stop, &on_change))
    }

    fn keep_current(&self, stop: Shutdown, on_change: OnChange) {
        let poll = self.store.poll;
        let mut conn: Option<Conn> = None;
        // The outage being reported, so each is said once.
        let mut down: Option<String> = None;
        while !stop.is_cancelled() {
            let c = match &mut conn {
                Some(c) => c,
                None => match self.listen() {
                    Ok(c) => {
                        if down.take().is_some() {
                            tracing::info!(
                                "gallery store {} is back: catching up",
                                self.store.shown()
                            );
                        }
                        conn.insert(c)
                    }
                    Err(e) => {
                        self.up.store(false, Ordering::Relaxed);
                        let text = format!("{e:#}");
                        if down.as_deref() != Some(&text) {
                            tracing::warn!(
                                "{text}; identifying from the local cache until it is back"
                            );
                            down = Some(text);
                        }
                        self.tick();
                        stop.sleep(poll);
                        continue;
                    }
                },
            };
            if let Err(e) = self.sync(c, on_change) {
                let text = format!("{e:#}");
                if down.as_deref() != Some(&text) {
                    tracing::warn!("{text}; identifying from the local cache until it is back");
                }
                down = Some(text);
                conn = None;
                self.up.store(false, Ordering::Relaxed);
                self.tick();
                stop.sleep(poll);
                continue;
            }
            self.up.store(true, Ordering::Relaxed);
            self.tick();
            // A notification wakes this at once; otherwise the poll interval does.
            let woke = c.client.notifications().timeout_iter(poll).next().is_ok();
            if !woke || c.client.is_closed() {
                conn = None;
            }
        }
    }

    fn listen(&self) -> anyhow::Result<Conn> {
        let mut c = self.store.connect()?;
        c.client
            .batch_execute(&format!("LISTEN {}", super::pg::CHANNEL))
            .map_err(|e| StoreError::Failed {
                url: self.store.shown(),
                what: "listening for changes",
                reason: self.store.describe(&e),
            })?;
        Ok(c)
    }
}
