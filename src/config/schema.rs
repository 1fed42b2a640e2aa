//! The YAML schema. Every struct denies unknown keys, and every field says its unit and default:
//! these comments are the source of `docs/config.md`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One entry per camera or file. At least one, unless `api` is set (streams can then be
    /// added while vigil runs).
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    /// The action branch: sampler, clip window, model, smoother.
    #[serde(default)]
    pub action: ActionConfig,
    /// The face branch: detector, embedder, tracker, matching.
    #[serde(default)]
    pub faces: FacesConfig,
    /// Where the one-shot gallery lives.
    #[serde(default)]
    pub gallery: GalleryConfig,
    /// Where events go. Default: stdout only.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkConfig>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// ONNX Runtime: library, execution provider, threads.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Cameras and network streams: transport, timeouts, reconnection.
    #[serde(default)]
    pub live: LiveConfig,
    /// The control plane: an HTTP API under `/v1` to add and remove streams, enrol people and
    /// follow events while vigil runs. Default: off.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// Several replicas sharing one camera list: each runs only the streams that hash to it
    /// (docs/scaling.md). Default: one replica, which runs every stream.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The motion gate: while nothing moves in a stream, its clips are not classified and its
    /// frames not searched for faces (docs/config.md#motion). Default: on for cameras and
    /// network streams, off for files.
    #[serde(default)]
    pub motion: MotionConfig,
}

/// How streams are spread over replicas: rendezvous hashing of each stream id over
/// `replicas`; this process is replica `ordinal`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// How many replicas share the streams, 1..=1024. Default 1.
    pub replicas: u32,
    /// Which replica this is, `0..replicas`. Default: the number after the last `-` of the host
    /// name (a Kubernetes StatefulSet pod `vigil-3` is 3), taken from `HOSTNAME` or the system;
    /// with `replicas` above 1 and no such number, an error.
    pub ordinal: Option<u32>,
}

impl ClusterConfig {
    pub fn plain(&self) -> crate::cluster::Cluster {
        crate::cluster::Cluster {
            replicas: self.replicas,
            ordinal: self.ordinal,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replicas: 1,
            ordinal: None,
        }
    }
}

/// The HTTP control plane (docs/api.md).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port to serve on, such as `127.0.0.1:8080`. Required. A listener that is not
    /// on a loopback address needs `tokens`.
    pub listen: String,
    /// Who may call the API. Each token is stored as the SHA-256 (hex) of the token, never the
    /// token itself; `vigil token new` makes one. `read` tokens may only look, `write` tokens
    /// may also change things. Default: none (then only a loopback listener is allowed, and
    /// every caller may write).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Folder where changes made over the API persist (streams added and removed), so they
    /// survive a restart; relative to the config file. Default `state` beside the config.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Largest request body, bytes (an uploaded photo). Default 16 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Events kept in memory for `GET /v1/events` and for resuming an event stream. Default 1000.
    #[serde(default = "default_event_ring")]
    pub event_ring: usize,
    /// An idle connection (no complete request headers) is closed after this, milliseconds.
    /// Default 30000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most connections served at once; more wait to be accepted. Default 512.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Action events whose clip (the model's input crops) is kept in memory so that it can be
    /// explained over the API (`POST /v1/events/{id}/explanation`); 0 turns that off. At most
    /// this many clips of `action.frames` x `action.crop`² x 3 bytes (4.8 MB each at the
    /// defaults). Default 16.
    #[serde(default = "default_event_clips")]
    pub event_clips: usize,
    /// ONNX Runtime intra-op threads of the session that computes explanations (its own, not
    /// the live classifier's). Default 1.
    #[serde(default = "default_explain_threads")]
    pub explain_threads: usize,
}

fn default_event_clips() -> usize {
    16
}
fn default_explain_threads() -> usize {
    1
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}
fn default_max_body() -> usize {
    16 << 20
}
fn default_event_ring() -> usize {
    1000
}
fn default_idle_timeout_ms() -> u64 {
    30_000
}
fn default_max_connections() -> usize {
    512
}

/// One API token.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown in logs instead of the token). Required.
    pub name: String,
    /// SHA-256 of the token, 64 hex digits. Required.
    pub sha256: String,
    /// `read` (GET only) or `write` (everything). Required.
    pub scope: Scope,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
}

