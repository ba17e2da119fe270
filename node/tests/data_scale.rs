//! A member stays healthy as data flows through it (issue 16), on real processes: a read-only txn
//! is a read, not a log entry; under sustained writes the data dir stays below the documented
//! bound (the log is reclaimed, old snapshots are removed) while snapshots are taken off the
//! Raft loop; a member restarted from its snapshot, and a learner that joins by snapshot, hold
//! the same data.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use metastore_testkit::{client, current_revision, Cluster, FAST};
use support::BIN;

/// Bytes under `dir`, recursively.
/// Bytes the files under `dir` occupy on disk (allocated blocks: what fills a volume; the values
/// database's file is sparse past what it uses).
fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Waits until the members' own proposals are done: every member published its client URLs
/// through the log, and the leader's one cluster-version entry (set once it has asked every
/// member) applied. After it, only the test's requests reach the log.
async fn settled(c: &Cluster, leader: usize) {
    let mut lc = client(&c.members[leader].client_url()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = lc.member_list().await.unwrap();
        if list.members().iter().all(|m| !m.client_urls().is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "members never published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    support::wait_cluster_version(&c.members[leader].client_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_txn_is_a_read_not_a_log_entry() {
    let c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let mut lc = client(&c.members[leader].client_url()).await;
    lc.put("k", "v1", None).await.unwrap();
    settled(&c, leader).await;
    // Served on a follower too, after the read barrier.
    let follower = (leader + 1) % 3;
    let mut fc = client(&c.members[follower].client_url()).await;
    // The metric is published after the ready cycle: let it settle before reading.
    let commit = |i: usize| {
        std::thread::sleep(Duration::from_millis(500));
        c.members[i].metric("metastore_raft_commit_index")
    };
    let before = commit(leader).unwrap();
    for cl in [&mut lc, &mut fc] {
        for _ in 0..20 {
            let t = cl
                .txn(
                    Txn::new()
                        .when([Compare::value("k", CompareOp::Equal, "v1")])
                        .and_then([TxnOp::get("k", None)])
                        .or_else([TxnOp::get("nope", None)]),
                )
                .await
                .unwrap();
            assert!(t.succeeded());
            let Some(etcd_client::TxnOpResponse::Get(g)) = t.op_responses().into_iter().next()
            else {
                panic!("no get response");
            };
            assert_eq!(g.kvs()[0].value(), b"v1");
        }
    }
    // A write made through the leader is seen by the next read-only txn on the follower.
    lc.put("k", "v2", None).await.unwrap();
    let t = fc
        .txn(Txn::new().and_then([TxnOp::get("k", None)]))
        .await
        .unwrap();
    let Some(etcd_client::TxnOpResponse::Get(g)) = t.op_responses().into_iter().next() else {
        panic!("no get response");
    };
    assert_eq!(g.kvs()[0].value(), b"v2", "linearizable on a follower");
    let after = commit(leader).unwrap();
    assert_eq!(after, before + 1.0, "only the put reached the log");
    // A txn that writes still goes through the log.
    lc.txn(Txn::new().and_then([TxnOp::put("k", "v3", None)]))
        .await
        .unwrap();
    assert_eq!(commit(leader).unwrap(), after + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_writes_keep_the_data_dir_bounded_and_snapshots_restore() {
    // A 64 MiB quota: the log is reclaimed past 8 MiB (LogLimits::for_quota). Snapshots every
    // 2000 entries, 500 kept behind each; history compacted (by the test, every 200 ms) to the
    // last 1000 revisions.
    let flags: Vec<&str> = FAST
        .iter()
        .copied()
        .chain([
            "--quota-backend-bytes",
            "67108864",
            "--snapshot-count",
            "2000",
            "--snapshot-catchup-entries",
            "500",
        ])
        .collect();
    let mut c = Cluster::start(BIN, 1, &flags);
    c.wait_ready(Duration::from_secs(30));
    let url = c.members[0].client_url();
    // 32 writers overwrite 400 keys with 2 KiB values: 160 MB through the log, ~1 MB live.
    let value = "x".repeat(2048);
    let writes_per_client = 2500;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (url, value) = (url.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut cl = client(&url).await;
            for i in 0..writes_per_client {
                let key = format!("key/{:03}", (w * 131 + i) % 400);
                cl.put(key, value.as_str(), None).await.unwrap();
            }
        }));
    }
    let dir = c.members[0].data_dir.clone();
    let mut largest = 0;
    let mut compactor = client(&url).await;
    while !tasks.iter().all(|t| t.is_finished()) {
        let rev = current_revision(&mut compactor, "k").await;
        if rev > 1000 {
            // Another compaction may have passed this revision meanwhile: not an error here.
            let _ = compactor.compact(rev - 1000, None).await;
        }
        largest = largest.max(dir_size(&dir));
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "writes stalled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    largest = largest.max(dir_size(&dir));
    let written = 32 * writes_per_client * (2048 + 8);
    // The bound (docs/operations.md): 2.5 x the purge threshold, the entries not yet compacted
    // (snapshot count + catch-up entries), two snapshots of the index and the values database
    // (here 400 live keys and 1000-2000 revisions of history: 16 MiB together at most).
    let bound = 25 * (8 << 20) / 10 + 2500 * 2200 + 2 * (8 << 20);
    assert!(
        largest < bound,
        "data dir reached {largest} bytes (bound {bound}) after {written} bytes of writes"
    );
    assert!(written > bound, "the test must write more than the bound");
    let saved = c.members[0]
        .metric("metastore_snapshots_saved_total")
        .unwrap();
    assert!(saved >= 10.0, "{saved} snapshots");
    let pause = c.members[0]
        .metric("metastore_raft_loop_longest_pause_milliseconds")
        .unwrap();
    eprintln!(
        "largest data dir {largest} bytes for {written} written, {saved} snapshots, longest Raft loop pause {pause} ms"
    );

    // Restarted, the member serves the same data from its snapshot and the log after it.
    let mut cl = client(&url).await;
    let before = cl
        .get("key/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    c.members[0].kill();
    c.members[0].start();
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&url).await;
    let after = cl
        .get("key/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(after.kvs().len(), 400);
    assert_eq!(
        before
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
            .collect::<Vec<_>>(),
        after
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.mod_revision()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_raft_queue_refuses_with_too_many_requests_and_the_member_keeps_serving() {
    let flags: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--max-raft-queue", "1"])
        .collect();
    let c = Cluster::start(BIN, 1, &flags);
    c.wait_ready(Duration::from_secs(30));
    // The member's own proposals are refused by a full queue too: let them finish first, so
    // the metric counts the clients' refusals alone.
    settled(&c, 0).await;
    let url = c.members[0].client_url();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut cl = client(&url).await;
            let (mut ok, mut refused) = (0, 0);
            for i in 0..30 {
                match cl.put(format!("w{w}/{i}"), "v", None).await {
                    Ok(_) => ok += 1,
                    Err(etcd_client::Error::GRpcStatus(s))
                        if s.code() == tonic::Code::ResourceExhausted
                            && s.message() == "etcdserver: too many requests" =>
                    {
                        refused += 1
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        refused += r;
    }
    assert!(refused > 0, "64 writers never filled a queue of 1");
    assert!(ok > 0);
    let counted = c.members[0]
        .metric("metastore_raft_queue_refused_total")
        .unwrap();
    assert_eq!(counted as u64, refused, "every refusal is counted");
    // Nothing refused was written, everything acknowledged was, and the member still serves.
    let mut cl = client(&url).await;
    let all = cl
        .get("w", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(all.count() as u64, ok);
    cl.put("after", "yes", None).await.unwrap();
    assert_eq!(
        cl.get("after", None).await.unwrap().kvs()[0].value(),
        b"yes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_past_the_stream_limit_are_canceled_with_a_reason_and_the_rest_keep_working() {
    let flags: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--max-watchers-per-stream", "3"])
        .collect();
    let c = Cluster::start(BIN, 1, &flags);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    let mut stream = cl.watch("a", None).await.unwrap();
    for k in ["b", "c", "d"] {
        stream.watch(k, None).await.unwrap();
    }
    let mut refused = Vec::new();
    let mut created = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while created + refused.len() < 4 && Instant::now() < deadline {
        let Ok(Ok(Some(r))) = tokio::time::timeout(Duration::from_secs(5), stream.message()).await
        else {
            break;
        };
        if r.canceled() {
            refused.push(r.cancel_reason().to_string());
        } else if r.created() {
            created += 1;
        }
    }
    assert_eq!((created, refused.len()), (3, 1), "{refused:?}");
    assert!(refused[0].contains("too many watchers"), "{refused:?}");
    assert_eq!(
        c.members[0].metric("metastore_watchers_refused_total"),
        Some(1.0)
    );
    // The three admitted watchers still deliver.
    cl.put("c", "1", None).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.events()[0].kv().unwrap().key(), b"c");
}
