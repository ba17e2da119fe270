//! Three real `metastore-node` processes on loopback: replication through every member, leader
//! SIGKILL under load with catch-up from the log and from a snapshot, and a whole-cluster SIGKILL
//! that must lose no acknowledged write.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use metastore_testkit::{client, current_revision, Cluster, FAST};
use support::BIN;

const READY: Duration = Duration::from_secs(30);

/// Acknowledged writes: key -> value, recorded only after the server said OK.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Writers, one per endpoint, each writing its own keys until `stop`; returns their tasks.
fn start_writers(
    endpoints: Vec<String>,
    prefix: &str,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    endpoints
        .into_iter()
        .enumerate()
        .map(|(w, ep)| {
            let acked = acked.clone();
            let stop = stop.clone();
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let mut cl = client(&ep).await;
                let mut failures = 0;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}/w{w}/{seq:06}");
                    let value = format!("v{seq}");
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        cl.put(key.clone(), value.clone(), None),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            acked.lock().unwrap().insert(key, value);
                        }
                        _ => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    seq += 1;
                }
                failures
            })
        })
        .collect()
}

/// Asserts that every acknowledged write is readable (linearizably) through `endpoint`.
async fn assert_all_present(
    endpoint: &str,
    prefix: &str,
    acked: &BTreeMap<String, String>,
    serializable: bool,
) {
    let mut cl = client(endpoint).await;
    let mut opts = GetOptions::new().with_prefix();
    if serializable {
        opts = opts.with_serializable();
    }
    let resp = cl.get(prefix, Some(opts)).await.expect("range");
    let got: BTreeMap<String, String> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut missing = 0;
    for (k, v) in acked {
        if got.get(k) != Some(v) {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "{endpoint}: {missing} of {} acknowledged writes missing",
        acked.len()
    );
}

/// Polls until `member` has applied at least `index`.
fn wait_applied(c: &Cluster, member: usize, index: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while c.members[member]
        .metric("metastore_raft_applied_index")
        .unwrap_or(0.0)
        < index
    {
        assert!(
            Instant::now() < deadline,
            "member {member} did not catch up to {index}\n{}",
            metastore_testkit::tail(&c.members[member].log())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_and_linearizable_reads_through_every_member() {
    let c = Cluster::start(BIN, 3, FAST);
    c.wait_ready(READY);
    let eps = c.endpoints();
    for (i, ep) in eps.iter().enumerate() {
        let mut cl = client(ep).await;
        cl.put(format!("k{i}"), format!("from-{i}"), None)
            .await
            .unwrap();
        // Right after the ack, a linearizable read through every other member sees it.
        for other in &eps {
            let mut o = client(other).await;
            let r = o.get(format!("k{i}"), None).await.unwrap();
            assert_eq!(
                r.kvs()[0].value_str().unwrap(),
                format!("from-{i}"),
                "read via {other}"
            );
        }
    }
    // All members agree on the revision after the writes.
    let mut revs = Vec::new();
    for ep in &eps {
        let mut cl = client(ep).await;
        revs.push(current_revision(&mut cl, "k0").await);
    }
    assert!(
        revs.iter().all(|r| *r == revs[0]) && revs[0] == 4,
        "{revs:?}"
    );
    let leader = c.leader().unwrap();
    let reads = c.members[leader]
        .metric("metastore_read_total")
        .unwrap_or(0.0);
    assert!(reads >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_under_load_then_catch_up_from_log() {
    let mut c = Cluster::start(BIN, 3, FAST);
    let old = c.wait_ready(READY);
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(c.endpoints(), "load", acked.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.lock().unwrap().len();
    assert!(before > 0, "no write succeeded before the kill");

    c.members[old].kill();
    // A new leader among the survivors takes over and writes continue.
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        if let Some(l) = c.leader() {
            if l != old {
                break l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new leader after killing {old}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Writes resume. Proposals forwarded to the dead leader stay in doubt until the request
    // timeout (as in etcd), so allow for that before expecting progress.
    let killed_at = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    let during = loop {
        let n = acked.lock().unwrap().len();
        if n > killed_at + 50 {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    c.members[old].start();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let commit = c.members[new]
        .metric("metastore_raft_commit_index")
        .unwrap();
    wait_applied(&c, old, commit, Duration::from_secs(30));
    assert_eq!(
        c.members[old].metric("metastore_snapshots_installed_total"),
        Some(0.0),
        "caught up from the log, not a snapshot"
    );
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "failover: {before} acked before the kill, {during} once writes resumed, {} in all",
        acked.len()
    );
    for ep in c.endpoints() {
        assert_all_present(&ep, "load/", &acked, false).await;
    }
    // The restarted member holds the data itself (a local, serializable read).
    assert_all_present(&c.members[old].client_url(), "load/", &acked, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_leader_catches_up_through_a_snapshot_after_compaction() {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend([
        "--snapshot-count",
        "300",
        "--snapshot-catchup-entries",
        "50",
    ]);
    let mut c = Cluster::start(BIN, 3, &flags);
    let lagger = c.wait_ready(READY);
    c.members[lagger].kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        match c.leader() {
            Some(l) if l != lagger => break l,
            _ => assert!(Instant::now() < deadline, "no new leader"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Far more entries than the log keeps behind a snapshot.
    let mut cl = client(&c.members[leader].client_url()).await;
    let mut acked = BTreeMap::new();
    for i in 0..1200 {
        let (k, v) = (format!("snap/{i:05}"), format!("v{i}"));
        cl.put(k.clone(), v.clone(), None).await.unwrap();
        acked.insert(k, v);
    }
    assert!(
        c.members[leader]
            .metric("metastore_snapshots_saved_total")
            .unwrap()
            >= 1.0
    );

    c.members[lagger].start();
    let commit = c.members[leader]
        .metric("metastore_raft_commit_index")
        .unwrap();
    wait_applied(&c, lagger, commit, Duration::from_secs(30));
    assert!(
        c.members[lagger]
            .metric("metastore_snapshots_installed_total")
            .unwrap()
            >= 1.0,
        "the lagging member should have needed a snapshot"
    );
    assert_all_present(&c.members[lagger].client_url(), "snap/", &acked, true).await;

    // And it keeps replicating normally afterwards, and survives its own restart.
    cl.put("after", "snapshot", None).await.unwrap();
    c.members[lagger].kill();
    c.members[lagger].start();
    c.wait_ready(READY);
    let mut l = client(&c.members[lagger].client_url()).await;
    let r = l.get("after", None).await.unwrap();
    assert_eq!(r.kvs()[0].value_str().unwrap(), "snapshot");
    assert_all_present(&c.members[lagger].client_url(), "snap/", &acked, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_all_members_loses_no_acknowledged_write() {
    let mut c = Cluster::start(BIN, 3, FAST);
    c.wait_ready(READY);
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(c.endpoints(), "crash", acked.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for m in &mut c.members {
        m.kill();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "too few writes acknowledged: {}",
        acked.len()
    );

    for m in &mut c.members {
        m.start();
    }
    c.wait_ready(READY);
    for ep in c.endpoints() {
        assert_all_present(&ep, "crash/", &acked, false).await;
    }
}

/// A leader stopped with SIGTERM hands leadership to its most caught-up voter before it exits
/// (as etcd does): it sees another member lead while it still runs, exits 0, and the others
/// lead in the next term (one transfer, not elections after timeouts) and take writes.
#[test]
fn a_stopping_leader_hands_leadership_over() {
    let mut c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let old_id = c.members[leader]
        .metric("metastore_raft_leader_id")
        .unwrap();
    let term = c.members[leader].metric("metastore_raft_term").unwrap();
    assert_eq!(c.members[leader].terminate(), Some(0));
    let log = c.members[leader].log();
    assert!(
        log.contains("leadership handed over"),
        "{}",
        metastore_testkit::tail(&log)
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let new_id = loop {
        let ids: Vec<f64> = others
            .iter()
            .filter_map(|i| c.members[*i].metric("metastore_raft_leader_id"))
            .collect();
        if ids.len() == 2 && ids[0] == ids[1] && ids[0] != 0.0 && ids[0] != old_id {
            break ids[0];
        }
        assert!(Instant::now() < deadline, "no new leader: {ids:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(new_id, old_id);
    for i in &others {
        assert_eq!(
            c.members[*i].metric("metastore_raft_term"),
            Some(term + 1.0)
        );
    }
    let (ok, out) = metastore_testkit::etcdctl(
        &c.members[others[0]].client_url(),
        &["put", "after", "handoff"],
    );
    assert!(ok, "{out}");
}
