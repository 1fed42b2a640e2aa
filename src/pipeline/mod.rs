//! Wiring: [`prepare`] checks a config against the real files and models (what `vigil check`
//! runs); the [`Topology`] runs the shared stages and adds and removes streams while they run;
//! [`run`] is a whole run of a config's streams.
//!
//! Every channel is bounded and every send of a file source blocks: recorded files lose
//! nothing. Each message type carries its stream's end marker behind its last item, so a stage
//! never has to guess whether more is coming.

mod events;
mod prepare;
mod stream;
pub mod topology;

pub use events::EventsStage;
pub use prepare::{
    custom_actions_path, load_action_model, load_face_models, load_faces, prepare, prepare_stream,
    Prepared, PreparedAction, PreparedFaces, PreparedStream,
};
pub use topology::{Listed, RunOptions, Topology, TopologyError};

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::sync::Arc;

/// What a finished run reports.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    /// Frames read from all sources.
    pub frames: u64,
    /// One message per stream that ended in an error.
    pub stream_errors: Vec<String>,
    pub sink_errors: u64,
    /// Set when the inference worker failed.
    pub inference_error: Option<String>,
    /// Clips the classifier scored.
    pub clips: u64,
    /// Clips skipped while their stream's label was stable (`action.schedule`).
    pub skipped: u64,
    /// Frames the face worker searched for faces.
    pub face_frames: u64,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.stream_errors.is_empty() && self.sink_errors == 0 && self.inference_error.is_none()
    }
}

/// Runs the config's streams until every one has ended (or `stop` is cancelled) and everything
/// queued has reached the sinks. `started` runs once every stream has started (the caller
/// serves the metrics from then on, so every series exists at the first scrape); what it
/// returns lives until the end of the run.
pub fn run<T>(
    mut p: Prepared,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    stop: Shutdown,
    started: impl FnOnce(&Arc<Topology>) -> anyhow::Result<T>,
) -> anyhow::Result<Summary> {
    let opener = Arc::new(crate::source::open::OpenCv);
    if let Some(line) = p.shard_summary() {
        tracing::info!("cluster: {line}");
    }
    let idle = p.streams.is_empty() && !p.elsewhere.is_empty();
    let topo = Topology::start(&mut p, opts, metrics.clone(), stop.clone(), opener)?;
    for s in std::mem::take(&mut p.streams) {
        topo.add(s)?;
    }
    let _kept = started(&topo)?;
    if idle {
        // Exiting would only have the orchestrator restart it, over and over.
        tracing::info!(
            "replica {} of {}: none of the {} streams hashes here; idle until stopped",
            p.shard.ordinal,
            p.shard.replicas,
            p.elsewhere.len()
        );
        stop.wait();
    }
    topo.wait();
    topo.finish()
}
