//! One supervisor per stream, on the stream's own thread: it opens the source, feeds every
//! frame to the stream's branches, and for cameras reconnects after every failure with capped
//! exponential backoff and jitter, until shutdown. A stream's failure never touches another
//! stream: each has its own thread, queues and connection.
//!
//! Two delivery policies:
//! - files lose nothing: a full queue blocks the reader (the wait is counted as blocked time);
//! - live sources (cameras, and files with `realtime: true`) never wait: when a branch's queue
//!   is full the oldest queued frame is dropped and counted, so what the branch sees next is
//!   fresh and the delay from capture to event stays bounded.
//!
//! Every (re)connection, and every pass over a looped file, starts a new *epoch*. Branches reset
//! their clip windows and trackers when the epoch changes: frames are never stitched across a
//! gap.

use super::motion::{MotionDetector, MotionParams};
use super::open::Opener;
use super::status::StreamStatus;
use super::url::SourceKind;
use super::{EndReason, Frame, Lost, LostFrame, StreamEnd, StreamMsg};
use crate::config::{Branch, LiveConfig};
use crate::metrics::{DownReason, Drop, Metrics, StageMeter, StreamState};
use crate::shutdown::{Shutdown, Why};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use opencv::core::Mat;
use prometheus::{Counter, IntCounter, IntGauge};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A branch's input queue, as the source sees it.
pub struct Output {
    pub tx: Sender<StreamMsg>,
    /// Live sources only: the queue's receiving end too, to take out the oldest frame when the
    /// queue is full.
    pub rx: Option<Receiver<StreamMsg>>,
    /// The branch this queue feeds.
    pub branch: Branch,
}

/// A state change the events stage reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Connected (or the file opened) at this media time.
    Up { detail: String, media_time: f64 },
    /// A live stream was lost and is being reconnected.
    Down {
        reason: DownReason,
        detail: String,
        media_time: f64,
    },
}

/// What a stream reads and how.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// The stream's slot in the topology (never reused within a run).
    pub index: usize,
    pub id: String,
    pub kind: SourceKind,
    /// Files: pace at the native frame rate.
    pub realtime: bool,
    /// Files: start again at the end.
    pub looped: bool,
    pub live: LiveConfig,
    /// The motion gate's settings; `None`: no gate (every frame counts as moving).
    pub motion: Option<super::motion::MotionParams>,
}

impl SourcePlan {
    /// Whether frames are dropped rather than waited for.
    pub fn leaky(&self) -> bool {
        self.kind.is_live() || self.realtime
    }
}

/// The stream's metric handles, looked up once.
struct Meters {
    decoded: IntCounter,
    up: IntGauge,
    /// One gauge per state; exactly one of them is 1.
    states: Vec<(StreamState, IntGauge)>,
    stalled: Counter,
    blocked: Counter,
    connect_failures: IntCounter,
    /// Frames dropped at a full queue, per branch, looked up once.
    dropped: Vec<(Branch, IntCounter)>,
    metrics: Arc<Metrics>,
    status: Option<Arc<StreamStatus>>,
    id: String,
}

impl Meters {
    fn new(m: &Arc<Metrics>, id: &str, status: Option<Arc<StreamStatus>>) -> Meters {
        Meters {
            decoded: m.frames_decoded(id),
            up: m.stream_up(id),
            states: StreamState::ALL
                .iter()
                .map(|&s| (s, m.stream_state(id, s)))
                .collect(),
            stalled: m.stream_stalled_seconds(id),
            blocked: m.stream_blocked_seconds(id),
            connect_failures: m.stream_connect_failures(id),
            dropped: Branch::ALL
                .iter()
                .map(|&b| (b, m.frames_dropped(id, b, Drop::QueueFull)))
                .collect(),
            metrics: m.clone(),
            status,
            id: id.to_string(),
        }
    }

    /// Sets the stream's state gauge (and `up` with it).
    fn state(&self, state: StreamState) {
        for (s, g) in &self.states {
            g.set(i64::from(*s == state));
        }
        self.up.set(i64::from(state.is_up()));
        if let Some(st) = &self.status {
            st.set_state(state);
        }
    }

