//! Peer transport: Raft messages to and from other members over gRPC streams.
//!
//! Sending never blocks the Raft loop: each peer has a bounded queue drained by its own task, which
//! reconnects with backoff; when the queue is full the message is dropped (Raft retransmits) and
//! the peer is reported unreachable. Snapshots travel on their own stream, in chunks, read from
//! the sender's snapshot file and written to the receiver's as they go (a few chunks in memory).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};

use crate::consensus::message_guard;
use crate::consensus::snapshot_files::{SnapshotFileError, SnapshotFiles};
use crate::consensus::snapshot_transfer::{
    self, max_snapshot_bytes, ChunkReader, ReceivedSnapshot,
};
use crate::node::{LoopMsg, Shared};
use crate::peer_proto::peer_client::PeerClient;
use crate::peer_proto::peer_server::Peer;
use crate::peer_proto::{
    Ack, MemberInfo, MembersRequest, MembersResponse, PeerVersionRequest, PeerVersionResponse,
    RaftBatch, SnapshotChunk,
};
use crate::replicated::member::{same_peer_urls, Member};
use crate::replicated::state_machine::StateMachine;
use crate::tls::TlsSettings;
use metastore_mvcc::ValuesDatabase;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Most messages in one batch on the wire.
const MAX_BATCH: usize = 256;
/// Size of one snapshot chunk.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Largest peer gRPC message accepted (entries can be as large as a client request).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

struct PeerSender {
    url: String,
    queue: mpsc::Sender<Message>,
    task: tokio::task::JoinHandle<()>,
}

/// Sends Raft messages to peers.
pub struct Transport {
    me: u64,
    cluster_id: u64,
    dialing: Dialing,
    peers: Mutex<HashMap<u64, PeerSender>>,
    raft: crossbeam_channel::Sender<LoopMsg>,
    rt: tokio::runtime::Handle,
    /// Where the snapshots this member sends are read from.
    snapshots: SnapshotFiles,
    /// The member's live values database (its own snapshots leave their values there).
    values: ValuesSource,
}

/// What a snapshot sent now reads its values from: the live values database (a received
/// snapshot can replace it), and whether the cluster version lets it travel as an image of the
/// database's file ([`snapshot_transfer::IMAGE_FROM`]).
pub type ValuesSource = Arc<dyn Fn() -> (Option<ValuesDatabase>, bool) + Send + Sync>;

/// How this member dials its peers.
#[derive(Debug, Clone, Default)]
pub struct Dialing {
    /// The local address connections leave from (its own peer address, when it is a local IP).
    pub local: Option<IpAddr>,
    /// Peer TLS files, for https:// peer URLs.
    pub tls: Option<Arc<TlsSettings>>,
}

impl Transport {
    /// Creates a transport for member `me` of `cluster_id`, dialing as `dialing` says, sending
    /// snapshots from `snapshots` with the values `values` gives; tasks run on `rt`.
    pub fn new(
        me: u64,
        cluster_id: u64,
        dialing: Dialing,
        raft: crossbeam_channel::Sender<LoopMsg>,
        rt: tokio::runtime::Handle,
        snapshots: SnapshotFiles,
        values: ValuesSource,
    ) -> Self {
        Transport {
            me,
            cluster_id,
            dialing,
            peers: Mutex::new(HashMap::new()),
            raft,
            rt,
            snapshots,
            values,
        }
    }

    /// Starts senders for new peers, restarts those whose URL changed, stops removed ones.
    pub fn set_peers(&self, members: &BTreeMap<u64, Vec<String>>) {
        let mut peers = self.peers.lock();
        peers.retain(|id, p| {
            let keep = members
                .get(id)
                .and_then(|u| u.first())
                .is_some_and(|u| *u == p.url);
            if !keep {
                p.task.abort();
            }
            keep
        });
        for (id, urls) in members {
            if *id == self.me || peers.contains_key(id) {
                continue;
            }
            let Some(url) = urls.first().cloned() else {
                continue;
            };
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let task = self.rt.spawn(run_peer(
                *id,
                self.cluster_id,
                url.clone(),
                self.dialing.clone(),
                rx,
                self.raft.clone(),
            ));
            peers.insert(
                *id,
                PeerSender {
                    url,
                    queue: tx,
                    task,
                },
            );
        }
    }