/// One video source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Name used in events, logs and metric labels: letters, digits, `_`, `-`, `.`; at most 64.
    pub id: String,
    /// Where frames come from: `rtsp://`, `rtsps://`, `http://` or `https://` (MJPEG, HLS),
    /// a camera (`/dev/videoN`, or `N` for `/dev/videoN`), or a video file path (relative
    /// paths are resolved against the config file's folder). Credentials in a URL
    /// (`user:password@`) are never shown: logs, events and errors print `user:***@`.
    pub url: String,
    /// Which branches look at this stream: a list of `action`, `faces`. Default: every
    /// enabled branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<Branch>>,
    /// Files only: read at the file's own frame rate, as a camera would deliver it, with the
    /// live drop policy. Default false (as fast as the pipeline takes frames, none dropped).
    #[serde(default)]
    pub realtime: bool,
    /// Files only: start again at the end, forever. Media time keeps counting, and each pass
    /// starts a fresh clip window. Default false.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// The motion gate for this stream: `true` or `false` overrides `motion.enabled`. Default:
    /// as `motion.enabled` says (cameras on, files off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motion: Option<bool>,
}

/// A branch of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    Action,
    Faces,
}

impl Branch {
    pub const ALL: &'static [Branch] = &[Branch::Action, Branch::Faces];

    /// The config spelling, also the `stage` label of per-branch metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Action => "action",
            Branch::Faces => "faces",
        }
    }
}

impl StreamConfig {
    /// Whether `branch` runs on this stream, given whether it is enabled globally.
    pub fn wants(&self, branch: Branch, enabled: bool) -> bool {
        enabled && self.branches.as_ref().is_none_or(|b| b.contains(&branch))
    }
}

/// The action-recognition branch.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ActionConfig {
    /// Run the branch at all. Default true.
    pub enabled: bool,
    /// The classifier model. Required when the branch is enabled.
    pub model: Option<ActionModelConfig>,
    /// Frames per second the sampler resamples to (nearest frame by timestamp). Default 25.
    pub sample_fps: f64,
    /// Clip length T in sampled frames. Default 32.
    pub frames: usize,
    /// Sampled frames between the starts of consecutive clips. Default 16.
    pub stride: usize,
    /// The short side of each frame is resized to this many pixels (bilinear). Default 256.
    pub resize_short_side: u32,
    /// Side of the centre crop fed to the model, in pixels. Default 224.
    pub crop: u32,
    /// Most clips (from any streams) in one inference call. Default: 1 on the CPU provider
    /// (batching there buys a few percent for about 150 MiB per extra clip), 4 on the others.
    pub max_batch: Option<usize>,
    /// Longest wait for a batch to fill once its first clip is queued, milliseconds. Default 20.
    pub max_wait_ms: u64,
    /// Turns per-clip scores into segments.
    pub smoother: SmootherConfig,
    /// Folder for a JPEG of the middle frame of the clip that starts each segment; its path
    /// goes in the `action.started` event. Default: none.
    pub snapshots: Option<PathBuf>,
    /// Actions taught with `vigil actions teach`, scored from the model's features.
    pub custom: CustomActionsConfig,
    /// Classify fewer clips while a stream's label is stable (docs/actions.md).
    pub schedule: ScheduleConfig,
    /// How much lower than the rest of vigil the classifier's thread runs (Linux nice, 0-19):
    /// with more cameras than the cores can serve, the face branch gets more of them. Default 0.
    pub nice: i32,
}

/// Adaptive clip scheduling: while the same label stays at or above the smoother's start
/// threshold, skip clips between classified ones; on any change, classify every clip.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Skip clips while a label is stable. Default true.
    pub adaptive: bool,
    /// Classified clips in a row that must agree before any is skipped. Default 2.
    pub stable_clips: usize,
    /// Most clips skipped between two classified ones (1-16); a segment's end is seen at most
    /// this many strides late. Default 2.
    pub max_skip: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            adaptive: true,
            stable_clips: 2,
            max_skip: 2,
        }
    }
}

/// Custom actions (docs/actions.md): prototypes on the model's `features` output, scored on
/// the same clips as the model's own labels.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CustomActionsConfig {
    /// The custom-actions file `vigil actions teach` writes. Default: beside the config,
    /// `<config file stem>.actions.json`. Absent file: no custom actions.
    pub path: Option<PathBuf>,
    /// Report custom actions only (the model's own labels are scored but not reported).
    /// Default false: both are reported.
    pub only: bool,
}

