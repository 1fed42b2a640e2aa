//! The face embedder: aligned RGB chips in, one descriptor per chip out (128 values for the
//! dlib ResNet). Compared by Euclidean distance.

use crate::infer::{self, InferError};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

pub struct Embedder {
    session: Session,
    path: PathBuf,
    input: String,
    output: String,
    /// Chip side in pixels.
    pub size: usize,
    pub dim: usize,
    buf: Vec<f32>,
}

impl Embedder {
    pub fn load(
        env: &ort::environment::Environment,
        path: &Path,
        input: &str,
        output: &str,
        opts: &infer::SessionOptions,
    ) -> Result<Embedder, InferError> {
        let session = infer::session(env, path, opts)?;
        let contract = |reason: String| InferError::Contract {
            model: path.to_path_buf(),
            reason,
        };
        let i = infer::input_spec(&session, path, input)?;
        infer::check_dims(
            &i,
            &[
                ("N", None),
                ("channels", Some(3)),
                ("height", None),
                ("width", None),
            ],
        )
        .map_err(|e| contract(format!("input {e}")))?;
        let size = match (i.dims[2], i.dims[3]) {
            (Some(h), Some(w)) if h == w => h as usize,
            _ => return Err(contract(format!("input {i} must have a fixed square size"))),
        };
        let o = infer::output_spec(&session, path, output)?;
        infer::check_dims(&o, &[("N", None), ("dim", None)])
            .map_err(|e| contract(format!("output {e}")))?;
        let dim =
            o.dims[1].ok_or_else(|| contract(format!("output {o} has no fixed size")))? as usize;
        Ok(Embedder {
            session,
            path: path.to_path_buf(),
            input: input.into(),
            output: output.into(),
            size,
            dim,
            buf: Vec::new(),
        })
    }

    /// One descriptor per chip (`size * size * 3` RGB bytes each).
    pub fn embed(&mut self, chips: &[&[u8]]) -> Result<Vec<Vec<f32>>, InferError> {
        if chips.is_empty() {
            return Ok(vec![]);
        }
        let plane = self.size * self.size;
        self.buf.resize(chips.len() * 3 * plane, 0.0);
        for (chip, out) in chips.iter().zip(self.buf.chunks_exact_mut(3 * plane)) {
            let (r, rest) = out.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in chip.chunks_exact(3).enumerate() {
                r[i] = px[0] as f32;
                g[i] = px[1] as f32;
                b[i] = px[2] as f32;
            }
        }
        let err = |reason: String| InferError::Run {
            model: self.path.clone(),
            reason,
        };
        let t = TensorRef::from_array_view((
            [chips.len(), 3, self.size, self.size],
            self.buf.as_slice(),
        ))
        .map_err(|e| err(e.to_string()))?;
        let out = self
            .session
            .run(ort::inputs![self.input.as_str() => t])
            .map_err(|e| err(e.to_string()))?;
        let v = out
            .get(self.output.as_str())
            .ok_or_else(|| err(format!("no output `{}`", self.output)))?;
        let (_, d) = v
            .try_extract_tensor::<f32>()
            .map_err(|e| err(e.to_string()))?;
        Ok(d.chunks_exact(self.dim).map(<[f32]>::to_vec).collect())
    }
}
