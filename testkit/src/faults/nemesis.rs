//! Fault schedules (pure, reproducible from a seed) and the nemesis that applies them to real
//! member processes: SIGKILL/restart, SIGSTOP/SIGCONT, iptables partitions inside the test's own
//! network namespace, lease-clock steps and drift, membership changes and leader transfers during
//! other faults, and a full disk (a tmpfs per member, filled with a ballast file).

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::client::try_client;
use crate::cluster::Cluster;
use crate::process::tail;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL the leader, restart it after the hold.
    KillLeader,
    /// SIGKILL one follower, restart it after the hold.
    KillFollower,
    /// SIGKILL every member, restart them all after the hold.
    KillAll,
    /// SIGSTOP the leader for longer than the election timeout, then SIGCONT.
    PauseLeader,
    /// SIGSTOP one follower, then SIGCONT.
    PauseFollower,
    /// Cut the leader off from every other member.
    IsolateLeader,
    /// Cut the leader off and SIGSTOP it; it wakes up still cut off (a long GC-like pause during
    /// a partition) and is healed a second later.
    PauseIsolatedLeader,
    /// Split the members into a random minority and majority.
    SplitMinority,
    /// Two sides that cannot talk, joined only through one bridge member.
    Bridge,
    /// Step the leader's lease clock back 2 s (beyond the drift bound: must be reported).
    ClockBackLeader,
    /// Step one member's lease clock forward 2 s (beyond the bound: must be reported).
    ClockForward,
    /// Run the leader's lease clock 5 % slow (within the 10 % bound: not reported, still safe).
    ClockDriftWithinBound,
    /// Add a learner and promote it, or remove a voter, while a follower is paused.
    Membership,
    /// Move leadership to another voter while a follower is cut off.
    TransferLeader,
    /// Fill one member's disk.
    DiskFull,
}

/// Every fault kind, in a fixed order.
pub const ALL_FAULTS: [Fault; 15] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::KillAll,
    Fault::PauseLeader,
    Fault::PauseFollower,
    Fault::IsolateLeader,
    Fault::PauseIsolatedLeader,
    Fault::SplitMinority,
    Fault::Bridge,
    Fault::ClockBackLeader,
    Fault::ClockForward,
    Fault::ClockDriftWithinBound,
    Fault::Membership,
    Fault::TransferLeader,
    Fault::DiskFull,
];

impl Fault {
    /// Short name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::KillFollower => "kill-follower",
            Fault::KillAll => "kill-all",
            Fault::PauseLeader => "pause-leader",
            Fault::PauseFollower => "pause-follower",
            Fault::IsolateLeader => "isolate-leader",
            Fault::PauseIsolatedLeader => "pause-isolated-leader",
            Fault::SplitMinority => "split-minority",
            Fault::Bridge => "bridge",
            Fault::ClockBackLeader => "clock-back-leader",
            Fault::ClockForward => "clock-forward",
            Fault::ClockDriftWithinBound => "clock-drift-within-bound",
            Fault::Membership => "membership",
            Fault::TransferLeader => "transfer-leader",
            Fault::DiskFull => "disk-full",
        }
    }
}

/// One step of a schedule: a fault held for a while, then healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The fault.
    pub fault: Fault,
    /// How long it is held.
    pub hold: Duration,
}

/// A reproducible schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Seed it was generated from (also seeds the workloads).
    pub seed: u64,
    /// Members at the start.
    pub members: usize,
    /// Episodes, in order.
    pub episodes: Vec<Episode>,
}

/// Holds long enough for an election (ET = 500 ms) to happen while the fault lasts.
fn hold(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.gen_range(1200..2600))
}

/// Schedules that together cover `kinds` at least once each (shuffled by `seed`), `per` episodes
/// per schedule, extra episodes drawn at random.
pub fn covering(seed: u64, kinds: &[Fault], per: usize) -> Vec<Schedule> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = kinds.to_vec();
    order.shuffle(&mut rng);
    let count = order.len().div_ceil(per);
    (0..count)
        .map(|s| {
            let mut episodes: Vec<Episode> = order
                .iter()
                .skip(s * per)
                .take(per)
                .map(|f| Episode {
                    fault: *f,
                    hold: hold(&mut rng),
                })
                .collect();
            while episodes.len() < per {
                let f = *kinds.choose(&mut rng).unwrap_or(&Fault::KillLeader);
                episodes.push(Episode {
                    fault: f,
                    hold: hold(&mut rng),
                });
            }
            Schedule {
                seed: seed.wrapping_mul(1000).wrapping_add(s as u64),
                members: if s % 2 == 0 { 3 } else { 5 },
                episodes,
            }
        })
        .collect()
}

