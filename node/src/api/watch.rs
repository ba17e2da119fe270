//! The etcd v3 Watch service. One task per gRPC stream serves all of that stream's watchers
//! (no task per watcher or per event). New revisions arrive as batches from the Raft loop over a
//! bounded broadcast channel; a stream that falls behind (or a watcher that starts in the past)
//! catches up from the MVCC history, so slow watchers never block writers. A watcher whose
//! revision has been compacted away is canceled with `compact_revision`, as etcd does.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::api::observe::observed;
use etcd_client::proto::{
    PbEvent, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService,
};
use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::api::credentials::OnBehalf;
use crate::api::status::auth_status;
use crate::node::{NodeHandle, Shared, WatchBatch};

/// etcd's `WatchCreateRequest.FilterType`: drop put events.
const FILTER_NOPUT: i32 = 0;
/// Drop delete events.
const FILTER_NODELETE: i32 = 1;
/// The watch id of progress responses to a progress request (etcd's `InvalidWatchID`).
const PROGRESS_WATCH_ID: i64 = -1;
/// Most revisions read from history for one catch-up response (etcd's watchBatchMaxRevs).
const HISTORY_WINDOW: i64 = 1000;
/// Responses queued per stream before its task waits for the client.
const STREAM_QUEUE: usize = 128;
/// Bytes of responses queued per stream before its task waits for the client (a response
/// larger than this waits until the queue is empty).
const STREAM_QUEUE_BYTES: usize = 8 << 20;

/// A queued response and the share of the stream's byte budget it holds until the client
/// takes it.
type Queued = (
    Result<PbWatchResponse, Status>,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

/// One watcher of a stream.
#[derive(Debug, Clone)]
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// First revision not yet delivered.
    next_rev: i64,
    /// The start revision the client asked for (0: from now on).
    start_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// Events were sent since the last progress tick.
    active: bool,
}

impl Watcher {
    fn matches(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            key == self.key.as_slice()
        } else if self.range_end == [0] {
            key >= self.key.as_slice()
        } else {
            key >= self.key.as_slice() && key < self.range_end.as_slice()
        }
    }

    /// True when a progress notification at revision `rev` may go out for this watcher, as
    /// etcd (3.5.13 on) decides: it has every event up to `rev` (synced), and `rev` is not
    /// before the revision it asked to start from.
    fn progress_at(&self, rev: i64) -> bool {
        self.next_rev > rev && rev >= self.start_rev
    }

    fn keep(&self, e: &PbEvent) -> Option<PbEvent> {
        let put = e.r#type == 0;
        if (put && self.no_put) || (!put && self.no_delete) {
            return None;
        }
        let key =
            e.kv.as_ref()
                .map(|kv| kv.key.as_slice())
                .unwrap_or_default();
        if !self.matches(key) {
            return None;
        }
        let mut e = e.clone();
        if !self.prev_kv {
            e.prev_kv = None;
        }
        Some(e)
    }
}

/// The Watch service of one member.
pub struct WatchService {
    node: NodeHandle,
    shared: Arc<Shared>,
    progress_interval: Duration,
}

impl WatchService {
    /// Serves watches from `node`; `progress_interval` paces progress notifications.
    pub fn new(node: NodeHandle, progress_interval: Duration) -> Self {
        WatchService {
            shared: node.shared.clone(),
            node,
            progress_interval,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<PbWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel::<Queued>(STREAM_QUEUE);
        let stream = StreamTask {
            behalf: OnBehalf::of(&self.node, &req),
            node: self.node.clone(),
            shared: self.shared.clone(),
            batches: self.shared.watch.subscribe(),
            watchers: BTreeMap::new(),
            next_id: 0,
            tx,
            max_bytes: self.shared.config.max_request_bytes,
            budget: Arc::new(tokio::sync::Semaphore::new(STREAM_QUEUE_BYTES)),
        };
        tokio::spawn(stream.run(req.into_inner(), self.progress_interval));
        // The budget share goes back as the client takes each response.
        let stream: WatchStream = Box::pin(ReceiverStream::new(rx).map(|(r, _share)| r));
        observed(&self.shared.metrics, "Watch", async { Ok(stream) }).await
    }
}

struct StreamTask {
    node: NodeHandle,
    /// The stream's credentials, checked against the auth state at each create.
    behalf: OnBehalf,
    shared: Arc<Shared>,
    batches: broadcast::Receiver<Arc<WatchBatch>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    tx: mpsc::Sender<Queued>,
    max_bytes: usize,
    /// Bytes of responses the stream may have queued ([`STREAM_QUEUE_BYTES`]).
    budget: Arc<tokio::sync::Semaphore>,
}

impl StreamTask {
    fn header(&self, revision: i64) -> Option<etcd_client::proto::PbResponseHeader> {
        Some(self.shared.header(Some(revision)))
    }

