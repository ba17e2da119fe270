//! The fault-injection suite (docs/reliability.md). Real members on loopback addresses inside a
//! network and mount namespace this test creates (it re-executes itself under `unshare`), each
//! with its own tmpfs and lease-clock offset file; a seeded nemesis injects every fault kind in
//! `metastore_testkit::faults::nemesis` while register, transaction, watch, lease and log
//! workloads (`metastore_testkit::faults::workloads`) run. Every history is checked:
//! linearizability per key (WGL search with indeterminate operations), atomic group reads, watch
//! streams complete, in order, without duplicates and identical across members, lease keys never
//! gone early and gone eventually, every acknowledged log put present at the end, and every
//! clock fault beyond the drift bound reported by the member.
//!
//! `short_profile` runs in `make test`; `soak` (ignored) is the long profile behind `make soak`;
//! `known_bad_lease_is_caught` runs the same suite against a deliberately unsafe lease and
//! requires the checker to find stale reads.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metastore_testkit::checkers::wgl;
use metastore_testkit::faults::nemesis::{self, Episode, Fault, Nemesis, Schedule, ALL_FAULTS};
use metastore_testkit::faults::workloads::{
    self, Ctx, Recording, GROUP, GROUP_NAME, INITIAL, REGISTERS,
};
use metastore_testkit::{Cluster, FAST};
use support::BIN;

/// One schedule's results.
#[derive(Debug, Default)]
struct Outcome {
    seed: u64,
    members: usize,
    faults: Vec<String>,
    ops: usize,
    acked: usize,
    indeterminate: usize,
    watch_events: usize,
    lease_reads: f64,
    lease_checks: usize,
    lease_keys: usize,
    clock_reported: String,
    refused: Vec<String>,
    notes: Vec<String>,
    violations: Vec<String>,
    lost: usize,
    secs: f64,
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Runs one schedule end to end and checks everything it recorded.
fn run_schedule(s: &Schedule, extra: &[&str], rt: &tokio::runtime::Runtime) -> Outcome {
    let started = Instant::now();
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend([
        "--request-timeout",
        "2000",
        "--snapshot-count",
        "300",
        "--log-level",
        "info,raft=warn",
    ]);
    flags.extend(extra);
    let t0 = Instant::now();
    let cluster = Cluster::create(BIN, s.members, &flags);
    let mut nem = Nemesis::new(cluster, s.seed, t0, rt.handle().clone()).expect("nemesis");
    let mut out = Outcome {
        seed: s.seed,
        members: s.members,
        ..Default::default()
    };
    let leader = nem
        .leader(Duration::from_secs(30))
        .expect("a leader at start");
    let ep = nem.cluster.members[leader].client_url();
    let seeded = rt.block_on(workloads::seed(&ep)).expect("seed the keys");

    let rec = Arc::new(Mutex::new(Recording {
        watch_start: seeded + 1,
        ..Default::default()
    }));
    let ctx = Ctx {
        t0,
        endpoints: nem.endpoints.clone(),
        stop: Arc::default(),
        final_rev: Arc::default(),
        rec: rec.clone(),
    };
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(rt.spawn(workloads::register_client(
            ctx.clone(),
            i,
            s.seed * 31 + i as u64,
        )));
    }
    for i in 0..2 {
        clients.push(rt.spawn(workloads::group_client(
            ctx.clone(),
            i,
            s.seed * 37 + i as u64,
        )));
    }
    let initial_eps = nem.endpoints.lock().unwrap().clone();
    for (i, ep) in initial_eps.iter().enumerate() {
        clients.push(rt.spawn(workloads::pinned_reader(
            ctx.clone(),
            50 + i,
            ep.clone(),
            s.seed * 41 + i as u64,
        )));
    }
    clients.push(rt.spawn(workloads::log_writer(ctx.clone(), 0)));
    clients.push(rt.spawn(workloads::lease_client(ctx.clone(), 0, s.seed)));
    let watchers: Vec<_> = (0..2)
        .map(|i| rt.spawn(workloads::watcher(ctx.clone(), i, seeded + 1)))
        .collect();

