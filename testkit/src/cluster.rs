//! A cluster of real members on a loopback network of its own (127.a.b.0/24), data in a
//! temporary directory that goes with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::{tail, Member};

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A fresh 127.a.b network (the first three octets) for one test, so tests in one binary never
/// share ports.
pub fn loopback_net() -> String {
    let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("127.{}.{}", 10 + (pid % 200), 1 + n)
}

/// Fast timers so failover tests finish quickly.
pub const FAST: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];

/// Members named `m0`, `m1`, … on one test network; every process is killed on drop.
pub struct Cluster {
    /// The members, in creation order (member i is `m{i}`).
    pub members: Vec<Member>,
    /// The test's 127.a.b network; member i (0-based) is at `.{i+1}`.
    pub net: String,
    /// Flags every member gets.
    pub extra: Vec<String>,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// Flags of a member named `name` at `ip`, keeping its data in `data_dir`.
/// The flags of member `name` on `ip` (clients :2379, peers :2380, metrics :2381, all http)
/// with `data_dir` and the `--initial-cluster` value `initial`.
pub fn member_args(name: &str, ip: &str, data_dir: &Path, initial: &str) -> Vec<String> {
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

impl Cluster {
    /// Starts `n` members of the `metastore-node` binary `bin` as a new cluster; `extra` flags
    /// go to every member.
    pub fn start(bin: impl AsRef<Path>, n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::create(bin, n, extra);
        for m in &mut c.members {
            m.start();
        }
        c
    }

    /// Like [`Cluster::start`] but starts nothing (the caller adjusts members first).
    pub fn create(bin: impl AsRef<Path>, n: usize, extra: &[&str]) -> Cluster {
        let bin = bin.as_ref().to_path_buf();
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
                    bin: bin.clone(),
                    args,
                    child: None,
                }
            })
            .collect();
        Cluster {
            members,
            net,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            bin,
            dir,
        }
    }

    /// Prepares (does not start) a member that joins this cluster with
    /// `--initial-cluster-state existing`: it must be added with MemberAdd first. Returns its index.
    pub fn prepare_joiner(&mut self) -> usize {
        let i = self.members.len();
        let ip = format!("{}.{}", self.net, i + 1);
        let name = format!("m{i}");
        let data_dir = self.dir.path().join(&name);
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
            bin: self.bin.clone(),
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

    /// Client URLs of every member, running or not.
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

    /// Waits until every running member is ready and one leads; returns the leader. Panics with
    /// every member's log tail after `timeout`.
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

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}