impl Config {
    /// Fills the defaults that depend on other keys: `action.max_batch` is 1 on the CPU
    /// provider and 4 on the others.
    pub fn settle_defaults(&mut self) {
        if self.action.max_batch.is_none() {
            self.action.max_batch = Some(match self.runtime.execution_provider {
                ExecutionProvider::Cpu => 1,
                _ => 4,
            });
        }
    }
}

impl ActionConfig {
    /// Most clips in one inference call (`max_batch`, settled by [`Config::settle_defaults`]).
    pub fn batch(&self) -> usize {
        self.max_batch.unwrap_or(1)
    }
}

impl Default for ActionConfig {
    fn default() -> Self {
        ActionConfig {
            enabled: true,
            model: None,
            sample_fps: 25.0,
            frames: 32,
            stride: 16,
            resize_short_side: 256,
            crop: 224,
            max_batch: None,
            max_wait_ms: 20,
            smoother: SmootherConfig::default(),
            snapshots: None,
            custom: CustomActionsConfig::default(),
            schedule: ScheduleConfig::default(),
            nice: 0,
        }
    }
}

/// An ONNX action classifier taking `[N, 3, T, crop, crop]` RGB 0..255 and giving `[N, classes]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionModelConfig {
    /// The `.onnx` file. Required.
    pub path: PathBuf,
    /// Class names, one per line, in output order. Required.
    pub labels: PathBuf,
    /// Input tensor name. Default `rgb`.
    #[serde(default = "default_input")]
    pub input: String,
    /// Output tensor name holding class probabilities. Default `probs`.
    #[serde(default = "default_output")]
    pub output: String,
    /// Output tensor with pooled features `[N, dim]`, read only when custom actions exist.
    /// Default `features`.
    #[serde(default = "default_features")]
    pub features: String,
}

fn default_features() -> String {
    "features".into()
}

fn default_input() -> String {
    "rgb".into()
}

fn default_output() -> String {
    "probs".into()
}

/// Hysteresis over per-clip scores.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SmootherConfig {
    /// A segment starts when a label's probability reaches this. 0..1, default 0.5.
    pub start_threshold: f32,
    /// A running segment ends when its label's probability falls below this. 0..1, not above
    /// `start_threshold`; default 0.3.
    pub end_threshold: f32,
    /// A segment is reported only once it has lasted this long (media time, first clip start to
    /// last clip end), milliseconds. Default 1000.
    pub min_duration_ms: u64,
}

impl Default for SmootherConfig {
    fn default() -> Self {
        SmootherConfig {
            start_threshold: 0.5,
            end_threshold: 0.3,
            min_duration_ms: 1000,
        }
    }
}

/// Where events are written; chosen by `type:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines appended to a file.
    File {
        /// The file; created if missing, appended to otherwise.
        path: PathBuf,
        /// Rotate when the file would grow past this many bytes: `events.jsonl` becomes
        /// `events.jsonl.1` (and `.1` becomes `.2`, ...). Default: never.
        #[serde(default)]
        max_bytes: Option<u64>,
        /// Rotated files kept. Default 5.
        #[serde(default = "default_keep")]
        keep: u32,
    },
    /// MQTT 3.1.1: QoS 1 to `<topic_prefix>/<stream>/<event type>`, spooled on disk.
    Mqtt {
        /// Broker host. Required.
        host: String,
        /// Broker port. Default 1883.
        #[serde(default = "default_mqtt_port")]
        port: u16,
        /// Topic prefix. Default `vigil`.
        #[serde(default = "default_prefix")]
        topic_prefix: String,
        /// Client id. Default `vigil`.
        #[serde(default = "default_prefix")]
        client_id: String,
        /// Optional user name and password.
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        /// Longest wait for the broker to acknowledge, milliseconds. Default 5000.
        #[serde(default = "default_net_timeout")]
        timeout_ms: u64,
        #[serde(default)]
        spool: SpoolConfig,
    },
    /// HTTP POST of each event, spooled on disk.
    Webhook {
        /// `http://` or `https://` URL. Required.
        url: String,
        /// Signs each body: header `X-Vigil-Signature: sha256=<hex HMAC-SHA256>`. Default: none.
        #[serde(default)]
        secret: Option<String>,
        /// Longest wait for an answer, milliseconds. Default 5000.
        #[serde(default = "default_net_timeout")]
        timeout_ms: u64,
        #[serde(default)]
        spool: SpoolConfig,
    },
    /// NATS JetStream: each event to `<prefix>.<stream>.<event type>` with its id as the
    /// message id (the server drops replays), acknowledged, spooled on disk.
    Nats(NatsSinkConfig),
}