    std::thread::sleep(Duration::from_millis(1000));
    for e in &s.episodes {
        eprintln!(
            "[seed {}] {} for {} ms",
            s.seed,
            e.fault.name(),
            e.hold.as_millis()
        );
        if let Err(err) = nem.run(e) {
            out.violations.push(format!(
                "{} left the cluster unhealthy: {err}",
                e.fault.name()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    if let Err(e) = nem.restore() {
        out.violations.push(e);
    }
    out.lease_reads = nem.lease_reads();
    std::thread::sleep(Duration::from_millis(500));
    ctx.stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for c in clients {
            let _ = tokio::time::timeout(Duration::from_secs(15), c).await;
        }
    });

    // Final linearizable reads (they must see every acknowledged write before them), the final
    // revision for the watchers, and the durability check.
    let leader = nem.leader(Duration::from_secs(30)).unwrap_or(0);
    let ep = nem.cluster.members[leader].client_url();
    let final_check = rt.block_on(async {
        let mut c = metastore_testkit::try_client(&ep)
            .await
            .map_err(|e| e.to_string())?;
        let mut finals = Vec::new();
        for key in REGISTERS.iter().chain([&GROUP[0]]) {
            let call = micros(t0);
            let g = c.get(*key, None).await.map_err(|e| e.to_string())?;
            let v = g
                .kvs()
                .first()
                .map(|kv| kv.value_str().unwrap_or("").to_string());
            let name = if *key == GROUP[0] { GROUP_NAME } else { key };
            finals.push((
                name.to_string(),
                wgl::RegOp {
                    client: 999,
                    input: wgl::Input::Read,
                    output: wgl::Output::Read(v),
                    call,
                    ret: Some(micros(t0)),
                },
            ));
        }
        let logs = c
            .get(
                "log/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
        let present: HashSet<String> = logs
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap_or("").to_string())
            .collect();
        let rev = logs.header().map_or(0, |h| h.revision());
        Ok::<_, String>((finals, present, rev))
    });
    let (finals, present, final_rev) = match final_check {
        Ok(v) => v,
        Err(e) => {
            out.violations.push(format!("final reads failed: {e}"));
            (Vec::new(), HashSet::new(), 0)
        }
    };
    ctx.final_rev.store(final_rev.max(1), Ordering::Relaxed);
    rt.block_on(async {
        for w in watchers {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
    });
    // Every lease key must be gone within a few TTLs of the last keep-alive (a new leader
    // restarts each TTL, so allow for one more).
    let lease_left = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(4 * workloads::LEASE_TTL as u64);
        loop {
            let left = match metastore_testkit::try_client(&ep).await {
                Ok(mut c) => c
                    .get(
                        "lease/",
                        Some(
                            etcd_client::GetOptions::new()
                                .with_prefix()
                                .with_keys_only(),
                        ),
                    )
                    .await
                    .map(|g| g.kvs().len())
                    .unwrap_or(usize::MAX),
                Err(_) => usize::MAX,
            };
            if left == 0 || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    if lease_left != 0 {
        out.violations.push(format!(
            "{lease_left} lease keys still present {} s after their keep-alives stopped",
            4 * workloads::LEASE_TTL
        ));
    }

    let mut rec = std::mem::take(&mut *rec.lock().unwrap());
    for (k, op) in finals {
        rec.histories.entry(k).or_default().push(op);
    }
    check(&rec, &present, final_rev, &mut out);
    out.refused = nem.log.refused.clone();
    out.notes = nem.log.notes.clone();
    out.faults = nem.log.injected.clone();
    for (what, reported) in &nem.log.clock_reports {
        if !reported {
            out.violations.push(format!(
                "{what}: a clock step beyond the drift bound was not reported"
            ));
        }
    }
    let within: Vec<String> = nem
        .log
        .drift_reports
        .iter()
        .map(|(m, r)| format!("{m}:{}", if *r { "reported" } else { "quiet" }))
        .collect();
    out.clock_reported = format!(
        "{}/{} beyond{}",
        nem.log.clock_reports.iter().filter(|(_, r)| *r).count(),
        nem.log.clock_reports.len(),
        if within.is_empty() {
            String::new()
        } else {
            format!("; within: {}", within.join(","))
        }
    );
    if !out.violations.is_empty() {
        for m in &nem.cluster.members {
            eprintln!(
                "--- {} log tail\n{}",
                m.name,
                metastore_testkit::tail(&m.log())
            );
        }
    }
    nemesis::unmount_all(&nem.cluster);
    drop(nem);
    out.secs = started.elapsed().as_secs_f64();
    out
}

/// Prints the operations on `key` from a second before the one the checker could not place to
/// 0.2 s after it, so a violation can be diagnosed from the test's output.
fn print_history_around(key: &str, ops: &[wgl::RegOp], error: &str) {
    let at = error
        .split("called at ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<u64>().ok());
    let Some(at) = at else { return };
    let mut near: Vec<&wgl::RegOp> = ops
        .iter()
        .filter(|o| {
            o.ret.unwrap_or(u64::MAX).saturating_add(1_000_000) >= at && o.call <= at + 200_000
        })
        .collect();
    near.sort_by_key(|o| o.call);
    eprintln!("--- {key}: operations around {at} µs (client, input, output, call, return)");
    for o in near.iter().take(200) {
        eprintln!(
            "  c{} {:?} -> {:?} [{}, {:?}]",
            o.client, o.input, o.output, o.call, o.ret
        );
    }
}

/// Every check over one run's recording.
fn check(rec: &Recording, present_logs: &HashSet<String>, final_rev: i64, out: &mut Outcome) {
    out.violations.extend(rec.violations.iter().cloned());
    out.lease_checks = rec.lease_checks;
    out.lease_keys = rec.leases.len();
    // Linearizability, per key.
    for (key, ops) in &rec.histories {
        out.ops += ops.len();
        out.indeterminate += ops.iter().filter(|o| o.ret.is_none()).count();
        out.acked += ops
            .iter()
            .filter(|o| matches!(o.output, wgl::Output::Written | wgl::Output::Cas(true)))
            .count();
        if let Err(e) = wgl::check(ops, Some(INITIAL)) {
            print_history_around(key, ops, &e);
            out.violations.push(format!("{key}: {e}"));
        }
    }
    // Durability of the log.
    out.lost = rec
        .acked_logs
        .iter()
        .filter(|k| !present_logs.contains(*k))
        .count();
    out.acked += rec.acked_logs.len();
    if out.lost > 0 {
        out.violations
            .push(format!("{} acknowledged log puts lost", out.lost));
    }
    // Watches.
    let written: HashSet<(&str, &str)> = rec
        .histories
        .iter()
        .flat_map(|(k, ops)| {
            ops.iter().filter_map(move |o| match &o.input {
                wgl::Input::Write(v) | wgl::Input::Cas { new: v, .. } => {
                    Some((k.as_str(), v.as_str()))
                }
                wgl::Input::Read => None,
            })
        })
        .collect();
    let mut reference: Option<&Vec<workloads::SeenEvent>> = None;
    for (w, events) in rec.watched.iter().enumerate() {
        out.watch_events += events.len();
        let mut seen = HashSet::new();
        let mut last = 0;
        for e in events {
            if e.revision < last {
                out.violations.push(format!(
                    "watcher {w}: revision {} after {last} (out of order)",
                    e.revision
                ));
                break;
            }
            last = e.revision;
            if !seen.insert((e.revision, e.key.clone())) {
                out.violations.push(format!(
                    "watcher {w}: event {}@{} delivered twice",
                    e.key, e.revision
                ));
                break;
            }
            let name = if GROUP.contains(&e.key.as_str()) {
                GROUP_NAME
            } else {
                e.key.as_str()
            };
            if !written.contains(&(name, e.value.as_str())) {
                out.violations.push(format!(
                    "watcher {w}: event {}={} @{} that no client wrote",
                    e.key, e.value, e.revision
                ));
                break;
            }
        }
        if last < final_rev.min(rec.acked.iter().map(|a| a.revision).max().unwrap_or(0)) {
            out.violations.push(format!(
                "watcher {w} stopped at revision {last}, before the last acknowledged write"
            ));
        }
        let by_rev: HashMap<(i64, &str), &str> = events
            .iter()
            .map(|e| ((e.revision, e.key.as_str()), e.value.as_str()))
            .collect();
        let missing: Vec<String> = rec
            .acked
            .iter()
            .filter(|a| a.revision >= rec.watch_start && a.revision <= last)
            .filter(|a| by_rev.get(&(a.revision, a.key.as_str())) != Some(&a.value.as_str()))
            .map(|a| format!("{}={}@{}", a.key, a.value, a.revision))
            .take(5)
            .collect();
        if !missing.is_empty() {
            out.violations.push(format!(
                "watcher {w} missed acknowledged writes, e.g. {}",
                missing.join(", ")
            ));
        }
        // Every watcher sees the same history over the revisions both covered.
        match reference {
            None => reference = Some(events),
            Some(r) => {
                let upto = last.min(r.last().map_or(0, |e| e.revision));
                let a: Vec<_> = r.iter().filter(|e| e.revision <= upto).collect();
                let b: Vec<_> = events.iter().filter(|e| e.revision <= upto).collect();
                if a != b {
                    out.violations.push(format!(
                        "watchers 0 and {w} saw different histories up to revision {upto}"
                    ));
                }
            }
        }
    }
}

fn table(rows: &[Outcome]) -> String {
    let mut s = String::from(
        "| seed | members | faults injected | ops | acked writes | indeterminate | watch events | lease reads | lease keys (expiry checked) | clock faults reported | violations | lost writes | secs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {} ({}) | {} | {} | {} | {:.0} |\n",
            r.seed,
            r.members,
            r.faults.join(", "),
            r.ops,
            r.acked,
            r.indeterminate,
            r.watch_events,
            r.lease_reads,
            r.lease_keys,
            r.lease_checks,
            if r.clock_reported == "0/0 beyond" {
                "-".to_string()
            } else {
                r.clock_reported.clone()
            },
            r.violations.len(),
            r.lost,
            r.secs
        ));
    }
    let kinds: BTreeMap<&str, usize> =
        rows.iter()
            .flat_map(|r| r.faults.iter())
            .fold(BTreeMap::new(), |mut m, f| {
                *m.entry(f.as_str()).or_default() += 1;
                m
            });
    s.push_str(&format!(
        "\n{} schedules, {} operations, {} faults injected ({}), {} violations, {} lost writes\n",
        rows.len(),
        rows.iter().map(|r| r.ops).sum::<usize>(),
        rows.iter().map(|r| r.faults.len()).sum::<usize>(),
        kinds
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        rows.iter().map(|r| r.violations.len()).sum::<usize>(),
        rows.iter().map(|r| r.lost).sum::<usize>(),
    ));
    s
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn report(name: &str, rows: &[Outcome]) {
    let t = table(rows);
    println!("\n## {name}\n\n{t}");
    for r in rows {
        for v in &r.violations {
            println!("seed {}: VIOLATION {v}", r.seed);
        }
        for n in &r.notes {
            println!("seed {}: {n}", r.seed);
        }
        for f in &r.refused {
            println!("seed {}: refused (expected under faults): {f}", r.seed);
        }
    }
    if let Ok(dir) = std::env::var("METASTORE_FAULTS_REPORT_DIR") {
        let _ = std::fs::write(format!("{dir}/{name}.md"), &t);
    }
}

fn seed_base() -> u64 {
    std::env::var("METASTORE_FAULTS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[test]
fn short_profile() {
    if !metastore_testkit::in_namespace("short_profile", false) {
        return;
    }
    let rt = runtime();
    let schedules = nemesis::covering(seed_base(), &ALL_FAULTS, 5);
    let rows: Vec<Outcome> = schedules
        .iter()
        .map(|s| run_schedule(s, &[], &rt))
        .collect();
    report("short profile", &rows);
    let covered: HashSet<&str> = rows
        .iter()
        .flat_map(|r| r.faults.iter().map(String::as_str))
        .collect();
    for f in ALL_FAULTS {
        assert!(covered.contains(f.name()), "{} never injected", f.name());
    }
    assert!(
        rows.iter().map(|r| r.lease_reads).sum::<f64>() > 0.0,
        "lease reads were served (the lease path is under test)"
    );
    assert!(
        rows.iter().all(|r| r.ops > 200 && r.watch_events > 100),
        "workloads made progress"
    );
    let violations: Vec<&String> = rows.iter().flat_map(|r| r.violations.iter()).collect();
    assert!(violations.is_empty(), "violations: {violations:#?}");
}

#[test]
#[ignore = "long profile: make soak"]
fn soak() {
    if !metastore_testkit::in_namespace("soak", true) {
        return;
    }
    let rt = runtime();
    let minutes: u64 = std::env::var("METASTORE_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let mut rows = Vec::new();
    let mut n = 0;
    while Instant::now() < deadline {
        let s = nemesis::random(seed_base() * 100_000 + n, &ALL_FAULTS, 8);
        rows.push(run_schedule(&s, &[], &rt));
        n += 1;
    }
    report("soak", &rows);
    let violations: Vec<&String> = rows.iter().flat_map(|r| r.violations.iter()).collect();
    assert!(violations.is_empty(), "violations: {violations:#?}");
}

/// The checker must catch a lease that outlives the election timeout (and a member that ignores
/// clock anomalies): the same suite, a deliberately unsafe member configuration.
#[test]
fn known_bad_lease_is_caught() {
    if !metastore_testkit::in_namespace("known_bad_lease_is_caught", false) {
        return;
    }
    let rt = runtime();
    let episodes = [
        Fault::PauseIsolatedLeader,
        Fault::PauseLeader,
        Fault::IsolateLeader,
        Fault::PauseIsolatedLeader,
    ]
    .into_iter()
    .map(|f| Episode {
        fault: f,
        hold: Duration::from_millis(2500),
    })
    .collect();
    let s = Schedule {
        seed: seed_base() + 4242,
        members: 3,
        episodes,
    };
    // 10 s: renewed once less than half is left, so a leader paused for the 2.5 s hold always
    // wakes up inside it (with 4 s it woke up after it about half the time). A leader that wakes
    // up still cut off keeps leading until its next quorum check, and serves stale reads from
    // the lease meanwhile; a plain pause or partition only sometimes opens that window.
    let bad = [
        "--unsafe-lease-skip-safety-checks",
        "--lease-duration",
        "10000",
    ];
    let row = run_schedule(&s, &bad, &rt);
    report(
        "known-bad lease (must be caught)",
        std::slice::from_ref(&row),
    );
    let stale: Vec<&String> = row
        .violations
        .iter()
        .filter(|v| v.contains("not linearizable"))
        .collect();
    assert!(
        !stale.is_empty(),
        "a 10 s lease with a 500 ms election timeout served no stale read the checker caught"
    );
}
