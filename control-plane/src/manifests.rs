//! The manifests directory source: files parsed and validated as the API server
//! would, watched for changes, with each file's last good content kept.

pub mod dir;
mod file_events;
pub mod parse;
