//! Face detection with five landmarks. [`Mtcnn`] is the three-network cascade (P-Net over an
//! image pyramid, then R-Net and O-Net on candidate crops) with the box arithmetic of
//! facenet-pytorch's `detect_face`, so the converted networks give the boxes they were trained
//! to give. Other ONNX detectors implement [`FaceDetector`].

use super::area;
use crate::infer::{self, InferError};
use opencv::core::{Mat, Rect, Size};
use opencv::imgproc;
use opencv::prelude::*;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

/// One face: box corners in image pixels, probability, and landmarks (left eye, right eye,
/// nose, left and right mouth corners; left/right as seen in the image).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub bbox: [f32; 4],
    pub prob: f32,
    pub landmarks: [[f32; 2]; 5],
}

impl Detection {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// Anything that finds faces with five landmarks in a BGR image.
pub trait FaceDetector: Send {
    fn detect(&mut self, bgr: &Mat) -> Result<Vec<Detection>, InferError>;

    /// Finds the faces again near `boxes` (where tracked faces were a frame ago), without a
    /// full search. Detectors without a cheaper way search the whole image.
    fn redetect(&mut self, bgr: &Mat, boxes: &[[f32; 4]]) -> Result<Vec<Detection>, InferError> {
        let _ = boxes;
        self.detect(bgr)
    }

    /// Lowers the priority of the threads the detector keeps of its own by `nice` (the calling
    /// thread's is the caller's to set).
    fn lower_priority(&mut self, nice: i32) {
        let _ = nice;
    }
}

/// MTCNN settings (see `faces.detector` in docs/config.md).
#[derive(Debug, Clone)]
pub struct MtcnnParams {
    pub min_face_px: f32,
    pub scale_factor: f32,
    pub thresholds: [f32; 3],
    /// Faces below this final O-Net probability are dropped.
    pub min_probability: f32,
}

/// Each requested output: its shape and its values.
type Outputs = Vec<(Vec<usize>, Vec<f32>)>;

struct Net {
    session: Session,
    path: PathBuf,
}

impl Net {
    fn load(
        env: &ort::environment::Environment,
        path: &Path,
        opts: &infer::SessionOptions,
    ) -> Result<Net, InferError> {
        let session = infer::session(env, path, opts)?;
        infer::input_spec(&session, path, "image")?;
        Ok(Net {
            session,
            path: path.to_path_buf(),
        })
    }