/// `nats`: NATS JetStream (docs/events.md has the subjects).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// `nats://host:port` (or `tls://host:port`). Credentials in it (`user:password@`, or a
    /// token as `token@`) are never shown. Required.
    pub url: String,
    /// Subject prefix: events go to `<prefix>.<stream>.<event type>`. Dot-separated tokens,
    /// without `*`, `>` or white space. Default `vigil`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The JetStream stream that stores the events. Default `VIGIL`.
    #[serde(default = "default_jetstream")]
    pub jetstream: String,
    /// Create `jetstream` at the first connection when it does not exist: subjects
    /// `<prefix>.>`, file storage, `duplicate_window_s`, no other limits (set those on the
    /// server). An existing stream is used as it is. With false it must exist and take
    /// `<prefix>.>`. Default true.
    #[serde(default = "default_true")]
    pub create_stream: bool,
    /// Of a stream vigil creates: how long the server remembers message ids to drop replays,
    /// seconds, 1..=86400. Default 600.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_s: u64,
    /// Longest wait to connect, and for the server to acknowledge, milliseconds. Default 5000.
    #[serde(default = "default_net_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub spool: SpoolConfig,
}

fn default_jetstream() -> String {
    "VIGIL".into()
}
fn default_true() -> bool {
    true
}
fn default_duplicate_window() -> u64 {
    600
}

impl SinkConfig {
    /// The `sink` metric label and log name.
    pub fn name(&self) -> &'static str {
        match self {
            SinkConfig::Stdout => "stdout",
            SinkConfig::File { .. } => "file",
            SinkConfig::Mqtt { .. } => "mqtt",
            SinkConfig::Webhook { .. } => "webhook",
            SinkConfig::Nats(_) => "nats",
        }
    }
}

/// The on-disk queue in front of a network sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Folder. Default `spool/<sink type>` next to the config file.
    pub dir: Option<PathBuf>,
    /// Most bytes kept; beyond it the oldest events are dropped (and counted). Default 64 MiB.
    pub max_bytes: u64,
    /// At the end of a run, how long to keep delivering what is spooled before leaving the
    /// rest for the next run, milliseconds. Default 2000.
    pub drain_ms: u64,
    /// When appended events are forced to the disk (fsync): `always` (before the next event
    /// is taken: a power cut loses none), `interval` (at most `fsync_interval_ms` after the
    /// append: a power cut loses at most that much) or `never` (the OS writes them back when it
    /// likes, ~30 s on Linux; a kill -9 loses nothing either way). Default `interval`.
    pub fsync: FsyncPolicy,
    /// With `fsync: interval`, the longest an appended event waits to be forced to disk,
    /// milliseconds, 10..=60000. Default 200.
    pub fsync_interval_ms: u64,
}

/// When a spool forces its appends to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Always,
    Interval,
    Never,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: None,
            max_bytes: 64 << 20,
            drain_ms: 2000,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 200,
        }
    }
}

fn default_keep() -> u32 {
    5
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "vigil".into()
}
fn default_net_timeout() -> u64 {
    5000
}

fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig::Stdout]
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all. Default true.
    pub enabled: bool,
    /// Address and port. Default `127.0.0.1:9464`; port 0 picks a free port (logged at start).
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// ONNX Runtime.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Path to `libonnxruntime.so`. Default: the `ORT_DYLIB_PATH` environment variable.
    pub onnxruntime_library: Option<PathBuf>,
    /// `cpu`, `cuda` or `tensorrt`. Default `cpu`. A provider that can't be had is an error,
    /// never a silent fallback to the CPU.
    pub execution_provider: ExecutionProvider,
    /// Threads inside one inference call; 0 means one per core. Default 0.
    pub intra_threads: usize,
    /// Capacity of each queue between stages, in items. Default 8.
    pub queue_capacity: usize,
    /// ONNX Runtime's memory arena on the CPU provider. Default false: tensors are allocated
    /// per call, which costs no measurable speed and keeps the arena's growth steps out of
    /// resident memory.
    pub cpu_arena: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            onnxruntime_library: None,
            execution_provider: ExecutionProvider::Cpu,
            intra_threads: 0,
            queue_capacity: 8,
            cpu_arena: false,
        }
    }
}

