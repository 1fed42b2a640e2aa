//! Events: the one JSON schema every sink writes (see docs/events.md), and the sinks.

pub mod clips;
pub mod deliver;
mod msg;
pub mod nats;
pub mod recent;
mod sink;
pub mod snapshot;
pub mod spool;

pub use msg::{EventMsg, FaceSeen, Joined};
pub use sink::{open_sinks, Sink, SinkError};

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    #[serde(rename = "action.started")]
    ActionStarted,
    #[serde(rename = "action.ended")]
    ActionEnded,
    #[serde(rename = "face.identified")]
    FaceIdentified,
    #[serde(rename = "face.unknown")]
    FaceUnknown,
    #[serde(rename = "stream.up")]
    StreamUp,
    #[serde(rename = "stream.down")]
    StreamDown,
}

impl EventType {
    /// The type named `s` (`face.identified`), as a filter gives it.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub const ALL: [EventType; 6] = [
        EventType::ActionStarted,
        EventType::ActionEnded,
        EventType::FaceIdentified,
        EventType::FaceUnknown,
        EventType::StreamUp,
        EventType::StreamDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ActionStarted => "action.started",
            EventType::ActionEnded => "action.ended",
            EventType::FaceIdentified => "face.identified",
            EventType::FaceUnknown => "face.unknown",
            EventType::StreamUp => "stream.up",
            EventType::StreamDown => "stream.down",
        }
    }
}

impl crate::metrics::LabelValue for EventType {
    fn label(self) -> &'static str {
        self.as_str()
    }
}

/// A span of media time, seconds from the start of the source (written to the millisecond).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    #[serde(serialize_with = "ser_ms")]
    pub start: f64,
    #[serde(serialize_with = "ser_ms")]
    pub end: f64,
}

fn ser_ms<S: serde::Serializer>(t: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round_ms(*t))
}

/// The type-specific part of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    Action {
        /// Class name from the model's label list, or a custom action's name.
        label: String,
        /// Where the label comes from: the model's label list (`kinetics400` for the I3D) or
        /// `custom` (an action taught with `vigil actions teach`).
        source: String,
        /// Probability: of the clip that started the segment (`action.started`) or the best
        /// clip of the segment (`action.ended`).
        score: f32,
        /// The clip this score came from.
        clip: Span,
        /// The whole segment so far: first clip start to last clip end.
        segment: Span,
        /// `action.started` with `action.snapshots` set: a JPEG of the middle frame of the clip
        /// that started the segment.
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
    },
    Face {
        /// The enrolled person (absent for `face.unknown`).
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        /// Euclidean distance to the nearest enrolled person (absent with an empty gallery).
        #[serde(skip_serializing_if = "Option::is_none")]
        distance: Option<f32>,
        /// The next nearest person, to judge how clear the decision was.
        #[serde(skip_serializing_if = "Option::is_none")]
        runner_up: Option<RunnerUp>,
        /// Per-stream track number.
        track_id: u64,
        /// `[x1, y1, x2, y2]` in source pixels.
        #[serde(rename = "box")]
        bbox: [f32; 4],
        /// JPEG of the face, when `faces.snapshots` is set.
        #[serde(skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
        /// `face.unknown`: the group of unknown faces this track joined (one per unseen
        /// person, shared across tracks, cameras and runs).
        #[serde(skip_serializing_if = "Option::is_none")]
        unknown_id: Option<String>,
    },
    Stream {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// On `stream.down` of a live stream that is being reconnected.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        retrying: bool,
    },
}

/// The second nearest enrolled person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerUp {
    pub identity: String,
    pub distance: f32,
}

/// One event, one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unique and time-ordered (UUID v7): consumers de-duplicate by it.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub stream: String,
    /// Seconds from the start of the source.
    pub media_time: f64,
    /// When vigil emitted it, RFC 3339 in UTC.
    pub wall_time: String,
    #[serde(flatten)]
    pub payload: Payload,
}

impl Event {
    pub fn new(kind: EventType, stream: &str, media_time: f64, payload: Payload) -> Event {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            stream: stream.to_string(),
            media_time: round_ms(media_time),
            wall_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            payload,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events are plain data and always serialise")
    }
}

/// Media times are reported to the millisecond: more digits are noise from frame arithmetic.
pub fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_event_has_the_documented_fields() {
        let payload = Payload::Action {
            label: "arm wrestling".into(),
            source: "kinetics400".into(),
            score: 0.98,
            clip: Span {
                start: 0.64,
                end: 1.9200000000000002,
            },
            segment: Span {
                start: 0.0,
                end: 1.92,
            },
            snapshot: None,
        };
        let e = Event::new(EventType::ActionStarted, "cam", 0.0004, payload);
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["type"], "action.started");
        assert_eq!(v["stream"], "cam");
        assert_eq!(v["media_time"], 0.0);
        assert_eq!(v["label"], "arm wrestling");
        assert_eq!(v["source"], "kinetics400");
        assert_eq!(
            v["clip"]["end"], 1.92,
            "spans are written to the millisecond"
        );
        assert!(chrono::DateTime::parse_from_rfc3339(v["wall_time"].as_str().unwrap()).is_ok());
        assert_eq!(v["id"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn ids_are_unique() {
        let mk = || {
            Event::new(
                EventType::StreamUp,
                "a",
                0.0,
                Payload::Stream {
                    reason: "opened".into(),
                    detail: None,
                    retrying: false,
                },
            )
        };
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| mk().id).collect();
        assert_eq!(ids.len(), 1000);
    }
}
