//! Client workloads for the fault suite, each recording what it saw for the checkers:
//! registers (get/put/compare-and-set per key), a three-key group written atomically by
//! transactions and read with one range, watchers that must see every event exactly once and in
//! order across reconnects, TTL leases whose keys must never vanish early, and a log of unique
//! keys whose acknowledged puts must all survive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checkers::wgl::{Input, Output, RegOp};
use crate::client::try_client;

/// Register keys (each its own linearizable register).
pub const REGISTERS: [&str; 3] = ["w/r0", "w/r1", "w/r2"];
/// Keys of the group written together.
pub const GROUP: [&str; 3] = ["w/g/a", "w/g/b", "w/g/c"];
/// Prefix covering registers and group (what the watchers watch).
pub const WATCHED: &str = "w/";
/// Initial value of every register and group key.
pub const INITIAL: &str = "init";
/// Checker name of the group register.
pub const GROUP_NAME: &str = "group";
const LOG_PREFIX: &str = "log/";
const LEASE_PREFIX: &str = "lease/";
/// Client-side timeout per operation (shorter than a pause, so reads keep being invoked).
const OP_TIMEOUT: Duration = Duration::from_millis(1000);
/// TTL of the workload's leases, in seconds.
pub const LEASE_TTL: i64 = 2;

/// One acknowledged write with the revision it got.
#[derive(Debug, Clone)]
pub struct AckedWrite {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
    /// Revision of the write.
    pub revision: i64,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    /// Revision.
    pub revision: i64,
    /// Key.
    pub key: String,
    /// Value (empty for deletes).
    pub value: String,
}

/// Everything the workloads recorded.
#[derive(Default)]
pub struct Recording {
    /// Register histories by checker key (register keys and [`GROUP_NAME`]).
    pub histories: HashMap<String, Vec<RegOp>>,
    /// Acknowledged writes to watched keys.
    pub acked: Vec<AckedWrite>,
    /// Each watcher's events, in arrival order.
    pub watched: Vec<Vec<SeenEvent>>,
    /// Revision the watchers started from.
    pub watch_start: i64,
    /// Acknowledged log keys.
    pub acked_logs: Vec<String>,
    /// Violations found while running (torn group reads, early lease expiry).
    pub violations: Vec<String>,
    /// Leases whose keys were checked, and their keys.
    pub leases: Vec<String>,
    /// Absent-key reads checked against a lease's guaranteed lifetime.
    pub lease_checks: usize,
}

/// Shared state of a run.
#[derive(Clone)]
pub struct Ctx {
    /// Time zero of every recorded timestamp.
    pub t0: Instant,
    /// Client URLs to spread over.
    pub endpoints: Arc<Mutex<Vec<String>>>,
    /// Set to stop the workloads.
    pub stop: Arc<AtomicBool>,
    /// Set (non-zero) once the final revision is known: watchers stop when past it.
    pub final_rev: Arc<AtomicI64>,
    /// Where results go.
    pub rec: Arc<Mutex<Recording>>,
}

impl Ctx {
    fn micros(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn endpoint(&self, k: usize) -> Option<String> {
        let eps = self.endpoints.lock().unwrap();
        (!eps.is_empty()).then(|| eps[k % eps.len()].clone())
    }
}

/// One connection to `ep`, with the workloads' timeouts; `None` if it cannot be made in 1 s.
async fn connect_endpoint(ep: String) -> Option<Client> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(OP_TIMEOUT);
    match tokio::time::timeout(Duration::from_secs(1), Client::connect([ep], Some(opts))).await {
        Ok(Ok(c)) => Some(c),
        _ => None,
    }
}

/// Connects to the next endpoint (round-robin), trying the others on failure.
async fn connect(ctx: &Ctx, k: &mut usize) -> Option<Client> {
    for _ in 0..8 {
        if ctx.stopped() && ctx.final_rev.load(Ordering::Relaxed) == 0 {
            return None;
        }
        *k += 1;
        if let Some(c) = connect_endpoint(ctx.endpoint(*k)?).await {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// `client`'s connection, made first (to the next endpoint, round-robin) if it has none; `None`
/// if none could be made.
async fn connected<'a>(
    ctx: &Ctx,
    k: &mut usize,
    client: &'a mut Option<Client>,
) -> Option<&'a mut Client> {
    if client.is_none() {
        *client = connect(ctx, k).await;
    }
    client.as_mut()
}

/// Writes the initial values (before any workload starts).
pub async fn seed(ep: &str) -> Result<i64, String> {
    let mut c = try_client(ep).await.map_err(|e| e.to_string())?;
    let mut ops: Vec<TxnOp> = REGISTERS
        .iter()
        .chain(GROUP.iter())
        .map(|k| TxnOp::put(*k, INITIAL, None))
        .collect();
    ops.push(TxnOp::put("seeded", "1", None));
    let r = c
        .txn(Txn::new().and_then(ops))
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.header().map_or(0, |h| h.revision()))
}