    /// Runs on `[n, 3, h, w]` and returns the named outputs, flattened, with their shapes.
    fn run(
        &mut self,
        input: &[f32],
        shape: [usize; 4],
        outputs: &[&str],
    ) -> Result<Outputs, InferError> {
        let err = |reason: String| InferError::Run {
            model: self.path.clone(),
            reason,
        };
        let t = TensorRef::from_array_view((shape, input)).map_err(|e| err(e.to_string()))?;
        let out = self
            .session
            .run(ort::inputs!["image" => t])
            .map_err(|e| err(e.to_string()))?;
        outputs
            .iter()
            .map(|name| {
                let v = out
                    .get(*name)
                    .ok_or_else(|| err(format!("no output `{name}`")))?;
                let (s, d) = v
                    .try_extract_tensor::<f32>()
                    .map_err(|e| err(e.to_string()))?;
                Ok((s.iter().map(|&x| x as usize).collect(), d.to_vec()))
            })
            .collect()
    }
}

/// The three networks once, with the buffers one thread needs to run them.
struct Lane {
    pnet: Net,
    rnet: Net,
    onet: Net,
    buf: Vec<f32>,
    /// The area resize's buffers, reused over the lane's levels and crops.
    shrink: area::Scratch,
}

/// The MTCNN cascade over three ONNX networks. On the CPU, one search is split over lanes:
/// each lane has its own single-threaded sessions, and the lanes run the pyramid's levels and
/// the halves of a R-Net or O-Net batch side by side. Small convolutions keep two threads of one
/// session waiting on each other; two sessions on two threads do not (measured on the Hamilton
/// clip: docs/config.md#faces).
pub struct Mtcnn {
    /// The lane this (the face worker's) thread runs.
    local: Lane,
    /// The other lanes, each on a thread of its own for the detector's life (a thread per call
    /// would give ONNX Runtime's per-thread buffers back and take them again every frame:
    /// resident memory crept up by 50 MiB over 950 streams added and removed).
    workers: Vec<Worker>,
    params: MtcnnParams,
}

/// A candidate: box corners, score, and the regression that refines it.
#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// Most lanes one search is split over.
const MAX_LANES: usize = 4;

/// Lanes for these session options: one per intra-op thread on the CPU (0: one per core, at
/// most [`MAX_LANES`]), each lane's sessions single-threaded; a GPU provider keeps one lane.
fn lanes_for(opts: &infer::SessionOptions) -> (usize, infer::SessionOptions) {
    if opts.provider != crate::config::ExecutionProvider::Cpu || opts.intra_threads == 1 {
        return (1, opts.clone());
    }
    let n = match opts.intra_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let one = infer::SessionOptions {
        intra_threads: 1,
        ..opts.clone()
    };
    (n.clamp(1, MAX_LANES), one)
}

impl Mtcnn {
    pub fn load(
        env: &ort::environment::Environment,
        pnet: &Path,
        rnet: &Path,
        onet: &Path,
        params: MtcnnParams,
        opts: &infer::SessionOptions,
    ) -> Result<Mtcnn, InferError> {
        let (n, lane_opts) = lanes_for(opts);
        let lane = || -> Result<Lane, InferError> {
            Ok(Lane {
                pnet: Net::load(env, pnet, &lane_opts)?,
                rnet: Net::load(env, rnet, &lane_opts)?,
                onet: Net::load(env, onet, &lane_opts)?,
                buf: Vec::new(),
                shrink: area::Scratch::default(),
            })
        };
        let local = lane()?;
        let workers = (1..n)
            .map(|i| {
                Worker::start(lane()?, format!("face-lane{i}")).map_err(|e| InferError::Run {
                    model: pnet.to_path_buf(),
                    reason: format!("cannot start a detector lane's thread: {e}"),
                })
            })
            .collect::<Result<_, InferError>>()?;
        Ok(Mtcnn {
            local,
            workers,
            params,
        })
    }
}

/// Appends a BGR 8-bit image as planar RGB floats.
pub(super) fn push_planar_rgb(img: &Mat, out: &mut Vec<f32>) -> opencv::Result<()> {
    let (w, h) = (img.cols() as usize, img.rows() as usize);
    let start = out.len();
    out.resize(start + 3 * w * h, 0.0);
    let step = img.mat_step().first().copied().unwrap_or(w * 3);
    let data = img.data_bytes()?;
    let planes = &mut out[start..];
    let (r, rest) = planes.split_at_mut(w * h);
    let (g, b) = rest.split_at_mut(w * h);
    for y in 0..h {
        let row = &data[y * step..][..w * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let i = y * w + x;
            b[i] = px[0] as f32;
            g[i] = px[1] as f32;
            r[i] = px[2] as f32;
        }
    }
    Ok(())
}

fn cv_err(e: opencv::Error) -> InferError {
    InferError::Run {
        model: PathBuf::from("opencv"),
        reason: e.message,
    }
}

/// Greedy non-maximum suppression. Like the reference, the intersection-over-union steps use
/// plain areas (torchvision's NMS) and the final intersection-over-minimum step counts pixels
/// inclusively (+1), as the original MATLAB code did.
fn nms(c: &mut Vec<Cand>, threshold: f32, min: bool) {
    c.sort_by(|a, b| b.score.total_cmp(&a.score));
    let one = if min { 1.0 } else { 0.0 };
    let area = |b: &[f32; 4]| (b[2] - b[0] + one) * (b[3] - b[1] + one);
    let mut keep: Vec<Cand> = Vec::with_capacity(c.len());
    'next: for cand in c.drain(..) {
        for k in &keep {
            let w = (k.b[2].min(cand.b[2]) - k.b[0].max(cand.b[0]) + one).max(0.0);
            let h = (k.b[3].min(cand.b[3]) - k.b[1].max(cand.b[1]) + one).max(0.0);
            let inter = w * h;
            let o = if min {
                inter / area(&k.b).min(area(&cand.b))
            } else {
                inter / (area(&k.b) + area(&cand.b) - inter)
            };
            if o > threshold {
                continue 'next;
            }
        }
        keep.push(cand);
    }
    *c = keep;
}

