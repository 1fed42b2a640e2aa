//! Face boxes and an action label drawn on a frame, for annotated videos (`annotate`) and the
//! console's live previews (`preview`).

use opencv::core::{Mat, Point, Rect, Scalar};
use opencv::imgproc;
use opencv::prelude::*;

/// A face box as drawn.
#[derive(Debug, Clone)]
pub struct FaceNote {
    pub track_id: u64,
    pub bbox: [f32; 4],
    /// The name decided for the track so far: a person, `unknown`, or `?` (undecided).
    pub label: String,
}

/// Draws face boxes (green when named, amber when unknown or undecided) with their track ids
/// and names, and an action label with its score at the top left; lines are at least
/// `min_thick` pixels wide.
pub fn paint(
    img: &mut Mat,
    faces: &[FaceNote],
    action: Option<(&str, f32)>,
    min_thick: i32,
) -> opencv::Result<()> {
    let green = Scalar::new(80.0, 220.0, 80.0, 0.0);
    let amber = Scalar::new(0.0, 190.0, 255.0, 0.0);
    let white = Scalar::new(255.0, 255.0, 255.0, 0.0);
    let black = Scalar::new(0.0, 0.0, 0.0, 0.0);
    let scale = (img.rows() as f64 / 720.0).max(0.5);
    let thick = ((2.0 * scale).round() as i32).max(min_thick);
    let text = |img: &mut Mat, s: &str, at: Point, color: Scalar| -> opencv::Result<()> {
        let mut base = 0;
        let size = imgproc::get_text_size(
            s,
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.7 * scale,
            thick,
            &mut base,
        )?;
        imgproc::rectangle(
            img,
            Rect::new(
                at.x,
                at.y - size.height - 6,
                size.width + 8,
                size.height + 10,
            ),
            color,
            -1,
            imgproc::LINE_8,
            0,
        )?;
        imgproc::put_text(
            img,
            s,
            Point::new(at.x + 4, at.y),
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.7 * scale,
            black,
            thick,
            imgproc::LINE_AA,
            false,
        )
    };
    for f in faces {
        let [x1, y1, x2, y2] = f.bbox.map(|v| v.round() as i32);
        let color = if f.label == "?" || f.label == "unknown" {
            amber
        } else {
            green
        };
        imgproc::rectangle(
            img,
            Rect::new(x1, y1, (x2 - x1).max(1), (y2 - y1).max(1)),
            color,
            thick,
            imgproc::LINE_8,
            0,
        )?;
        let label = format!("#{} {}", f.track_id, f.label);
        text(img, &label, Point::new(x1, (y1 - 4).max(24)), color)?;
    }
    if let Some((label, score)) = action {
        let s = format!("{label} {score:.2}");
        text(img, &s, Point::new(12, (36.0 * scale) as i32), white)?;
    }
    Ok(())
}