/// A random schedule of `episodes` faults drawn from `kinds`.
pub fn random(seed: u64, kinds: &[Fault], episodes: usize) -> Schedule {
    let mut rng = StdRng::seed_from_u64(seed);
    Schedule {
        seed,
        members: if rng.gen_bool(0.3) { 5 } else { 3 },
        episodes: (0..episodes)
            .map(|_| Episode {
                fault: *kinds.choose(&mut rng).unwrap_or(&Fault::KillLeader),
                hold: hold(&mut rng),
            })
            .collect(),
    }
}

/// Runs a command that must succeed (namespaced iptables, mount).
fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sends `sig` to a child of ours, by PID.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// What the nemesis did, for the results table and the checks.
#[derive(Debug, Default, Clone)]
pub struct NemesisLog {
    /// Faults injected (name per injection).
    pub injected: Vec<String>,
    /// Membership operations that failed or were refused (with reason).
    pub refused: Vec<String>,
    /// Times (µs since t0) during which a member's lease clock was being faulted.
    pub clock_faults: Vec<(u64, u64)>,
    /// Per beyond-bound clock fault: the member and whether its anomaly counter grew.
    pub clock_reports: Vec<(String, bool)>,
    /// Within-bound drift episodes: member and whether it was (wrongly) reported.
    pub drift_reports: Vec<(String, bool)>,
    /// What members did in response (for the report).
    pub notes: Vec<String>,
}

/// Applies faults to a cluster it owns.
pub struct Nemesis {
    /// The cluster (members' processes are the nemesis's children).
    pub cluster: Cluster,
    /// Members removed from the cluster (never restarted).
    pub removed: HashSet<usize>,
    /// Client URLs of members that are (or will again be) part of the cluster.
    pub endpoints: Arc<Mutex<Vec<String>>>,
    /// Current lease-clock offset of each member, in ms.
    offsets: Vec<i64>,
    rng: StdRng,
    t0: Instant,
    /// What happened.
    pub log: NemesisLog,
    rt: tokio::runtime::Handle,
}

/// The election timeout the suite's clusters run with.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

impl Nemesis {
    /// Takes over `cluster` (created, not started); mounts a tmpfs per member and starts them.
    pub fn new(
        mut cluster: Cluster,
        seed: u64,
        t0: Instant,
        rt: tokio::runtime::Handle,
    ) -> Result<Nemesis, String> {
        let n = cluster.members.len();
        for i in 0..n {
            prepare_member(&mut cluster, i)?;
        }
        for m in &mut cluster.members {
            m.start();
        }
        let endpoints = Arc::new(Mutex::new(cluster.endpoints()));
        Ok(Nemesis {
            cluster,
            removed: HashSet::new(),
            endpoints,
            offsets: vec![0; n],
            rng: StdRng::seed_from_u64(seed ^ 0x5eed),
            t0,
            log: NemesisLog::default(),
            rt,
        })
    }

