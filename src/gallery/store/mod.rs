//! The shared gallery store: PostgreSQL as the source of truth of every node's gallery
//! (`gallery.postgres`), with `gallery.path` as each node's local cache (docs/scaling.md).
//!
//! - [`pg`]: the schema (created and migrated by vigil, versioned in `vigil_schema_version`),
//!   one transaction per change, and the reads a node syncs from.
//! - [`diff`]: a change to a gallery as store operations, and store changes applied to a
//!   gallery (pure; unit tested).
//! - [`replica`]: a node's synced copy: the cache file saved with its watermark, kept current
//!   by LISTEN/NOTIFY plus polling, still searched while the store is down.
//!
//! Order: every write takes one transaction-level advisory lock before it takes a change id,
//! so change ids commit in id order and "every change up to id N" is a watermark a node can
//! keep (a `bigserial` alone is not commit order under concurrent writers).

pub mod diff;
pub mod pg;
pub mod replica;

pub use pg::{PgStore, StoreError};
pub use replica::Replica;

use crate::config::GalleryConfig;
use crate::gallery::LiveGallery;
use std::path::Path;

/// The running gallery the config asks for: the file at `path`, or with `gallery.postgres` the
/// shared store cached there.
pub fn open_live(
    path: &Path,
    model: &str,
    dim: usize,
    cfg: &GalleryConfig,
) -> anyhow::Result<LiveGallery> {
    match &cfg.postgres {
        None => LiveGallery::open(path, model, dim, &cfg.index),
        Some(pg) => {
            let store = PgStore::new(pg, model, dim)?;
            LiveGallery::open_shared(path, store, &cfg.index)
        }
    }
}