    /// Queues messages for their peers without blocking.
    pub fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let peers = self.peers.lock();
        for m in msgs {
            let to = m.to;
            if to == self.me {
                // raft-rs forwards a read index to the leader it knows, which can be this member
                // by the time the message leaves: hand it back to the loop, not to the network.
                let _ = self.raft.send(LoopMsg::StepOwn(Box::new(m)));
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                match peers.get(&to) {
                    Some(p) => {
                        self.rt.spawn(send_snapshot(
                            self.cluster_id,
                            p.url.clone(),
                            self.dialing.clone(),
                            m,
                            self.raft.clone(),
                            self.snapshots.clone(),
                            (self.values)(),
                        ));
                    }
                    None => {
                        let _ = self.raft.send(LoopMsg::SnapshotSent(to, false));
                    }
                }
                continue;
            }
            let delivered = peers.get(&to).is_some_and(|p| p.queue.try_send(m).is_ok());
            if !delivered {
                let _ = self.raft.send(LoopMsg::Unreachable(to));
            }
        }
    }

    /// Stops every sender task.
    pub fn shutdown(&self) {
        for (_, p) in self.peers.lock().drain() {
            p.task.abort();
        }
    }
}

/// Where to dial a peer; outgoing connections leave from this member's own peer address, so
/// network rules (and peers' logs) can tell members apart even on one host.
/// With peer TLS files, https:// URLs are dialed with this member's peer certificate, read now
/// (a rotated one is used from the next connection on).
fn endpoint(
    url: &str,
    dialing: &Dialing,
) -> Result<Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let ep = Endpoint::from_shared(url.to_string())?
        .local_address(dialing.local)
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(
        match crate::tls::client_tls_for(dialing.tls.as_deref(), url)? {
            Some(tls) => ep.tls_config(tls)?,
            None => ep,
        },
    )
}