/// The motion gate: each frame, shrunk to at most 160 pixels wide, grey and blurred, is compared
/// with a running average of the stream's recent frames; a pixel changed when it differs by more
/// than `threshold`, and the stream moves when more than `min_area` of its pixels changed. While
/// it moves, and for `hold_ms` after, both branches work as usual; otherwise the action branch
/// classifies no clip and the face branch searches no frame.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Gate every stream (`true`), none (`false`). Default: cameras and network streams only.
    /// `streams[].motion` overrides it per stream.
    pub enabled: Option<bool>,
    /// Grey levels (1-255) by which a pixel of the shrunk, blurred frame must differ from the
    /// background to count as changed. Default 15.
    pub threshold: u8,
    /// Fraction of the frame's pixels (above 0, at most 1) that must change for motion.
    /// Default 0.003.
    pub min_area: f64,
    /// How long the gate stays open after the last motion, milliseconds (0-600000). Default
    /// 2000.
    pub hold_ms: u64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            enabled: None,
            threshold: 15,
            min_area: 0.003,
            hold_ms: 2000,
        }
    }
}

impl MotionConfig {
    /// Whether a stream is gated: its own setting, else `enabled`, else whether it is live.
    pub fn gates(&self, stream: Option<bool>, live: bool) -> bool {
        stream.or(self.enabled).unwrap_or(live)
    }
}

/// Cameras and network streams. Each live stream has a supervisor that reconnects it after a
/// failure, waiting `reconnect_initial_ms`, doubling per failed attempt up to
/// `reconnect_max_ms`, each wait with random jitter (50-100% of it).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// RTSP over `tcp` (interleaved, works through NAT and firewalls) or `udp`. Default `tcp`.
    /// One setting for the process: OpenCV passes it to FFmpeg through an environment variable.
    pub rtsp_transport: RtspTransport,
    /// Longest wait for a connection, milliseconds. Default 10000.
    pub open_timeout_ms: u64,
    /// A stream that gives no frame for this long is stalled: reported, and reconnected,
    /// milliseconds. Default 5000.
    pub stall_timeout_ms: u64,
    /// Wait before the first reconnection attempt, milliseconds. Default 500.
    pub reconnect_initial_ms: u64,
    /// Longest wait between attempts, milliseconds. Default 30000.
    pub reconnect_max_ms: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            rtsp_transport: RtspTransport::Tcp,
            open_timeout_ms: 10_000,
            stall_timeout_ms: 5_000,
            reconnect_initial_ms: 500,
            reconnect_max_ms: 30_000,
        }
    }
}

/// How RTSP carries its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    Tcp,
    Udp,
}

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT.
    Tensorrt,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::Tensorrt => "tensorrt",
        }
    }
}

/// The face branch.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FacesConfig {
    /// Run the branch. Default false.
    pub enabled: bool,
    /// Frames per second the face sampler keeps from each stream (nearest frame by timestamp);
    /// 0 keeps every decoded frame. Default 5.
    pub sample_fps: f64,
    /// Run the full detector on every Nth sampled frame; in between, faces already tracked are
    /// found again near their last position (much cheaper), and new faces wait for the next
    /// full search. 1 searches every frame. Default 5 (at the default sample_fps, a full search
    /// each second and tracked faces five times a second).
    pub detect_interval: u32,
    /// The face detector. Required when the branch is enabled (or for `vigil gallery`).
    pub detector: Option<DetectorConfig>,
    /// The face embedder. Required when the branch is enabled (or for `vigil gallery`).
    pub embedder: Option<EmbedderConfig>,
    /// Euclidean distance below which a face matches an enrolled person. Default 0.6.
    pub match_threshold: f32,
    /// Following faces across frames.
    pub tracker: TrackerConfig,
    /// Folder for a JPEG of each reported face; its path goes in the event. Default: none.
    pub snapshots: Option<PathBuf>,
    /// Grouping of unknown faces (`unknown_id` in `face.unknown`).
    pub unknowns: UnknownsConfig,
    /// Faces of named tracks kept for `vigil gallery calibrate`.
    pub calibration: CalibrationConfig,
    /// `vigil gallery tune`: the projection head fitted with batch-all triplet loss.
    pub tune: TuneConfig,
    /// How much lower than the rest of vigil the face worker's threads (and its detector's
    /// lanes) run (Linux nice, 0-19): with more cameras than the cores can serve, the action
    /// classifier gets more of them. Default 0.
    pub nice: i32,
}

