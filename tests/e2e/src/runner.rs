//! What runs the suite's pods: the real kubelet, or the test kubelet (fast local mode); one
//! interface to what the tests ask of a node.

use std::path::PathBuf;

use crate::kubelet::Kubelet;
use crate::real_kubelet::RealKubelet;

/// The node's pod runner.
pub enum Runner {
    /// The real kubelet with containerd.
    Real(Box<RealKubelet>),
    /// The test kubelet (pods as local processes).
    Test(Kubelet),
}

impl Runner {
    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the pod's (first) container process.
    pub async fn signal(&self, namespace: &str, name: &str, signal: &str) -> bool {
        match self {
            Runner::Real(k) => k.signal(namespace, name, signal).await,
            Runner::Test(k) => k.signal(namespace, name, signal),
        }
    }

    /// The command line the pod's container process runs.
    pub async fn command_line(&self, namespace: &str, name: &str) -> Option<Vec<String>> {
        match self {
            Runner::Real(k) => k.command_line(namespace, name).await,
            Runner::Test(k) => k.command_line(namespace, name),
        }
    }

    /// True when the pod is Ready and not being deleted.
    pub async fn ready(&self, namespace: &str, name: &str) -> bool {
        match self {
            Runner::Real(k) => k.ready(namespace, name).await,
            Runner::Test(k) => k.ready(namespace, name),
        }
    }

    /// The pod's address.
    pub async fn pod_ip(&self, namespace: &str, name: &str) -> Option<String> {
        match self {
            Runner::Real(k) => k.pod_ip(namespace, name).await,
            Runner::Test(k) => k.pod_ip(namespace, name),
        }
    }

    /// Where the pods' logs are: `<ns>_<pod>…` entries, files or directories of files.
    pub fn logs_dir(&self) -> PathBuf {
        match self {
            Runner::Real(k) => k.logs_dir(),
            Runner::Test(k) => k.logs_dir(),
        }
    }
}
