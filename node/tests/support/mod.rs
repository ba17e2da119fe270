//! Test support: real `metastore-node` processes on their own loopback addresses.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_metastore-node");

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A fresh 127.a.b.0/24 network for one test, so tests in one binary never share ports.
pub fn loopback_net() -> String {
    let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("127.{}.{}", 10 + (pid % 200), 1 + n)
}

pub struct Member {
    pub name: String,
    pub ip: String,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    pub child: Option<Child>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}:2379", self.ip)
    }
    pub fn peer_url(&self) -> String {
        format!("http://{}:2380", self.ip)
    }
    pub fn metrics_addr(&self) -> String {
        format!("{}:2381", self.ip)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(BIN)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn metastore-node");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe_sigterm(c.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics_addr(), path)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics")?;
        body.lines()
            .find(|l| {
                l.starts_with(name)
                    && l[name.len()..].starts_with([' ', '{'])
                    && !l.starts_with('#')
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the binary with this member's flags to completion (for start-up refusals).
    pub fn run_to_exit(&self, timeout: Duration) -> (Option<i32>, String) {
        let mut child = Command::new(BIN)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn metastore-node");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (st.code(), err);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (None, String::new());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }
}

fn unsafe_sigterm(pid: u32) {
    // Only ever our own child, by PID.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

pub struct Cluster {
    pub members: Vec<Member>,
    /// The test's 127.a.b network; member i (0-based) is at `.{i+1}`.
    pub net: String,
    /// Flags every member gets.
    pub extra: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Flags of a member named `name` at `ip`, keeping its data in `data_dir`.
fn member_args(name: &str, ip: &str, data_dir: &std::path::Path, initial: &str) -> Vec<String> {
    vec![
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen-client-urls".into(),
        format!("http://{ip}:2379"),
        "--advertise-client-urls".into(),
        format!("http://{ip}:2379"),
        "--listen-peer-urls".into(),
        format!("http://{ip}:2380"),
        "--initial-advertise-peer-urls".into(),
        format!("http://{ip}:2380"),
        "--listen-metrics-urls".into(),
        format!("http://{ip}:2381"),
        "--initial-cluster".into(),
        initial.into(),
    ]
}

/// Fast timers so failover tests finish quickly.
pub const FAST: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];

impl Cluster {
    /// Starts `n` members as a new cluster; `extra` flags go to every member.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::create(n, extra);
        for m in &mut c.members {
            m.start();
        }
        c
    }

    /// Like [`Cluster::start`] but starts nothing (the caller adjusts members first).
    pub fn create(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = loopback_net();
        let ips: Vec<String> = (1..=n).map(|i| format!("{net}.{i}")).collect();
        let initial: Vec<String> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("m{i}=http://{ip}:2380"))
            .collect();
        let members = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let data_dir = dir.path().join(format!("m{i}"));
                let mut args = member_args(&format!("m{i}"), ip, &data_dir, &initial.join(","));
                args.extend(extra.iter().map(|s| s.to_string()));
                Member {
                    name: format!("m{i}"),
                    ip: ip.clone(),
                    data_dir,
                    args,
                    child: None,
                }
            })
            .collect();
        Cluster {
            members,
            net,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        }
    }

    /// Prepares (does not start) a member that joins this cluster with
    /// `--initial-cluster-state existing`: it must be added with MemberAdd first. Returns its index.
    pub fn prepare_joiner(&mut self) -> usize {
        let i = self.members.len();
        let ip = format!("{}.{}", self.net, i + 1);
        let name = format!("m{i}");
        let data_dir = self._dir.path().join(&name);
        let mut initial: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        initial.push(format!("{name}=http://{ip}:2380"));
        let mut args = member_args(&name, &ip, &data_dir, &initial.join(","));
        args.extend([
            "--initial-cluster-state".to_string(),
            "existing".to_string(),
        ]);
        args.extend(self.extra.iter().cloned());
        self.members.push(Member {
            name,
            ip,
            data_dir,
            args,
            child: None,
        });
        i
    }

    /// Indexes of running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .collect()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url()).collect()
    }

    /// Index of the member that reports itself leader, if exactly one running member does.
    pub fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.child.is_some() && m.metric("metastore_raft_is_leader") == Some(1.0))
            .map(|(i, _)| i)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Waits until every running member is ready and one leads.
    pub fn wait_ready(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let all_ready = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .all(|m| m.http_get("/readyz").map(|(c, _)| c) == Some(200));
            if all_ready {
                if let Some(l) = self.leader() {
                    return l;
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {}\n{}", m.name, tail(&m.log())))
                    .collect();
                panic!("cluster not ready in {timeout:?}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// An etcd-client connection to one endpoint.
pub async fn client(endpoint: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .expect("connect")
}

/// An etcd-client connection that reports failure instead of panicking.
pub async fn try_client(endpoint: &str) -> Result<etcd_client::Client, etcd_client::Error> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([endpoint], Some(opts)).await
}

/// Runs test `test` again under `unshare --net --mount` (a network and mount namespace of its
/// own, so iptables rules and tmpfs mounts touch nothing outside) unless already there. Returns
/// true in the process that should do the work; in the outer one, waits (bounded) and asserts
/// the inner run passed.
pub fn in_namespace(test: &str, ignored: bool) -> bool {
    // One namespaced test at a time per binary: two clusters under faults on two cores would
    // mostly measure the machine.
    static SERIAL: Mutex<()> = Mutex::new(());
    if std::env::var_os("METASTORE_TEST_NS").is_some() {
        // Inside: bring loopback up (a new network namespace starts with it down).
        let ok = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set lo up failed inside the test namespace");
        return true;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"]);
    if ignored {
        cmd.arg("--ignored");
    }
    cmd.env("METASTORE_TEST_NS", "1");
    let mut child = cmd
        .spawn()
        .expect("unshare (util-linux) is needed; run as root (scripts/install-deps.sh)");
    // Bounded: a profile that hangs is killed (by PID: our own child) and fails.
    let limit = Duration::from_secs(
        std::env::var("METASTORE_NS_TEST_LIMIT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1200),
    );
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "{test} failed inside its namespace ({st})");
            return false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
