//! The real `etcdctl` (API v3), run against one endpoint.

use std::process::{Command, Output};

/// Runs `etcdctl --endpoints=<endpoint> <args>` with `ETCDCTL_API=3` to completion.
pub fn etcdctl_output(endpoint: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl")
}

/// Runs etcdctl like [`etcdctl_output`]: whether it succeeded, and its stdout followed by its
/// stderr.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String) {
    let out = etcdctl_output(endpoint, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
