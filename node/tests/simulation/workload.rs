//! Clients: each issues one operation at a time to a random running member — puts, linearizable
//! gets (lease or ReadIndex, on leaders, followers and learners, served as the KV service serves
//! them: grant, wait for the applied index, read the state) and serializable gets — and records
//! what it saw.

use std::collections::BTreeSet;

use etcd_client::proto::{PbPutRequest, PbRangeRequest};
use metastore_node::node::{LoopMsg, NodeError, ReadGrant, ReadPath};
use metastore_node::replicated::command::{ApplyResult, Command};
use metastore_testkit::checkers::wgl::{Input, Output};
use rand::Rng;
use tokio::sync::oneshot::{self, error::TryRecvError};

use super::history::{Histories, LeaseServe};
use super::world::{Event, World};

const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// A client gives up on an operation after this long (µs) and records it as indeterminate.
const CLIENT_TIMEOUT_US: u64 = 1_500_000;

enum Stage {
    Write(oneshot::Receiver<Result<ApplyResult, NodeError>>),
    Grant(oneshot::Receiver<Result<ReadGrant, NodeError>>),
    Applied(u64),
}

struct Pending {
    member: u64,
    key: &'static str,
    input: Input,
    call: u64,
    term_at_call: u64,
    stage: Stage,
}

/// All clients. Each talks to one member (its endpoint, as an etcd client does) and moves to
/// another now and then; even-numbered clients only read, so some keep reading from a leader
/// while writes to it hang.
#[derive(Default)]
pub struct Clients {
    pending: Vec<Option<Pending>>,
    home: Vec<Option<u64>>,
    next_value: u64,
    written: BTreeSet<String>,
    /// Proposal ids, unique across members and restarts.
    pub next_proposal: u64,
}

impl Clients {
    /// `n` idle clients.
    pub fn new(n: usize) -> Self {
        Clients {
            pending: (0..n).map(|_| None).collect(),
            home: vec![None; n],
            next_proposal: 1,
            ..Default::default()
        }
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// The run ended: operations still open are indeterminate.
    pub fn finish(&mut self, h: &mut Histories, _now: u64) {
        for (c, p) in self.pending.iter_mut().enumerate() {
            if let Some(p) = p.take() {
                if matches!(p.input, Input::Write(_)) {
                    h.record(p.key, c, p.input, Output::Unknown, p.call, None);
                }
            }
        }
    }
}

impl World {
    /// The client's operation issued at `call` is still open at its deadline: a write becomes
    /// indeterminate, a read is dropped, and the client moves on.
    pub fn client_deadline(&mut self, c: usize, call: u64) {
        if self.clients.pending[c]
            .as_ref()
            .is_none_or(|p| p.call != call)
        {
            return;
        }
        let Some(p) = self.clients.pending[c].take() else {
            return;
        };
        if matches!(p.input, Input::Write(_)) {
            self.histories
                .record(p.key, c, p.input, Output::Unknown, p.call, None);
        }
        self.trace(format!("c{c} gives up"));
        // A client whose request timed out tries another endpoint.
        self.clients.home[c] = None;
        let at = self.now() + 1_000;
        self.schedule(at, Event::Client(c));
    }

    /// A client starts an operation (one at a time: at most one start is ever scheduled).
    pub fn client_acts(&mut self, c: usize) {
        let now = self.now();
        if self.clients.pending[c].is_some() {
            return;
        }
        let up = self.up();
        if up.is_empty() {
            let at = now + 100_000;
            self.schedule(at, Event::Client(c));
            return;
        }
        // Now and then a new endpoint: often a member that believes it leads (where lease reads
        // are served, stale or not), else anyone.
        let home = self.clients.home[c].filter(|h| up.contains(h));
        let member = match home {
            Some(h) if !self.rng.gen_bool(0.02) => h,
            _ => {
                let leaders = self.leaders();
                let m = if !leaders.is_empty() && self.rng.gen_bool(0.7) {
                    leaders[self.rng.gen_range(0..leaders.len())]
                } else {
                    up[self.rng.gen_range(0..up.len())]
                };
                self.clients.home[c] = Some(m);
                m
            }
        };
        let key = KEYS[self.rng.gen_range(0..KEYS.len())];
        let kind = match c % 2 {
            // Readers: serializable or linearizable gets.
            0 if self.rng.gen_bool(0.15) => 0,
            0 => 99,
            _ => self.rng.gen_range(0..100),
        };
        let Some(run) = self.members.get(&member).and_then(|m| m.run.as_ref()) else {
            self.schedule(now + 10_000, Event::Client(c));
            return;
        };
        let term_at_call = run.raft.raft().term;
        if kind < 15 {
            // Serializable: local state, whatever its age; it must hold a value someone wrote.
            let v = read_local(run, key);
            if let Some(v) = &v {
                if !self.clients.written.contains(v) {
                    self.fail(format!("serializable read of {key} saw {v}, never written"));
                }
            }
            let at = now + self.rng.gen_range(1_000..30_000);
            self.schedule(at, Event::Client(c));
            return;
        }
        let (input, stage, msg) = if kind < 55 {
            self.clients.next_value += 1;
            let value = format!("c{c}-{}", self.clients.next_value);
            self.clients.written.insert(value.clone());
            let (reply, rx) = oneshot::channel();
            let data = Command::Put(PbPutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            })
            .encode();
            let id = self.clients.next_proposal;
            self.clients.next_proposal += 1;
            (
                Input::Write(value),
                Stage::Write(rx),
                LoopMsg::Propose { id, data, reply },
            )
        } else {
            let (reply, rx) = oneshot::channel();
            (Input::Read, Stage::Grant(rx), LoopMsg::Read { reply })
        };
        self.trace(format!(
            "c{c} -> m{} {:?} {key}",
            self.ordinal(member),
            input
        ));
        self.clients.pending[c] = Some(Pending {
            member,
            key,
            input,
            call: now,
            term_at_call,
            stage,
        });
        self.schedule(now + CLIENT_TIMEOUT_US, Event::ClientDeadline(c, now));
        if self.send_to(member, msg) {
            self.poll(member);
        }
    }