/// Applies the regression to the box (widths counted inclusively, as the nets were trained).
fn bbreg(c: &mut Cand) {
    let w = c.b[2] - c.b[0] + 1.0;
    let h = c.b[3] - c.b[1] + 1.0;
    c.b = [
        c.b[0] + c.reg[0] * w,
        c.b[1] + c.reg[1] * h,
        c.b[2] + c.reg[2] * w,
        c.b[3] + c.reg[3] * h,
    ];
}

/// Makes the box square around its centre.
fn rerec(c: &mut Cand) {
    let w = c.b[2] - c.b[0];
    let h = c.b[3] - c.b[1];
    let l = w.max(h);
    c.b[0] += w * 0.5 - l * 0.5;
    c.b[1] += h * 0.5 - l * 0.5;
    c.b[2] = c.b[0] + l;
    c.b[3] = c.b[1] + l;
}

/// Crops every candidate (clamped to the image, 1-based as in the reference), resizes to
/// `side` and appends them to `out` as one batch.
fn crops(
    img: &Mat,
    cands: &[Cand],
    side: i32,
    out: &mut Vec<f32>,
    scratch: &mut area::Scratch,
) -> Result<(), InferError> {
    let (w, h) = (img.cols(), img.rows());
    let mut small = Mat::default();
    let whole = whole(img);
    for c in cands {
        let x = (c.b[0].trunc() as i32).max(1);
        let y = (c.b[1].trunc() as i32).max(1);
        let ex = (c.b[2].trunc() as i32).min(w);
        let ey = (c.b[3].trunc() as i32).min(h);
        let rect = Rect::new(x - 1, y - 1, (ex - x + 1).max(1), (ey - y + 1).max(1));
        let rect = rect & Rect::new(0, 0, w, h);
        if rect.width <= 0 || rect.height <= 0 {
            out.resize(out.len() + (3 * side * side) as usize, 0.0);
            continue;
        }
        let shrunk = whole.as_ref().is_some_and(|v| {
            let part = v.part(rect.x, rect.y, rect.width, rect.height);
            area::shrink_to_planar_rgb(&part, side as usize, side as usize, out, scratch)
        });
        if !shrunk {
            let roi = Mat::roi(img, rect).map_err(cv_err)?;
            imgproc::resize(
                &roi,
                &mut small,
                Size::new(side, side),
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )
            .map_err(cv_err)?;
            push_planar_rgb(&small, out).map_err(cv_err)?;
        }
    }
    Ok(())
}

/// The whole of `img` for [`area::shrink_to_planar_rgb`], when it is a continuous BGR 8-bit
/// image (a decoded frame); otherwise OpenCV resizes it.
fn whole(img: &Mat) -> Option<area::View<'_>> {
    if img.typ() != opencv::core::CV_8UC3 || !img.is_continuous() {
        return None;
    }
    let (w, h) = (img.cols() as usize, img.rows() as usize);
    let data = img.data_bytes().ok()?;
    (data.len() >= w * h * 3).then_some(area::View {
        data,
        step: w * 3,
        x: 0,
        y: 0,
        w,
        h,
    })
}

/// One level of the image pyramid: its place in the pyramid, scale and size.
#[derive(Debug, Clone, Copy)]
struct Level {
    index: usize,
    scale: f32,
    w: i32,
    h: i32,
}

