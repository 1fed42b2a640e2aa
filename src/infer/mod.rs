//! ONNX Runtime: loading the shared library once per process, building sessions on the
//! configured execution provider, and checking a model's tensors against what a stage will feed.
//!
//! ort's own `init()` panics when the library is missing; everything here turns that into an
//! error that names the path and how to get the library.

use crate::config::ExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::ValueType;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// What can go wrong between a model file and a ready session.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("ONNX Runtime library not configured: set runtime.onnxruntime_library or ORT_DYLIB_PATH (the set-up script extracts it to build/lib/libonnxruntime.so)")]
    NoLibrary,
    #[error("cannot load the ONNX Runtime library {path}: {reason}")]
    Library { path: PathBuf, reason: String },
    #[error("ONNX Runtime was already loaded from {loaded}; cannot switch to {wanted} in the same process")]
    OtherLibrary { loaded: PathBuf, wanted: PathBuf },
    #[error("execution provider `{provider}` is not available for {model}: {reason} (no fallback to the CPU: pick another runtime.execution_provider)")]
    Provider {
        provider: &'static str,
        model: PathBuf,
        reason: String,
    },
    #[error("cannot load model {model}: {reason}")]
    Model { model: PathBuf, reason: String },
    #[error("model {model}: {reason}")]
    Contract { model: PathBuf, reason: String },
    #[error("inference failed on model {model}: {reason}")]
    Run { model: PathBuf, reason: String },
}

struct Runtime {
    library: PathBuf,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Mutex<Option<Runtime>>> = OnceLock::new();

/// The library path from config, else from `ORT_DYLIB_PATH`.
pub fn library_path(configured: Option<&Path>) -> Result<PathBuf, InferError> {
    match configured {
        Some(p) => Ok(p.to_path_buf()),
        None => std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .ok_or(InferError::NoLibrary),
    }
}

/// Loads ONNX Runtime from `library` (once per process) and returns its environment.
pub fn environment(library: &Path) -> Result<ort::environment::Environment, InferError> {
    let cell = RUNTIME.get_or_init(|| Mutex::new(None));
    let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = slot.as_ref() {
        if rt.library != library {
            return Err(InferError::OtherLibrary {
                loaded: rt.library.clone(),
                wanted: library.to_path_buf(),
            });
        }
        return Ok(rt.env.clone());
    }
    let lib_err = |reason: String| InferError::Library {
        path: library.to_path_buf(),
        reason,
    };
    crate::config::check_readable_file(library).map_err(&lib_err)?;
    let builder = ort::init_from(library).map_err(|e| lib_err(e.to_string()))?;
    let env = builder
        .with_name("vigil")
        .build()
        .map_err(|e| lib_err(e.to_string()))?;
    *slot = Some(Runtime {
        library: library.to_path_buf(),
        env: env.clone(),
    });
    Ok(env)
}

/// How to build one session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub provider: ExecutionProvider,
    /// Threads inside one call; 0 lets ONNX Runtime use one per core.
    pub intra_threads: usize,
    /// ONNX Runtime's memory arena on the CPU provider (`runtime.cpu_arena`).
    pub cpu_arena: bool,
}

impl SessionOptions {
    /// Whether a session built with these options allocates its tensors from the C heap on
    /// every call (the CPU provider without ONNX Runtime's arena).
    pub fn heap_per_call(&self) -> bool {
        self.provider == ExecutionProvider::Cpu && !self.cpu_arena
    }
}

