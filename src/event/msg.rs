//! What flows into the events stage, the one place where events are built and snapshots
//! written: stream lifecycle notices from the supervisors, scored clips from the classifier,
//! face decisions from the face worker, and each branch's end of a stream.

use super::{RunnerUp, Span};
use crate::metrics::DownReason;
use crate::source::status::StreamStatus;
use crate::source::StreamEnd;
use opencv::core::Mat;
use std::sync::Arc;

/// A stream joined the topology: the events stage learns its name and how many end markers to
/// wait for before it is gone.
pub struct Joined {
    pub stream: usize,
    pub name: Arc<str>,
    /// Branches that each send one end marker for this stream (0: the supervisor sends it).
    pub branches: usize,
    /// Shown on a terminal for files; hidden otherwise.
    pub progress: indicatif::ProgressBar,
    /// Frames per second, to turn media time into frames for the progress bar.
    pub fps: f64,
    /// Where the API reads the stream's state.
    pub status: Arc<StreamStatus>,
}

/// A face track's decision, as the face worker made it.
pub struct FaceSeen {
    pub identity: Option<String>,
    pub distance: Option<f32>,
    pub runner_up: Option<RunnerUp>,
    pub track_id: u64,
    pub bbox: [f32; 4],
    pub media_time: f64,
    /// The face cut from its frame, when `faces.snapshots` is set.
    pub crop: Option<Mat>,
    /// When the frame the decision came from was read.
    pub captured: Option<std::time::Instant>,
    /// The track's latest embeddings, to group an unknown face.
    pub embeddings: Vec<Vec<f32>>,
    /// When the track was first seen (media seconds).
    pub first_seen: f64,
}

/// Into the events stage.
pub enum EventMsg {
    Joined(Joined),
    /// A stream opened or reconnected.
    Up {
        stream: usize,
        detail: String,
        media_time: f64,
    },
    /// A live stream was lost; its supervisor is reconnecting.
    Down {
        stream: usize,
        reason: DownReason,
        detail: String,
        media_time: f64,
    },
    /// Class probabilities for one clip.
    Clip {
        stream: usize,
        span: Span,
        probs: Vec<f32>,
        captured: Option<std::time::Instant>,
        keyframe: Option<Arc<Mat>>,
        /// Custom actions' scores for the same clip (empty without custom actions).
        custom: Vec<f32>,
        /// The clip's crops, when the API keeps action events' clips (else empty).
        frames: Vec<super::clips::Crop>,
    },
    /// The stream had a gap: its running segment is over.
    Gap(usize),
    /// A face track was decided.
    Face {
        stream: usize,
        seen: FaceSeen,
    },
    /// A stream ended in the action branch; its clips have all arrived before this.
    End(StreamEnd),
    /// A stream ended in the face branch; its face events have all arrived before this.
    FaceEnd(StreamEnd),
}
