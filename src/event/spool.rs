//! A bounded on-disk queue of event lines in front of each network sink: events are appended as
//! they are made, delivered from the front when the peer takes them, and survive both an outage
//! of the peer and a restart (or `kill -9`) of vigil.
//!
//! On disk, a folder per sink: segment files `NNNNNNNNNNNNNNNN.jsonl` (one event per line,
//! appended with one write call each) and `cursor` (`segment offset`: where the next
//! undelivered line starts), replaced atomically after each delivery. When the folder holds
//! more than its bound, whole segments are removed from the front, and the undelivered events in
//! them are counted as dropped: the newest events are the ones kept.
//!
//! A kill -9 loses nothing that `push` returned from (the bytes are in the OS); a power cut
//! loses what the OS had not written back. [`Fsync`] says when appends are forced to the disk:
//! on every one, at most an interval after it, or never (docs/scaling.md has the measured
//! cost). A new segment's folder entry is synced with its first forced append. The cursor is
//! not forced: after a power cut it may point back, and delivered events are delivered again
//! (consumers de-duplicate by id), never lost; an empty cursor file (a rename that reached the
//! disk before its data) means the same.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When appended lines are forced to the disk (`fdatasync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before `push` returns.
    Always,
    /// At most this long after the append (by `push` or [`Spool::sync_due`]).
    Every(Duration),
    /// When the OS writes back on its own.
    Never,
}

/// Where a line starts (or where reading resumes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

pub struct Spool {
    dir: PathBuf,
    fsync: Fsync,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    more: Condvar,
}

struct State {
    /// Segment numbers on disk, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
    writer: Option<File>,
    cursor: Pos,
    /// Undelivered lines.
    pending: u64,
    dropped: u64,
    /// Appends not yet forced to disk, and since when.
    unsynced: Option<Instant>,
    /// A new segment's folder entry is not yet forced to disk.
    dir_unsynced: bool,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.jsonl"))
}

fn err(dir: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("spool {}: {what}: {e}", dir.display()))
}

