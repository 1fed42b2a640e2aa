//! Everything `vigil check` verifies, done once and kept for the run: each file decodes, the
//! runtime loads, the model loads on the chosen provider and its tensors fit the clip settings,
//! and its label list matches its outputs.

use crate::action::classifier::{self, Classifier};
use crate::config::{check_stream, validate, Loaded, Problem, Problems, StreamConfig};
use crate::face::worker::{load_models, FaceModels};
use crate::gallery::{Gallery, LiveGallery};
use crate::infer::{self, InferError};
use crate::source::file::FileReader;
use crate::source::supervisor::SourcePlan;
use crate::source::url::SourceKind;
use crate::source::VideoInfo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct PreparedStream {
    pub id: String,
    /// The branches that look at this stream.
    pub action: bool,
    pub faces: bool,
    /// What to read and how.
    pub plan: SourcePlan,
    /// What a file's first frame showed. All zeros for a live source: cameras are contacted
    /// when the run starts (and retried until they answer), not while preparing.
    pub info: VideoInfo,
    /// The entry as given (config file or API), as `GET /v1/streams` shows it.
    pub config: StreamConfig,
    /// Added over the API (persisted in `api.state_dir`) rather than listed in the config.
    pub from_api: bool,
}

impl PreparedStream {
    /// The video file, for a file source.
    pub fn file(&self) -> Option<&Path> {
        match &self.plan.kind {
            SourceKind::File(p) => Some(p),
            _ => None,
        }
    }
}

pub struct PreparedAction {
    pub classifier: Classifier,
    pub labels: Arc<Vec<String>>,
    /// What the model's own labels' events carry as `source` (the label file's stem, less a
    /// trailing `_labels`: `kinetics400`).
    pub source: Arc<str>,
    /// Custom actions taught for this model, when its custom-actions file has any.
    pub custom: Option<Arc<crate::action::custom::CustomScorer>>,
}

pub struct PreparedFaces {
    pub models: FaceModels,
    /// The gallery file, its people and the index the face worker searches.
    pub gallery: Arc<LiveGallery>,
    pub enrolled: usize,
}

/// A config whose every check passed, with its models loaded.
pub struct Prepared {
    pub loaded: Loaded,
    /// The streams this replica runs (all of them with one replica).
    pub streams: Vec<PreparedStream>,
    /// Which replica this is (`cluster`).
    pub shard: crate::cluster::Shard,
    /// The config's streams that other replicas run: (id, owning ordinal). They are validated
    /// but not probed here.
    pub elsewhere: Vec<(String, u32)>,
    pub action: Option<PreparedAction>,
    pub faces: Option<PreparedFaces>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("file", &self.loaded.file)
            .field("streams", &self.streams.len())
            .field("action", &self.action.is_some())
            .finish()
    }
}