    fn dropped(&self, branch: Branch) {
        if let Some((_, c)) = self.dropped.iter().find(|(b, _)| *b == branch) {
            c.inc();
        }
    }

    fn reconnect(&self, reason: DownReason) {
        self.metrics.stream_reconnects(&self.id, reason).inc();
    }
}

/// The supervisor's surroundings: how to open sources, where to report, when to stop.
pub struct Env<'a> {
    pub opener: &'a dyn Opener,
    /// The stream's token: cancelled on shutdown (`Why::Exit`) or removal (`Why::Removed`).
    pub stop: &'a Shutdown,
    pub metrics: &'a Arc<Metrics>,
    pub meter: &'a StageMeter,
    pub status: Option<Arc<StreamStatus>>,
}

/// Runs a stream until its file ends, shutdown or removal, or a file error; returns the end
/// marker, which it has already passed to every output (or that the caller must pass on when
/// there is none).
pub fn supervise(
    plan: &SourcePlan,
    outputs: &[Output],
    env: Env,
    notify: &mut dyn FnMut(Notice),
    on_frame: &mut dyn FnMut(&Frame),
) -> StreamEnd {
    let mut s = Supervisor {
        meter: env.meter.clone(),
        opener: env.opener,
        plan,
        outputs,
        stop: env.stop,
        m: Meters::new(env.metrics, &plan.id, env.status),
        notify,
        on_frame,
        seq: 0,
        epoch: 0,
        last_pts: 0.0,
        origin: Instant::now(),
        rng: Jitter::new(plan.index as u64),
        gate: plan
            .motion
            .map(|p| Gate::new(p, env.metrics.motion_active(&plan.id))),
    };
    s.m.state(StreamState::Connecting);
    let mut reason = match &plan.kind {
        SourceKind::File(path) => s.file(path),
        _ => s.live(),
    };
    if reason == EndReason::Stopped && env.stop.why() == Some(Why::Removed) {
        reason = EndReason::Removed;
    }
    s.m.state(StreamState::Down);
    if let Some(g) = &s.gate {
        g.report();
    }
    let end = StreamEnd {
        stream: plan.index,
        frames: s.seq,
        media_time: s.last_pts,
        reason,
    };
    for out in outputs {
        s.send_end(out, &end);
    }
    end
}

struct Supervisor<'a> {
    meter: StageMeter,
    opener: &'a dyn Opener,
    plan: &'a SourcePlan,
    outputs: &'a [Output],
    stop: &'a Shutdown,
    m: Meters,
    notify: &'a mut dyn FnMut(Notice),
    on_frame: &'a mut dyn FnMut(&Frame),
    seq: u64,
    epoch: u32,
    last_pts: f64,
    /// Media time 0: when the stream started (live) or the wall time the first frame of a paced
    /// file is due.
    origin: Instant,
    rng: Jitter,
    gate: Option<Gate>,
}

/// A stream's motion gate as the supervisor runs it: the detector, and what it cost.
struct Gate {
    detector: MotionDetector,
    /// The epoch the detector's background belongs to.
    epoch: u32,
    active: IntGauge,
    checked: u64,
    open: u64,
    seconds: f64,
    failed: bool,
}

impl Gate {
    fn new(p: MotionParams, active: IntGauge) -> Gate {
        Gate {
            detector: MotionDetector::new(p),
            epoch: 0,
            active,
            checked: 0,
            open: 0,
            seconds: 0.0,
            failed: false,
        }
    }

    /// Whether the gate is open at this frame. A frame the detector cannot read opens it: the
    /// gate may cost work, never lose it.
    fn check(&mut self, epoch: u32, pts: f64, image: &Mat) -> bool {
        let started = Instant::now();
        if epoch != self.epoch {
            self.detector.reset();
            self.epoch = epoch;
        }
        let open = match self.detector.update(pts, image) {
            Ok(m) => m.open,
            Err(e) => {
                if !std::mem::replace(&mut self.failed, true) {
                    tracing::warn!("motion gate: {}; the gate stays open", e.message);
                }
                true
            }
        };
        self.seconds += started.elapsed().as_secs_f64();
        self.checked += 1;
        self.open += u64::from(open);
        self.active.set(i64::from(open));
        open
    }