/// The pyramid's levels for an image of `w` x `h`, as the reference makes them.
fn levels(w: f32, h: f32, p: &MtcnnParams) -> Vec<Level> {
    let m = 12.0 / p.min_face_px;
    let mut minl = w.min(h) * m;
    let mut scale = m;
    let mut out = Vec::new();
    while minl >= 12.0 {
        out.push(Level {
            index: out.len(),
            scale,
            w: (w * scale + 1.0) as i32,
            h: (h * scale + 1.0) as i32,
        });
        scale *= p.scale_factor;
        minl *= p.scale_factor;
    }
    out
}

/// Shares `levels` out over `n` lanes, largest first to the least loaded, so each lane gets
/// about the same number of pixels to search.
fn share_levels(levels: &[Level], n: usize) -> Vec<Vec<Level>> {
    let mut by_size = levels.to_vec();
    by_size.sort_by_key(|l| std::cmp::Reverse(l.w * l.h));
    let mut shares: Vec<(i64, Vec<Level>)> = vec![(0, Vec::new()); n.max(1)];
    for l in by_size {
        let lane = shares
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one lane");
        lane.0 += (l.w * l.h) as i64;
        lane.1.push(l);
    }
    shares
        .into_iter()
        .map(|(_, l)| l)
        .filter(|l| !l.is_empty())
        .collect()
}

/// A job for a lane's thread. Its borrows are only as long as [`on_lanes`] waits.
type Job = Box<dyn FnOnce(&mut Lane) + Send + 'static>;

