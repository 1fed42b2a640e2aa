//! The f32 rows a quantized HNSW graph re-ranks its candidates with (`gallery.index.rerank`),
//! by key. Rows loaded from the index folder's `exact.f32` stay in that file, mapped read-only:
//! a search reads the few rows of its candidates (32 by default), so the kernel pages in those
//! and can drop them again under memory pressure, instead of the process holding every row
//! (488 MiB at a million 128-d embeddings) from the moment the index opens. Rows added since
//! (enrolments brought in place) are kept in memory after them.
//!
//! The mapping is of a file vigil wrote into its own index folder and never writes again (a
//! save writes a new folder and renames it over the old one; the mapped file stays whole until
//! it is unmapped). Something else truncating that file while vigil runs would make a later
//! read of a missing page fault: the folder is vigil's to change.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Every row in f32, back to back, `dim` values each.
#[derive(Default)]
pub(super) struct RerankRows {
    mapped: Option<Mapped>,
    tail: Vec<f32>,
}

impl RerankRows {
    /// Values held (rows times `dim`).
    pub fn values(&self) -> usize {
        self.head().len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values() == 0
    }

    pub fn reserve_exact(&mut self, values: usize) {
        self.tail.reserve_exact(values);
    }

    pub fn extend_from_slice(&mut self, row: &[f32]) {
        self.tail.extend_from_slice(row);
    }

    /// Row `key`, `dim` values.
    pub fn row(&self, key: u64, dim: usize) -> Option<&[f32]> {
        let at = usize::try_from(key).ok()?.checked_mul(dim)?;
        let end = at.checked_add(dim)?;
        let head = self.head();
        if end <= head.len() {
            head.get(at..end)
        } else {
            self.tail.get(at.checked_sub(head.len())?..end - head.len())
        }
    }

    /// The rows in order: the mapped ones, then those added since.
    pub fn parts(&self) -> [&[f32]; 2] {
        [self.head(), &self.tail]
    }

    fn head(&self) -> &[f32] {
        self.mapped.as_ref().map_or(&[], |m| m.values())
    }

    /// Maps `path` when it holds `values` f32 values, with the file's SHA-256 for the caller to
    /// check; `None` when the file is missing or of another length. Hashing reads every page
    /// once; each stretch is released from this process as soon as it is hashed, so the check
    /// never holds the whole file.
    pub fn map(path: &Path, values: usize) -> anyhow::Result<Option<(RerankRows, Vec<u8>)>> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let len = f
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len != values as u64 * 4 {
            return Ok(None);
        }
        if values == 0 {
            return Ok(Some((RerankRows::default(), Sha256::digest([]).to_vec())));
        }
        let mapped =
            Mapped::new(&f, values).with_context(|| format!("cannot map {}", path.display()))?;
        let mut h = Sha256::new();
        for stretch in mapped.bytes().chunks(Mapped::STRETCH) {
            h.update(stretch);
            mapped.release(stretch);
        }
        let digest = h.finalize().to_vec();
        if cfg!(target_endian = "big") {
            // The file is little-endian: a big-endian machine keeps a converted copy instead.
            let tail = mapped
                .bytes()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            return Ok(Some((RerankRows { mapped: None, tail }, digest)));
        }
        Ok(Some((
            RerankRows {
                mapped: Some(mapped),
                tail: Vec::new(),
            },
            digest,
        )))
    }
}

#[cfg(test)]
impl PartialEq for RerankRows {
    fn eq(&self, other: &RerankRows) -> bool {
        self.values() == other.values()
            && self
                .parts()
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.parts().iter().flat_map(|p| p.iter()))
    }
}

#[cfg(test)]
impl std::fmt::Debug for RerankRows {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "RerankRows({} mapped, {} in memory)",
            self.head().len(),
            self.tail.len()
        )
    }
}

/// A read-only private mapping of a whole file of f32 values.
struct Mapped {
    ptr: *mut libc::c_void,
    values: usize,
}

// The mapping is read-only and lives until drop: sharing its bytes between threads is as safe
// as sharing a `&[f32]`.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Bytes hashed, then released, at a time while checking the file.
    const STRETCH: usize = 16 << 20;

    fn new(f: &std::fs::File, values: usize) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh read-only private mapping of the whole file; no Rust reference to
        // its memory exists before this returns.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                values * 4,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, values })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `values * 4` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.values * 4) }
    }

    fn values(&self) -> &[f32] {
        // SAFETY: page-aligned (so f32-aligned), `values` f32s long, never written.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<f32>(), self.values) }
    }

    /// Drops `stretch` (a part of [`Self::bytes`]) from this process's resident pages; the next
    /// read pages it in from the file again, with the same contents.
    fn release(&self, stretch: &[u8]) {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(1);
        let start = stretch.as_ptr() as usize;
        let aligned = start - start % page;
        // SAFETY: the range lies inside the mapping; MADV_DONTNEED on an unmodified private
        // file mapping only discards pages that are read back from the file on demand.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                start + stretch.len() - aligned,
                libc::MADV_DONTNEED,
            );
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, unmapped once.
        unsafe {
            libc::munmap(self.ptr, self.values * 4);
        }
    }
}