/// One peer's sender: connect, stream batches, and on any failure report and reconnect.
async fn run_peer(
    id: u64,
    cluster_id: u64,
    url: String,
    dialing: Dialing,
    mut rx: mpsc::Receiver<Message>,
    raft: crossbeam_channel::Sender<LoopMsg>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let client = match endpoint(&url, &dialing) {
            Ok(ep) => ep
                .connect()
                .await
                .map(|ch| PeerClient::new(ch).max_encoding_message_size(MAX_PEER_MESSAGE)),
            Err(e) => {
                tracing::error!(peer = format_args!("{id:x}"), "bad peer URL {url}: {e}");
                return;
            }
        };
        match client {
            Ok(mut client) => {
                backoff = Duration::from_millis(20);
                let (tx, srx) = mpsc::channel::<RaftBatch>(64);
                let mut call =
                    tokio::spawn(async move { client.stream(ReceiverStream::new(srx)).await });
                let mut refused = None;
                loop {
                    let first = tokio::select! {
                        m = rx.recv() => match m { Some(m) => m, None => { call.abort(); return; } },
                        r = &mut call => {
                            if let Ok(Err(status)) = r {
                                refused = Some(status);
                            }
                            break;
                        }
                    };
                    let mut messages = vec![first.write_to_bytes().unwrap_or_default()];
                    while messages.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(m) => messages.push(m.write_to_bytes().unwrap_or_default()),
                            Err(_) => break,
                        }
                    }
                    if tx
                        .send(RaftBatch {
                            messages,
                            cluster_id,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                call.abort();
                match refused {
                    Some(s)
                        if s.code() == tonic::Code::PermissionDenied
                            && s.message().starts_with(REMOVED_MARKER) =>
                    {
                        tracing::error!(
                            peer = format_args!("{id:x}"),
                            "peer refuses us: {}",
                            s.message()
                        );
                        let _ = raft.send(LoopMsg::RemovedByPeer(id));
                        return;
                    }
                    Some(s) if s.code() == tonic::Code::FailedPrecondition => {
                        tracing::error!(
                            peer = format_args!("{id:x}"),
                            "peer refuses us: {}",
                            s.message()
                        );
                    }
                    _ => {}
                }
                tracing::debug!(peer = format_args!("{id:x}"), "peer stream ended");
            }
            Err(e) => tracing::debug!(peer = format_args!("{id:x}"), "connect {url}: {e}"),
        }
        if raft.send(LoopMsg::Unreachable(id)).is_err() {
            return;
        }
        // What queued while disconnected is stale; Raft will resend what matters.
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Chunks read ahead of the network when sending a snapshot.
const SNAPSHOT_READ_AHEAD: usize = 4;

/// Streams one snapshot from its file, in chunks (a few in memory at a time), and reports the
/// outcome to Raft.
async fn send_snapshot(
    cluster_id: u64,
    url: String,
    dialing: Dialing,
    mut msg: Message,
    raft: crossbeam_channel::Sender<LoopMsg>,
    files: SnapshotFiles,
    (values, as_image): (Option<ValuesDatabase>, bool),
) {
    let to = msg.to;
    // The body is in the file the metadata names, not in the message.
    msg.mut_snapshot().clear_data();
    let meta = msg.get_snapshot().get_metadata().clone();
    let header = msg.write_to_bytes().unwrap_or_default();
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(SNAPSHOT_READ_AHEAD);
    let first = SnapshotChunk {
        message: header,
        data: Vec::new(),
        cluster_id,
    };
    // The file is read on a blocking thread, as fast as the network takes the chunks.
    let started = std::time::Instant::now();
    let reader = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        tx.blocking_send(first)
            .map_err(|_| "receiver gone".to_string())?;
        let mut chunks = ChunkSender {
            tx,
            buf: Vec::with_capacity(SNAPSHOT_CHUNK),
            cluster_id,
        };
        snapshot_transfer::write_sendable(&files, &meta, values.as_ref(), as_image, &mut chunks)?
            .ok_or_else(|| format!("snapshot {} is no longer on disk", meta.index))
    });
    let result = async {
        let ch = endpoint(&url, &dialing)?.connect().await?;
        let mut client = PeerClient::new(ch).max_encoding_message_size(MAX_PEER_MESSAGE);
        client
            .snapshot(ReceiverStream::new(rx))
            .await
            .map_err(|s| -> Box<dyn std::error::Error + Send + Sync> { Box::new(s) })?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    let read = reader.await.map_err(|e| e.to_string()).and_then(|r| r);
    let ok = match (result.map_err(|e| e.to_string()), read) {
        (Ok(()), Ok(size)) => {
            tracing::info!(
                peer = format_args!("{to:x}"),
                bytes = size,
                took_ms = started.elapsed().as_millis() as u64,
                "sent snapshot"
            );
            true
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(
                peer = format_args!("{to:x}"),
                "sending snapshot failed: {e}"
            );
            false
        }
    };
    let _ = raft.send(LoopMsg::SnapshotSent(to, ok));
}

/// Cuts a written snapshot body into chunks for the network (a few in memory at a time).
struct ChunkSender {
    tx: mpsc::Sender<SnapshotChunk>,
    buf: Vec<u8>,
    cluster_id: u64,
}

impl ChunkSender {
    fn send_buffered(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK));
        self.tx
            .blocking_send(SnapshotChunk {
                message: Vec::new(),
                data,
                cluster_id: self.cluster_id,
            })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver gone"))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(SNAPSHOT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() >= SNAPSHOT_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffered()
    }
}

/// The gRPC service receiving other members' messages.
pub struct PeerService {
    raft: crossbeam_channel::Sender<LoopMsg>,
    shared: Arc<Shared>,
    snapshots: SnapshotFiles,
    /// One snapshot received at a time (each is written to disk and decoded in full).
    receiving: Arc<tokio::sync::Semaphore>,
}