impl Prepared {
    /// With several replicas: which streams of the config this one runs, and where the
    /// others run (`vigil check` prints it, `vigil run` logs it).
    pub fn shard_summary(&self) -> Option<String> {
        if self.shard.replicas <= 1 {
            return None;
        }
        let mine: Vec<&str> = self
            .streams
            .iter()
            .filter(|s| !s.from_api)
            .map(|s| s.id.as_str())
            .collect();
        let others: Vec<String> = self
            .elsewhere
            .iter()
            .map(|(id, o)| format!("{id} (replica {o})"))
            .collect();
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        Some(format!(
            "replica {} of {} runs {} of the config's {} streams: {}; the others run: {}",
            self.shard.ordinal,
            self.shard.replicas,
            mine.len(),
            mine.len() + others.len(),
            list(&mine.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            list(&others)
        ))
    }
}

/// Reads a label file: one non-empty name per line.
fn read_labels(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if let Some(i) = labels.iter().position(String::is_empty) {
        if labels[i..].iter().any(|l| !l.is_empty()) {
            return Err(format!("{}: line {} is empty", path.display(), i + 1));
        }
    }
    Ok(labels.into_iter().filter(|l| !l.is_empty()).collect())
}

/// Runs every check; on success the result is ready to [`super::run`].
pub fn prepare(loaded: Loaded) -> Result<Prepared, Problems> {
    let mut problems = validate(&loaded);
    let has_problem =
        |problems: &[Problem], prefix: &str| problems.iter().any(|p| p.path.starts_with(prefix));
    let c = &loaded.config;

    // Each file is probed once however many streams name it: probing (opening the file and
    // decoding its first frame) was nearly all of the time `check` took on a long list (1000
    // streams of one file: about 68 s, one probe each).
    let mut probed = ProbeCache::default();
    let mut streams = Vec::new();
    let listed_ok = !problems.iter().any(|p| p.path == "streams");
    // A cluster problem is reported by `validate`; the streams are then all checked.
    let shard = crate::cluster::Shard::from_config(c.cluster.plain())
        .unwrap_or(crate::cluster::Shard::single());
    let mut elsewhere = Vec::new();
    for (i, s) in c.streams.iter().enumerate().filter(|_| listed_ok) {
        if has_problem(&problems, &format!("streams[{i}].")) {
            continue;
        }
        if !shard.runs(&s.id) {
            elsewhere.push((s.id.clone(), shard.owner(&s.id)));
            continue;
        }
        match prepare_stream_with(&loaded, s, false, &mut probed) {
            Ok(ps) => streams.push(ps),
            Err(errs) => problems.extend(
                errs.into_iter()
                    .map(|(field, msg)| loaded.problem(format!("streams[{i}].{field}"), msg)),
            ),
        }
    }

    // Nothing is built from a value its check refused: a model is loaded only when every
    // setting it is built with (its section, the runtime's threads and library) passed. An
    // out-of-range `runtime.intra_threads` once reached ONNX Runtime (100000 threads: over
    // 120 s and 5.6 GB before the problem was shown), and `action.frames: 0` reached the model.
    //
    // The action model and the face models load at the same time (creating ONNX Runtime
    // sessions is most of vigil's start-up).
    let action_model = c
        .action
        .model
        .as_ref()
        .filter(|_| c.action.enabled)
        .filter(|_| !has_problem(&problems, "action.") && !has_problem(&problems, "runtime."));
    let blocked = ["faces", "gallery", "runtime."];
    let want_faces = c.faces.enabled && !blocked.iter().any(|b| has_problem(&problems, b));
    let (action_loaded, faces_loaded) = std::thread::scope(|s| {
        let a = action_model.map(|m| s.spawn(|| load_action(&loaded, m)));
        let f = want_faces.then(|| load_face_models(&loaded));
        let a = a.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(loaded.problem("action.model", "loading the model panicked".to_string()))
            })
        });
        (a, f)
    });
    let mut action = None;
    match action_loaded {
        Some(Ok(a)) => action = Some(a),
        Some(Err(p)) => problems.push(p),
        None => {}
    }
    let mut faces = None;
    if let Some(faces_loaded) = faces_loaded {
        match faces_loaded {
            Ok(models) => {
                let path = loaded.resolve(&c.gallery.path);
                let (model, dim) = (models.embedder_name.clone(), models.embedder.dim);
                let live = crate::gallery::store::open_live(&path, &model, dim, &c.gallery);
                let live = match live {
                    Ok(g) => g,
                    Err(e) => {
                        // A file beside the gallery (negatives, head) is the gallery's; an
                        // index that cannot be built is the index's.
                        let field = if e.downcast_ref::<crate::gallery::GalleryError>().is_some() {
                            "gallery.path"
                        } else if e
                            .downcast_ref::<crate::gallery::store::StoreError>()
                            .is_some()
                        {
                            "gallery.postgres"
                        } else {
                            "gallery.index"
                        };
                        problems.push(loaded.problem(field, format!("{e:#}")));
                        return Err(Problems(problems));
                    }
                };
                if c.faces.unknowns.enabled || c.faces.calibration.tracks_per_person > 0 {
                    let store = crate::gallery::unknowns::UnknownStore::open(
                        &path,
                        &model,
                        dim,
                        &c.faces.unknowns,
                        &c.faces.calibration,
                        c.faces.match_threshold,
                    );
                    match store {
                        Ok(s) => live.attach_unknowns(Arc::new(s)),
                        Err(e) => {
                            problems.push(loaded.problem("gallery.path", e.to_string()));
                            return Err(Problems(problems));
                        }
                    }
                }
                let enrolled = live.people().len();
                if enrolled == 0 {
                    tracing::warn!(
                        "the gallery {} is empty: every face will be reported as unknown (enrol with `vigil gallery enroll`)",
                        path.display()
                    );
                }
                faces = Some(PreparedFaces {
                    models,
                    enrolled,
                    gallery: Arc::new(live),
                });
            }
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(Prepared {
            loaded,
            streams,
            shard,
            elsewhere,
            action,
            faces,
        })
    } else {
        Err(Problems(problems))
    }
}

