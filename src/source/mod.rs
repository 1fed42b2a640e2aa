//! Sources: where frames come from. [`file`] reads video files and [`live`] cameras and
//! network streams through OpenCV; [`url`] tells them apart and redacts credentials; the
//! [`supervisor`] runs one stream: delivery policy, reconnection, epochs, stream events.

pub mod file;
pub mod live;
pub mod motion;
pub mod open;
pub mod probe;
pub mod status;
pub mod supervisor;
pub use crate::url;

use opencv::core::Mat;
use std::sync::Arc;
use std::time::Instant;

/// One decoded frame. The pixels are shared between branches, never copied.
#[derive(Clone)]
pub struct Frame {
    /// Index of the stream in the config.
    pub stream: usize,
    /// 0-based position among the frames decoded from this stream.
    pub seq: u64,
    /// Media time, seconds from the start of the source (for a live source, from when vigil
    /// started reading it; it keeps counting across reconnections).
    pub pts: f64,
    /// Connection number (live sources) or pass number (looped files), from 0. Frames of
    /// different epochs are never put in one clip.
    pub epoch: u32,
    /// When the frame was read, for latency from capture to event.
    pub captured: Instant,
    /// BGR, 8 bits per channel.
    pub image: Arc<Mat>,
    /// The stream's motion gate is open: something moved in the last `motion.hold_ms` (see
    /// [`motion`]). Always true for a stream without a gate.
    pub motion: bool,
}

/// Errors reading a source. Paths here are files; URLs are redacted before they get here.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: cannot be opened as a video ({reason})")]
    Open { path: String, reason: String },
    #[error("{path}: contains no decodable video frames")]
    NoFrames { path: String },
    #[error("{path}: decoding failed after frame {frames}: {reason}")]
    Decode {
        path: String,
        frames: u64,
        reason: String,
    },
    #[error("{path}: the stream stopped after {frames} of {expected} frames (truncated or corrupt file)")]
    Truncated {
        path: String,
        frames: u64,
        expected: u64,
    },
}

/// What flows from a source to its branches: frames, then one end marker.
#[derive(Clone)]
pub enum StreamMsg {
    Frame(Frame),
    End(StreamEnd),
}

/// Why and when a stream ended. It travels behind the stream's last frame through every stage,
/// so whatever consumes it has seen all the stream's data first.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    pub stream: usize,
    /// Frames read from the source.
    pub frames: u64,
    /// Media time of the last frame read.
    pub media_time: f64,
    pub reason: EndReason,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndReason {
    /// The file was read to its end.
    EndOfFile,
    /// Shutdown was requested.
    Stopped,
    /// The stream was removed while the others go on (`DELETE /v1/streams/{id}`).
    Removed,
    /// Reading failed; the message says where and why.
    Error(String),
}

impl EndReason {
    /// The `reason` of a `stream.down` event and metric label: a small fixed set.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::EndOfFile => "end_of_file",
            EndReason::Stopped => "shutdown",
            EndReason::Removed => "removed",
            EndReason::Error(_) => "error",
        }
    }
}

/// What a source knows up front.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Frames per second the container declares (0 when unknown).
    pub fps: f64,
    /// Frames the container declares (0 when unknown).
    pub frame_count: u64,
}

/// Yields frames one at a time.
pub trait FrameReader: Send {
    /// The next frame and its media time in seconds, or `None` at the end.
    fn next_frame(&mut self) -> Result<Option<(f64, Mat)>, SourceError>;
    fn info(&self) -> VideoInfo;
    /// Called at the end: an error when fewer frames came than the source promised.
    fn finish(&self, frames: u64) -> Result<(), SourceError>;
}

/// How a live read ended when it gave no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The read waited for its whole deadline: the source is frozen.
    Stalled,
    /// The source closed or ended the stream.
    Disconnected,
}

/// Why a live read gave no frame, and how long the source was silent.
#[derive(Debug, Clone)]
pub struct LostFrame {
    pub kind: Lost,
    pub waited: std::time::Duration,
    /// The decoder's error, when it gave one (credentials scrubbed).
    pub error: Option<String>,
}

/// One connection to a camera or network stream.
pub trait LiveSource: Send {
    fn info(&self) -> VideoInfo;
    /// The next frame, or why none came. `deadline` is the configured stall timeout: a source
    /// silent for most of it has stalled.
    fn read(&mut self, deadline: std::time::Duration) -> Result<Mat, LostFrame>;
}

/// Stream ids (for the shared stages' metric labels) and previews by slot. The topology adds a
/// stream's before its first frame; the events stage removes them after the stream's last event.
#[derive(Default)]
pub struct Names(std::sync::RwLock<std::collections::HashMap<usize, Slot>>);

/// A stream's id and preview.
type Slot = (Arc<str>, Arc<crate::preview::Preview>);

impl Names {
    pub fn insert(&self, slot: usize, id: Arc<str>, preview: Arc<crate::preview::Preview>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, (id, preview));
    }

    /// The preview of `slot` while someone watches it.
    pub fn watched(&self, slot: usize) -> Option<Arc<crate::preview::Preview>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .filter(|(_, p)| p.watched())
            .map(|(_, p)| p.clone())
    }

    /// The preview of `slot`.
    pub fn preview(&self, slot: usize) -> Option<Arc<crate::preview::Preview>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .map(|(_, p)| p.clone())
    }

    pub fn remove(&self, slot: usize) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&slot);
    }

    /// The id of `slot` (empty if unknown).
    pub fn get(&self, slot: usize) -> Arc<str> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| Arc::from(""))
    }
}