/// The status for a snapshot whose writer failed (the file is already removed).
fn receive_failed(
    r: Result<Result<ReceivedSnapshot, SnapshotFileError>, tokio::task::JoinError>,
) -> Status {
    match r {
        Ok(Err(SnapshotFileError::TooLarge { limit })) => {
            tracing::warn!(limit, "refused a snapshot larger than the limit");
            Status::resource_exhausted(format!("snapshot larger than {limit} bytes refused"))
        }
        Ok(Err(e)) => {
            tracing::warn!("receiving snapshot failed: {e}");
            Status::internal(format!("receiving snapshot failed: {e}"))
        }
        Ok(Ok(_)) => Status::internal("receiving snapshot stopped early"),
        Err(e) => Status::internal(format!("receiving snapshot failed: {e}")),
    }
}

/// Prefix of the refusal a removed member gets from its former peers; only this (not any
/// PermissionDenied, which a proxy could produce) makes a member retire its data dir.
pub const REMOVED_MARKER: &str = "metastore: member removed";

/// etcd's message for a peer of another cluster.
pub const ERR_CLUSTER_ID_MISMATCH: &str = "etcdserver: cluster ID mismatch";

impl PeerService {
    /// Delivers received messages to the Raft loop; received snapshots go to `snapshots`.
    pub fn new(
        raft: crossbeam_channel::Sender<LoopMsg>,
        shared: Arc<Shared>,
        snapshots: SnapshotFiles,
    ) -> Self {
        PeerService {
            raft,
            shared,
            snapshots,
            receiving: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Screens one message under one look at the state: `Err` ends the stream (a peer of
    /// another cluster, or a member removed from this one); `Ok(false)` drops the message (meant
    /// for an earlier member at this address, or refused by [`message_guard::check_sender`],
    /// counted); `Ok(true)` delivers it.
    fn screen(
        &self,
        cluster_id: u64,
        m: &Message,
        identity: &message_guard::Identity,
    ) -> Result<bool, Status> {
        let sm = self.shared.state.read();
        Self::admit(&sm, cluster_id, m.from)?;
        if m.to != self.shared.member_id() {
            return Ok(false);
        }
        match message_guard::check_sender(m, self.shared.member_id(), &sm.members, identity) {
            Ok(()) => Ok(true),
            Err(r) => {
                r.record(&self.shared.metrics, m);
                Ok(false)
            }
        }
    }

    /// Refuses peers of another cluster and members removed from this one.
    fn admit(sm: &StateMachine, cluster_id: u64, from: u64) -> Result<(), Status> {
        if cluster_id != 0 && sm.cluster_id != 0 && cluster_id != sm.cluster_id {
            return Err(Status::failed_precondition(format!(
                "{ERR_CLUSTER_ID_MISMATCH}: ours is {:x}, the sender's is {cluster_id:x}",
                sm.cluster_id
            )));
        }
        if sm.removed.contains(&from) {
            return Err(Status::permission_denied(format!(
                "{REMOVED_MARKER}: member {from:x} was removed from cluster {:x}",
                sm.cluster_id
            )));
        }
        Ok(())
    }

    /// What a request's connection proves about its sender: with `--peer-client-cert-auth`,
    /// the leaf certificate it presented.
    fn identity<T>(&self, req: &Request<T>) -> message_guard::Identity {
        let required = self
            .shared
            .config
            .peer_tls
            .as_ref()
            .is_some_and(|t| t.client_cert_auth);
        if !required {
            return message_guard::Identity::Unproven;
        }
        let allowed_cn = self.shared.config.peer_cert_allowed_cn.as_deref();
        match req.peer_certs().and_then(|c| c.first().cloned()) {
            // `--peer-cert-allowed-cn`: a certificate of another name proves nobody.
            Some(c)
                if allowed_cn
                    .is_some_and(|cn| crate::tls::common_name(&c).as_deref() != Some(cn)) =>
            {
                message_guard::Identity::Missing
            }
            Some(c) => message_guard::Identity::Certificate(c),
            None => message_guard::Identity::Missing,
        }
    }

    fn deliver(&self, m: Message) -> Result<(), Status> {
        if !self.shared.loop_queue.try_enter() {
            // Raft resends what a peer did not acknowledge.
            self.shared.metrics.peer_messages_dropped.inc();
            return Ok(());
        }
        self.raft.send(LoopMsg::Step(Box::new(m))).map_err(|_| {
            self.shared.loop_queue.leave();
            Status::unavailable("member is stopping")
        })
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    Message::parse_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(&self, req: Request<Streaming<RaftBatch>>) -> Result<Response<Ack>, Status> {
        let identity = self.identity(&req);
        let mut s = req.into_inner();
        while let Some(batch) = s.next().await {
            let batch = batch?;
            for bytes in batch.messages {
                let m = decode(&bytes)?;
                if self.screen(batch.cluster_id, &m, &identity)? {
                    self.deliver(m)?;
                }
            }
        }
        Ok(Response::new(Ack {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Ack>, Status> {
        let identity = self.identity(&req);
        let mut s = req.into_inner();
        let first = s
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let mut msg = decode(&first.message)?;
        if msg.get_msg_type() != MessageType::MsgSnapshot || msg.to != self.shared.member_id() {
            Self::admit(&self.shared.state.read(), first.cluster_id, msg.from)?;
            return Err(Status::invalid_argument("not a snapshot for this member"));
        }
        if !self.screen(first.cluster_id, &msg, &identity)? {
            return Err(Status::permission_denied(
                "snapshot refused: not from a member this connection's certificate names",
            ));
        }
        let one_at_a_time = self.receiving.clone().try_acquire_owned().map_err(|_| {
            self.shared.metrics.snapshots_refused.inc();
            Status::resource_exhausted("already receiving a snapshot")
        })?;
        msg.mut_snapshot().clear_data();
        let meta = msg.get_snapshot().get_metadata().clone();
        let limit = max_snapshot_bytes(self.shared.config.quota_backend_bytes);
        // The body goes to disk on a blocking thread as it arrives, then is decoded there.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(SNAPSHOT_READ_AHEAD);
        let files = self.snapshots.clone();
        let into = self
            .shared
            .state
            .read()
            .store
            .empty_like()
            .map_err(|e| Status::internal(e.to_string()))?;
        // A snapshot that brings its values database file puts it beside this member's.
        let home = into
            .disk_values()
            .map(|_| crate::consensus::bootstrap::values_home(&self.shared.config));
        let writer = tokio::task::spawn_blocking(move || {
            // Held until the receiver is done, even if the stream's handler is dropped first
            // (the sender reset it): the next transfer waits for this one's files.
            let _one_at_a_time = one_at_a_time;
            snapshot_transfer::receive(
                &files,
                &meta,
                ChunkReader::new(rx),
                limit,
                into,
                home.as_ref(),
            )
        });
        let failed = |r| {
            let status = receive_failed(r);
            if status.code() == tonic::Code::ResourceExhausted {
                self.shared.metrics.snapshots_refused.inc();
            }
            status
        };
        if !first.data.is_empty() && tx.send(first.data).await.is_err() {
            return Err(failed(writer.await));
        }
        while let Some(chunk) = s.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    // Dropping the sender ends the file short; the writer's result is moot.
                    drop(tx);
                    let _ = writer.await;
                    return Err(e);
                }
            };
            if tx.send(chunk.data).await.is_err() {
                return Err(failed(writer.await));
            }
        }
        drop(tx);
        let received = match writer.await {
            Ok(Ok(r)) => r,
            other => return Err(failed(other)),
        };
        if !self.shared.loop_queue.try_enter() {
            self.shared.metrics.peer_messages_dropped.inc();
            return Err(Status::resource_exhausted(
                "etcdserver: too many requests waiting for the Raft loop",
            ));
        }
        self.raft
            .send(LoopMsg::StepSnapshot(Box::new(msg), Box::new(received)))
            .map_err(|_| {
                self.shared.loop_queue.leave();
                Status::unavailable("member is stopping")
            })?;
        Ok(Response::new(Ack {}))
    }

    async fn version(
        &self,
        _req: Request<PeerVersionRequest>,
    ) -> Result<Response<PeerVersionResponse>, Status> {
        Ok(Response::new(PeerVersionResponse {
            member_version: crate::replicated::version::member_version().to_string(),
            cluster_version: self.shared.state.read().cluster_version().to_string(),
        }))
    }

    async fn members(
        &self,
        _req: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        let sm = self.shared.state.read();
        Ok(Response::new(MembersResponse {
            cluster_id: sm.cluster_id,
            members: sm
                .members
                .values()
                .map(|m| MemberInfo {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                    is_learner: m.is_learner,
                })
                .collect(),
            removed: sm.removed.iter().copied().collect(),
        }))
    }
}

/// The version the member at peer `url` runs (how the leader learns every member's version).
pub async fn peer_version(
    url: &str,
    dialing: &Dialing,
) -> Result<crate::replicated::version::Version, Box<dyn std::error::Error + Send + Sync>> {
    let ch = endpoint(url, dialing)?.connect().await?;
    let r = PeerClient::new(ch)
        .version(PeerVersionRequest {})
        .await?
        .into_inner();
    Ok(r.member_version.parse()?)
}

/// Why a joining member could not learn its place in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No peer answered.
    #[error("no member of the existing cluster answered at {0:?}: {1}")]
    Unreachable(Vec<String>, String),
    /// This member already started once and its data is gone.
    #[error("member {id:x} ({name}) already started in this cluster and its data dir is empty: its Raft state is lost, so it must not rejoin as itself; remove it (etcdctl member remove {id:x}) and add it again")]
    AlreadyStarted {
        /// Member id.
        id: u64,
        /// Its name.
        name: String,
    },
    /// The cluster does not list this member's peer URLs.
    #[error("the cluster ({cluster:x}) has no member with peer URLs {urls:?}; add it first (etcdctl member add <name> --peer-urls={first}), then start it")]
    NotAdded {
        /// Cluster id.
        cluster: u64,
        /// Our peer URLs.
        urls: Vec<String>,
        /// First of them.
        first: String,
    },
}

/// How long one discovery question may take (connect, TLS handshake, answer): a peer address
/// that accepts connections without serving must not hold the join up.
const DISCOVERY_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The places to ask at `url`: one per address its host resolves to, as (URL with that address,
/// TLS name to verify), leaving out this member's own listeners `own` (a name such as a headless
/// Service's resolves to every member, this one included, whose port is bound but not yet
/// serving). A host that does not resolve is kept as it is, for the dial to report.
async fn discovery_targets(url: &str, own: &[SocketAddr]) -> Vec<(String, Option<String>)> {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(_) => return vec![(url.to_string(), None)],
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return vec![(url.to_string(), None)];
    };
    let host = host.trim_matches(['[', ']']).to_string();
    if let Ok(ip) = host.parse::<IpAddr>() {
        if own.contains(&SocketAddr::new(ip, port)) {
            return vec![];
        }
        return vec![(url.to_string(), None)];
    }
    let resolved: Result<Vec<SocketAddr>, _> = tokio::net::lookup_host(format!("{host}:{port}"))
        .await
        .map(|a| a.collect());
    match resolved {
        Ok(addrs) => {
            let mut seen = Vec::new();
            for a in addrs {
                if !own.contains(&a) && !seen.contains(&a) {
                    seen.push(a);
                }
            }
            seen.into_iter()
                .map(|a| (format!("{}://{a}", parsed.scheme()), Some(host.clone())))
                .collect()
        }
        Err(_) => vec![(url.to_string(), None)],
    }
}

/// Asks the peer at `url` (verifying TLS as `name` when the URL holds an address) for the
/// member list, within [`DISCOVERY_ASK_TIMEOUT`].
async fn ask_members(
    url: &str,
    name: Option<String>,
    dialing: &Dialing,
) -> Result<crate::peer_proto::MembersResponse, Box<dyn std::error::Error + Send + Sync>> {
    let ask = async {
        let mut ep = endpoint(url, dialing)?;
        if let (Some(name), Some(tls)) = (
            name,
            crate::tls::client_tls_for(dialing.tls.as_deref(), url)?,
        ) {
            ep = ep.tls_config(tls.domain_name(name))?;
        }
        let ch = ep.connect().await?;
        let r = PeerClient::new(ch).members(MembersRequest {}).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(r.into_inner())
    };
    match tokio::time::timeout(DISCOVERY_ASK_TIMEOUT, ask).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer in {DISCOVERY_ASK_TIMEOUT:?}").into()),
    }
}

/// Asks the other members of `--initial-cluster` (and `--discovery-peer-urls`, each address
/// their names resolve to except this member's own listeners `own`) for the cluster's id and
/// member list, and finds this member (by its peer URLs) in it, as etcd does for
/// `--initial-cluster-state existing`.
pub async fn discover(
    peers: &[String],
    my_peer_urls: &[String],
    own: &[SocketAddr],
    dialing: &Dialing,
) -> Result<crate::consensus::bootstrap::JoinInfo, JoinError> {
    let mut last = String::from("no peers to ask");
    let mut not_added = None;
    // The cluster may be electing a leader or restarting: keep asking for a while.
    for attempt in 0..30 {
        let mut targets = Vec::new();
        for url in peers {
            targets.extend(discovery_targets(url, own).await);
        }
        for (url, name) in &targets {
            let r = match ask_members(url, name.clone(), dialing).await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let members: BTreeMap<u64, Member> = r
                .members
                .iter()
                .map(|m| {
                    (
                        m.id,
                        Member {
                            id: m.id,
                            name: m.name.clone(),
                            peer_urls: m.peer_urls.clone(),
                            client_urls: m.client_urls.clone(),
                            is_learner: m.is_learner,
                        },
                    )
                })
                .collect();
            let Some(me) = members
                .values()
                .find(|m| same_peer_urls(&m.peer_urls, my_peer_urls))
            else {
                // That peer may not have applied our MemberAdd yet: ask the others, then again.
                not_added = Some(JoinError::NotAdded {
                    cluster: r.cluster_id,
                    urls: my_peer_urls.to_vec(),
                    first: my_peer_urls.first().cloned().unwrap_or_default(),
                });
                continue;
            };
            // A member that already started has Raft state (votes) that an empty data dir lost:
            // rejoining with it could vote twice in one term.
            if me.is_started() {
                return Err(JoinError::AlreadyStarted {
                    id: me.id,
                    name: me.name.clone(),
                });
            }
            let member_id = me.id;
            return Ok(crate::consensus::bootstrap::JoinInfo {
                member_id,
                cluster_id: r.cluster_id,
                members,
            });
        }
        if attempt < 29 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Err(not_added.unwrap_or(JoinError::Unreachable(peers.to_vec(), last)))
}

#[cfg(test)]
mod discovery_tests {
    use super::*;

    /// A member never asks its own listeners (bound but not serving while it joins), whether a
    /// URL names the address or a host that resolves to it; other addresses are asked, with
    /// the name kept for TLS.
    #[tokio::test]
    async fn own_listeners_are_left_out() {
        let own: SocketAddr = "127.0.0.1:2380".parse().unwrap();
        assert!(discovery_targets("http://127.0.0.1:2380", &[own])
            .await
            .is_empty());
        let by_name = discovery_targets("https://localhost:2380", &[own]).await;
        assert!(
            by_name
                .iter()
                .all(|(u, n)| u != "https://127.0.0.1:2380" && n.as_deref() == Some("localhost")),
            "{by_name:?}"
        );
        assert_eq!(
            discovery_targets("http://127.0.0.2:2380", &[own]).await,
            vec![("http://127.0.0.2:2380".to_string(), None)]
        );
        let everyone_else = discovery_targets("https://localhost:2380", &[]).await;
        assert!(
            everyone_else
                .iter()
                .any(|(u, _)| u == "https://127.0.0.1:2380"),
            "{everyone_else:?}"
        );
    }
}

#[cfg(test)]
mod join_error_tests {
    use super::JoinError;

    /// The operator recognises a member whose volume was lost by these words in its pod's
    /// termination message (`metastore-operator`'s `lost_data::DATA_LOST_MARKER`).
    #[test]
    fn the_lost_data_refusal_keeps_the_words_the_operator_reads() {
        let e = JoinError::AlreadyStarted {
            id: 0x5f30,
            name: "demo-1".into(),
        };
        assert!(e
            .to_string()
            .contains("already started in this cluster and its data dir is empty"));
    }
}