/// Checks one stream entry as `vigil check` does (every file is probed: its first frame
/// decoded) and plans how to read it. Problems come as (field,
/// message). Cameras are contacted when the stream starts, not here. `api` marks a stream
/// added over the API (no progress bar).
pub fn prepare_stream(
    loaded: &Loaded,
    s: &StreamConfig,
    api: bool,
) -> Result<PreparedStream, Vec<(&'static str, String)>> {
    prepare_stream_with(loaded, s, api, &mut ProbeCache::default())
}

/// What each file's probe found, by path, for one preparation.
#[derive(Default)]
struct ProbeCache(HashMap<PathBuf, Result<VideoInfo, String>>);

fn prepare_stream_with(
    loaded: &Loaded,
    s: &StreamConfig,
    api: bool,
    probed: &mut ProbeCache,
) -> Result<PreparedStream, Vec<(&'static str, String)>> {
    let c = &loaded.config;
    let errs = check_stream(loaded, s);
    if !errs.is_empty() {
        return Err(errs);
    }
    let kind = SourceKind::parse(&s.url, |p| loaded.resolve(p)).map_err(|e| vec![("url", e)])?;
    let info = match &kind {
        SourceKind::File(path) => probed
            .0
            .entry(path.clone())
            .or_insert_with(|| FileReader::probe(path).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| vec![("url", e)])?,
        _ => VideoInfo {
            width: 0,
            height: 0,
            fps: 0.0,
            frame_count: 0,
        },
    };
    let motion = c
        .motion
        .gates(s.motion, kind.is_live())
        .then(|| crate::source::motion::MotionParams::from_config(&c.motion));
    Ok(PreparedStream {
        id: s.id.clone(),
        action: s.wants(crate::config::Branch::Action, c.action.enabled),
        faces: s.wants(crate::config::Branch::Faces, c.faces.enabled),
        plan: SourcePlan {
            index: 0,
            id: s.id.clone(),
            kind,
            realtime: s.realtime,
            looped: s.looped,
            live: c.live.clone(),
            motion,
        },
        info,
        config: s.clone(),
        from_api: api,
    })
}

fn runtime_env(
    loaded: &Loaded,
) -> Result<(ort::environment::Environment, infer::SessionOptions), Problem> {
    let c = &loaded.config;
    let configured = c
        .runtime
        .onnxruntime_library
        .as_deref()
        .map(|p| loaded.resolve(p));
    let lib_path = infer::library_path(configured.as_deref())
        .map_err(|e| loaded.problem("runtime.onnxruntime_library", e.to_string()))?;
    let env = infer::environment(&lib_path)
        .map_err(|e| loaded.problem("runtime.onnxruntime_library", e.to_string()))?;
    let opts = infer::SessionOptions {
        provider: c.runtime.execution_provider,
        intra_threads: c.runtime.intra_threads,
        cpu_arena: c.runtime.cpu_arena,
    };
    Ok((env, opts))
}

/// Loads the face detector and the embedder, without reading the gallery: `vigil run` and a
/// running vigil's gallery API open it once, with its index ([`crate::gallery::store::open_live`]),
/// instead of parsing a big file (a GB in memory at a million people) a second time.
pub fn load_face_models(loaded: &Loaded) -> Result<FaceModels, Problem> {
    let (env, opts) = runtime_env(loaded)?;
    load_models(loaded, &env, &opts).map_err(|e| loaded.problem(e.field(), e.to_string()))
}