    fn current_revision(&self) -> i64 {
        self.shared.state.read().store.current_revision()
    }

    /// With auth on, whether the stream's caller may read what a watcher on `key`..`range_end`
    /// would see (checked once, at its creation, as etcd); the reason when not, as etcd words it.
    async fn permitted(&self, key: &[u8], range_end: &[u8]) -> Result<(), String> {
        if !self.shared.state.read().auth.enabled {
            return Ok(());
        }
        let refused =
            |s: Status| format!("rpc error: code = {:?} desc = {}", s.code(), s.message());
        let caller = self.behalf.caller(&self.node).await.map_err(refused)?;
        self.shared
            .state
            .read()
            .auth
            .check(&caller, key, range_end, crate::auth::state::PermKind::Read)
            .map_err(|e| refused(auth_status(&e)))
    }

    /// Answers a create that is refused: created and canceled at once, with the reason.
    async fn refuse_create(&self, id: i64, current: i64, reason: String) -> bool {
        self.send(PbWatchResponse {
            header: self.header(current),
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        })
        .await
    }

    async fn send(&self, r: PbWatchResponse) -> bool {
        let size = r.encoded_len().clamp(1, STREAM_QUEUE_BYTES) as u32;
        let Ok(share) = self.budget.clone().acquire_many_owned(size).await else {
            return false;
        };
        self.tx.send((Ok(r), Some(share))).await.is_ok()
    }