/// Faces of the latest tracks named per person, beside the gallery in `<gallery>.tracks.json`:
/// genuine pairs for `vigil gallery calibrate` when people have one photo each.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrationConfig {
    /// Latest named tracks kept per person (0 keeps none). Default 4.
    pub tracks_per_person: usize,
    /// Most people whose tracks are kept; the least recently seen go first. Default 1000.
    pub max_people: usize,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            tracks_per_person: 4,
            max_people: 1000,
        }
    }
}

/// Unknown faces grouped by person, beside the gallery in `<gallery>.unknowns.json`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UnknownsConfig {
    /// Group unknown faces and give each `face.unknown` an `unknown_id`. Default true.
    pub enabled: bool,
    /// Most groups kept; the least recently seen is evicted first. Default 500.
    pub max_groups: usize,
    /// Tracks whose embeddings a group keeps (the latest). Default 8.
    pub tracks_per_group: usize,
}

impl Default for UnknownsConfig {
    fn default() -> Self {
        UnknownsConfig {
            enabled: true,
            max_groups: 500,
            tracks_per_group: 8,
        }
    }
}

/// How `vigil gallery tune` fits its projection head.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TuneConfig {
    /// Triplet margin, in the distance used (plain or squared). Default 0.2.
    pub margin: f32,
    /// Squared Euclidean distances in the loss instead of plain ones. Default false.
    pub squared: bool,
    /// Values the head puts out (the embedder's dimension or fewer). Default 128.
    pub out_dim: usize,
    /// Full-batch gradient steps (Adam). Default 300.
    pub steps: usize,
    /// Adam step size. Default 0.005.
    pub learning_rate: f32,
    /// Share of each person's embeddings held out to judge the head (at least one of each
    /// person with two or more). Default 0.3.
    pub holdout: f64,
    /// False-accept rate the held-out true-accept rates are compared at. Default 0.001.
    pub far: f64,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            margin: 0.2,
            squared: false,
            out_dim: 128,
            steps: 300,
            learning_rate: 0.005,
            holdout: 0.3,
            far: 0.001,
        }
    }
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            enabled: false,
            sample_fps: 5.0,
            detect_interval: 5,
            detector: None,
            embedder: None,
            match_threshold: 0.6,
            tracker: TrackerConfig::default(),
            snapshots: None,
            unknowns: UnknownsConfig::default(),
            calibration: CalibrationConfig::default(),
            tune: TuneConfig::default(),
            nice: 0,
        }
    }
}

/// A face detector with five landmarks; chosen by `type:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DetectorConfig {
    /// The MTCNN cascade of three ONNX networks.
    Mtcnn {
        /// P-Net `.onnx` (fully convolutional, any size).
        pnet: PathBuf,
        /// R-Net `.onnx` (24x24 crops).
        rnet: PathBuf,
        /// O-Net `.onnx` (48x48 crops, landmarks).
        onet: PathBuf,
        /// Smallest face searched for, pixels. Default 20.
        #[serde(default = "default_min_face")]
        min_face_px: f32,
        /// Pyramid scale step. Default 0.709.
        #[serde(default = "default_scale_factor")]
        scale_factor: f32,
        /// P-Net, R-Net and O-Net thresholds. Default [0.6, 0.7, 0.7].
        #[serde(default = "default_thresholds")]
        thresholds: [f32; 3],
        /// Faces below this final probability are ignored. Default 0.95.
        #[serde(default = "default_min_probability")]
        min_probability: f32,
    },
}

fn default_min_face() -> f32 {
    20.0
}
fn default_scale_factor() -> f32 {
    0.709
}
fn default_thresholds() -> [f32; 3] {
    [0.6, 0.7, 0.7]
}
fn default_min_probability() -> f32 {
    0.95
}

/// An ONNX face embedder taking `[N, 3, S, S]` RGB 0..255 chips.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// The `.onnx` file. Required.
    pub path: PathBuf,
    /// Input tensor name. Default `rgb`.
    #[serde(default = "default_input")]
    pub input: String,
    /// Output tensor name. Default `descriptor`.
    #[serde(default = "default_descriptor")]
    pub output: String,
}

fn default_descriptor() -> String {
    "descriptor".into()
}