/// A lane on a thread of its own: takes one job at a time and says when it is done (or
/// panicked) on `done`.
struct Worker {
    jobs: Option<crossbeam_channel::Sender<Job>>,
    done: crossbeam_channel::Receiver<std::thread::Result<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(mut lane: Lane, name: String) -> std::io::Result<Worker> {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(1);
        let (tx, done) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for job in rx {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut lane)));
                if tx.send(r).is_err() {
                    break;
                }
            }
        })?;
        Ok(Worker {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` once per job, each on its own lane: the first on this thread, the others on the
/// workers' threads; results in job order. There are never more jobs than lanes. A panic in
/// any lane is raised here once every lane is done.
fn on_lanes<J: Send, T: Send>(
    local: &mut Lane,
    workers: &[Worker],
    jobs: Vec<J>,
    f: impl Fn(&mut Lane, J) -> T + Sync,
) -> Vec<T> {
    debug_assert!(jobs.len() <= workers.len() + 1);
    let f = &f;
    let mut jobs = jobs.into_iter();
    let first = jobs.next();
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        jobs.as_slice().iter().map(|_| Default::default()).collect();
    let mut sent = 0;
    let mut failed: Option<Box<dyn std::any::Any + Send>> = None;
    for ((w, job), slot) in workers.iter().zip(jobs).zip(&slots) {
        let task: Box<dyn FnOnce(&mut Lane) + Send + '_> = Box::new(move |lane: &mut Lane| {
            let out = f(lane, job);
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(out);
        });
        // SAFETY: the task borrows `f`, `slot` and what `job` borrows, all of which outlive
        // this call; the call does not return or unwind before `done` has answered for every
        // task sent (below), and a worker answers only after its task has finished or
        // panicked. Only the lifetime is changed, not the type.
        let task: Job = unsafe { std::mem::transmute(task) };
        match w.jobs.as_ref().map(|tx| tx.send(task)) {
            Some(Ok(())) => sent += 1,
            _ => {
                failed = Some(Box::new("a face detector lane's thread has stopped"));
                break;
            }
        }
    }
    let mine = first
        .map(|job| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *local, job))));
    for w in &workers[..sent] {
        match w.done.recv() {
            Ok(Ok(())) => {}
            Ok(Err(p)) => {
                failed.get_or_insert(p);
            }
            Err(_) => {
                failed.get_or_insert(Box::new("a face detector lane's thread has stopped"));
            }
        }
    }
    let mut out = Vec::with_capacity(slots.len() + 1);
    match mine {
        Some(Ok(v)) => out.push(v),
        Some(Err(p)) => std::panic::resume_unwind(p),
        None => {}
    }
    if let Some(p) = failed {
        std::panic::resume_unwind(p);
    }
    for slot in slots {
        out.push(
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every lane answered"),
        );
    }
    out
}

/// Which of a lane's networks a batch goes to.
#[derive(Clone, Copy)]
enum Stage {
    Rnet,
    Onet,
}

impl Stage {
    /// The side of the network's square input.
    fn side(self) -> i32 {
        match self {
            Stage::Rnet => 24,
            Stage::Onet => 48,
        }
    }

    /// The outputs read from it, in the order `refine` uses them.
    fn outputs(self) -> &'static [&'static str] {
        match self {
            Stage::Rnet => &["reg", "prob"],
            Stage::Onet => &["reg", "landmarks", "prob"],
        }
    }
}

impl Lane {
    /// P-Net over `levels` of `img`: each level's candidates after its own NMS.
    fn pnet_levels(
        &mut self,
        img: &Mat,
        levels: &[Level],
        threshold: f32,
    ) -> Result<Vec<(usize, Vec<Cand>)>, InferError> {
        let mut scaled = Mat::default();
        let mut out = Vec::with_capacity(levels.len());
        let whole = whole(img);
        for l in levels {
            self.buf.clear();
            let shrunk = whole.as_ref().is_some_and(|v| {
                let (w, h) = (l.w as usize, l.h as usize);
                area::shrink_to_planar_rgb(v, w, h, &mut self.buf, &mut self.shrink)
            });
            if !shrunk {
                imgproc::resize(
                    img,
                    &mut scaled,
                    Size::new(l.w, l.h),
                    0.0,
                    0.0,
                    imgproc::INTER_AREA,
                )
                .map_err(cv_err)?;
                push_planar_rgb(&scaled, &mut self.buf).map_err(cv_err)?;
            }
            let res = self.pnet.run(
                &self.buf,
                [1, 3, l.h as usize, l.w as usize],
                &["reg", "prob"],
            )?;
            let (reg, prob) = (&res[0].1, &res[1]);
            let (oh, ow) = (prob.0[2], prob.0[3]);
            let plane = oh * ow;
            let mut found = Vec::new();
            for yy in 0..oh {
                for xx in 0..ow {
                    let i = yy * ow + xx;
                    let score = prob.1[plane + i];
                    if score < threshold {
                        continue;
                    }
                    let (bx, by) = (xx as f32, yy as f32);
                    let q1 = [
                        ((2.0 * bx + 1.0) / l.scale).floor(),
                        ((2.0 * by + 1.0) / l.scale).floor(),
                    ];
                    let q2 = [
                        ((2.0 * bx + 12.0) / l.scale).floor(),
                        ((2.0 * by + 12.0) / l.scale).floor(),
                    ];
                    found.push(Cand {
                        b: [q1[0], q1[1], q2[0], q2[1]],
                        score,
                        reg: [
                            reg[i],
                            reg[plane + i],
                            reg[2 * plane + i],
                            reg[3 * plane + i],
                        ],
                    });
                }
            }
            nms(&mut found, 0.5, false);
            out.push((l.index, found));
        }
        Ok(out)
    }

    /// Crops of `cands` through R-Net or O-Net: its outputs' values.
    fn batch(
        &mut self,
        img: &Mat,
        cands: &[Cand],
        stage: Stage,
    ) -> Result<Vec<Vec<f32>>, InferError> {
        let side = stage.side();
        self.buf.clear();
        crops(img, cands, side, &mut self.buf, &mut self.shrink)?;
        let net = match stage {
            Stage::Rnet => &mut self.rnet,
            Stage::Onet => &mut self.onet,
        };
        let shape = [cands.len(), 3, side as usize, side as usize];
        Ok(net
            .run(&self.buf, shape, stage.outputs())?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}

/// Below this many candidates a R-Net or O-Net batch stays on one lane.
const SPLIT_FROM: usize = 8;

impl Mtcnn {
    fn stage1(&mut self, img: &Mat) -> Result<Vec<Cand>, InferError> {
        let threshold = self.params.thresholds[0];
        let levels = levels(img.cols() as f32, img.rows() as f32, &self.params);
        let shares = share_levels(&levels, 1 + self.workers.len());
        let mut per_level: Vec<(usize, Vec<Cand>)> = Vec::with_capacity(levels.len());
        for r in on_lanes(&mut self.local, &self.workers, shares, |lane, share| {
            lane.pnet_levels(img, &share, threshold)
        }) {
            per_level.extend(r?);
        }
        // In pyramid order, as one search over the levels in turn would give them.
        per_level.sort_by_key(|(i, _)| *i);
        let mut all: Vec<Cand> = per_level.into_iter().flat_map(|(_, c)| c).collect();
        nms(&mut all, 0.7, false);
        for c in &mut all {
            let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            c.b = [
                c.b[0] + c.reg[0] * rw,
                c.b[1] + c.reg[1] * rh,
                c.b[2] + c.reg[2] * rw,
                c.b[3] + c.reg[3] * rh,
            ];
            rerec(c);
        }
        Ok(all)
    }

    /// R-Net or O-Net over `cands`, split over the lanes when there are enough of them; each
    /// output's values in candidate order.
    fn spread(
        &mut self,
        img: &Mat,
        cands: &[Cand],
        stage: Stage,
    ) -> Result<Vec<Vec<f32>>, InferError> {
        let n = if cands.len() < SPLIT_FROM {
            1
        } else {
            1 + self.workers.len()
        };
        let chunks: Vec<&[Cand]> = cands.chunks(cands.len().div_ceil(n).max(1)).collect();
        let mut joined = vec![Vec::new(); stage.outputs().len()];
        for r in on_lanes(&mut self.local, &self.workers, chunks, |lane, chunk| {
            lane.batch(img, chunk, stage)
        }) {
            for (all, part) in joined.iter_mut().zip(r?) {
                all.extend(part);
            }
        }
        Ok(joined)
    }
}

impl FaceDetector for Mtcnn {
    fn detect(&mut self, img: &Mat) -> Result<Vec<Detection>, InferError> {
        let cands = self.stage1(img)?;
        self.refine(img, cands)
    }

    fn lower_priority(&mut self, nice: i32) {
        // The first job runs on the calling thread, which is left alone; one per worker lane.
        let lower: Vec<bool> = (0..=self.workers.len()).map(|i| i > 0).collect();
        on_lanes(&mut self.local, &self.workers, lower, |_, lower| {
            if lower {
                crate::stage::lower_priority(nice, "face detector lane");
            }
        });
    }

    /// Starts the cascade at R-Net from the previous boxes, squared and widened by a fifth so a
    /// moving face is still inside: the pyramid search, most of the cost, is skipped.
    fn redetect(&mut self, img: &Mat, boxes: &[[f32; 4]]) -> Result<Vec<Detection>, InferError> {
        let cands = boxes
            .iter()
            .map(|b| {
                let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                let half = 0.6 * (b[2] - b[0]).max(b[3] - b[1]);
                Cand {
                    b: [cx - half, cy - half, cx + half, cy + half],
                    score: 1.0,
                    reg: [0.0; 4],
                }
            })
            .collect();
        self.refine(img, cands)
    }
}

impl Mtcnn {
    /// R-Net and O-Net over the candidates.
    fn refine(&mut self, img: &Mat, mut cands: Vec<Cand>) -> Result<Vec<Detection>, InferError> {
        let p = self.params.clone();
        if cands.is_empty() {
            return Ok(vec![]);
        }
        // R-Net refines and rejects.
        let out = self.spread(img, &cands, Stage::Rnet)?;
        let mut kept = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            let score = out[1][i * 2 + 1];
            if score > p.thresholds[1] {
                kept.push(Cand {
                    b: c.b,
                    score,
                    reg: out[0][i * 4..][..4].try_into().expect("4 values"),
                });
            }
        }
        nms(&mut kept, 0.7, false);
        for c in &mut kept {
            bbreg(c);
            rerec(c);
        }
        cands = kept;
        if cands.is_empty() {
            return Ok(vec![]);
        }
        // O-Net gives the final box, probability and landmarks.
        let out = self.spread(img, &cands, Stage::Onet)?;
        let mut faces: Vec<(Cand, [[f32; 2]; 5])> = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            let score = out[2][i * 2 + 1];
            if score <= p.thresholds[2] {
                continue;
            }
            let lm = &out[1][i * 10..][..10];
            let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
            let mut pts = [[0.0f32; 2]; 5];
            for k in 0..5 {
                pts[k] = [w * lm[k] + c.b[0] - 1.0, h * lm[k + 5] + c.b[1] - 1.0];
            }
            let mut c = Cand {
                b: c.b,
                score,
                reg: out[0][i * 4..][..4].try_into().expect("4 values"),
            };
            bbreg(&mut c);
            faces.push((c, pts));
        }
        // NMS with the "Min" overlap, carrying landmarks along.
        faces.sort_by(|a, b| b.0.score.total_cmp(&a.0.score));
        let mut cands: Vec<Cand> = faces.iter().map(|f| f.0).collect();
        nms(&mut cands, 0.7, true);
        let dets = faces
            .into_iter()
            .filter(|(c, _)| cands.iter().any(|k| k.b == c.b && k.score == c.score))
            .filter(|(c, _)| c.score >= p.min_probability)
            .map(|(c, landmarks)| Detection {
                bbox: c.b,
                prob: c.score,
                landmarks,
            })
            .collect();
        Ok(dets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let c = |b: [f32; 4], score| Cand {
            b,
            score,
            reg: [0.0; 4],
        };
        let mut v = vec![
            c([0.0, 0.0, 10.0, 10.0], 0.8),
            c([1.0, 1.0, 11.0, 11.0], 0.9),
            c([50.0, 50.0, 60.0, 60.0], 0.7),
        ];
        nms(&mut v, 0.5, false);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].score, 0.9);
        assert_eq!(v[1].b[0], 50.0);
    }

    #[test]
    fn the_pyramid_is_shared_over_lanes_by_pixels_and_every_level_once() {
        let p = MtcnnParams {
            min_face_px: 20.0,
            scale_factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
            min_probability: 0.95,
        };
        let all = levels(640.0, 360.0, &p);
        // 360 * 0.6 = 216 shrinking by 0.709 while at least 12: 9 levels, the first 385x217.
        assert_eq!(all.len(), 9);
        assert_eq!((all[0].w, all[0].h), (385, 217));
        for n in 1..=4 {
            let shares = share_levels(&all, n);
            assert_eq!(shares.len(), n.min(all.len()));
            let mut seen: Vec<usize> = shares.iter().flatten().map(|l| l.index).collect();
            seen.sort();
            assert_eq!(seen, (0..all.len()).collect::<Vec<_>>());
            let load = |s: &Vec<Level>| s.iter().map(|l| l.w * l.h).sum::<i32>();
            let (lo, hi) = (
                shares.iter().map(load).min().unwrap(),
                shares.iter().map(load).max().unwrap(),
            );
            // No lane gets more than the largest level beyond the least loaded one.
            assert!(hi - lo <= all[0].w * all[0].h, "{n} lanes: {lo}..{hi}");
        }
        // Two lanes: the first level (83,545 pixels) weighs about as much as all the others together
        // (84,240), so it shares its lane only with the smallest (350), which comes last.
        let two = share_levels(&all, 2);
        assert_eq!(two[0].iter().map(|l| l.index).collect::<Vec<_>>(), [0, 8]);
    }

    #[test]
    fn rerec_makes_a_square_around_the_centre() {
        let mut c = Cand {
            b: [10.0, 20.0, 30.0, 60.0],
            score: 1.0,
            reg: [0.0; 4],
        };
        rerec(&mut c);
        assert_eq!(c.b, [0.0, 20.0, 40.0, 60.0]);
    }
}