    fn report(&self) {
        if self.checked > 0 {
            tracing::info!(
                "motion gate: {} frames checked, open for {} ({:.0}%), {:.0} us a frame",
                self.checked,
                self.open,
                100.0 * self.open as f64 / self.checked as f64,
                1e6 * self.seconds / self.checked as f64
            );
        }
    }
}

const GONE: &str = "the pipeline stopped taking frames";

impl Supervisor<'_> {
    fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Reads a file (paced and looped if asked). File errors end the stream: a file does not
    /// get better by reopening it.
    fn file(&mut self, path: &std::path::Path) -> EndReason {
        let mut offset = 0.0;
        let mut first = true;
        loop {
            let mut reader = match self.opener.file(path) {
                Ok(r) => r,
                Err(e) => return self.fail(e.to_string()),
            };
            let info = reader.info();
            if first {
                (self.notify)(Notice::Up {
                    detail: format!("{}x{}{}", info.width, info.height, rate(info.fps)),
                    media_time: 0.0,
                });
                self.m.state(StreamState::Up);
                self.origin = Instant::now();
                first = false;
            }
            let (mut frames, mut last) = (0u64, 0.0);
            loop {
                if self.stopped() {
                    return EndReason::Stopped;
                }
                let started = Instant::now();
                match reader.next_frame() {
                    Err(e) => return self.fail(e.to_string()),
                    Ok(None) => break,
                    Ok(Some((pts, image))) => {
                        let t = offset + pts;
                        if self.plan.realtime && !self.wait_until(t) {
                            return EndReason::Stopped;
                        }
                        if !self.deliver(t, image) {
                            return EndReason::Error(GONE.into());
                        }
                        self.meter.done(started);
                        frames += 1;
                        last = pts;
                    }
                }
            }
            if let Err(e) = reader.finish(frames) {
                return self.fail(e.to_string());
            }
            if !self.plan.looped {
                return EndReason::EndOfFile;
            }
            let step = if info.fps > 0.0 { 1.0 / info.fps } else { 0.04 };
            offset += last + step;
            self.epoch += 1;
        }
    }

    fn fail(&self, msg: String) -> EndReason {
        tracing::error!("{msg}");
        EndReason::Error(msg)
    }

    /// Sleeps until media time `t` is due on the wall clock; false on shutdown.
    fn wait_until(&self, t: f64) -> bool {
        let due = self.origin + Duration::from_secs_f64(t.max(0.0));
        let now = Instant::now();
        due <= now || self.stop.sleep(due - now)
    }

    /// Connects, reads, and reconnects until shutdown.
    fn live(&mut self) -> EndReason {
        let cfg = &self.plan.live;
        let stall = Duration::from_millis(cfg.stall_timeout_ms);
        let shown = self.plan.kind.display();
        let mut attempt = 0u32;
        // Whether the current outage has been reported (one `stream.down` per outage, however
        // many attempts it takes); a loss is reported when it happens.
        let mut reported = false;
        let mut connections = 0u64;
        loop {
            if self.stopped() {
                return EndReason::Stopped;
            }
            self.m.state(StreamState::Connecting);
            match self.opener.live(&self.plan.kind, cfg) {
                Err(e) => {
                    self.m.state(StreamState::Retrying);
                    self.m.connect_failures.inc();
                    let msg = e.to_string();
                    if !reported {
                        tracing::warn!("{msg}; retrying");
                        let media_time = self.now();
                        (self.notify)(Notice::Down {
                            reason: DownReason::OpenFailed,
                            detail: msg,
                            media_time,
                        });
                        reported = true;
                    } else {
                        tracing::debug!("{msg}; retrying");
                    }
                }
                Ok(mut reader) => {
                    connections += 1;
                    if connections > 1 {
                        self.epoch += 1;
                    }
                    let info = reader.info();
                    let mut detail = format!("{shown}: {}x{}", info.width, info.height);
                    if info.fps > 0.0 {
                        detail += &rate(info.fps);
                    }
                    if connections > 1 {
                        detail += &format!(" (connection {connections})");
                    }
                    tracing::info!("connected: {detail}");
                    let media_time = self.now();
                    (self.notify)(Notice::Up { detail, media_time });
                    self.m.state(StreamState::Up);
                    let mut got = 0u64;
                    let lost = loop {
                        if self.stopped() {
                            return EndReason::Stopped;
                        }
                        let started = Instant::now();
                        match reader.read(stall) {
                            Ok(image) => {
                                attempt = 0;
                                got += 1;
                                let t = self.now();
                                if !self.deliver(t, image) {
                                    return EndReason::Error(GONE.into());
                                }
                                self.meter.done(started);
                            }
                            Err(lost) => break lost,
                        }
                    };
                    drop(reader);
                    let LostFrame {
                        kind,
                        waited,
                        error,
                    } = lost;
                    self.m.state(if kind == Lost::Stalled {
                        StreamState::Stalled
                    } else {
                        StreamState::Retrying
                    });
                    let (reason, detail) = match (kind, error) {
                        (_, Some(e)) => (DownReason::Error, e),
                        (Lost::Stalled, None) => {
                            self.m.stalled.inc_by(waited.as_secs_f64());
                            (
                                DownReason::Stalled,
                                format!("{shown}: no frame for {} ms", waited.as_millis()),
                            )
                        }
                        (Lost::Disconnected, None) => (
                            DownReason::Disconnected,
                            format!("{shown}: the stream ended after {got} frames"),
                        ),
                    };
                    tracing::warn!("{detail}; reconnecting");
                    self.m.reconnect(reason);
                    let media_time = self.now();
                    (self.notify)(Notice::Down {
                        reason,
                        detail,
                        media_time,
                    });
                    reported = true;
                }
            }
            let wait = backoff(cfg, attempt, &mut self.rng);
            attempt = attempt.saturating_add(1);
            if !self.stop.sleep(wait) {
                return EndReason::Stopped;
            }
        }
    }

    /// Media time of a live stream: seconds since its supervisor started.
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// Passes a frame to every branch; false when none takes frames any more.
    fn deliver(&mut self, pts: f64, image: Mat) -> bool {
        let motion = match &mut self.gate {
            Some(g) => g.check(self.epoch, pts, &image),
            None => true,
        };
        let frame = Frame {
            stream: self.plan.index,
            seq: self.seq,
            pts,
            epoch: self.epoch,
            captured: Instant::now(),
            image: Arc::new(image),
            motion,
        };
        self.seq += 1;
        self.last_pts = pts;
        self.m.decoded.inc();
        (self.on_frame)(&frame);
        for out in self.outputs {
            let msg = StreamMsg::Frame(frame.clone());
            let ok = if out.rx.is_some() {
                self.send_leaky(out, msg)
            } else {
                self.send_blocking(out, msg)
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Waits for room, counting the wait as blocked time.
    fn send_blocking(&self, out: &Output, msg: StreamMsg) -> bool {
        match out.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(msg)) => {
                let started = Instant::now();
                self.m.state(StreamState::Blocked);
                let ok = out.tx.send(msg).is_ok();
                self.m.state(StreamState::Up);
                self.m.blocked.inc_by(started.elapsed().as_secs_f64());
                ok
            }
        }
    }

    /// Never waits: makes room by dropping the oldest queued frame.
    fn send_leaky(&self, out: &Output, mut msg: StreamMsg) -> bool {
        loop {
            match out.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    // The consumer may have taken one meanwhile; then there is room already.
                    if let Some(Ok(StreamMsg::Frame(_))) = out.rx.as_ref().map(|rx| rx.try_recv()) {
                        self.m.dropped(out.branch);
                        self.meter.dropped(Drop::QueueFull);
                    }
                }
            }
        }
    }

    fn send_end(&self, out: &Output, end: &StreamEnd) {
        let msg = StreamMsg::End(end.clone());
        if out.rx.is_some() {
            self.send_leaky(out, msg);
        } else {
            let _ = out.tx.send(msg);
        }
    }
}

