//! One real `metastore-node` process on its own loopback address, and plain HTTP probes of its
//! metrics listener.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member: its flags, data directory and (while started) its process.
pub struct Member {
    /// Member name (`--name`).
    pub name: String,
    /// Its loopback address; clients on :2379, peers on :2380, metrics on :2381.
    pub ip: String,
    /// Its data directory; its log is the sibling file `<data_dir>.log`.
    pub data_dir: PathBuf,
    /// The `metastore-node` binary it runs.
    pub bin: PathBuf,
    /// Its command-line flags (adjust them before [`Member::start`]).
    pub args: Vec<String>,
    /// The running process, if started.
    pub child: Option<Child>,
}

impl Member {
    /// The URL clients use.
    pub fn client_url(&self) -> String {
        format!("http://{}:2379", self.ip)
    }

    /// The URL peers use.
    pub fn peer_url(&self) -> String {
        format!("http://{}:2380", self.ip)
    }

    /// `ip:port` of the metrics and health listener.
    pub fn metrics_addr(&self) -> String {
        format!("{}:2381", self.ip)
    }

    /// Starts the process, its stderr appended to the member's log file.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))
            .expect("log file");
        let child = Command::new(&self.bin)
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
        sigterm(c.id());
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

    /// `GET path` on the metrics listener: status code and body.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.metrics_addr(), path)
    }

    /// The value of one sample of `/metrics`: `name` is the metric name, with its labels if it
    /// has any (`metastore_read_total{path="lease"}`).
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

    /// Runs the binary with this member's flags to completion (for start-up refusals): exit code
    /// (`None` if it had to be killed after `timeout`) and stderr.
    pub fn run_to_exit(&self, timeout: Duration) -> (Option<i32>, String) {
        let mut child = Command::new(&self.bin)
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

    /// Everything the member logged so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }
}

/// SIGTERM to a child of ours, by PID.
fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// A plain HTTP/1.0 `GET path` to `addr` (`ip:port`): status code and body, `None` on any
/// failure (connection refused, 2 s without an answer, unparsable response).
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

/// The last 30 lines of `s` (a member's log, for failure messages).
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
