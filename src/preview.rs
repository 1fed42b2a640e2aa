//! Live previews for the web console (`GET /v1/streams/{id}/preview`): a stream's latest
//! decoded frame with its face boxes, names and current action label drawn on it, as a JPEG.
//!
//! A preview nobody watches costs one atomic load per decoded frame: the decode stage, the
//! face worker and the events stage hand it their work only while someone has asked for it in
//! the last few seconds. It is drawn and encoded on request (JPEG polling), never per decoded
//! frame: a viewer polling at 4 fps costs four encodes a second whatever the camera's rate,
//! where an MJPEG stream would encode every frame it sends for each connection. Several
//! viewers of one frame share its encoding.

use crate::draw::{paint, FaceNote};
use opencv::core::{Mat, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a request keeps the preview fed.
const WATCH: Duration = Duration::from_secs(5);
/// While the face worker has examined a frame within this long, the preview shows its latest
/// examined frame with exactly its boxes (a second or two behind the newest decoded frame when
/// inference lags, rather than boxes drawn where faces were); otherwise the newest frame.
const FACE_HOLD: Duration = Duration::from_secs(2);
/// An action label older than this (media time after its clip's end) is not drawn.
const ACTION_HOLD: f64 = 6.0;
/// Frames wider than this are scaled down before drawing (the console shows previews about 400
/// pixels wide: drawn at full size, the lines would thin away when the page scales them).
const MAX_WIDTH: i32 = 640;
/// Tracks' names kept per stream (oldest forgotten first).
const MAX_NAMES: usize = 256;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A tracked face's box: (track id, [x1, y1, x2, y2]).
type TrackBox = (u64, [f32; 4]);

/// One stream's preview.
#[derive(Default)]
pub struct Preview {
    /// Milliseconds after [`epoch`] of the latest request, plus one (0: never asked for).
    asked: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The latest frame: (media time, image).
    frame: Option<(f64, Arc<Mat>)>,
    /// The latest frame the face worker examined: (when, media time, image, boxes).
    faces: Option<(Instant, f64, Arc<Mat>, Vec<TrackBox>)>,
    /// Names decided per track, in the order decided.
    names: HashMap<u64, String>,
    order: std::collections::VecDeque<u64>,
    /// The latest classified clip: (label, score, media time of its end).
    action: Option<(String, f32, f64)>,
    /// Bumped by every change, to reuse an encoding.
    version: u64,
    jpeg: Option<(u64, Arc<Vec<u8>>)>,
}

impl Preview {
    pub fn new() -> Preview {
        Preview::default()
    }

    /// Someone asked for the preview within the last few seconds.
    pub fn watched(&self) -> bool {
        let asked = self.asked.load(Ordering::Relaxed);
        asked != 0 && epoch().elapsed().as_millis() as u64 + 1 - asked < WATCH.as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A decoded frame at media time `pts` (kept by reference: nothing is copied).
    pub fn frame(&self, pts: f64, image: &Arc<Mat>) {
        let mut i = self.lock();
        i.frame = Some((pts, image.clone()));
        i.version += 1;
    }

    /// The tracked face boxes of an examined frame.
    pub fn faces(&self, pts: f64, image: &Arc<Mat>, boxes: Vec<TrackBox>) {
        let mut i = self.lock();
        i.faces = Some((Instant::now(), pts, image.clone(), boxes));
        i.version += 1;
    }

    /// A track's name was decided (`None`: unknown).
    pub fn named(&self, track_id: u64, identity: Option<&str>) {
        let mut i = self.lock();
        let name = identity.unwrap_or("unknown").to_string();
        if i.names.insert(track_id, name).is_none() {
            i.order.push_back(track_id);
            if i.order.len() > MAX_NAMES {
                if let Some(old) = i.order.pop_front() {
                    i.names.remove(&old);
                }
            }
        }
        i.version += 1;
    }

    /// A clip was classified: its best label and score, and the media time it ends at.
    pub fn action(&self, label: &str, score: f32, end: f64) {
        let mut i = self.lock();
        i.action = Some((label.to_string(), score, end));
        i.version += 1;
    }

    /// Marks the preview watched and gives the latest frame, annotated, as a JPEG (`None`
    /// until a frame has been decoded since someone first asked).
    pub fn jpeg(&self) -> opencv::Result<Option<Arc<Vec<u8>>>> {
        self.asked
            .store(epoch().elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        let (version, image, faces, action) = {
            let i = self.lock();
            if let Some((v, jpeg)) = &i.jpeg {
                if *v == i.version {
                    return Ok(Some(jpeg.clone()));
                }
            }
            let examined = i.faces.as_ref().filter(|f| f.0.elapsed() <= FACE_HOLD);
            let (pts, image, boxes) = match (examined, &i.frame) {
                (Some((_, pts, image, boxes)), _) => (*pts, image, &boxes[..]),
                (None, Some((pts, image))) => (*pts, image, &[][..]),
                (None, None) => return Ok(None),
            };
            let faces: Vec<FaceNote> = boxes
                .iter()
                .map(|&(track_id, bbox)| FaceNote {
                    track_id,
                    bbox,
                    label: i
                        .names
                        .get(&track_id)
                        .cloned()
                        .unwrap_or_else(|| "?".into()),
                })
                .collect();
            let action = i
                .action
                .clone()
                .filter(|(_, _, end)| pts - end <= ACTION_HOLD);
            (i.version, image.clone(), faces, action)
        };
        let (mut img, mut faces) = (Mat::default(), faces);
        if image.cols() > MAX_WIDTH {
            let k = MAX_WIDTH as f64 / image.cols() as f64;
            let h = (image.rows() as f64 * k).round() as i32;
            imgproc::resize(
                &*image,
                &mut img,
                Size::new(MAX_WIDTH, h.max(1)),
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )?;
            for f in &mut faces {
                f.bbox = f.bbox.map(|v| (v as f64 * k) as f32);
            }
        } else {
            img = image.try_clone()?;
        }
        // Lines of 3 pixels stay visible (and keep their colour through the JPEG's halved
        // colour resolution) when the page shows the preview smaller still.
        let action = action.as_ref().map(|(l, s, _)| (l.as_str(), *s));
        paint(&mut img, &faces, action, 3)?;
        let mut buf = Vector::<u8>::new();
        let params = Vector::from_slice(&[opencv::imgcodecs::IMWRITE_JPEG_QUALITY, 75]);
        opencv::imgcodecs::imencode(".jpg", &img, &mut buf, &params)?;
        let jpeg = Arc::new(buf.to_vec());
        let mut i = self.lock();
        if i.version == version {
            i.jpeg = Some((version, jpeg.clone()));
        }
        Ok(Some(jpeg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};

    fn gray(rows: i32, cols: i32, level: f64) -> Arc<Mat> {
        Arc::new(Mat::new_rows_cols_with_default(rows, cols, CV_8UC3, Scalar::all(level)).unwrap())
    }

    fn decode(jpeg: &[u8]) -> Mat {
        opencv::imgcodecs::imdecode(&Vector::from_slice(jpeg), opencv::imgcodecs::IMREAD_COLOR)
            .unwrap()
    }

    #[test]
    fn unwatched_until_asked_then_drawn_with_the_named_box() {
        let p = Preview::new();
        assert!(!p.watched());
        // Nothing is kept before anyone asks: the first request finds no frame.
        assert!(p.jpeg().unwrap().is_none());
        assert!(p.watched());
        p.frame(10.0, &gray(720, 960, 40.0));
        p.named(7, Some("Ada"));
        p.faces(
            9.8,
            &gray(720, 960, 40.0),
            vec![(7, [200.0, 150.0, 500.0, 450.0])],
        );
        let jpeg = p.jpeg().unwrap().expect("a frame");
        let img = decode(&jpeg);
        // Scaled to 640 wide, the box with it (200..500 becomes 133..333).
        assert_eq!((img.cols(), img.rows()), (640, 480));
        // The box's left edge is drawn in green over the gray frame; the centre of the box
        // and a corner far from it keep the frame's gray.
        let px = |x: i32, y: i32| *img.at_2d::<opencv::core::Vec3b>(y, x).unwrap();
        let edge = px(133, 200);
        assert!(edge[1] > 150 && edge[0] < 130, "box edge {edge:?}");
        let inside = px(233, 200);
        assert!((inside[1] as i32 - 40).abs() < 20, "inside {inside:?}");
        // A second request for the same frame reuses the encoding.
        assert!(Arc::ptr_eq(&jpeg, &p.jpeg().unwrap().unwrap()));
        // Without a fresh examined frame, the newest decoded frame shows, with no box.
        p.lock().faces.as_mut().unwrap().0 -= FACE_HOLD * 2;
        p.frame(20.0, &gray(720, 960, 40.0));
        let img = decode(&p.jpeg().unwrap().unwrap());
        let edge = *img.at_2d::<opencv::core::Vec3b>(200, 133).unwrap();
        assert!(
            (edge[1] as i32 - 40).abs() < 20,
            "stale box drawn: {edge:?}"
        );
    }

    #[test]
    fn wide_frames_are_scaled_down() {
        let p = Preview::new();
        let _ = p.jpeg();
        p.frame(0.0, &gray(1080, 1920, 90.0));
        let img = decode(&p.jpeg().unwrap().unwrap());
        assert_eq!((img.cols(), img.rows()), (640, 360));
    }
}
