//! The member as the rest of the process sees it: shared state read by the gRPC and HTTP handlers,
//! and a handle that submits proposals and linearizable-read barriers to the Raft loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::replicated::command::{ApplyResult, Command, CommandResponse};
use crate::replicated::membership::{MemberChange, MembershipError};
use crate::replicated::state_machine::StateMachine;

/// Why a request could not be served by Raft.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    /// No leader is known, and none appeared before the request timed out.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request did not complete in time (it may still take effect).
    #[error("etcdserver: request timed out")]
    Timeout,
    /// This member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// Raft refused a read or proposal for this attempt; the caller may retry.
    #[error("raft: {0}")]
    Retry(String),
    /// The request must be served by the leader and this member is not it.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// A leader transfer target that is not a voter.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A membership request was refused.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The lease does not exist.
    #[error("etcdserver: requested lease not found")]
    KeyLeaseNotFound,
    /// A command of a kind some member's version does not know yet.
    #[error("etcdserver: {0}")]
    NotYetSupported(String),
    /// The Raft loop has `--max-raft-queue` requests waiting already.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
}

/// Bounds what clients and peers can make wait for the Raft loop. Only their messages count
/// (the loop's own reports bypass it, so the loop never waits on itself); the loop lets one out
/// as it takes it.
#[derive(Debug)]
pub struct LoopQueue {
    queued: AtomicU64,
    limit: u64,
}

impl LoopQueue {
    /// A queue admitting up to `limit` messages.
    pub fn new(limit: usize) -> Self {
        LoopQueue {
            queued: AtomicU64::new(0),
            limit: limit as u64,
        }
    }