    fn micros(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Members that are part of the cluster (running or not).
    pub fn active(&self) -> Vec<usize> {
        (0..self.cluster.members.len())
            .filter(|i| !self.removed.contains(i))
            .collect()
    }

    /// The leader, waiting up to `timeout` for exactly one running member to claim it.
    pub fn leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.cluster.leader() {
                if !self.removed.contains(&l) {
                    return Some(l);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn follower(&mut self, leader: Option<usize>) -> Option<usize> {
        let c: Vec<usize> = self
            .active()
            .into_iter()
            .filter(|i| Some(*i) != leader && self.cluster.members[*i].child.is_some())
            .collect();
        c.choose(&mut self.rng).copied()
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.cluster.members[i].child.as_ref().map(|c| c.id())
    }

    /// Restarts every active member that is not running, then waits (bounded) for a leader.
    pub fn restore(&mut self) -> Result<(), String> {
        let _ = sh("iptables", &["-F", "INPUT"]);
        for i in self.active() {
            let m = &mut self.cluster.members[i];
            // A member that stopped by itself (full disk) is reaped and restarted.
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    m.child = None;
                }
            }
            if m.child.is_none() {
                m.start();
            }
        }
        // Every member must come back (a member a fault damaged for good is a failure).
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in self.active() {
            let m = &self.cluster.members[i];
            while m.http_get("/readyz").map(|(c, _)| c) != Some(200) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} not ready 30 s after healing every fault:\n{}",
                        m.name,
                        tail(&m.log())
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.leader(Duration::from_secs(30))
            .map(|_| ())
            .ok_or_else(|| "no leader 30 s after healing every fault".to_string())
    }

    fn anomalies(&self, i: usize) -> f64 {
        let m = &self.cluster.members[i];
        ["backward", "slow", "forward"]
            .iter()
            .filter_map(|k| m.metric(&format!("metastore_clock_anomalies_total{{kind=\"{k}\"}}")))
            .sum()
    }

    fn set_offset(&mut self, i: usize, ms: i64) {
        self.offsets[i] = ms;
        let path = clock_file(&self.cluster, i);
        let tmp = path.with_extension("tmp");
        // Atomic replace: the member never reads a half-written number.
        if std::fs::write(&tmp, ms.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    /// Drops traffic between every pair across `a` and `b` (both directions).
    fn cut(&self, a: &[usize], b: &[usize]) -> Result<(), String> {
        for x in a {
            for y in b {
                let (ix, iy) = (
                    self.cluster.members[*x].ip.clone(),
                    self.cluster.members[*y].ip.clone(),
                );
                for (s, d) in [(&ix, &iy), (&iy, &ix)] {
                    sh("iptables", &["-A", "INPUT", "-s", s, "-d", d, "-j", "DROP"])?;
                }
            }
        }
        Ok(())
    }

    /// Runs one episode: inject, hold, heal, restore.
    pub fn run(&mut self, e: &Episode) -> Result<(), String> {
        self.log.injected.push(e.fault.name().to_string());
        let running: Vec<usize> = self
            .active()
            .into_iter()
            .filter(|i| self.cluster.members[*i].child.is_some())
            .collect();
        let leader = self.leader(Duration::from_secs(10));
        match e.fault {
            Fault::KillLeader | Fault::KillFollower => {
                let victim = if e.fault == Fault::KillLeader {
                    leader
                } else {
                    self.follower(leader)
                };
                if let Some(v) = victim {
                    self.cluster.members[v].kill();
                }
                std::thread::sleep(e.hold);
            }
            Fault::KillAll => {
                for i in &running {
                    self.cluster.members[*i].kill();
                }
                std::thread::sleep(e.hold);
            }
            Fault::PauseLeader | Fault::PauseFollower => {
                let victim = if e.fault == Fault::PauseLeader {
                    leader
                } else {
                    self.follower(leader)
                };
                if let Some(pid) = victim.and_then(|v| self.pid(v)) {
                    signal(pid, "-STOP");
                    std::thread::sleep(e.hold);
                    signal(pid, "-CONT");
                }
            }
            Fault::IsolateLeader => {
                if let Some(l) = leader {
                    let others: Vec<usize> =
                        self.active().into_iter().filter(|i| *i != l).collect();
                    self.cut(&[l], &others)?;
                }
                std::thread::sleep(e.hold);
            }
            Fault::PauseIsolatedLeader => {
                if let Some(l) = leader {
                    let others: Vec<usize> =
                        self.active().into_iter().filter(|i| *i != l).collect();
                    self.cut(&[l], &others)?;
                    if let Some(pid) = self.pid(l) {
                        signal(pid, "-STOP");
                        std::thread::sleep(e.hold);
                        signal(pid, "-CONT");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Fault::SplitMinority => {
                let mut all = self.active();
                all.shuffle(&mut self.rng);
                let k = (all.len() - 1) / 2;
                let (minority, majority) = all.split_at(k.max(1));
                self.cut(minority, majority)?;
                std::thread::sleep(e.hold);
            }
            Fault::Bridge => {
                let mut all = self.active();
                all.shuffle(&mut self.rng);
                // all[0] is the bridge; the rest split in two sides that only it joins.
                let rest = &all[1..];
                let (l, r) = rest.split_at(rest.len() / 2);
                self.cut(l, r)?;
                std::thread::sleep(e.hold);
            }
            Fault::ClockBackLeader | Fault::ClockForward => {
                let target = if e.fault == Fault::ClockBackLeader {
                    leader
                } else {
                    running.choose(&mut self.rng).copied()
                };
                if let Some(t) = target {
                    let before = self.anomalies(t);
                    let from = self.micros();
                    let step = if e.fault == Fault::ClockBackLeader {
                        -2000
                    } else {
                        2000
                    };
                    self.set_offset(t, self.offsets[t] + step);
                    std::thread::sleep(e.hold);
                    let reported = self.anomalies(t) > before;
                    self.log.clock_faults.push((from, self.micros()));
                    self.log.clock_reports.push((
                        format!("{} {}", e.fault.name(), self.cluster.members[t].name),
                        reported,
                    ));
                }
            }
            Fault::ClockDriftWithinBound => {
                if let Some(t) = leader {
                    let before = self.anomalies(t);
                    let from = self.micros();
                    // 1 ms lost every 20 ms: the clock runs 5 % slow.
                    let end = Instant::now() + e.hold;
                    while Instant::now() < end {
                        self.set_offset(t, self.offsets[t] - 1);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let reported = self.anomalies(t) > before;
                    self.log.clock_faults.push((from, self.micros()));
                    self.log
                        .drift_reports
                        .push((self.cluster.members[t].name.clone(), reported));
                }
            }
            Fault::Membership => {
                // During a paused follower.
                let paused = self.follower(leader).and_then(|f| self.pid(f));
                if let Some(p) = paused {
                    signal(p, "-STOP");
                }
                let r = self.change_membership(leader);
                if let Some(p) = paused {
                    signal(p, "-CONT");
                }
                if let Err(e) = r {
                    self.log.refused.push(e);
                }
            }
            Fault::TransferLeader => {
                // While one follower is cut off; move leadership to another voter.
                let cut = self.follower(leader);
                if let (Some(l), Some(c)) = (leader, cut) {
                    let others: Vec<usize> =
                        self.active().into_iter().filter(|i| *i != c).collect();
                    self.cut(&[c], &others)?;
                    let target = self
                        .active()
                        .into_iter()
                        .filter(|i| *i != l && *i != c && self.cluster.members[*i].child.is_some())
                        .collect::<Vec<_>>()
                        .choose(&mut self.rng)
                        .copied();
                    if let Some(t) = target {
                        match self.transfer(l, t) {
                            Ok(()) => self.log.notes.push(format!(
                                "transfer-leader: {} -> {} while {} was cut off",
                                self.cluster.members[l].name,
                                self.cluster.members[t].name,
                                self.cluster.members[c].name
                            )),
                            Err(e) => self.log.refused.push(e),
                        }
                    }
                }
                std::thread::sleep(e.hold);
            }
            Fault::DiskFull => {
                let victim = running.choose(&mut self.rng).copied();
                if let Some(v) = victim {
                    let ballast = self.cluster.members[v].data_dir.join("ballast");
                    fill(&ballast);
                    // Hold until the member has had to write a new file (its next snapshot)
                    // and stopped, or 6 s.
                    let until = Instant::now() + e.hold.max(Duration::from_secs(6));
                    std::thread::sleep(e.hold);
                    while Instant::now() < until
                        && self.cluster.members[v]
                            .child
                            .as_mut()
                            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let name = self.cluster.members[v].name.clone();
                    let exited = self.cluster.members[v]
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    self.log.notes.push(match exited {
                        Some(st) => format!(
                            "disk-full: {name} stopped ({st}); restarted after freeing space"
                        ),
                        None => format!("disk-full: {name} kept running"),
                    });
                    let _ = std::fs::remove_file(&ballast);
                }
            }
        }
        self.restore()
    }

    fn member_id(&self, via: usize, name: &str) -> Result<Option<(u64, bool)>, String> {
        let ep = self.cluster.members[via].client_url();
        let name = name.to_string();
        self.rt.block_on(async move {
            let mut c = try_client(&ep).await.map_err(|e| e.to_string())?;
            let l = c.member_list().await.map_err(|e| e.to_string())?;
            Ok(l.members()
                .iter()
                .find(|m| m.name() == name)
                .map(|m| (m.id(), m.is_learner())))
        })
    }

    /// Grows a 3-voter cluster by a learner that is then promoted, or shrinks a larger one by
    /// removing a follower.
    fn change_membership(&mut self, leader: Option<usize>) -> Result<(), String> {
        let l = leader.ok_or("membership: no leader")?;
        let voters = self.active().len();
        let ep = self.cluster.members[l].client_url();
        if voters <= 3 {
            let i = self.cluster.prepare_joiner();
            prepare_member(&mut self.cluster, i)?;
            self.offsets.push(0);
            let peer = self.cluster.members[i].peer_url();
            let ep2 = ep.clone();
            let id = self.rt.block_on(async move {
                let mut c = try_client(&ep2).await.map_err(|e| e.to_string())?;
                let r = c
                    .member_add(
                        [peer],
                        Some(etcd_client::MemberAddOptions::new().with_is_learner()),
                    )
                    .await
                    .map_err(|e| format!("member add: {e}"))?;
                r.member()
                    .map(|m| m.id())
                    .ok_or_else(|| "member add: no member".to_string())
            });
            let id = match id {
                Ok(id) => id,
                Err(e) => {
                    self.removed.insert(i);
                    return Err(e);
                }
            };
            self.cluster.members[i].start();
            self.endpoints
                .lock()
                .unwrap()
                .push(self.cluster.members[i].client_url());
            // Promote once it has caught up (the leader refuses before that).
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let ep3 = self
                    .leader(Duration::from_secs(5))
                    .map(|l| self.cluster.members[l].client_url())
                    .unwrap_or(ep.clone());
                let r = self.rt.block_on(async move {
                    let mut c = try_client(&ep3).await.map_err(|e| e.to_string())?;
                    c.member_promote(id)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                });
                match r {
                    Ok(()) => {
                        self.log.notes.push(format!(
                            "membership: {} added as a learner and promoted",
                            self.cluster.members[i].name
                        ));
                        return Ok(());
                    }
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("promote: {e}"));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        } else {
            let victim = self.follower(Some(l)).ok_or("membership: no follower")?;
            let name = self.cluster.members[victim].name.clone();
            let (id, _) = self
                .member_id(l, &name)?
                .ok_or_else(|| format!("membership: {name} not listed"))?;
            let r = self.rt.block_on(async move {
                let mut c = try_client(&ep).await.map_err(|e| e.to_string())?;
                c.member_remove(id)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("member remove: {e}"))
            });
            if r.is_ok() {
                self.log.notes.push(format!("membership: {name} removed"));
                self.removed.insert(victim);
                self.cluster.members[victim].kill();
                let url = self.cluster.members[victim].client_url();
                self.endpoints.lock().unwrap().retain(|e| *e != url);
            }
            r
        }
    }

    fn transfer(&self, from: usize, to: usize) -> Result<(), String> {
        let name = self.cluster.members[to].name.clone();
        let (id, learner) = self
            .member_id(from, &name)?
            .ok_or_else(|| format!("transfer: {name} not listed"))?;
        if learner {
            return Err(format!("transfer: {name} is a learner"));
        }
        let ep = self.cluster.members[from].client_url();
        self.rt.block_on(async move {
            let mut c = try_client(&ep).await.map_err(|e| e.to_string())?;
            c.move_leader(id)
                .await
                .map(|_| ())
                .map_err(|e| format!("move leader: {e}"))
        })
    }

    /// Total lease reads served across running members.
    pub fn lease_reads(&self) -> f64 {
        self.cluster
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .filter_map(|m| m.metric("metastore_read_total{path=\"lease\"}"))
            .sum()
    }
}

/// The file holding member `i`'s lease-clock offset.
pub fn clock_file(c: &Cluster, i: usize) -> std::path::PathBuf {
    c.members[i].data_dir.with_extension("clock")
}

/// Gives member `i` its own tmpfs (so its disk can be filled) and its clock-offset file.
fn prepare_member(c: &mut Cluster, i: usize) -> Result<(), String> {
    let dir = c.members[i].data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=256m",
            "tmpfs",
            &dir.to_string_lossy(),
        ],
    )?;
    let clock = clock_file(c, i);
    std::fs::write(&clock, "0").map_err(|e| e.to_string())?;
    c.members[i].args.extend([
        "--unsafe-test-clock-offset-file".to_string(),
        clock.display().to_string(),
    ]);
    Ok(())
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..4096 {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}

/// Unmounts the members' tmpfs mounts (the namespace dies with the test anyway).
pub fn unmount_all(c: &Cluster) {
    for m in &c.members {
        let _ = sh("umount", &["-l", &m.data_dir.to_string_lossy()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_schedules_include_every_fault_and_are_reproducible() {
        let a = covering(7, &ALL_FAULTS, 5);
        let b = covering(7, &ALL_FAULTS, 5);
        assert_eq!(a, b);
        let seen: HashSet<Fault> = a
            .iter()
            .flat_map(|s| s.episodes.iter().map(|e| e.fault))
            .collect();
        assert_eq!(seen.len(), ALL_FAULTS.len());
        assert_ne!(a, covering(8, &ALL_FAULTS, 5));
    }
}