/// Loads the face detector, the embedder and the gallery (`vigil gallery`, which refuses a bad
/// gallery file before it does anything).
pub fn load_faces(loaded: &Loaded) -> Result<(FaceModels, Gallery), Problem> {
    let models = load_face_models(loaded)?;
    let path = loaded.resolve(&loaded.config.gallery.path);
    let gallery = Gallery::open(&path, &models.embedder_name, models.embedder.dim)
        .map_err(|e| loaded.problem("gallery.path", e.to_string()))?;
    Ok((models, gallery))
}

fn load_action(
    loaded: &Loaded,
    m: &crate::config::ActionModelConfig,
) -> Result<PreparedAction, Problem> {
    let mut a = load_model_only(loaded, m)?;
    a.custom = load_custom(loaded, m, &mut a.classifier)?;
    Ok(a)
}

/// The action model and its labels, without custom actions (also used by `vigil actions`
/// and `vigil explain`).
pub fn load_action_model(loaded: &Loaded) -> Result<PreparedAction, Problem> {
    match &loaded.config.action.model {
        Some(m) => load_model_only(loaded, m),
        None => Err(loaded.problem("action.model", "is not set".to_string())),
    }
}

fn load_model_only(
    loaded: &Loaded,
    m: &crate::config::ActionModelConfig,
) -> Result<PreparedAction, Problem> {
    let c = &loaded.config;
    let (env, opts) = runtime_env(loaded)?;
    let model = loaded.resolve(&m.path);
    let (classifier, classes) = classifier::load(
        &env,
        model,
        &m.input,
        &m.output,
        c.action.frames,
        c.action.crop as usize,
        &opts,
    )
    .map_err(|e| {
        let at = match e {
            InferError::Provider { .. } => "runtime.execution_provider",
            InferError::Contract { .. } => "action.model",
            _ => "action.model.path",
        };
        loaded.problem(at, e.to_string())
    })?;
    let labels_path = loaded.resolve(&m.labels);
    let labels = read_labels(&labels_path).map_err(|e| loaded.problem("action.model.labels", e))?;
    if labels.len() != classes {
        return Err(loaded.problem(
            "action.model.labels",
            format!(
                "{} has {} labels but the model has {classes} classes",
                labels_path.display(),
                labels.len()
            ),
        ));
    }
    let source = labels_path
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let source: Arc<str> = source.strip_suffix("_labels").unwrap_or(&source).into();
    Ok(PreparedAction {
        classifier,
        labels: Arc::new(labels),
        source,
        custom: None,
    })
}

/// The custom-actions file a config uses: `action.custom.path`, or `<stem>.actions.json`
/// beside the config.
pub fn custom_actions_path(loaded: &Loaded) -> PathBuf {
    match &loaded.config.action.custom.path {
        Some(p) => loaded.resolve(p),
        None => crate::action::custom::default_path(&loaded.file),
    }
}

/// Reads the custom actions (if any) and turns on the classifier's features output for them.
fn load_custom(
    loaded: &Loaded,
    m: &crate::config::ActionModelConfig,
    classifier: &mut Classifier,
) -> Result<Option<Arc<crate::action::custom::CustomScorer>>, Problem> {
    use crate::action::custom::{CustomFile, CustomScorer};
    let path = custom_actions_path(loaded);
    let file =
        CustomFile::load(&path).map_err(|e| loaded.problem("action.custom.path", e.to_string()))?;
    let Some(file) = file.filter(|f| !f.actions.is_empty()) else {
        if loaded.config.action.custom.only {
            tracing::warn!(
                "action.custom.only is set but {} holds no custom actions: no action events will be reported",
                path.display()
            );
        }
        return Ok(None);
    };
    let dim = classifier
        .enable_features(&m.features)
        .map_err(|e| loaded.problem("action.model.features", e.to_string()))?;
    file.check_model(&path, &classifier.name, dim)
        .map_err(|e| loaded.problem("action.custom.path", e.to_string()))?;
    Ok(Some(Arc::new(CustomScorer::new(&file))))
}
