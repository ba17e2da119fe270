//! Support for MetaStore's end-to-end tests: a real Kubernetes control plane on loopback, and the
//! node its pods run on: the real kubelet with containerd, or a test kubelet that runs pods as
//! local processes (a fast mode for local iteration).

pub mod api_proxy;
pub mod control_plane;
pub mod dns;
pub mod kubelet;
pub mod real_kubelet;
pub mod runner;
pub mod volumes;

use std::path::PathBuf;

/// Sends `sig` to a process this test started (by PID).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a PID we spawned ourselves; no memory is touched.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The workspace's build output directory holding `metastore-node` and `metastore-operator`
/// (target/<profile>, found from the test binary's own path).
pub fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .expect("target dir")
}

/// Where `scripts/k8s-binaries.sh` put the control-plane binaries (`METASTORE_K8S_BIN`).
pub fn k8s_bin_dir() -> Option<PathBuf> {
    std::env::var_os("METASTORE_K8S_BIN").map(PathBuf::from)
}

/// The hosts file the kubelet may rewrite: only set by `make e2e`, inside a private mount
/// namespace where it is bind-mounted over /etc/hosts.
pub fn hosts_file() -> Option<PathBuf> {
    std::env::var_os("METASTORE_E2E_HOSTS").map(PathBuf::from)
}

/// The command line of process `pid` (from /proc).
pub fn command_line_of(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}
