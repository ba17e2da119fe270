//! One simulated member: the production data dir, bootstrap, `Shared` and `RaftLoop`, with
//! virtual clocks and an outbox the world routes. Crash = drop the loop without its orderly stop;
//! restart = open the same data dir again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use crossbeam_channel::Sender;
use metastore_node::config::{Config, Flags};
use metastore_node::consensus::bootstrap::{self, JoinInfo};
use metastore_node::consensus::loop_env::{Inline, LoopEnv, PeerOutbox};
use metastore_node::consensus::raft_loop::RaftLoop;
use metastore_node::node::{LoopMsg, Shared};
use raft::eraftpb::Message;
use rand::rngs::StdRng;

use super::clock::{ClockParams, GlobalTime, SimClocks};

/// Messages a member handed to its transport, collected by the world after each poll.
#[derive(Default)]
pub struct SimOutbox {
    sent: Mutex<Vec<Message>>,
}

impl SimOutbox {
    /// Takes everything sent since the last call.
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl PeerOutbox for SimOutbox {
    fn send(&self, msgs: Vec<Message>) {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(msgs);
    }

    fn set_peers(&self, _: &std::collections::BTreeMap<u64, Vec<String>>) {}
}

/// A running incarnation.
pub struct Running {
    /// The production Raft loop.
    pub raft: RaftLoop,
    /// Its request channel.
    pub tx: Sender<LoopMsg>,
    /// Its shared state.
    pub shared: Arc<Shared>,
}

/// The guard's reasons a correct member's message must never meet (a removed leader's drops
/// are expected).
pub const GUARD_REASONS: [&str; 4] = [
    "malformed",
    "not_from_leader",
    "inconsistent_with_log",
    "unknown_sender",
];

impl Running {
    /// Messages the guard dropped in this incarnation, by reason.
    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        let c = &self.shared.metrics.peer_messages_rejected;
        GUARD_REASONS
            .iter()
            .map(|l| (*l, c.with_label_values(&[*l]).get()))
            .collect()
    }
}

/// A member of the simulated cluster.
pub struct SimMember {
    /// Raft id.
    pub id: u64,
    /// Ordinal (as in a StatefulSet).
    pub ordinal: usize,
    /// Config, as the flags gave it.
    pub config: Config,
    /// Join information (members added by MemberAdd).
    pub join: Option<JoinInfo>,
    /// Clock hardware.
    pub clock: Arc<Mutex<ClockParams>>,
    /// Where its messages go.
    pub outbox: Arc<SimOutbox>,
    /// `None` while crashed or after removal.
    pub run: Option<Running>,
    /// The loop does not run before this global time (a stall: slow disk, busy thread).
    pub stalled_until: u64,
    /// Generation of its pending wake-up event.
    pub wake_gen: u64,
    /// Removed from the cluster by the operator: never restarted.
    pub removed: bool,
    /// Incarnations started.
    pub boots: u64,
    /// Peer messages the guard dropped in earlier incarnations.
    pub rejected_before: u64,
    /// A busy member: its ticks often run late (a loaded thread, slow fsyncs).
    pub busy: bool,
}