/// Face tracks.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Smallest box overlap (intersection over union) that continues a track. Default 0.3.
    pub iou_threshold: f32,
    /// A track unseen this long is closed, milliseconds of media time. Default 1000.
    pub max_gap_ms: u64,
    /// Most embeddings computed per track. Default 5.
    pub embeds_per_track: usize,
    /// Embeddings gathered before a track's first decision, and the window of latest
    /// embeddings every decision is made from. Default 3.
    pub decide_after: usize,
    /// Once its embeddings are spent, a track is embedded again this often, milliseconds of
    /// media time; 0 never. Default 1000.
    pub reverify_ms: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            iou_threshold: 0.3,
            max_gap_ms: 1000,
            embeds_per_track: 5,
            decide_after: 3,
            reverify_ms: 1000,
        }
    }
}

/// The one-shot gallery.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GalleryConfig {
    /// The gallery file (created by the first `vigil gallery enroll`). Default `gallery.json`.
    pub path: PathBuf,
    /// Images with more pixels than this are refused before decoding. Default 40000000.
    pub max_image_pixels: u64,
    /// How the gallery is searched.
    pub index: GalleryIndexConfig,
    /// A PostgreSQL database as the gallery's source of truth, shared by every node; `path`
    /// is then this node's local cache of it. Absent by default (the file is the gallery).
    pub postgres: Option<GalleryPostgresConfig>,
}

/// The shared gallery store (docs/scaling.md).
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GalleryPostgresConfig {
    /// `postgres://user:password@host:port/database` (the password is shown as `***`
    /// everywhere). Required.
    pub url: String,
    /// How long a connection may take before the store counts as down, milliseconds. Default 3000.
    #[serde(default = "default_pg_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How often a node looks for changes it was not notified of, milliseconds. Default 1000.
    #[serde(default = "default_pg_poll_ms")]
    pub poll_ms: u64,
}

fn default_pg_connect_timeout_ms() -> u64 {
    3000
}

fn default_pg_poll_ms() -> u64 {
    1000
}

/// Never prints the password.
impl std::fmt::Debug for GalleryPostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GalleryPostgresConfig")
            .field("url", &crate::url::redact(&self.url))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("poll_ms", &self.poll_ms)
            .finish()
    }
}

impl Default for GalleryConfig {
    fn default() -> Self {
        GalleryConfig {
            path: PathBuf::from("gallery.json"),
            max_image_pixels: 40_000_000,
            index: GalleryIndexConfig::default(),
            postgres: None,
        }
    }
}

/// Exact search, or an approximate (HNSW) index for large galleries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    /// Exact below `hnsw_above` embeddings, HNSW from there on.
    Auto,
    Exact,
    Hnsw,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GalleryIndexConfig {
    /// `auto` (default), `exact` or `hnsw`.
    pub kind: IndexKind,
    /// With `auto`, galleries with more embeddings than this get the HNSW index. Default 20000.
    pub hnsw_above: usize,
    /// HNSW links per node and layer. Default 16.
    pub m: usize,
    /// HNSW candidate list while building. Default 200.
    pub ef_construction: usize,
    /// HNSW candidate list while searching. Default 64.
    pub ef_search: usize,
    /// Keep the built HNSW index beside the gallery (`<gallery>.index/`). Default true.
    pub persist: bool,
    /// How the HNSW graph stores its rows: `f32` (exact distances), or `f16`/`i8` (cheaper
    /// distances while building and searching; the index then keeps the f32 rows too and
    /// re-ranks its best `rerank` candidates by exact distance). Default f32.
    pub quantization: IndexQuantization,
    /// With `f16` or `i8`: candidates of the graph re-ranked by exact (f32) distance; 0 keeps
    /// the graph's approximate order (and no f32 rows). Ignored with `f32`. Default 0.
    pub rerank: usize,
}

/// Most candidates `gallery.index.rerank` may re-rank.
pub const MAX_RERANK: usize = 1024;

/// The HNSW graph's row storage (`gallery.index.quantization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexQuantization {
    #[default]
    F32,
    F16,
    I8,
}

impl Default for GalleryIndexConfig {
    fn default() -> Self {
        GalleryIndexConfig {
            kind: IndexKind::Auto,
            hnsw_above: 20_000,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            persist: true,
            quantization: IndexQuantization::F32,
            rerank: 0,
        }
    }
}