fn record(ctx: &Ctx, key: &str, op: RegOp) {
    ctx.rec
        .lock()
        .unwrap()
        .histories
        .entry(key.to_string())
        .or_default()
        .push(op);
}

/// Records one operation of `client` on checker key `key`: answered (`Some(output)`) or, for a
/// write, indeterminate (`None`; an unanswered read tells nothing and is dropped).
fn record_outcome(
    ctx: &Ctx,
    key: &str,
    client: usize,
    input: Input,
    output: Option<Output>,
    call: u64,
    ret: u64,
) {
    let (output, ret) = match output {
        Some(o) => (o, Some(ret)),
        None if matches!(input, Input::Read) => return,
        None => (Output::Unknown, None),
    };
    record(
        ctx,
        key,
        RegOp {
            client,
            input,
            output,
            call,
            ret,
        },
    );
}

/// The value the else branch of a failed compare-and-set read (its first response, a get of
/// the key); `None` if the transaction succeeded or the key is absent.
fn else_read(t: &TxnResponse) -> Option<String> {
    if t.succeeded() {
        return None;
    }
    match t.op_responses().first() {
        Some(TxnOpResponse::Get(g)) => g
            .kvs()
            .first()
            .map(|kv| kv.value_str().unwrap_or("").to_string()),
        _ => None,
    }
}

fn ack(ctx: &Ctx, key: &str, value: &str, revision: i64) {
    ctx.rec.lock().unwrap().acked.push(AckedWrite {
        key: key.into(),
        value: value.into(),
        revision,
    });
}