    /// Takes a place, or `false` when the queue is full.
    pub fn try_enter(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.leave();
            return false;
        }
        true
    }

    /// Gives a place back (never below zero: a driver may hand the loop messages directly).
    pub fn leave(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Messages waiting now.
    pub fn len(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Raft facts published by the loop for handlers and metrics.
#[derive(Debug, Clone, Default)]
pub struct RaftStatus {
    /// Current term.
    pub term: u64,
    /// Known leader (0 if none).
    pub leader_id: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Voters of the applied configuration.
    pub voters: Vec<u64>,
    /// Learners of the applied configuration.
    pub learners: Vec<u64>,
}

/// State shared between the Raft loop and the request handlers.
pub struct Shared {
    /// Validated configuration.
    pub config: Config,
    /// What clients and peers have waiting for the Raft loop.
    pub loop_queue: LoopQueue,
    /// The replicated state; written only by the Raft loop.
    pub state: RwLock<StateMachine>,
    /// Raft status; written only by the Raft loop.
    pub status: RwLock<RaftStatus>,
    /// Applied index; handlers wait on it.
    pub applied: watch::Sender<u64>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set when shutdown begins.
    pub stopping: AtomicBool,
    /// Last time the Raft loop went round (ms since the process started), for liveness.
    pub loop_heartbeat_ms: AtomicU64,
    /// Process start, the zero of `loop_heartbeat_ms`.
    pub started: Instant,
    /// Becomes true when this member has been removed from the cluster.
    pub removed: watch::Sender<bool>,
    /// Becomes true when the member must stop so that its supervisor starts it again (a
    /// force-new-cluster request left for the next start).
    pub restart: watch::Sender<bool>,
    /// Applied writes, one batch per revision, for watchers (lagging receivers catch up from
    /// the MVCC history).
    pub watch: tokio::sync::broadcast::Sender<Arc<WatchBatch>>,
}

/// The events of one applied revision (or, with no events, a point up to which watchers should
/// catch up from history, e.g. after a snapshot replaced the state).
#[derive(Debug, Clone)]
pub struct WatchBatch {
    /// Revision the events were written at (the store's revision after them).
    pub revision: i64,
    /// Events in order.
    pub events: Vec<etcd_client::proto::PbEvent>,
}

/// Applied revisions buffered for watch streams; a stream further behind catches up from history.
pub const WATCH_BUFFER: usize = 4096;

/// Most event bytes the buffered revisions hold together; past it a revision is published as a
/// catch-up marker (no events) and watchers read it from history.
pub const WATCH_BUFFER_BYTES: usize = 64 << 20;

/// Keeps the revisions buffered for watch streams within [`WATCH_BUFFER_BYTES`]: it knows the
/// sizes of the last [`WATCH_BUFFER`] batches published (what the broadcast ring holds).
#[derive(Debug, Default)]
pub struct WatchFeed {
    sizes: std::collections::VecDeque<usize>,
    bytes: usize,
}

impl WatchFeed {
    /// The batch to publish for `batch`: itself, or a marker at its revision when its events
    /// would take the ring past its byte budget.
    pub fn admit(&mut self, batch: WatchBatch) -> Arc<WatchBatch> {
        use prost::Message as _;
        let size: usize = batch.events.iter().map(|e| e.encoded_len()).sum();
        let (batch, size) = if self.bytes + size > WATCH_BUFFER_BYTES {
            (
                WatchBatch {
                    revision: batch.revision,
                    events: Vec::new(),
                },
                0,
            )
        } else {
            (batch, size)
        };
        self.sizes.push_back(size);
        self.bytes += size;
        if self.sizes.len() > WATCH_BUFFER {
            self.bytes -= self.sizes.pop_front().unwrap_or(0);
        }
        Arc::new(batch)
    }
}

impl Shared {
    /// The shared state of a member whose data dir opened at `applied` with `state`.
    pub fn new(
        config: Config,
        state: StateMachine,
        applied: u64,
    ) -> Result<Self, prometheus::Error> {
        Ok(Shared {
            state: RwLock::new(state),
            status: RwLock::new(RaftStatus::default()),
            applied: watch::channel(applied).0,
            metrics: Metrics::new()?,
            stopping: AtomicBool::new(false),
            loop_heartbeat_ms: AtomicU64::new(0),
            started: Instant::now(),
            removed: watch::channel(false).0,
            restart: watch::channel(false).0,
            watch: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
            loop_queue: LoopQueue::new(config.max_raft_queue),
            config,
        })
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.config.member_id
    }

    /// etcd's response header at `revision` (None: the current revision).
    pub fn header(&self, revision: Option<i64>) -> etcd_client::proto::PbResponseHeader {
        let sm = self.state.read();
        etcd_client::proto::PbResponseHeader {
            cluster_id: sm.cluster_id,
            member_id: self.member_id(),
            revision: revision.unwrap_or_else(|| sm.store.current_revision()),
            raft_term: self.status.read().term,
        }
    }

    /// The client URL of the leader when another member leads and has published it, for
    /// forwarding requests only the leader can serve.
    pub fn leader_client_url(&self) -> Option<String> {
        let leader = self.status.read().leader_id;
        if leader == 0 || leader == self.member_id() {
            return None;
        }
        self.state
            .read()
            .members
            .get(&leader)
            .and_then(|m| m.client_urls.first().cloned())
    }

    /// True when a leader is known.
    pub fn has_leader(&self) -> bool {
        self.status.read().leader_id != 0
    }

    /// True when the Raft loop went round recently.
    pub fn loop_alive(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.loop_heartbeat_ms.load(Ordering::Relaxed)) < 5_000
    }
}

/// Requests the handlers send to the Raft loop.
pub enum LoopMsg {
    /// Propose a command; the reply comes when it is applied here.
    Propose {
        /// Id unique to this member, carried in the entry context.
        id: u64,
        /// Encoded command.
        data: Vec<u8>,
        /// Where the result goes.
        reply: oneshot::Sender<Result<ApplyResult, NodeError>>,
    },
    /// Make a linearizable read possible: by lease when valid, else by ReadIndex. The reply
    /// carries the index to wait for and the path chosen.
    Read {
        /// Where the grant goes.
        reply: oneshot::Sender<Result<ReadGrant, NodeError>>,
    },
    /// The operator's membership hint.
    SetPolicy {
        /// Expected voters.
        expected_voters: u32,
        /// Push generation.
        generation: u64,
        /// The outcome.
        reply: oneshot::Sender<PolicyReply>,
    },
    /// Current lease status.
    ReadLeaseStatus {
        /// The status.
        reply: oneshot::Sender<ReadLeaseStatusReply>,
    },
    /// A membership change, checked and proposed by the leader (`NotLeader` elsewhere); the
    /// reply comes when it is applied here, with the member list after it.
    ChangeMembership {
        /// Proposal id (as for `Propose`).
        id: u64,
        /// The change.
        change: MemberChange,
        /// Where the result goes.
        reply: oneshot::Sender<Result<ApplyResult, NodeError>>,
    },
    /// Stopping: if this member leads and another voter exists, start a transfer to the most
    /// caught-up one; the reply names it (`None`: nothing to hand off).
    HandOffLeadership {
        /// The voter the transfer goes to.
        reply: oneshot::Sender<Option<u64>>,
    },
    /// Start a leader transfer to `target` (leader only).
    TransferLeader {
        /// New leader.
        target: u64,
        /// Accepted or refused.
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    /// Renews a lease (leader only): the reply is its granted TTL.
    KeyLeaseKeepAlive {
        /// Lease id.
        id: i64,
        /// Granted TTL, `LeaseNotFound` or `NotLeader`.
        reply: oneshot::Sender<Result<i64, NodeError>>,
    },
    /// Time left on a lease (leader only).
    KeyLeaseTimeToLive {
        /// Lease id.
        id: i64,
        /// The answer.
        reply: oneshot::Sender<Result<KeyLeaseTtl, NodeError>>,
    },
    /// A peer refused us because we were removed from the cluster.
    RemovedByPeer(u64),
    /// A message from a peer.
    Step(Box<raft::eraftpb::Message>),
    /// A message this member's Raft addressed to itself (see `Transport::send`).
    StepOwn(Box<raft::eraftpb::Message>),
    /// A snapshot from a peer (the message carries its metadata), already written to disk and
    /// decoded off the Raft thread.
    StepSnapshot(
        Box<raft::eraftpb::Message>,
        Box<crate::consensus::snapshot_transfer::ReceivedSnapshot>,
    ),
    /// A snapshot of the local state was written off the Raft thread (or failed).
    SnapshotWritten(
        Result<
            crate::consensus::snapshot_files::SnapshotWritten,
            crate::consensus::snapshot_files::SnapshotFileError,
        >,
    ),
    /// A peer could not be reached.
    Unreachable(u64),
    /// A snapshot sent to a peer finished (true) or failed (false).
    SnapshotSent(u64, bool),
    /// Stop the loop after flushing the log.
    Shutdown,
}

impl LoopMsg {
    /// True for messages from clients and peers, which count against [`LoopQueue`].
    pub fn from_outside(&self) -> bool {
        !matches!(
            self,
            LoopMsg::RemovedByPeer(_)
                | LoopMsg::StepOwn(_)
                | LoopMsg::Unreachable(_)
                | LoopMsg::SnapshotSent(..)
                | LoopMsg::SnapshotWritten(_)
                | LoopMsg::Shutdown
        )
    }
}

/// A lease's TTLs as the leader sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLeaseTtl {
    /// Granted TTL (seconds).
    pub granted: i64,
    /// Seconds left.
    pub remaining: i64,
    /// Attached keys.
    pub keys: Vec<Vec<u8>>,
}

/// Permission to serve a linearizable read once `applied >= index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadGrant {
    /// Index the local state must reach first.
    pub index: u64,
    /// How the grant was obtained.
    pub path: ReadPath,
}

