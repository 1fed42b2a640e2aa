//! The fixed label sets of vigil's metrics, as enums: a stage, state or reason is named once
//! here, so a typo at a call site is a compile error, not a new time series.

/// A value of a fixed label set defined elsewhere (the event types): metrics take it typed
/// without importing its module.
pub trait LabelValue: Copy {
    fn label(self) -> &'static str;
}

macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// The stages of a run, the `stage` label of the per-stage metrics.
    Stage {
        Decode => "decode",
        ActionSampler => "action_sampler",
        Classifier => "classifier",
        FaceSampler => "face_sampler",
        Faces => "faces",
        Events => "events",
    }
}

label_enum! {
    /// The states of a stream, as `vigil_stream_state{state}` and the API show them.
    StreamState {
        /// Opening.
        Connecting => "connecting",
        /// Reading.
        Up => "up",
        /// A file waiting for room downstream.
        Blocked => "blocked",
        /// A live stream found frozen, until its reconnection starts.
        Stalled => "stalled",
        /// Lost or refused, waiting before the next attempt.
        Retrying => "retrying",
        /// Ended.
        Down => "down",
    }
}

label_enum! {
    /// Why an item was dropped instead of processed.
    Drop {
        /// A live stream's queue was full: the oldest frame made room.
        QueueFull => "queue_full",
        /// Queued when shutdown came.
        Shutdown => "shutdown",
        /// A live stream's newer clip replaced one the classifier had not reached.
        ClassifierBusy => "classifier_busy",
    }
}

label_enum! {
    /// Why a live stream went down while vigil keeps retrying it (`stream.down` with
    /// `retrying: true`, and `vigil_stream_reconnects_total{reason}`).
    DownReason {
        OpenFailed => "open_failed",
        Disconnected => "disconnected",
        Stalled => "stalled",
        Error => "error",
    }
}

label_enum! {
    /// A network sink's delivery outcome.
    Outcome {
        Ok => "ok",
        Error => "error",
    }
}

impl StreamState {
    /// Whether frames flow (the `vigil_stream_up` gauge).
    pub fn is_up(self) -> bool {
        matches!(self, StreamState::Up | StreamState::Blocked)
    }

    pub fn from_index(i: u8) -> StreamState {
        StreamState::ALL
            .get(i as usize)
            .copied()
            .unwrap_or(StreamState::Down)
    }

    pub fn index(self) -> u8 {
        StreamState::ALL
            .iter()
            .position(|s| *s == self)
            .unwrap_or(0) as u8
    }
}
