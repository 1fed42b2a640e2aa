//! The one contract every stage of a run follows (Vector's components are the model): a stage
//! is a value built from its config part (the `Prepared*` structs that `vigil check` makes), run
//! on a named thread of its own by [`spawn`], with a typed input and output and one [`Context`]
//! holding its shutdown token, its metric handles and its names. The runner, not the stage,
//! creates the stage's meter, so no stage can forget its processed, dropped and timing series.
//!
//! | stage | input | output |
//! |---|---|---|
//! | `decode` (`source::supervisor`) | a source, through an `Opener` | each branch's frame queue, stream notices |
//! | `action_sampler` (`action`) | frames | clips |
//! | `face_sampler` (`face::sampler`) | frames | face frames |
//! | `classifier` (`action::classifier`) | clips of every stream | scored clips |
//! | `faces` (`face::worker`) | face frames of every stream | face decisions |
//! | `events` (`pipeline::events`) | everything above | sinks, the recent-events ring |

use crate::metrics::{self, Metrics, StageMeter};
use crate::shutdown::Shutdown;
use std::sync::Arc;

/// What a stage runs with.
pub struct Context {
    /// The thread's name: `src-<stream>`, `act-<stream>`, `face-<stream>`, `classifier`,
    /// `faces`, `events`.
    pub name: String,
    /// The stream a per-stream stage serves: its slot and id.
    pub stream: Option<(usize, Arc<str>)>,
    pub metrics: Arc<Metrics>,
    pub meter: StageMeter,
    /// Per-stream stages get their stream's token (cancelled on removal or exit); shared
    /// stages the process's.
    pub shutdown: Shutdown,
}

impl Context {
    pub fn new(
        stage: metrics::Stage,
        name: String,
        stream: Option<(usize, Arc<str>)>,
        metrics: &Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Context {
        Context {
            name,
            stream,
            meter: metrics.stage(stage),
            metrics: metrics.clone(),
            shutdown,
        }
    }

    /// The stream's slot and id (per-stream stages only).
    pub fn stream(&self) -> (usize, &str) {
        self.stream
            .as_ref()
            .map_or((0, ""), |(slot, id)| (*slot, &**id))
    }
}

/// A stage: its input and output types, its metric label, and its loop.
pub trait Stage: Send + 'static {
    const STAGE: metrics::Stage;
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// What the stage reports when its input is exhausted (or it failed).
    type Done: Send + 'static;

    fn run(self, cx: &Context, input: Self::Input, output: Self::Output) -> Self::Done;
}

/// Runs `stage` on a thread named `cx.name`, inside a `stream=` tracing span for per-stream
/// stages.
pub fn spawn<S: Stage>(
    stage: S,
    cx: Context,
    input: S::Input,
    output: S::Output,
) -> std::io::Result<std::thread::JoinHandle<S::Done>> {
    std::thread::Builder::new()
        .name(cx.name.clone())
        .spawn(move || {
            let _span = cx
                .stream
                .as_ref()
                .map(|(_, id)| tracing::info_span!("stream", stream = %id).entered());
            stage.run(&cx, input, output)
        })
}

/// Lowers the calling thread's CPU priority by `nice` below what it has (Linux: nice is per
/// thread; 0 leaves it; the result is at most 19), so a vigil started under `nice` keeps the
/// difference. A refusal is logged, never fatal: the thread runs at the priority it has.
pub fn lower_priority(nice: i32, what: &str) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; errno is the calling thread's.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        // getpriority may return -1 as a value: errno tells an error apart.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            tracing::warn!(
                thread = what,
                error = %std::io::Error::last_os_error(),
                "cannot read the thread's priority"
            );
            return;
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19)) != 0 {
            tracing::warn!(
                thread = what,
                nice,
                error = %std::io::Error::last_os_error(),
                "cannot lower the thread's priority"
            );
        }
    }
}
