//! What the Raft loop takes from the world around it: its clocks, the peer transport and its
//! randomness. Behind traits so that the deterministic simulation (`node/tests/simulation`) runs
//! the production loop unchanged, with virtual clocks, a simulated network and one seed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use raft::{RawNode, StateRole, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::consensus::transport::Transport;
use crate::read_lease::clocks::{reference_now, LeaseClock};

/// The two clocks the loop reads (see `read_lease::clocks`).
pub trait LoopClocks: Send {
    /// Now, on the lease clock (the one every lease decision and tick uses).
    fn lease_now(&mut self) -> Instant;
    /// The independent reference clock the clock guard compares the lease clock with; `None`
    /// when it cannot be read.
    fn reference_now(&mut self) -> Option<Duration>;
}

/// Where the loop's outgoing messages go.
pub trait PeerOutbox: Send + Sync {
    /// Queues messages for their peers without blocking. Failures come back to the loop as
    /// `LoopMsg::Unreachable` / `LoopMsg::SnapshotSent`.
    fn send(&self, msgs: Vec<Message>);
    /// The peers and their URLs changed (a snapshot or a membership change was applied).
    fn set_peers(&self, members: &BTreeMap<u64, Vec<String>>);
}

/// The real clocks: `Instant` (shifted by the test offset file when set) and
/// `CLOCK_MONOTONIC_RAW`.
pub struct SystemClocks {
    lease: LeaseClock,
}

impl SystemClocks {
    /// The system clocks; `offset_file` only with `--unsafe-test-clock-offset-file`.
    pub fn new(offset_file: Option<std::path::PathBuf>) -> Self {
        SystemClocks {
            lease: LeaseClock::new(offset_file),
        }
    }
}

impl LoopClocks for SystemClocks {
    fn lease_now(&mut self) -> Instant {
        self.lease.now()
    }

    fn reference_now(&mut self) -> Option<Duration> {
        reference_now()
    }
}

impl PeerOutbox for Transport {
    fn send(&self, msgs: Vec<Message>) {
        Transport::send(self, msgs)
    }

    fn set_peers(&self, members: &BTreeMap<u64, Vec<String>>) {
        Transport::set_peers(self, members)
    }
}

/// Where the loop runs work proportional to the data (writing a snapshot), so the loop itself
/// never waits for it. The job reports back through the loop's channel.
pub trait BackgroundJobs: Send + Sync {
    /// Runs `job` (named `name`) off the loop.
    fn spawn(&self, name: &str, job: Box<dyn FnOnce() + Send>);
}

/// Production: a thread per job (jobs are rare: one snapshot at a time), at a lower priority than
/// the Raft loop, so on a busy machine a job takes the loop's spare CPU, not the loop's turn.
pub struct Threads;

impl BackgroundJobs for Threads {
    fn spawn(&self, name: &str, job: Box<dyn FnOnce() + Send>) {
        // The job is moved into the closure only if the thread starts; keep it reachable for
        // the fallback.
        let slot = Arc::new(parking_lot::Mutex::new(Some(job)));
        let theirs = slot.clone();
        let started = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                crate::consensus::priority::lower_this_threads_priority();
                if let Some(job) = theirs.lock().take() {
                    job()
                }
            });
        if let Err(e) = started {
            tracing::warn!("cannot start thread {name} ({e}); running it on the Raft thread");
            if let Some(job) = slot.lock().take() {
                job()
            }
        }
    }
}

/// Runs jobs at once, on the caller's thread (a deterministic simulation).
pub struct Inline;

impl BackgroundJobs for Inline {
    fn spawn(&self, _name: &str, job: Box<dyn FnOnce() + Send>) {
        job()
    }
}

/// Everything the Raft loop takes from outside.
pub struct LoopEnv {
    /// Clocks.
    pub clocks: Box<dyn LoopClocks>,
    /// Peer messages out.
    pub outbox: Arc<dyn PeerOutbox>,
    /// The loop's only source of randomness (election timeouts, boot nonce).
    pub rng: StdRng,
    /// How long the process has been running when the loop starts (the restarted-voter window
    /// runs from process start).
    pub since_start: Duration,
    /// The first proposal sequence number is above this: it must exceed every sequence an
    /// earlier incarnation of this member used (the system uses the wall clock in ns).
    pub seq_floor: u64,
    /// Where snapshots are written.
    pub jobs: Arc<dyn BackgroundJobs>,
    /// The loop's own channel, for background jobs to report back.
    pub loopback: crossbeam_channel::Sender<crate::node::LoopMsg>,
}

impl LoopEnv {
    /// The production environment: system clocks, the gRPC transport, an OS-seeded generator.
    pub fn system(
        offset_file: Option<std::path::PathBuf>,
        transport: Arc<Transport>,
        since_start: Duration,
        loopback: crossbeam_channel::Sender<crate::node::LoopMsg>,
    ) -> Self {
        LoopEnv {
            clocks: Box::new(SystemClocks::new(offset_file)),
            outbox: transport,
            rng: StdRng::from_entropy(),
            since_start,
            seq_floor: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            jobs: Arc::new(Threads),
            loopback,
        }
    }
}

/// Draws raft-rs's randomized election timeouts from the loop's generator instead of raft-rs's
/// thread-local one (the same uniform range), so one seed decides every election in a
/// simulation. raft-rs re-draws the timeout whenever it resets (a new term or role); the loop
/// calls [`ElectionJitter::redraw`] after every call into Raft, and a reset shows as a change of
/// (term, role, leader) — before any tick can compare against raft-rs's own draw.
#[derive(Debug, Default)]
pub struct ElectionJitter {
    seen: Option<(u64, StateRole, u64)>,
}

impl ElectionJitter {
    /// Re-draws the timeout if Raft reset since the last call.
    pub fn redraw<S: Storage>(&mut self, raw: &mut RawNode<S>, rng: &mut StdRng) {
        let r = &mut raw.raft;
        let now = (r.term, r.state, r.leader_id);
        if self.seen == Some(now) {
            return;
        }
        self.seen = Some(now);
        // raft-rs's range: [election_tick, 2 * election_tick) when min/max are left at default.
        let min = r.election_timeout().max(1);
        r.set_randomized_election_timeout(rng.gen_range(min..2 * min));
    }
}