/// Hands the C allocator's free pages back to the system (glibc's `malloc_trim`, every arena).
///
/// Without ONNX Runtime's arena, a large model's call allocates and frees tens of megabytes of
/// tensors on the heap, beside the frames other threads allocate and free: freed blocks in the
/// middle of a heap stay resident, and the next call's tensors land beside them. Called before
/// each action-model call, it keeps that between-calls debris out of the call's peak: peak
/// resident memory on arm_wrestling.mp4 fell from 344-362 to 288-306 MiB, on Big Buck Bunny
/// from 335-395 to 324-354 MiB (4 runs each).
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Builds a session for `model` on the requested provider, or fails: never a silent fallback.
pub fn session(
    env: &ort::environment::Environment,
    model: &Path,
    opts: &SessionOptions,
) -> Result<Session, InferError> {
    let model_err = |reason: String| InferError::Model {
        model: model.to_path_buf(),
        reason,
    };
    crate::config::check_readable_file(model).map_err(&model_err)?;
    let mut b = Session::builder(env)
        .map_err(|e| model_err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| model_err(e.to_string()))?;
    // Idle pool threads would otherwise spin between calls and take the cores that decoding and
    // the other models need: measured, a face run at every frame went from 18 s to 5 s without it.
    b = b
        .with_intra_op_spinning(false)
        .map_err(|e| model_err(e.to_string()))?;
    if opts.intra_threads > 0 {
        b = b
            .with_intra_threads(opts.intra_threads)
            .map_err(|e| model_err(e.to_string()))?;
    }
    let provider_err = |reason: String| InferError::Provider {
        provider: opts.provider.as_str(),
        model: model.to_path_buf(),
        reason,
    };
    b = match opts.provider {
        ExecutionProvider::Cpu => b
            .with_execution_providers([ort::ep::CPU::default()
                .with_arena_allocator(opts.cpu_arena)
                .build()])
            .map_err(|e| provider_err(e.to_string()))?,
        // Also refuse to run single nodes on the CPU behind the user's back.
        ExecutionProvider::Cuda => b
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| provider_err(e.to_string()))?
            .with_disable_cpu_fallback()
            .map_err(|e| provider_err(e.to_string()))?,
        ExecutionProvider::Tensorrt => b
            .with_execution_providers([ort::ep::TensorRT::default().build().error_on_failure()])
            .map_err(|e| provider_err(e.to_string()))?
            .with_disable_cpu_fallback()
            .map_err(|e| provider_err(e.to_string()))?,
    };
    b.commit_from_file(model)
        .map_err(|e| model_err(e.to_string()))
}

/// A tensor's element type and shape, with `None` for dynamic dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub is_f32: bool,
    pub dims: Vec<Option<i64>>,
}

impl std::fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self
            .dims
            .iter()
            .map(|d| d.map_or("?".into(), |d| d.to_string()))
            .collect();
        write!(f, "`{}` [{}]", self.name, dims.join(", "))
    }
}

fn spec_of(name: &str, t: &ValueType) -> TensorSpec {
    match t {
        ValueType::Tensor { ty, shape, .. } => TensorSpec {
            name: name.to_string(),
            is_f32: *ty == ort::value::TensorElementType::Float32,
            dims: shape.iter().map(|&d| (d >= 0).then_some(d)).collect(),
        },
        _ => TensorSpec {
            name: name.to_string(),
            is_f32: false,
            dims: vec![],
        },
    }
}

/// The named input's spec, or an error listing the inputs the model has.
pub fn input_spec(session: &Session, model: &Path, name: &str) -> Result<TensorSpec, InferError> {
    let found = session.inputs().iter().find(|o| o.name() == name);
    found
        .map(|o| spec_of(name, o.dtype()))
        .ok_or_else(|| InferError::Contract {
            model: model.to_path_buf(),
            reason: format!(
                "has no input `{name}`; its inputs are {}",
                names(session.inputs().iter().map(|o| o.name()))
            ),
        })
}

/// The named output's spec, or an error listing the outputs the model has.
pub fn output_spec(session: &Session, model: &Path, name: &str) -> Result<TensorSpec, InferError> {
    let found = session.outputs().iter().find(|o| o.name() == name);
    found
        .map(|o| spec_of(name, o.dtype()))
        .ok_or_else(|| InferError::Contract {
            model: model.to_path_buf(),
            reason: format!(
                "has no output `{name}`; its outputs are {}",
                names(session.outputs().iter().map(|o| o.name()))
            ),
        })
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Checks `spec` against `want` (`None` = any size); describes every mismatch.
pub fn check_dims(spec: &TensorSpec, want: &[(&str, Option<i64>)]) -> Result<(), String> {
    if !spec.is_f32 {
        return Err(format!("{spec} is not a float32 tensor"));
    }
    if spec.dims.len() != want.len() {
        let layout: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "{spec} has rank {}, expected [{}]",
            spec.dims.len(),
            layout.join(", ")
        ));
    }
    let mut bad = Vec::new();
    for ((name, w), d) in want.iter().zip(&spec.dims) {
        if let (Some(w), Some(d)) = (w, d) {
            if w != d {
                bad.push(format!("{name} is {d} in the model but {w} in the config"));
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{spec}: {}", bad.join("; ")))
    }
}
