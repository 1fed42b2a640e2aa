//! Video files through OpenCV's FFmpeg backend.

use super::{FrameReader, SourceError, VideoInfo};
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use std::path::{Path, PathBuf};

/// Highest frame rate a container may declare and be believed (high-speed cameras record 1000
/// fps and more; FFmpeg gives 90000 for some streams whose rate it does not know).
const MAX_DECLARED_FPS: f64 = 10_000.0;

/// Why an MP4 (ISO base media) file that FFmpeg cannot open looks cut short, if it does: a
/// top-level box runs past the end of the file, or no `moov` box (the index) is there. An MP4
/// written with its index at the end and then truncated loses the index, so it cannot be opened
/// at all (one with its index first plays up to the cut, and the run reports the shortfall).
fn truncated_mp4(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut at = 0u64;
    let mut moov = false;
    let mut first = true;
    while at + 8 <= len {
        f.seek(SeekFrom::Start(at)).ok()?;
        let mut head = [0u8; 16];
        f.read_exact(&mut head[..8]).ok()?;
        let kind: [u8; 4] = [head[4], head[5], head[6], head[7]];
        if first && &kind != b"ftyp" {
            return None;
        }
        first = false;
        let mut size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        if size == 1 {
            f.read_exact(&mut head[8..16]).ok()?;
            size = u64::from_be_bytes(head[8..16].try_into().ok()?);
        } else if size == 0 {
            size = len - at;
        }
        if size < 8 {
            return None;
        }
        moov |= &kind == b"moov";
        if at + size > len {
            return Some(format!(
                "an MP4 file cut short: its `{}` box needs {} bytes but the file ends after {}; the file is truncated{}",
                String::from_utf8_lossy(&kind),
                at + size,
                len,
                if moov { "" } else { " before its index (`moov`), so nothing in it can be read" }
            ));
        }
        at += size;
    }
    (!first && !moov).then(|| {
        "an MP4 file without its index (`moov` box): the file is truncated or was never finished".into()
    })
}

/// A video file, read front to back.
pub struct FileReader {
    path: PathBuf,
    cap: VideoCapture,
    info: VideoInfo,
    /// The media time of the previous frame, to repair timestamps FFmpeg does not give.
    last_pts: Option<f64>,
}

fn open_err(path: &Path, reason: impl Into<String>) -> SourceError {
    SourceError::Open {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl FileReader {
    /// Opens `path`. Regular files only: OpenCV would treat a folder or a printf pattern in the
    /// name as an image sequence.
    pub fn open(path: &Path) -> Result<FileReader, SourceError> {
        let meta = std::fs::metadata(path).map_err(|e| open_err(path, e.to_string()))?;
        if !meta.is_file() {
            return Err(open_err(path, "not a regular file"));
        }
        if meta.len() == 0 {
            return Err(open_err(path, "the file is empty"));
        }
        std::fs::File::open(path).map_err(|e| open_err(path, e.to_string()))?;
        let cap = VideoCapture::from_file(path, videoio::CAP_FFMPEG)
            .map_err(|e| open_err(path, e.message))?;
        if !cap.is_opened().unwrap_or(false) {
            let why = truncated_mp4(path)
                .unwrap_or_else(|| "FFmpeg does not recognise it as a video".into());
            return Err(open_err(path, why));
        }
        let get = |prop| cap.get(prop).unwrap_or(0.0);
        let (w, h, fps, n) = (
            get(videoio::CAP_PROP_FRAME_WIDTH),
            get(videoio::CAP_PROP_FRAME_HEIGHT),
            get(videoio::CAP_PROP_FPS),
            get(videoio::CAP_PROP_FRAME_COUNT),
        );
        let fps = if fps.is_finite() && fps > 0.0 && fps <= MAX_DECLARED_FPS {
            fps
        } else {
            0.0
        };
        let info = VideoInfo {
            width: w.max(0.0) as u32,
            height: h.max(0.0) as u32,
            fps,
            frame_count: if n.is_finite() && n > 0.0 {
                n as u64
            } else {
                0
            },
        };
        Ok(FileReader {
            path: path.to_path_buf(),
            cap,
            info,
            last_pts: None,
        })
    }

    /// Opens `path` and decodes its first frame: what `vigil check` does for each file.
    pub fn probe(path: &Path) -> Result<VideoInfo, SourceError> {
        let mut r = FileReader::open(path)?;
        match r.next_frame()? {
            Some((_, m)) => {
                let mut info = r.info;
                info.width = m.cols() as u32;
                info.height = m.rows() as u32;
                Ok(info)
            }
            None => Err(SourceError::NoFrames {
                path: path.display().to_string(),
            }),
        }
    }
}

impl FrameReader for FileReader {
    fn next_frame(&mut self) -> Result<Option<(f64, Mat)>, SourceError> {
        let mut m = Mat::default();
        let got = self.cap.read(&mut m).map_err(|e| SourceError::Decode {
            path: self.path.display().to_string(),
            frames: 0,
            reason: e.message,
        })?;
        if !got || m.empty() {
            return Ok(None);
        }
        // FFmpeg's position after the read is this frame's PTS. Some containers report 0 or go
        // backwards; then step by the declared frame rate so media time stays monotonic.
        let reported = self.cap.get(videoio::CAP_PROP_POS_MSEC).unwrap_or(f64::NAN) / 1000.0;
        let step = if self.info.fps > 0.0 {
            1.0 / self.info.fps
        } else {
            1.0 / 25.0
        };
        let pts = match self.last_pts {
            None if reported.is_finite() && reported >= 0.0 => reported,
            None => 0.0,
            Some(prev) if reported.is_finite() && reported > prev => reported,
            Some(prev) => prev + step,
        };
        self.last_pts = Some(pts);
        Ok(Some((pts, m)))
    }

    fn info(&self) -> VideoInfo {
        self.info
    }

    fn finish(&self, frames: u64) -> Result<(), SourceError> {
        let path = self.path.display().to_string();
        if frames == 0 {
            return Err(SourceError::NoFrames { path });
        }
        // The container's count is exact for MP4 and close for others; a shortfall of more
        // than a few frames means the data ran out before the index did.
        let expected = self.info.frame_count;
        if expected > 0 && frames + 2 < expected && (frames as f64) < 0.98 * expected as f64 {
            return Err(SourceError::Truncated {
                path,
                frames,
                expected,
            });
        }
        Ok(())
    }
}