/// One register client: random gets, puts and compare-and-sets over the register keys.
pub async fn register_client(ctx: Ctx, id: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut k = id;
    let mut client: Option<Client> = None;
    let mut last: HashMap<&str, String> = HashMap::new();
    let mut seq = 0;
    while !ctx.stopped() {
        let Some(c) = connected(&ctx, &mut k, &mut client).await else {
            continue;
        };
        let key = REGISTERS[rng.gen_range(0..REGISTERS.len())];
        let roll: f64 = rng.gen();
        let call = ctx.micros();
        let (input, result) = if roll < 0.5 {
            let r = tokio::time::timeout(OP_TIMEOUT, c.get(key, None)).await;
            let out = match r {
                Ok(Ok(g)) => Some((
                    Output::Read(
                        g.kvs()
                            .first()
                            .map(|kv| kv.value_str().unwrap_or("").to_string()),
                    ),
                    0,
                )),
                _ => None,
            };
            (Input::Read, out)
        } else if roll < 0.75 {
            seq += 1;
            let v = format!("c{id}-{seq}");
            let r = tokio::time::timeout(OP_TIMEOUT, c.put(key, v.clone(), None)).await;
            let out = match r {
                Ok(Ok(p)) => Some((Output::Written, p.header().map_or(0, |h| h.revision()))),
                _ => None,
            };
            (Input::Write(v), out)
        } else {
            seq += 1;
            let v = format!("c{id}-{seq}");
            let expect = last
                .get(key)
                .cloned()
                .unwrap_or_else(|| INITIAL.to_string());
            let txn = Txn::new()
                .when([Compare::value(key, CompareOp::Equal, expect.clone())])
                .and_then([TxnOp::put(key, v.clone(), None)])
                .or_else([TxnOp::get(key, None)]);
            let r = tokio::time::timeout(OP_TIMEOUT, c.txn(txn)).await;
            let out = match r {
                Ok(Ok(t)) => {
                    // Remember the current value for the next CAS.
                    if let Some(v) = else_read(&t) {
                        last.insert(key, v);
                    }
                    Some((
                        Output::Cas(t.succeeded()),
                        t.header().map_or(0, |h| h.revision()),
                    ))
                }
                _ => None,
            };
            (Input::Cas { expect, new: v }, out)
        };
        let ret = ctx.micros();
        match result {
            Some((output, rev)) => {
                match (&input, &output) {
                    (Input::Read, Output::Read(Some(v))) => {
                        last.insert(key, v.clone());
                    }
                    (Input::Write(v), _) | (Input::Cas { new: v, .. }, Output::Cas(true)) => {
                        last.insert(key, v.clone());
                        ack(&ctx, key, v, rev);
                    }
                    _ => {}
                }
                record_outcome(&ctx, key, id, input, Some(output), call, ret);
            }
            None => {
                record_outcome(&ctx, key, id, input, None, call, ret);
                // Try another member (after a breath: errors can come back fast).
                client = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A reader pinned to one member (`endpoint`, while it is part of the cluster): linearizable gets
/// of random registers. Unlike the other clients it does not move away from a member that
/// stalls, so whatever that member answers after a pause or a partition is recorded.
pub async fn pinned_reader(ctx: Ctx, id: usize, endpoint: String, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client: Option<Client> = None;
    while !ctx.stopped() {
        if !ctx.endpoints.lock().unwrap().contains(&endpoint) {
            return;
        }
        if client.is_none() {
            client = connect_endpoint(endpoint.clone()).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let key = REGISTERS[rng.gen_range(0..REGISTERS.len())];
        let call = ctx.micros();
        match tokio::time::timeout(OP_TIMEOUT, c.get(key, None)).await {
            Ok(Ok(g)) => {
                let v = g
                    .kvs()
                    .first()
                    .map(|kv| kv.value_str().unwrap_or("").to_string());
                record_outcome(
                    &ctx,
                    key,
                    id,
                    Input::Read,
                    Some(Output::Read(v)),
                    call,
                    ctx.micros(),
                );
            }
            Ok(Err(_)) => {
                client = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => client = None,
        }
    }
}

/// One group client: the three group keys are written together (plain or conditional
/// transactions) and read together with one range; a read that sees different values is torn.
pub async fn group_client(ctx: Ctx, id: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut k = id;
    let mut client: Option<Client> = None;
    let mut last = INITIAL.to_string();
    let mut seq = 0;
    while !ctx.stopped() {
        let Some(c) = connected(&ctx, &mut k, &mut client).await else {
            continue;
        };
        let call = ctx.micros();
        let roll: f64 = rng.gen();
        let (input, result) = if roll < 0.5 {
            let r = tokio::time::timeout(
                OP_TIMEOUT,
                c.get("w/g/", Some(GetOptions::new().with_prefix())),
            )
            .await;
            let out = match r {
                Ok(Ok(g)) => {
                    let vals: Vec<String> = g
                        .kvs()
                        .iter()
                        .map(|kv| kv.value_str().unwrap_or("").to_string())
                        .collect();
                    if vals.len() != GROUP.len() || vals.iter().any(|v| *v != vals[0]) {
                        ctx.rec.lock().unwrap().violations.push(format!(
                            "torn group read at {call} µs: {vals:?} (a transaction was seen half-applied)"
                        ));
                    }
                    vals.first().map(|v| {
                        last = v.clone();
                        (Output::Read(Some(v.clone())), 0)
                    })
                }
                _ => None,
            };
            (Input::Read, out)
        } else {
            seq += 1;
            let v = format!("g{id}-{seq}");
            let puts: Vec<TxnOp> = GROUP
                .iter()
                .map(|g| TxnOp::put(*g, v.clone(), None))
                .collect();
            let conditional = roll < 0.8;
            let expect = last.clone();
            let txn = if conditional {
                Txn::new()
                    .when([Compare::value(GROUP[0], CompareOp::Equal, expect.clone())])
                    .and_then(puts)
                    .or_else([TxnOp::get(GROUP[0], None)])
            } else {
                Txn::new().and_then(puts)
            };
            let r = tokio::time::timeout(OP_TIMEOUT, c.txn(txn)).await;
            let out = match r {
                Ok(Ok(t)) => {
                    if let Some(v) = else_read(&t) {
                        last = v;
                    }
                    let out = if conditional {
                        Output::Cas(t.succeeded())
                    } else {
                        Output::Written
                    };
                    Some((out, t.header().map_or(0, |h| h.revision())))
                }
                _ => None,
            };
            let input = if conditional {
                Input::Cas { expect, new: v }
            } else {
                Input::Write(v)
            };
            (input, out)
        };
        let ret = ctx.micros();
        match result {
            Some((output, rev)) => {
                if let (Input::Write(v), _) | (Input::Cas { new: v, .. }, Output::Cas(true)) =
                    (&input, &output)
                {
                    last = v.clone();
                    for g in GROUP {
                        ack(&ctx, g, v, rev);
                    }
                }
                record_outcome(&ctx, GROUP_NAME, 100 + id, input, Some(output), call, ret);
            }
            None => {
                record_outcome(&ctx, GROUP_NAME, 100 + id, input, None, call, ret);
                client = None;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A watcher of [`WATCHED`] from `start`: on any error or 2 s of silence it resumes from the next
/// revision on another member. Stops once past the final revision (or 20 s after the stop).
pub async fn watcher(ctx: Ctx, id: usize, start: i64) {
    let mut k = id * 7;
    let mut next = start;
    let mut events = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    'outer: loop {
        let fin = ctx.final_rev.load(Ordering::Relaxed);
        if fin > 0 && next > fin {
            break;
        }
        if ctx.stopped() {
            let t = *stopped_at.get_or_insert_with(Instant::now);
            if t.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        let Some(mut c) = connect(&ctx, &mut k).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opts = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(next);
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(OP_TIMEOUT, c.watch(WATCHED, Some(opts))).await
        else {
            continue;
        };
        loop {
            match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    if resp.canceled() {
                        continue 'outer;
                    }
                    for ev in resp.events() {
                        if let Some(kv) = ev.kv() {
                            events.push(SeenEvent {
                                revision: kv.mod_revision(),
                                key: kv.key_str().unwrap_or("").to_string(),
                                value: kv.value_str().unwrap_or("").to_string(),
                            });
                            next = next.max(kv.mod_revision() + 1);
                        }
                    }
                    let fin = ctx.final_rev.load(Ordering::Relaxed);
                    if fin > 0 && next > fin {
                        break 'outer;
                    }
                }
                _ => continue 'outer,
            }
        }
    }
    let mut rec = ctx.rec.lock().unwrap();
    if rec.watched.len() <= id {
        rec.watched.resize(id + 1, Vec::new());
    }
    rec.watched[id] = events;
}

/// Log writer: unique keys whose acknowledged puts must all be there at the end.
pub async fn log_writer(ctx: Ctx, id: usize) {
    let mut k = id;
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    while !ctx.stopped() {
        if client.is_none() {
            client = connect(&ctx, &mut k).await;
            continue;
        }
        let Some(c) = client.as_mut() else { continue };
        seq += 1;
        let key = format!("{LOG_PREFIX}{id}/{seq:08}");
        match tokio::time::timeout(OP_TIMEOUT, c.put(key.clone(), "x", None)).await {
            Ok(Ok(_)) => ctx.rec.lock().unwrap().acked_logs.push(key),
            _ => client = None,
        }
    }
}

/// Lease client: grants a lease, attaches a key, keeps it alive for a while, then lets it go
/// and keeps reading the key. Any read that finds the key gone before `renewal call + TTL·(1-ρ)`
/// is an early expiry.
pub async fn lease_client(ctx: Ctx, id: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut k = id;
    let mut n = 0;
    while !ctx.stopped() {
        let Some(mut c) = connect(&ctx, &mut k).await else {
            continue;
        };
        n += 1;
        let key = format!("{LEASE_PREFIX}{id}/{n}");
        let Ok(Ok(g)) = tokio::time::timeout(OP_TIMEOUT, c.lease_grant(LEASE_TTL, None)).await
        else {
            continue;
        };
        let lease = g.id();
        // The key lives at least TTL after the call of the last acknowledged grant/renewal.
        let mut alive_from = ctx.micros();
        let put = tokio::time::timeout(
            OP_TIMEOUT,
            c.put(
                key.clone(),
                "v",
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            ),
        )
        .await;
        if !matches!(put, Ok(Ok(_))) {
            continue;
        }
        ctx.rec.lock().unwrap().leases.push(key.clone());
        let renewals = rng.gen_range(0..4);
        for _ in 0..renewals {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let call = ctx.micros();
            let ok = tokio::time::timeout(OP_TIMEOUT, async {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.ok()?;
                keeper.keep_alive().await.ok()?;
                let r = stream.message().await.ok()??;
                (r.ttl() > 0).then_some(())
            })
            .await;
            if matches!(ok, Ok(Some(()))) {
                alive_from = call;
            }
        }
        // Let it expire; read until it is gone (or 4 TTLs: each new leader restarts the TTL),
        // also after the workloads are told to stop, so the last lease is checked too.
        let guaranteed = alive_from + (LEASE_TTL as u64 * 1_000_000) * 9 / 10;
        let give_up = Instant::now() + Duration::from_secs(4 * LEASE_TTL as u64);
        while Instant::now() < give_up {
            let r = tokio::time::timeout(OP_TIMEOUT, c.get(key.clone(), None)).await;
            let ret = ctx.micros();
            match r {
                Ok(Ok(g)) if g.kvs().is_empty() => {
                    let mut rec = ctx.rec.lock().unwrap();
                    rec.lease_checks += 1;
                    if ret < guaranteed {
                        rec.violations.push(format!(
                            "lease key {key} gone at {ret} µs, {} ms before its TTL could have run out",
                            (guaranteed - ret) / 1000
                        ));
                    }
                    break;
                }
                Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => {
                    if let Some(c2) = connect(&ctx, &mut k).await {
                        c = c2;
                    }
                }
            }
        }
    }
}
