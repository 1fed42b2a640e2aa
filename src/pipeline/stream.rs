//! The `decode` stage: a stream's supervisor (source, reconnection, delivery policy), with its
//! notices turned into messages for the events stage.

use crate::event::EventMsg;
use crate::metrics;
use crate::source::open::Opener;
use crate::source::status::StreamStatus;
use crate::source::supervisor::{self, Env, Notice, Output, SourcePlan};
use crate::source::Frame;
use crate::stage::{Context, Stage};
use crossbeam_channel::Sender;
use std::sync::Arc;

pub struct Decode {
    pub plan: SourcePlan,
    pub opener: Arc<dyn Opener>,
    pub status: Arc<StreamStatus>,
    /// Advanced per decoded frame when no branch reports progress.
    pub progress: Option<indicatif::ProgressBar>,
}

impl Stage for Decode {
    const STAGE: metrics::Stage = metrics::Stage::Decode;
    type Input = ();
    /// Each branch's frame queue, and the events stage for notices (and the end marker when the
    /// stream has no branch).
    type Output = (Vec<Output>, Sender<EventMsg>);
    type Done = ();

    fn run(self, cx: &Context, _: (), (outputs, ev): Self::Output) {
        let stream = self.plan.index;
        let mut notify = |n: Notice| {
            let msg = match n {
                Notice::Up { detail, media_time } => EventMsg::Up {
                    stream,
                    detail,
                    media_time,
                },
                Notice::Down {
                    reason,
                    detail,
                    media_time,
                } => EventMsg::Down {
                    stream,
                    reason,
                    detail,
                    media_time,
                },
            };
            let _ = ev.send(msg);
        };
        let preview = self.status.preview.clone();
        let mut on_frame = |f: &Frame| {
            if let Some(bar) = &self.progress {
                bar.inc(1);
            }
            if preview.watched() {
                preview.frame(f.pts, &f.image);
            }
        };
        let env = Env {
            opener: &*self.opener,
            stop: &cx.shutdown,
            metrics: &cx.metrics,
            meter: &cx.meter,
            status: Some(self.status.clone()),
        };
        let end = supervisor::supervise(&self.plan, &outputs, env, &mut notify, &mut on_frame);
        // With no branch, the end marker goes straight to the events stage.
        if outputs.is_empty() {
            let _ = ev.send(EventMsg::End(end));
        }
    }
}