/// Lines (complete, newline-terminated) in `path` from `offset` on.
fn count_lines(path: &Path, offset: u64) -> io::Result<u64> {
    let mut f = BufReader::new(File::open(path)?);
    f.seek(SeekFrom::Start(offset))?;
    let mut n = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if f.read_until(b'\n', &mut buf)? == 0 {
            return Ok(n);
        }
        n += u64::from(buf.ends_with(b"\n"));
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most about `max_bytes`, never forcing
    /// appends to disk.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        Spool::open_with(dir, max_bytes, Fsync::Never)
    }

    /// Opens (or creates) the spool in `dir`, holding at most about `max_bytes`, forcing
    /// appends to disk as `fsync` says.
    pub fn open_with(dir: &Path, max_bytes: u64, fsync: Fsync) -> io::Result<Spool> {
        fs::create_dir_all(dir).map_err(|e| err(dir, "cannot create the folder", e))?;
        let mut segments: Vec<(u64, u64)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| err(dir, "cannot list", e))? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_suffix(".jsonl"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            segments.push((n, entry.metadata()?.len()));
        }
        segments.sort();
        // A line cut short by a crash mid-write is not an event: cut it off.
        if let Some((n, len)) = segments.last_mut() {
            let path = seg_path(dir, *n);
            let data = fs::read(&path)?;
            let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) as u64;
            if keep < *len {
                tracing::warn!("spool {}: dropping an incomplete last line", dir.display());
                OpenOptions::new().write(true).open(&path)?.set_len(keep)?;
                *len = keep;
            }
        }
        let first = segments.first().map_or(0, |s| s.0);
        let cursor = match fs::read_to_string(dir.join("cursor")) {
            Ok(text) if text.trim().is_empty() => {
                tracing::warn!(
                    "spool {}: the cursor file is empty (cut by a power loss?): delivering the \
                     whole spool again (consumers de-duplicate by id)",
                    dir.display()
                );
                Pos {
                    segment: first,
                    offset: 0,
                }
            }
            Ok(text) => {
                let mut it = text.split_whitespace().map(|v| v.parse::<u64>());
                match (it.next(), it.next()) {
                    (Some(Ok(segment)), Some(Ok(offset))) => Pos { segment, offset },
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "spool {}: the cursor file is damaged ({text:?}); remove it to \
                                 deliver the whole spool again",
                                dir.display()
                            ),
                        ))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Pos {
                segment: first,
                offset: 0,
            },
            Err(e) => return Err(err(dir, "cannot read the cursor", e)),
        };
        // Segments wholly before the cursor were delivered.
        let cursor = if segments.iter().any(|s| s.0 == cursor.segment) {
            cursor
        } else {
            Pos {
                segment: segments
                    .iter()
                    .map(|s| s.0)
                    .find(|&n| n > cursor.segment)
                    .unwrap_or(cursor.segment),
                offset: 0,
            }
        };
        for (n, _) in segments.iter().filter(|s| s.0 < cursor.segment) {
            let _ = fs::remove_file(seg_path(dir, *n));
        }
        segments.retain(|s| s.0 >= cursor.segment);
        let mut pending = 0;
        for (n, _) in &segments {
            let from = if *n == cursor.segment {
                cursor.offset
            } else {
                0
            };
            pending += count_lines(&seg_path(dir, *n), from)?;
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            fsync,
            max_bytes: max_bytes.max(4096),
            segment_bytes: (max_bytes / 8).clamp(4096, 8 << 20),
            state: Mutex::new(State {
                segments: segments.into(),
                writer: None,
                cursor,
                pending,
                dropped: 0,
                unsynced: None,
                dir_unsynced: false,
            }),
            more: Condvar::new(),
        };
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one event line (without its newline).
    pub fn push(&self, line: &str) -> io::Result<()> {
        let mut st = self.lock();
        let need_new = match st.segments.back() {
            None => true,
            Some((_, len)) => *len >= self.segment_bytes || st.writer.is_none(),
        };
        if need_new {
            // What the old segment holds is forced before it is let go.
            self.sync(&mut st)?;
            // A segment is appended to only by this process run: a new run starts a new one.
            let n = st.segments.back().map_or(st.cursor.segment, |s| s.0 + 1);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(seg_path(&self.dir, n))
                .map_err(|e| err(&self.dir, "cannot create a segment", e))?;
            st.writer = Some(file);
            st.segments.push_back((n, 0));
            st.dir_unsynced = true;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        st.writer
            .as_mut()
            .expect("a segment is open")
            .write_all(&buf)
            .map_err(|e| err(&self.dir, "cannot append", e))?;
        st.segments.back_mut().expect("a segment").1 += buf.len() as u64;
        st.pending += 1;
        st.unsynced.get_or_insert_with(Instant::now);
        match self.fsync {
            Fsync::Always => self.sync(&mut st)?,
            Fsync::Every(_) => self.sync_if_due(&mut st)?,
            Fsync::Never => {}
        }
        self.trim(&mut st)?;
        drop(st);
        self.more.notify_all();
        Ok(())
    }

    /// Forces the appends so far (and a new segment's folder entry) to disk, unless the policy
    /// is `Never`.
    fn sync(&self, st: &mut State) -> io::Result<()> {
        if self.fsync == Fsync::Never {
            return Ok(());
        }
        if st.unsynced.take().is_some() {
            if let Some(w) = &st.writer {
                w.sync_data()
                    .map_err(|e| err(&self.dir, "cannot fsync a segment", e))?;
            }
        }
        if std::mem::take(&mut st.dir_unsynced) {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| err(&self.dir, "cannot fsync the folder", e))?;
        }
        Ok(())
    }

    fn sync_if_due(&self, st: &mut State) -> io::Result<()> {
        match (self.fsync, st.unsynced) {
            (Fsync::Every(d), Some(since)) if since.elapsed() >= d => self.sync(st),
            _ => Ok(()),
        }
    }

    /// With `Fsync::Every`, forces appends that have waited their interval; the delivery
    /// thread calls it at least that often.
    pub fn sync_due(&self) -> io::Result<()> {
        let mut st = self.lock();
        self.sync_if_due(&mut st)
    }

    /// Forces every append so far to disk (at the end of a run), whatever the policy but
    /// `Never`.
    pub fn sync_all(&self) -> io::Result<()> {
        let mut st = self.lock();
        self.sync(&mut st)
    }

    /// How often [`Spool::sync_due`] must be called: the interval, or `None`.
    pub fn sync_interval(&self) -> Option<Duration> {
        match self.fsync {
            Fsync::Every(d) => Some(d),
            _ => None,
        }
    }

    /// Removes the oldest segments while the spool is over its bound.
    fn trim(&self, st: &mut State) -> io::Result<()> {
        while st.segments.len() > 1 && st.segments.iter().map(|s| s.1).sum::<u64>() > self.max_bytes
        {
            let (n, _) = st.segments.pop_front().expect("two segments");
            let path = seg_path(&self.dir, n);
            let lost = if n >= st.cursor.segment {
                let from = if n == st.cursor.segment {
                    st.cursor.offset
                } else {
                    0
                };
                count_lines(&path, from)?
            } else {
                0
            };
            fs::remove_file(&path).map_err(|e| err(&self.dir, "cannot remove a segment", e))?;
            if n >= st.cursor.segment {
                st.cursor = Pos {
                    segment: st.segments.front().expect("one left").0,
                    offset: 0,
                };
                self.save_cursor(st.cursor)?;
            }
            st.pending -= lost.min(st.pending);
            st.dropped += lost;
            if lost > 0 {
                tracing::warn!(
                    "spool {} is full: dropped its {lost} oldest undelivered events",
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    fn save_cursor(&self, at: Pos) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, format!("{} {}\n", at.segment, at.offset))
            .and_then(|()| fs::rename(&tmp, self.dir.join("cursor")))
            .map_err(|e| err(&self.dir, "cannot save the cursor", e))
    }

    /// The oldest undelivered line and the position after it; waits up to `wait` for one.
    pub fn peek(&self, wait: Duration) -> io::Result<Option<(String, Pos)>> {
        let mut st = self.lock();
        if st.pending == 0 {
            st = self
                .more
                .wait_timeout_while(st, wait, |s| s.pending == 0)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if st.pending == 0 {
                return Ok(None);
            }
        }
        loop {
            let at = st.cursor;
            let path = seg_path(&self.dir, at.segment);
            let mut f = BufReader::new(File::open(&path).map_err(|e| err(&self.dir, "read", e))?);
            f.seek(SeekFrom::Start(at.offset))?;
            let mut line = String::new();
            let n = f.read_line(&mut line)?;
            if n > 0 && line.ends_with('\n') {
                line.pop();
                let next = Pos {
                    segment: at.segment,
                    offset: at.offset + n as u64,
                };
                return Ok(Some((line, next)));
            }
            // The end of a finished segment: go on to the next.
            let later = st.segments.iter().map(|s| s.0).find(|&s| s > at.segment);
            match later {
                Some(segment) => {
                    let _ = fs::remove_file(&path);
                    st.segments.retain(|s| s.0 >= segment);
                    st.cursor = Pos { segment, offset: 0 };
                    self.save_cursor(st.cursor)?;
                }
                None => return Ok(None),
            }
        }
    }

    /// Marks everything before `next` delivered.
    pub fn commit(&self, next: Pos) -> io::Result<()> {
        let mut st = self.lock();
        // The segment may have been dropped meanwhile; then the cursor moved on already.
        if next > st.cursor {
            st.cursor = next;
            st.pending = st.pending.saturating_sub(1);
            self.save_cursor(next)?;
        }
        Ok(())
    }

    /// Undelivered events.
    pub fn depth(&self) -> u64 {
        self.lock().pending
    }

    /// Events dropped because the spool was full, since it was opened.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((line, next)) = s.peek(Duration::ZERO).unwrap() {
            out.push(line);
            s.commit(next).unwrap();
        }
        out
    }

    #[test]
    fn lines_come_out_in_order_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            s.push(&format!("{{\"n\":{i}}}")).unwrap();
        }
        let (first, next) = s.peek(Duration::ZERO).unwrap().unwrap();
        assert_eq!(first, "{\"n\":0}");
        s.commit(next).unwrap();
        assert_eq!(s.depth(), 4);
        drop(s);
        // As after kill -9: the undelivered four are still there, then new ones after them.
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.depth(), 4);
        s.push("{\"n\":5}").unwrap();
        let got = drain(&s);
        assert_eq!(
            got,
            [
                "{\"n\":1}",
                "{\"n\":2}",
                "{\"n\":3}",
                "{\"n\":4}",
                "{\"n\":5}"
            ]
        );
        assert_eq!(s.depth(), 0);
        assert!(s.peek(Duration::from_millis(10)).unwrap().is_none());
    }

    #[test]
    fn a_full_spool_drops_its_oldest_events_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        // 4 KiB segments, 16 KiB in all; 100-byte lines.
        let s = Spool::open(dir.path(), 16 << 10).unwrap();
        let line = |i: usize| format!("{i:05}{}", "x".repeat(94));
        for i in 0..1000 {
            s.push(&line(i)).unwrap();
        }
        let on_disk: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= (16 << 10) + 4096 + 64, "{on_disk} bytes on disk");
        let got = drain(&s);
        assert_eq!(got.len() as u64 + s.dropped(), 1000);
        assert!(s.dropped() > 800, "{}", s.dropped());
        // What is left is the newest, in order.
        assert_eq!(got.last().unwrap(), &line(999));
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_line_cut_by_a_crash_is_discarded_and_a_bad_cursor_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.push("{\"n\":0}").unwrap();
        drop(s);
        let seg = seg_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"n\":1, \"trunc").unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(drain(&s), ["{\"n\":0}"]);
        drop(s);
        fs::write(dir.path().join("cursor"), "garbage").unwrap();
        let e = Spool::open(dir.path(), 1 << 20).err().unwrap();
        assert!(e.to_string().contains("cursor file is damaged"), "{e}");
    }

    #[test]
    fn an_empty_cursor_after_a_power_cut_replays_rather_than_refusing_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open_with(dir.path(), 1 << 20, Fsync::Always).unwrap();
        for i in 0..3 {
            s.push(&format!("{{\"n\":{i}}}")).unwrap();
        }
        let (_, next) = s.peek(Duration::ZERO).unwrap().unwrap();
        s.commit(next).unwrap();
        drop(s);
        // The rename of the cursor reached the disk, its bytes did not.
        fs::write(dir.path().join("cursor"), "").unwrap();
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(drain(&s), ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]);
    }

    #[test]
    fn every_policy_keeps_every_line_and_interval_syncs_when_due() {
        for policy in [
            Fsync::Always,
            Fsync::Every(Duration::from_millis(20)),
            Fsync::Never,
        ] {
            let dir = tempfile::tempdir().unwrap();
            // Small segments: several switches, each syncing the one it leaves.
            let s = Spool::open_with(dir.path(), 64 << 10, policy).unwrap();
            let line = |i: usize| format!("{i:05}{}", "x".repeat(200));
            for i in 0..100 {
                s.push(&line(i)).unwrap();
            }
            if policy != Fsync::Never {
                std::thread::sleep(Duration::from_millis(30));
                s.sync_due().unwrap();
                assert!(s.lock().unsynced.is_none(), "{policy:?}: still unsynced");
            }
            drop(s);
            let s = Spool::open(dir.path(), 64 << 10).unwrap();
            let got = drain(&s);
            assert_eq!(got, (0..100).map(line).collect::<Vec<_>>(), "{policy:?}");
        }
    }
}