/// The wait before reconnection attempt `attempt` (0-based): `initial * 2^attempt` capped at
/// `max`, then scaled by a random 50-100% so that many cameras behind one failed switch do not
/// reconnect in lockstep.
pub fn backoff(cfg: &LiveConfig, attempt: u32, rng: &mut Jitter) -> Duration {
    let base = cfg
        .reconnect_initial_ms
        .saturating_mul(1u64 << attempt.min(32))
        .min(cfg.reconnect_max_ms);
    Duration::from_millis(base / 2 + rng.below(base / 2 + 1))
}

/// A small xorshift generator for jitter; no need for a cryptographic one.
pub struct Jitter(u64);

impl Jitter {
    pub fn new(salt: u64) -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Jitter((nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

/// ` at 25.000 fps`, or ` (frame rate unknown)` when the source does not say.
fn rate(fps: f64) -> String {
    if fps > 0.0 {
        format!(" at {fps:.3} fps")
    } else {
        " (frame rate unknown)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let cfg = LiveConfig {
            reconnect_initial_ms: 100,
            reconnect_max_ms: 1000,
            ..LiveConfig::default()
        };
        let mut rng = Jitter::new(7);
        for (attempt, base) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (40, 1000),
        ] {
            let waits: Vec<u64> = (0..200)
                .map(|_| backoff(&cfg, attempt, &mut rng).as_millis() as u64)
                .collect();
            let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            assert!(
                *lo >= base / 2 && *hi <= base,
                "attempt {attempt}: {lo}..{hi}"
            );
            // Jitter really varies: not every wait is the same.
            assert!(hi - lo > base / 5, "attempt {attempt}: {lo}..{hi}");
        }
    }

    #[test]
    fn a_full_live_queue_drops_its_oldest_frames_and_counts_them() {
        let (tx, rx) = crossbeam_channel::bounded::<StreamMsg>(3);
        let out = [Output {
            tx,
            rx: Some(rx.clone()),
            branch: Branch::Action,
        }];
        let metrics = Arc::new(Metrics::new());
        let plan = SourcePlan {
            index: 0,
            id: "cam".into(),
            kind: SourceKind::Network("rtsp://127.0.0.1:9/x".into()),
            realtime: false,
            looped: false,
            live: LiveConfig::default(),
            motion: None,
        };
        let stop = Shutdown::new();
        let (mut notify, mut on_frame) = (|_: Notice| {}, |_: &Frame| {});
        let mut s = Supervisor {
            meter: metrics.stage(crate::metrics::Stage::Decode),
            opener: &super::super::open::OpenCv,
            plan: &plan,
            outputs: &out,
            stop: &stop,
            m: Meters::new(&metrics, "cam", None),
            notify: &mut notify,
            on_frame: &mut on_frame,
            seq: 0,
            epoch: 0,
            last_pts: 0.0,
            origin: Instant::now(),
            rng: Jitter::new(0),
            gate: None,
        };
        for i in 0..10 {
            assert!(s.deliver(i as f64, Mat::default()));
        }
        let end = StreamEnd {
            stream: 0,
            frames: 10,
            media_time: 9.0,
            reason: EndReason::Stopped,
        };
        s.send_end(&out[0], &end);
        let kept: Vec<String> = rx
            .try_iter()
            .map(|m| match m {
                StreamMsg::Frame(f) => format!("{}", f.seq),
                StreamMsg::End(_) => "end".into(),
            })
            .collect();
        // The newest frames survive, and the end marker is never lost.
        assert_eq!(kept, ["8", "9", "end"]);
        let dropped = metrics
            .frames_dropped("cam", Branch::Action, Drop::QueueFull)
            .get();
        assert_eq!(dropped, 8);
    }
}
