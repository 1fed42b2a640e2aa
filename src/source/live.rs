//! Cameras and network streams: RTSP, HTTP (MJPEG, HLS) through OpenCV's FFmpeg backend, and
//! V4L2 devices. Every open and every read has a deadline, so a dead or frozen camera is noticed
//! and reconnected by the [`super::supervisor`] instead of blocking for minutes.

use super::url::{scrub, SourceKind};
use super::{LiveSource, Lost, LostFrame, SourceError, VideoInfo};
use crate::config::{LiveConfig, RtspTransport};
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use std::time::{Duration, Instant};

/// The environment variable through which OpenCV passes options to FFmpeg. Setting it replaces
/// OpenCV's own default, so the transport must be part of it.
pub const FFMPEG_OPTIONS: &str = "OPENCV_FFMPEG_CAPTURE_OPTIONS";

/// Sets FFmpeg's capture options for this process (RTSP transport). Call before any thread is
/// started: OpenCV reads the variable at every open, and the environment is process-wide. A value
/// the user exported already is kept.
pub fn configure_ffmpeg(cfg: &LiveConfig) {
    if let Ok(v) = std::env::var(FFMPEG_OPTIONS) {
        tracing::info!("{FFMPEG_OPTIONS} is set ({v}); live.rtsp_transport is not applied");
        return;
    }
    let transport = match cfg.rtsp_transport {
        RtspTransport::Tcp => "tcp",
        RtspTransport::Udp => "udp",
    };
    std::env::set_var(FFMPEG_OPTIONS, format!("rtsp_transport;{transport}"));
}

/// One connection to a live source.
pub struct LiveReader {
    cap: VideoCapture,
    shown: String,
    url: String,
    info: VideoInfo,
    /// How long the previous read took. FFmpeg can return one last frame from a read that hit
    /// its deadline and fail the next read at once; that is a stall too.
    prev_took: Duration,
}

impl LiveReader {
    /// Connects within `cfg.open_timeout_ms`.
    pub fn open(kind: &SourceKind, cfg: &LiveConfig) -> Result<LiveReader, SourceError> {
        let shown = kind.display();
        let (url, api) = match kind {
            SourceKind::Network(u) => (u.clone(), videoio::CAP_FFMPEG),
            SourceKind::Device(d) => (d.clone(), videoio::CAP_V4L2),
            SourceKind::File(p) => (p.display().to_string(), videoio::CAP_FFMPEG),
        };
        let err = |reason: String| SourceError::Open {
            path: shown.clone(),
            reason: scrub(&reason, &url),
        };
        if let SourceKind::Device(d) = kind {
            if !std::path::Path::new(d).exists() {
                return Err(err("no such device (is the camera plugged in?)".into()));
            }
        }
        let params = Vector::from_slice(&[
            videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
            cfg.open_timeout_ms.min(i32::MAX as u64) as i32,
            videoio::CAP_PROP_READ_TIMEOUT_MSEC,
            cfg.stall_timeout_ms.min(i32::MAX as u64) as i32,
        ]);
        let started = Instant::now();
        let cap =
            VideoCapture::from_file_with_params(&url, api, &params).map_err(|e| err(e.message))?;
        if !cap.is_opened().unwrap_or(false) {
            let waited = started.elapsed();
            let why = if waited >= Duration::from_millis(cfg.open_timeout_ms) * 9 / 10 {
                format!("no answer within {} ms", cfg.open_timeout_ms)
            } else if let Some(refusal) = match kind {
                // Bounded by what is left of the open deadline, at least one second.
                SourceKind::Network(u) => super::probe::probe(
                    u,
                    Duration::from_millis(cfg.open_timeout_ms)
                        .saturating_sub(waited)
                        .max(Duration::from_secs(1)),
                ),
                _ => None,
            } {
                refusal.reason()
            } else {
                "refused, unreachable, or not a video stream".into()
            };
            return Err(err(why));
        }
        let get = |prop| cap.get(prop).unwrap_or(0.0);
        let fps = get(videoio::CAP_PROP_FPS);
        let info = VideoInfo {
            width: get(videoio::CAP_PROP_FRAME_WIDTH).max(0.0) as u32,
            height: get(videoio::CAP_PROP_FRAME_HEIGHT).max(0.0) as u32,
            fps: if fps.is_finite() && fps > 0.0 && fps < 1000.0 {
                fps
            } else {
                0.0
            },
            frame_count: 0,
        };
        Ok(LiveReader {
            cap,
            shown,
            url,
            info,
            prev_took: Duration::ZERO,
        })
    }
}

impl LiveSource for LiveReader {
    fn info(&self) -> VideoInfo {
        self.info
    }

    fn read(&mut self, deadline: Duration) -> Result<Mat, LostFrame> {
        let started = Instant::now();
        let mut m = Mat::default();
        let got = self.cap.read(&mut m);
        let took = started.elapsed();
        let waited = took.max(std::mem::replace(&mut self.prev_took, took));
        let lost = if waited >= deadline * 9 / 10 {
            Lost::Stalled
        } else {
            Lost::Disconnected
        };
        match got {
            Ok(true) if !m.empty() => Ok(m),
            Ok(_) => Err(LostFrame {
                kind: lost,
                waited,
                error: None,
            }),
            Err(e) => Err(LostFrame {
                kind: lost,
                waited,
                error: Some(format!("{}: {}", self.shown, scrub(&e.message, &self.url))),
            }),
        }
    }
}