/// Answer to [`LoopMsg::SetPolicy`].
#[derive(Debug, Clone)]
pub struct PolicyReply {
    /// What happened to the push.
    pub outcome: crate::read_lease::policy::HintOutcome,
    /// The lease view after it.
    pub view: crate::read_lease::reads::ReadLeaseView,
}

/// Answer to [`LoopMsg::ReadLeaseStatus`].
#[derive(Debug, Clone)]
pub struct ReadLeaseStatusReply {
    /// Lease view.
    pub view: crate::read_lease::reads::ReadLeaseView,
    /// Raft status at the same moment.
    pub status: RaftStatus,
    /// Applied index.
    pub applied: u64,
}

/// What handlers use to reach Raft.
#[derive(Clone)]
pub struct NodeHandle {
    /// Shared state.
    pub shared: Arc<Shared>,
    tx: crossbeam_channel::Sender<LoopMsg>,
    next_id: Arc<AtomicU64>,
}

/// Pause between attempts when Raft asked to retry (no leader yet, leader changing).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

impl NodeHandle {
    /// Wraps the loop's channel.
    pub fn new(shared: Arc<Shared>, tx: crossbeam_channel::Sender<LoopMsg>) -> Self {
        // Ids grow across restarts (seeded by wall time) so an old entry replayed after a restart
        // never answers a new request.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        NodeHandle {
            shared,
            tx,
            next_id: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// Sends a client's message to the loop, refused when `--max-raft-queue` already wait.
    pub fn send(&self, msg: LoopMsg) -> Result<(), NodeError> {
        if !self.shared.loop_queue.try_enter() {
            self.shared.metrics.raft_queue_refused.inc();
            return Err(NodeError::TooManyRequests);
        }
        self.tx.send(msg).map_err(|_| {
            self.shared.loop_queue.leave();
            NodeError::Stopped
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.shared.config.request_timeout
    }

    /// Proposes a client's request made by `caller` (checked against auth when applied, once
    /// the cluster reads such entries) and waits until it is applied on this member.
    pub async fn propose_as(
        &self,
        caller: crate::auth::Caller,
        cmd: Command,
    ) -> Result<CommandResponse, ProposeError> {
        let cluster = self.shared.state.read().cluster_version();
        self.propose(cmd.from_caller(caller, cluster)).await
    }

    /// Proposes a command and waits until it is applied on this member.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, ProposeError> {
        // A kind is written only once every member can read it.
        let cluster = self.shared.state.read().cluster_version();
        let needs = cmd.introduced();
        let allowed = match &cmd {
            // Proposed only when every member runs `v`.
            Command::ClusterVersion(v) => *v >= needs,
            _ => needs <= cluster,
        };
        if !allowed {
            return Err(NodeError::NotYetSupported(format!(
                "this request needs cluster version {needs}; the cluster runs {cluster}"
            ))
            .into());
        }
        let data = cmd.encode();
        let deadline = self.deadline();
        let metrics = &self.shared.metrics;
        metrics.proposals_submitted.inc();
        loop {
            if self.shared.stopping.load(Ordering::Relaxed) {
                return Err(NodeError::Stopped.into());
            }
            let (reply, rx) = oneshot::channel();
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.send(LoopMsg::Propose {
                id,
                data: data.clone(),
                reply,
            })?;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(Ok(result))) => return result.map_err(ProposeError::Apply),
                // Dropped before it entered the log: safe to try again.
                Ok(Ok(Err(NodeError::Retry(_)))) if Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Ok(Err(NodeError::Retry(_)))) => {
                    metrics.proposals_failed.inc();
                    return Err(self.unavailable().into());
                }
                Ok(Ok(Err(e))) => {
                    metrics.proposals_failed.inc();
                    return Err(e.into());
                }
                Ok(Err(_)) => return Err(NodeError::Stopped.into()),
                Err(_) => {
                    metrics.proposals_failed.inc();
                    return Err(self.unavailable().into());
                }
            }
        }
    }

    fn unavailable(&self) -> NodeError {
        if self.shared.has_leader() {
            NodeError::Timeout
        } else {
            NodeError::NoLeader
        }
    }

    /// Makes a following local read as fresh as the request asks, and says how: serializable
    /// reads are served as they are; linearizable ones wait for a ReadIndex barrier. (Lease reads,
    /// when safe, will be chosen here too.) Counts the path in `metastore_read_total`.
    pub async fn read_barrier(&self, serializable: bool) -> Result<ReadPath, NodeError> {
        let path = if serializable {
            ReadPath::Serializable
        } else {
            self.linearizable_barrier().await?
        };
        self.shared
            .metrics
            .reads
            .with_label_values(&[path.label()])
            .inc();
        Ok(path)
    }

    /// Waits until every write committed before this call is applied here, by lease when the
    /// leader holds a valid one, else by ReadIndex. After it returns, a local read is
    /// linearizable.
    pub async fn linearizable_barrier(&self) -> Result<ReadPath, NodeError> {
        let deadline = self.deadline();
        let started = Instant::now();
        loop {
            if self.shared.stopping.load(Ordering::Relaxed) {
                return Err(NodeError::Stopped);
            }
            let (reply, rx) = oneshot::channel();
            self.send(LoopMsg::Read { reply })?;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(Ok(grant))) => {
                    if grant.path == ReadPath::ReadIndex {
                        self.shared
                            .metrics
                            .read_index_seconds
                            .observe(started.elapsed().as_secs_f64());
                    }
                    self.wait_applied(grant.index, deadline).await?;
                    return Ok(grant.path);
                }
                Ok(Ok(Err(NodeError::Retry(_)))) if Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Ok(Err(NodeError::Retry(_)))) | Err(_) => return Err(self.unavailable()),
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) => return Err(NodeError::Stopped),
            }
        }
    }

    /// Asks the Raft loop something and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> LoopMsg,
    ) -> Result<T, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        match tokio::time::timeout(self.shared.config.request_timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        }
    }

    /// Asks the leader to make a membership change and waits until it is applied here. Returns
    /// the member list after it; `NotLeader` when this member does not lead.
    pub async fn change_membership(
        &self,
        change: MemberChange,
    ) -> Result<Vec<crate::replicated::member::Member>, NodeError> {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(NodeError::Stopped);
        }
        let deadline = self.deadline();
        let (reply, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(LoopMsg::ChangeMembership { id, change, reply })?;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(Ok(Ok(CommandResponse::Members(m))))) => Ok(m),
            Ok(Ok(Ok(_))) => Err(NodeError::Retry("unexpected response".into())),
            Ok(Ok(Err(NodeError::Retry(_)))) | Err(_) => Err(self.unavailable()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(NodeError::Stopped),
        }
    }

    /// Waits until the applied index reaches `index`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), NodeError> {
        let mut rx = self.shared.applied.subscribe();
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = match tokio::time::timeout(left, rx.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout),
        };
        outcome
    }
}

