//! The one error type of edgexds.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("manifests directory {path}: {source}")]
    ManifestDir { path: PathBuf, source: std::io::Error },
    #[error("cannot watch {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
    #[error("{what} failed: {source}")]
    Serve { what: &'static str, source: std::io::Error },
    #[error("no Kubernetes configuration (in-cluster, KUBECONFIG or ~/.kube/config): {0}")]
    KubeConfig(#[source] kube::Error),
    #[error("xDS TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Config(String),
    #[error("{0} stopped unexpectedly")]
    Ended(&'static str),
    #[error("{what} failed: {source}")]
    Task { what: &'static str, source: tokio::task::JoinError },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