    /// After `member` ran: answer the clients waiting on it.
    pub fn clients_after_poll(&mut self, member: u64) {
        for c in 0..self.clients.len() {
            if self.clients.pending[c]
                .as_ref()
                .is_some_and(|p| p.member == member)
            {
                self.advance_client(c);
            }
        }
    }

    fn advance_client(&mut self, c: usize) {
        let now = self.now();
        let Some(mut p) = self.clients.pending[c].take() else {
            return;
        };
        let done: Option<Option<Output>> = match &mut p.stage {
            Stage::Write(rx) => match rx.try_recv() {
                Err(TryRecvError::Empty) => None,
                Ok(Ok(Ok(_))) => Some(Some(Output::Written)),
                // Refused before it entered the log, or refused by the store: it did not happen.
                Ok(Err(NodeError::Retry(e))) => {
                    self.trace(format!("c{c} write refused: {e}"));
                    Some(None)
                }
                Ok(Ok(Err(e))) => {
                    self.trace(format!("c{c} write failed: {e}"));
                    Some(None)
                }
                Ok(Err(_)) | Err(TryRecvError::Closed) => Some(Some(Output::Unknown)),
            },
            Stage::Grant(rx) => match rx.try_recv() {
                Err(TryRecvError::Empty) => None,
                Ok(Ok(grant)) => {
                    let (path, index) = (grant.path, grant.index);
                    self.trace(format!(
                        "c{c} granted {path:?} at {index} by m{}",
                        self.ordinal(p.member)
                    ));
                    if grant.path == ReadPath::Lease {
                        let s = LeaseServe {
                            member: p.member,
                            at: now,
                            term: p.term_at_call,
                        };
                        if let Err(e) = self.lease.serve(s) {
                            self.fail(e);
                        }
                    }
                    p.stage = Stage::Applied(grant.index);
                    self.read_if_applied(&p)
                }
                Ok(Err(_)) | Err(TryRecvError::Closed) => Some(None),
            },
            Stage::Applied(_) => self.read_if_applied(&p),
        };
        let member = p.member;
        let Some(output) = done else {
            self.clients.pending[c] = Some(p);
            return;
        };
        if let Some(output) = output {
            self.trace(format!("c{c} <- m{} {output:?}", self.ordinal(member)));
            let ret = (output != Output::Unknown).then_some(now);
            self.histories
                .record(p.key, c, p.input, output, p.call, ret);
        } else {
            self.trace(format!("c{c} <- m{} refused", self.ordinal(member)));
        }
        let at = now + self.rng.gen_range(1_000..30_000);
        self.schedule(at, Event::Client(c));
    }

    /// A granted read completes once the member has applied the granted index.
    fn read_if_applied(&self, p: &Pending) -> Option<Option<Output>> {
        let Stage::Applied(index) = p.stage else {
            return None;
        };
        let run = self.members.get(&p.member)?.run.as_ref()?;
        if *run.shared.applied.borrow() < index {
            return None;
        }
        Some(Some(Output::Read(read_local(run, p.key))))
    }
}

pub fn read_local(run: &super::member::Running, key: &str) -> Option<String> {
    let sm = run.shared.state.read();
    let resp = sm
        .store
        .range(&PbRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .ok()?;
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}