/// The path that served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// Local state as it is (may be stale).
    Serializable,
    /// Local state after a ReadIndex round confirmed leadership and the applied index caught up.
    ReadIndex,
    /// Local state on the leader, inside a valid lease, after the applied index caught up.
    Lease,
}

impl ReadPath {
    /// The `path` label of `metastore_read_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ReadPath::Serializable => "serializable",
            ReadPath::ReadIndex => "read_index",
            ReadPath::Lease => "lease",
        }
    }
}

/// A proposal that failed: in Raft, or deterministically when applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Raft could not commit it (in time).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// It was applied and the state machine rejected it.
    #[error(transparent)]
    Apply(crate::replicated::command::ApplyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(revision: i64, value_bytes: usize) -> WatchBatch {
        WatchBatch {
            revision,
            events: vec![etcd_client::proto::PbEvent {
                kv: Some(etcd_client::proto::PbKeyValue {
                    key: b"k".to_vec(),
                    value: vec![0; value_bytes],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_watch_feed_turns_batches_past_its_byte_budget_into_markers() {
        let mut feed = WatchFeed::default();
        let big = WATCH_BUFFER_BYTES / 4;
        let kept: Vec<bool> = (1..=6)
            .map(|r| !feed.admit(batch(r, big)).events.is_empty())
            .collect();
        // Three fit (each a little over a quarter with its encoding), the rest become markers.
        assert_eq!(kept, [true, true, true, false, false, false]);
        // Once the ring has turned over, events flow again.
        for r in 7..(7 + WATCH_BUFFER as i64) {
            feed.admit(batch(r, 0));
        }
        assert!(!feed.admit(batch(9999, big)).events.is_empty());
        assert_eq!(feed.admit(batch(10000, 10)).revision, 10000);
    }

    #[test]
    fn the_loop_queue_admits_up_to_its_limit() {
        let q = LoopQueue::new(2);
        assert!(q.try_enter() && q.try_enter());
        assert!(!q.try_enter());
        q.leave();
        assert!(q.try_enter());
        for _ in 0..5 {
            q.leave();
        }
        assert!(q.is_empty(), "never below zero");
    }
}
