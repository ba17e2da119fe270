//! What every reconcile shares (the client, the event recorder, the metrics) and how a reconcile
//! fails.

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::constants::OPERATOR_NAME;
use crate::metrics::Metrics;

/// A reconcile that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The resource has no namespace.
    #[error("MetaStore {0} has no namespace")]
    NoNamespace(String),
    /// TLS material is missing or cannot be made.
    #[error("TLS: {0}")]
    Tls(String),
    /// The root credentials of `spec.auth` are missing or unusable.
    #[error("auth: {0}")]
    Auth(String),
}

impl Error {
    /// The `reason` label of the failures counter.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::NoNamespace(_) => "no_namespace",
            Error::Tls(_) => "tls",
            Error::Auth(_) => "auth",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context for `client`, reporting events as `instance`.
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: OPERATOR_NAME.into(),
                instance,
            },
        );
        Context {
            client,
            recorder,
            metrics,
        }
    }
}