/// Cluster-wide settings every member's flags share.
#[derive(Debug, Clone)]
pub struct MemberFlags {
    /// `--heartbeat-interval` ms.
    pub heartbeat_ms: u64,
    /// `--election-timeout` ms.
    pub election_ms: u64,
    /// `--max-clock-drift`.
    pub max_drift: f64,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--unsafe-test-reopen-hole`.
    pub hole: Option<String>,
}

/// The peer URL of ordinal `k` (never dialled: the world routes messages).
pub fn peer_url(k: usize) -> String {
    format!("http://127.0.0.1:{}", 21000 + k)
}

/// The validated config of ordinal `k`, as the production flags parse it.
pub fn member_config(
    flags: &MemberFlags,
    k: usize,
    data_dir: PathBuf,
    existing: bool,
) -> Result<Config, String> {
    let name = format!("m{k}");
    let url = peer_url(k);
    let client = format!("http://127.0.0.1:{}", 22000 + k);
    let mut args: Vec<String> = vec![
        "metastore-node".into(),
        "--name".into(),
        name.clone(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--initial-cluster".into(),
        format!("{name}={url}"),
        "--initial-advertise-peer-urls".into(),
        url.clone(),
        "--listen-peer-urls".into(),
        url,
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client,
        "--heartbeat-interval".into(),
        flags.heartbeat_ms.to_string(),
        "--election-timeout".into(),
        flags.election_ms.to_string(),
        "--max-clock-drift".into(),
        flags.max_drift.to_string(),
        "--snapshot-count".into(),
        flags.snapshot_count.to_string(),
        "--initial-cluster-state".into(),
        if existing { "existing" } else { "new" }.into(),
    ];
    if let Ok(ms) = std::env::var("SIM_UNSAFE_LEASE_MS") {
        args.extend([
            "--lease-duration".into(),
            ms,
            "--unsafe-lease-skip-safety-checks".into(),
        ]);
    }
    if let Some(h) = &flags.hole {
        args.push("--unsafe-test-reopen-hole".into());
        args.push(h.clone());
    }
    let parsed = Flags::try_parse_from(args).map_err(|e| e.to_string())?;
    parsed.validate().map_err(|e| e.to_string())
}

/// Runs `f` on a fresh thread and waits for it. raft-engine caches the last block it read in a
/// thread-local keyed by file id and offset, which are the same in every member's log: members
/// sharing one thread could read each other's blocks (it asserts, and did). One short-lived
/// thread per storage access keeps each member's reads apart; the caller waits, so the run stays
/// deterministic. (A real member has one log per process.)
pub fn on_own_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn_scoped(s, f)
            .map(|h| h.join())
    })
    .unwrap_or_else(|e| panic!("cannot start a thread: {e}"))
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

impl SimMember {
    /// Starts an incarnation from the data dir: the same bootstrap, `Shared` and loop as the
    /// server, in a simulated environment.
    pub fn start(
        &mut self,
        base: Instant,
        time: &GlobalTime,
        rng: StdRng,
        logger: &slog::Logger,
    ) -> Result<(), String> {
        let (config, join, clock, outbox) = (
            self.config.clone(),
            self.join.clone(),
            self.clock.clone(),
            self.outbox.clone(),
        );
        let ordinal = self.ordinal;
        let time = time.clone();
        let (id, raft, tx, shared) = on_own_thread(move || {
            let opened = bootstrap::open(&config, join, logger)
                .map_err(|e| format!("m{ordinal} open: {e}"))?;
            let id = opened.identity.member_id;
            let mut config = config;
            config.member_id = id;
            let shared = Arc::new(
                Shared::new(config, opened.state.clone(), opened.applied)
                    .map_err(|e| e.to_string())?,
            );
            let (tx, rx) = crossbeam_channel::unbounded();
            let env = LoopEnv {
                clocks: Box::new(SimClocks {
                    base,
                    time: time.clone(),
                    params: clock,
                }),
                outbox,
                rng,
                since_start: std::time::Duration::ZERO,
                // Virtual time in ns: above every sequence an earlier incarnation used.
                seq_floor: time.now() * 1000,
                // Snapshots are written at once, inside the pass that takes them.
                jobs: Arc::new(Inline),
                loopback: tx.clone(),
            };
            let raft = RaftLoop::new(opened, shared.clone(), rx, env);
            Ok::<_, String>((id, raft, tx, shared))
        })?;
        self.id = id;
        self.rejected_before = self.rejected_peer_messages();
        self.run = Some(Running { raft, tx, shared });
        self.boots += 1;
        self.outbox.take();
        Ok(())
    }

    /// Drops the running incarnation as a crash would: no sync, replies dropped.
    pub fn crash(&mut self) {
        self.rejected_before = self.rejected_peer_messages();
        self.run = None;
        self.outbox.take();
    }

    /// Its lease clock at global time `now`, µs from the simulation's base instant.
    pub fn lease_us(&self, now: u64) -> f64 {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lease_us(now)
    }

    /// Peer messages the guard (`consensus::message_guard`) dropped, over all incarnations.
    pub fn rejected_peer_messages(&self) -> u64 {
        let now = self
            .run
            .as_ref()
            .map_or(0, |r| r.rejected().iter().map(|(_, n)| n).sum());
        self.rejected_before + now
    }

    /// True while an incarnation runs.
    pub fn is_up(&self) -> bool {
        self.run.is_some()
    }
}
