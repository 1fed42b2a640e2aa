//! How the supervisor opens sources, behind a trait: [`OpenCv`] reads real files and cameras;
//! tests give the topology an opener of their own, so adding, removing and ending streams is
//! tested without a camera or the binary (Moonfire NVR's `Opener` is the model).

use super::file::FileReader;
use super::live::LiveReader;
use super::url::SourceKind;
use super::{FrameReader, LiveSource, SourceError};
use crate::config::LiveConfig;
use std::path::Path;

pub trait Opener: Send + Sync {
    /// A recorded file, read to its end.
    fn file(&self, path: &Path) -> Result<Box<dyn FrameReader>, SourceError>;
    /// A camera or network stream; `cfg` gives the open and read deadlines.
    fn live(&self, kind: &SourceKind, cfg: &LiveConfig)
        -> Result<Box<dyn LiveSource>, SourceError>;
}

/// Files and cameras through OpenCV (FFmpeg, V4L2).
pub struct OpenCv;

impl Opener for OpenCv {
    fn file(&self, path: &Path) -> Result<Box<dyn FrameReader>, SourceError> {
        Ok(Box::new(FileReader::open(path)?))
    }

    fn live(
        &self,
        kind: &SourceKind,
        cfg: &LiveConfig,
    ) -> Result<Box<dyn LiveSource>, SourceError> {
        Ok(Box::new(LiveReader::open(kind, cfg)?))
    }
}
