//! Sources: where frames come from. A [`FrameReader`] yields decoded frames with their media
//! time; [`file`] reads video files through OpenCV's FFmpeg backend. The reading loop that
//! feeds the branches is [`run_reader`], the same for every reader, so tests can drive it with
//! synthetic frames.

pub mod file;

use crossbeam_channel::Sender;
use opencv::core::Mat;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One decoded frame. The pixels are shared between branches, never copied.
#[derive(Clone)]
pub struct Frame {
    /// Index of the stream in the config.
    pub stream: usize,
    /// 0-based position among the frames decoded from this stream.
    pub seq: u64,
    /// Media time, seconds from the start of the source.
    pub pts: f64,
    /// BGR, 8 bits per channel.
    pub image: Arc<Mat>,
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
    /// Reading failed; the message says where and why.
    Error(String),
}

impl EndReason {
    /// The `reason` of a `stream.down` event and metric label: a small fixed set.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::EndOfFile => "end_of_file",
            EndReason::Stopped => "shutdown",
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

/// How a reading loop ended.
#[derive(Debug)]
pub enum Ended {
    /// The source ran out of frames.
    Eof { frames: u64, last_pts: f64 },
    /// Shutdown was requested.
    Stopped { frames: u64, last_pts: f64 },
    /// Every consumer went away.
    Disconnected { frames: u64, last_pts: f64 },
    /// Reading failed after `frames` frames.
    Failed {
        error: SourceError,
        frames: u64,
        last_pts: f64,
    },
}

/// Reads `reader` to its end, sending every frame to each of `outputs`. Sends block when a
/// queue is full: recorded files lose nothing. `on_frame` runs once per frame (metrics,
/// progress).
pub fn run_reader(
    stream: usize,
    reader: &mut dyn FrameReader,
    outputs: &[Sender<StreamMsg>],
    stop: &AtomicBool,
    mut on_frame: impl FnMut(&Frame),
) -> Ended {
    let mut seq = 0u64;
    let mut last_pts = 0.0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ended::Stopped {
                frames: seq,
                last_pts,
            };
        }
        let next = match reader.next_frame() {
            Ok(next) => next,
            Err(error) => {
                return Ended::Failed {
                    error,
                    frames: seq,
                    last_pts,
                }
            }
        };
        let Some((pts, image)) = next else {
            return match reader.finish(seq) {
                Ok(()) => Ended::Eof {
                    frames: seq,
                    last_pts,
                },
                Err(error) => Ended::Failed {
                    error,
                    frames: seq,
                    last_pts,
                },
            };
        };
        let frame = Frame {
            stream,
            seq,
            pts,
            image: Arc::new(image),
        };
        on_frame(&frame);
        last_pts = pts;
        seq += 1;
        for out in outputs {
            if out.send(StreamMsg::Frame(frame.clone())).is_err() {
                return Ended::Disconnected {
                    frames: seq,
                    last_pts,
                };
            }
        }
    }
}