    async fn run(mut self, mut requests: Streaming<PbWatchRequest>, progress: Duration) {
        let mut ticker = tokio::time::interval(progress);
        // After a stretch blocked on a slow client, one tick, not a burst of them.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let alive = tokio::select! {
                r = requests.next() => match r {
                    Some(Ok(req)) => self.on_request(req).await,
                    // Client closed the stream or broke it: end, dropping every watcher.
                    _ => false,
                },
                b = self.batches.recv() => match b {
                    Ok(batch) => self.on_batch(&batch).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let rev = self.current_revision();
                        self.catch_up(rev).await
                    }
                    Err(broadcast::error::RecvError::Closed) => false,
                },
                _ = ticker.tick() => self.on_progress_tick().await,
            };
            if !alive {
                return;
            }
        }
    }

    async fn on_request(&mut self, req: PbWatchRequest) -> bool {
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let current = self.current_revision();
                let mut id = c.watch_id;
                if id == 0 {
                    while self.watchers.contains_key(&self.next_id) {
                        self.next_id += 1;
                    }
                    id = self.next_id;
                    self.next_id += 1;
                } else if self.watchers.contains_key(&id) {
                    let reason = "mvcc: duplicate watch ID provided on the WatchStream";
                    return self.refuse_create(id, current, reason.into()).await;
                }
                if let Err(reason) = self.permitted(&c.key, &c.range_end).await {
                    // etcd 3.5.6 on: no watcher was made, so no id is given.
                    return self.refuse_create(-1, current, reason).await;
                }
                let limit = self.shared.config.max_watchers_per_stream;
                if self.watchers.len() >= limit {
                    self.shared.metrics.watchers_refused.inc();
                    let reason = format!(
                        "metastore: too many watchers on this stream (limit {limit}, \
                         --max-watchers-per-stream)"
                    );
                    return self.refuse_create(id, current, reason).await;
                }
                let w = Watcher {
                    key: c.key,
                    range_end: c.range_end,
                    next_rev: if c.start_revision > 0 {
                        c.start_revision
                    } else {
                        current + 1
                    },
                    start_rev: c.start_revision.max(0),
                    prev_kv: c.prev_kv,
                    no_put: c.filters.contains(&FILTER_NOPUT),
                    no_delete: c.filters.contains(&FILTER_NODELETE),
                    progress_notify: c.progress_notify,
                    fragment: c.fragment,
                    active: false,
                };
                if !self
                    .send(PbWatchResponse {
                        header: self.header(current),
                        watch_id: id,
                        created: true,
                        ..Default::default()
                    })
                    .await
                {
                    return false;
                }
                self.watchers.insert(id, w);
                // A start in the past replays history up to now.
                self.fill(id, current).await
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    let rev = self.current_revision();
                    return self
                        .send(PbWatchResponse {
                            header: self.header(rev),
                            watch_id: c.watch_id,
                            canceled: true,
                            ..Default::default()
                        })
                        .await;
                }
                true
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                let rev = self.current_revision();
                // As etcd 3.5.13 on: one notification (watch id -1) for the whole stream, only
                // when every watcher may have one; none for a stream without watchers. It goes
                // out through the stream's single queue, after every event it covers.
                if !self.watchers.is_empty() && self.watchers.values().all(|w| w.progress_at(rev)) {
                    return self
                        .send(PbWatchResponse {
                            header: self.header(rev),
                            watch_id: PROGRESS_WATCH_ID,
                            ..Default::default()
                        })
                        .await;
                }
                true
            }
            None => true,
        }
    }

    /// Delivers watcher `id`'s events from history up to `to`, or cancels it when compacted. Works
    /// in windows of at most [`HISTORY_WINDOW`] revisions (as etcd batches catch-up), taking the
    /// state lock once per window, so a watch from far back neither stalls the Raft loop nor
    /// builds one huge response.
    async fn fill(&mut self, id: i64, to: i64) -> bool {
        loop {
            let Some(w) = self.watchers.get(&id).cloned() else {
                return true;
            };
            if w.next_rev > to {
                return true;
            }
            let upto = to.min(w.next_rev.saturating_add(HISTORY_WINDOW - 1));
            let events = {
                let sm = self.shared.state.read();
                sm.store
                    .events(&w.key, &w.range_end, w.next_rev, upto)
                    .map_err(|_| sm.store.compacted_revision())
            };
            match events {
                Ok(events) => {
                    let kept: Vec<PbEvent> = events.iter().filter_map(|e| w.keep(e)).collect();
                    if let Some(w) = self.watchers.get_mut(&id) {
                        w.next_rev = upto + 1;
                    }
                    if !self.deliver(id, kept, upto).await {
                        return false;
                    }
                }
                Err(compacted) => {
                    self.watchers.remove(&id);
                    return self
                        .send(PbWatchResponse {
                            header: self.header(to),
                            watch_id: id,
                            canceled: true,
                            compact_revision: compacted,
                            cancel_reason: "mvcc: required revision has been compacted".into(),
                            ..Default::default()
                        })
                        .await;
                }
            }
        }
    }

    /// Catches every watcher up to `to` from history.
    async fn catch_up(&mut self, to: i64) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            if !self.fill(id, to).await {
                return false;
            }
        }
        true
    }

    async fn on_batch(&mut self, batch: &WatchBatch) -> bool {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let Some(w) = self.watchers.get(&id).cloned() else {
                continue;
            };
            if w.next_rev > batch.revision {
                continue;
            }
            if w.next_rev < batch.revision || batch.events.is_empty() {
                // A gap (or a catch-up marker): history covers it, this batch included.
                if !self.fill(id, batch.revision).await {
                    return false;
                }
                continue;
            }
            let kept: Vec<PbEvent> = batch.events.iter().filter_map(|e| w.keep(e)).collect();
            if let Some(w) = self.watchers.get_mut(&id) {
                w.next_rev = batch.revision + 1;
            }
            if !self.deliver(id, kept, batch.revision).await {
                return false;
            }
        }
        true
    }

    /// Sends events for one watcher, in fragments when asked and too large for one message.
    async fn deliver(&mut self, id: i64, events: Vec<PbEvent>, revision: i64) -> bool {
        if events.is_empty() {
            return true;
        }
        let fragment = self.watchers.get(&id).is_some_and(|w| w.fragment);
        if let Some(w) = self.watchers.get_mut(&id) {
            w.active = true;
        }
        let header = self.header(revision);
        let total: usize = events.iter().map(|e| e.encoded_len()).sum();
        if !fragment || total <= self.max_bytes {
            return self
                .send(PbWatchResponse {
                    header,
                    watch_id: id,
                    events,
                    ..Default::default()
                })
                .await;
        }
        let mut chunks: Vec<Vec<PbEvent>> = vec![vec![]];
        let mut size = 0;
        for e in events {
            let n = e.encoded_len();
            if size + n > self.max_bytes && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(vec![]);
                size = 0;
            }
            size += n;
            if let Some(last) = chunks.last_mut() {
                last.push(e);
            }
        }
        let last = chunks.len() - 1;
        for (i, c) in chunks.into_iter().enumerate() {
            let ok = self
                .send(PbWatchResponse {
                    header,
                    watch_id: id,
                    events: c,
                    fragment: i < last,
                    ..Default::default()
                })
                .await;
            if !ok {
                return false;
            }
        }
        true
    }

    /// Progress notifications for idle, synced watchers that asked for them.
    async fn on_progress_tick(&mut self) -> bool {
        let rev = self.current_revision();
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let notify = match self.watchers.get_mut(&id) {
                Some(w) => {
                    let n = w.progress_notify && !w.active && w.progress_at(rev);
                    w.active = false;
                    n
                }
                None => continue,
            };
            if notify {
                let r = PbWatchResponse {
                    header: self.header(rev),
                    watch_id: id,
                    ..Default::default()
                };
                if !self.send(r).await {
                    return false;
                }
            }
        }
        true
    }
}
