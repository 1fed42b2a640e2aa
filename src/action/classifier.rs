//! The classifier worker: owns the model's session, batches clips from every stream (up to
//! `max_batch`, waiting at most `max_wait_ms` for a batch to fill) and sends each clip's class
//! probabilities on, in the order the clips arrived.

use super::clip::Clip;
use crate::event::Span;
use crate::infer::{self, InferError};
use crate::metrics::Metrics;
use crate::source::StreamEnd;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Into the classifier: clips, and each stream's end behind its last clip.
pub enum ClipMsg {
    Clip(Clip),
    End(StreamEnd),
}

/// Out of the classifier.
pub enum Scored {
    Clip {
        stream: usize,
        span: Span,
        probs: Vec<f32>,
    },
    End(StreamEnd),
}

/// An action model with the tensor layout `[N, 3, T, side, side]`, RGB 0..255.
pub struct Classifier {
    session: Session,
    path: PathBuf,
    /// Label for metrics: the model file's stem.
    pub name: String,
    input: String,
    output: String,
    frames: usize,
    side: usize,
    classes: usize,
    input_buf: Vec<f32>,
}

impl Classifier {
    pub fn new(
        session: Session,
        path: PathBuf,
        input: &str,
        output: &str,
        frames: usize,
        side: usize,
        classes: usize,
    ) -> Classifier {
        let name = path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned());
        Classifier {
            session,
            path,
            name,
            input: input.into(),
            output: output.into(),
            frames,
            side,
            classes,
            input_buf: Vec::new(),
        }
    }

    /// Fills the input tensor for `clips`: planar channels, frames in order.
    fn fill(&mut self, clips: &[&Clip]) {
        let (t, plane) = (self.frames, self.side * self.side);
        self.input_buf.resize(clips.len() * 3 * t * plane, 0.0);
        for (b, clip) in clips.iter().enumerate() {
            debug_assert_eq!(clip.frames.len(), t);
            let clip_buf = &mut self.input_buf[b * 3 * t * plane..][..3 * t * plane];
            let (r, rest) = clip_buf.split_at_mut(t * plane);
            let (g, bl) = rest.split_at_mut(t * plane);
            for (ti, frame) in clip.frames.iter().enumerate() {
                let (r, g, bl) = (
                    &mut r[ti * plane..][..plane],
                    &mut g[ti * plane..][..plane],
                    &mut bl[ti * plane..][..plane],
                );
                for (i, px) in frame.chunks_exact(3).enumerate() {
                    r[i] = px[0] as f32;
                    g[i] = px[1] as f32;
                    bl[i] = px[2] as f32;
                }
            }
        }
    }

    /// The input tensor of the last call, as fed to the model.
    pub fn input_tensor(&self) -> &[f32] {
        &self.input_buf
    }

    /// Class probabilities for each clip, `classes` values per clip.
    pub fn classify(&mut self, clips: &[&Clip]) -> Result<Vec<Vec<f32>>, InferError> {
        self.fill(clips);
        let shape = [clips.len(), 3, self.frames, self.side, self.side];
        let run_err = |reason: String| InferError::Run {
            model: self.path.clone(),
            reason,
        };
        let tensor = TensorRef::from_array_view((shape, self.input_buf.as_slice()))
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| run_err(e.to_string()))?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| run_err(format!("no output `{}`", self.output)))?;
        let (out_shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| run_err(e.to_string()))?;
        if out_shape.len() != 2
            || out_shape[0] as usize != clips.len()
            || out_shape[1] as usize != self.classes
        {
            return Err(run_err(format!(
                "output `{}` has shape {:?}, expected [{}, {}]",
                self.output,
                &out_shape[..],
                clips.len(),
                self.classes
            )));
        }
        Ok(data
            .chunks_exact(self.classes)
            .map(<[f32]>::to_vec)
            .collect())
    }
}

/// Builds the classifier's session and checks the model against the clip settings.
pub fn load(
    env: &ort::environment::Environment,
    path: PathBuf,
    input: &str,
    output: &str,
    frames: usize,
    side: usize,
    opts: &infer::SessionOptions,
) -> Result<(Classifier, usize), InferError> {
    let session = infer::session(env, &path, opts)?;
    let contract = |reason: String| InferError::Contract {
        model: path.clone(),
        reason,
    };
    let i = infer::input_spec(&session, &path, input)?;
    infer::check_dims(
        &i,
        &[
            ("N", None),
            ("channels", Some(3)),
            ("frames", Some(frames as i64)),
            ("height", Some(side as i64)),
            ("width", Some(side as i64)),
        ],
    )
    .map_err(|e| contract(format!("input {e}")))?;
    let o = infer::output_spec(&session, &path, output)?;
    infer::check_dims(&o, &[("N", None), ("classes", None)])
        .map_err(|e| contract(format!("output {e}")))?;
    let classes =
        o.dims[1].ok_or_else(|| contract(format!("output {o} has no fixed class count")))? as usize;
    let model = path.clone();
    let mut c = Classifier::new(session, path, input, output, frames, side, classes);
    // Dynamic dimensions can still be too small for the network (I3D needs at least 9 frames):
    // one call on a blank clip finds out now rather than on the first real clip.
    let blank: super::clip::Crop = vec![0u8; side * side * 3].into();
    let probe = Clip {
        stream: 0,
        index: 0,
        frames: vec![blank; frames],
        start: 0.0,
        end: 0.0,
    };
    c.classify(&[&probe]).map_err(|e| InferError::Contract {
        model,
        reason: format!("does not accept a {frames}-frame clip of {side}x{side}: {e}"),
    })?;
    Ok((c, classes))
}

/// The worker loop; returns when every sender is gone, or on an inference error.
pub fn run<T: From<Scored>>(
    mut c: Classifier,
    rx: Receiver<ClipMsg>,
    tx: Sender<T>,
    max_batch: usize,
    max_wait: Duration,
    metrics: &Metrics,
) -> Result<(), InferError> {
    let depth = metrics.queue_depth.with_label_values(&["classifier"]);
    let seconds = metrics.inference_seconds.with_label_values(&[&c.name]);
    let batch_size = metrics.inference_batch.with_label_values(&[&c.name]);
    let mut batch: Vec<Clip> = Vec::with_capacity(max_batch);
    let mut ends: Vec<StreamEnd> = Vec::new();
    while let Ok(first) = rx.recv() {
        match first {
            ClipMsg::End(e) => ends.push(e),
            ClipMsg::Clip(clip) => {
                batch.push(clip);
                let deadline = Instant::now() + max_wait;
                while batch.len() < max_batch {
                    match rx.recv_deadline(deadline) {
                        Ok(ClipMsg::Clip(clip)) => batch.push(clip),
                        // An end closes the batch: it must reach the smoother after its clips.
                        Ok(ClipMsg::End(e)) => {
                            ends.push(e);
                            break;
                        }
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
        }
        depth.set(rx.len() as i64);
        if !batch.is_empty() {
            let refs: Vec<&Clip> = batch.iter().collect();
            let started = Instant::now();
            let probs = c.classify(&refs)?;
            seconds.observe(started.elapsed().as_secs_f64());
            batch_size.observe(batch.len() as f64);
            for (clip, probs) in batch.drain(..).zip(probs) {
                let span = Span {
                    start: clip.start,
                    end: clip.end,
                };
                if tx
                    .send(
                        Scored::Clip {
                            stream: clip.stream,
                            span,
                            probs,
                        }
                        .into(),
                    )
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        for e in ends.drain(..) {
            if tx.send(Scored::End(e).into()).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}
