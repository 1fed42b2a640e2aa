//! Face detection with five landmarks. [`Mtcnn`] is the three-network cascade (P-Net over an
//! image pyramid, then R-Net and O-Net on candidate crops) with the box arithmetic of
//! facenet-pytorch's `detect_face`, so the converted networks give the boxes they were trained
//! to give. Other ONNX detectors implement [`FaceDetector`].

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

/// The MTCNN cascade over three ONNX networks.
pub struct Mtcnn {
    pnet: Net,
    rnet: Net,
    onet: Net,
    params: MtcnnParams,
    buf: Vec<f32>,
}

/// A candidate: box corners, score, and the regression that refines it.
#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
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
        Ok(Mtcnn {
            pnet: Net::load(env, pnet, opts)?,
            rnet: Net::load(env, rnet, opts)?,
            onet: Net::load(env, onet, opts)?,
            params,
            buf: Vec::new(),
        })
    }
}

/// Appends a BGR 8-bit image as planar RGB floats.
fn push_planar_rgb(img: &Mat, out: &mut Vec<f32>) -> opencv::Result<()> {
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

impl Mtcnn {
    /// Crops every candidate (clamped to the image, 1-based as in the reference), resizes to
    /// `side` and stacks them as one batch.
    fn crops(&mut self, img: &Mat, cands: &[Cand], side: i32) -> Result<(), InferError> {
        let (w, h) = (img.cols(), img.rows());
        self.buf.clear();
        let mut small = Mat::default();
        for c in cands {
            let x = (c.b[0].trunc() as i32).max(1);
            let y = (c.b[1].trunc() as i32).max(1);
            let ex = (c.b[2].trunc() as i32).min(w);
            let ey = (c.b[3].trunc() as i32).min(h);
            let rect = Rect::new(x - 1, y - 1, (ex - x + 1).max(1), (ey - y + 1).max(1));
            let rect = rect & Rect::new(0, 0, w, h);
            if rect.width <= 0 || rect.height <= 0 {
                self.buf
                    .resize(self.buf.len() + (3 * side * side) as usize, 0.0);
                continue;
            }
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
            push_planar_rgb(&small, &mut self.buf).map_err(cv_err)?;
        }
        Ok(())
    }

    fn stage1(&mut self, img: &Mat) -> Result<Vec<Cand>, InferError> {
        let p = self.params.clone();
        let (w, h) = (img.cols() as f32, img.rows() as f32);
        let m = 12.0 / p.min_face_px;
        let mut minl = w.min(h) * m;
        let mut scale = m;
        let mut all = Vec::new();
        let mut scaled = Mat::default();
        while minl >= 12.0 {
            let (hs, ws) = ((h * scale + 1.0) as i32, (w * scale + 1.0) as i32);
            imgproc::resize(
                img,
                &mut scaled,
                Size::new(ws, hs),
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )
            .map_err(cv_err)?;
            self.buf.clear();
            push_planar_rgb(&scaled, &mut self.buf).map_err(cv_err)?;
            let buf = std::mem::take(&mut self.buf);
            let out = self
                .pnet
                .run(&buf, [1, 3, hs as usize, ws as usize], &["reg", "prob"]);
            self.buf = buf;
            let out = out?;
            let (reg, prob) = (&out[0].1, &out[1]);
            let (oh, ow) = (prob.0[2], prob.0[3]);
            let plane = oh * ow;
            let mut found = Vec::new();
            for yy in 0..oh {
                for xx in 0..ow {
                    let i = yy * ow + xx;
                    let score = prob.1[plane + i];
                    if score < p.thresholds[0] {
                        continue;
                    }
                    let (bx, by) = (xx as f32, yy as f32);
                    let q1 = [
                        ((2.0 * bx + 1.0) / scale).floor(),
                        ((2.0 * by + 1.0) / scale).floor(),
                    ];
                    let q2 = [
                        ((2.0 * bx + 12.0) / scale).floor(),
                        ((2.0 * by + 12.0) / scale).floor(),
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
            all.extend(found);
            scale *= p.scale_factor;
            minl *= p.scale_factor;
        }
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
}

impl FaceDetector for Mtcnn {
    fn detect(&mut self, img: &Mat) -> Result<Vec<Detection>, InferError> {
        let cands = self.stage1(img)?;
        self.refine(img, cands)
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
        self.crops(img, &cands, 24)?;
        let buf = std::mem::take(&mut self.buf);
        let out = self
            .rnet
            .run(&buf, [cands.len(), 3, 24, 24], &["reg", "prob"]);
        self.buf = buf;
        let out = out?;
        let mut kept = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            let score = out[1].1[i * 2 + 1];
            if score > p.thresholds[1] {
                kept.push(Cand {
                    b: c.b,
                    score,
                    reg: out[0].1[i * 4..][..4].try_into().expect("4 values"),
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
        self.crops(img, &cands, 48)?;
        let buf = std::mem::take(&mut self.buf);
        let out = self.onet.run(
            &buf,
            [cands.len(), 3, 48, 48],
            &["reg", "landmarks", "prob"],
        );
        self.buf = buf;
        let out = out?;
        let mut faces: Vec<(Cand, [[f32; 2]; 5])> = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            let score = out[2].1[i * 2 + 1];
            if score <= p.thresholds[2] {
                continue;
            }
            let lm = &out[1].1[i * 10..][..10];
            let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
            let mut pts = [[0.0f32; 2]; 5];
            for k in 0..5 {
                pts[k] = [w * lm[k] + c.b[0] - 1.0, h * lm[k + 5] + c.b[1] - 1.0];
            }
            let mut c = Cand {
                b: c.b,
                score,
                reg: out[0].1[i * 4..][..4].try_into().expect("4 values"),
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
