//! The face branch: [`detector`] finds faces with five landmarks (MTCNN), [`align`] warps each
//! to the embedder's chip, [`embedder`] turns chips into descriptors, [`tracker`] follows faces
//! across frames so each person in view is reported once, and [`worker`] runs them for every
//! stream.

pub mod align;
mod area;
pub mod detector;
pub mod embedder;
pub mod sampler;
pub mod tracker;
pub mod worker;

pub use crate::gallery::distance;
