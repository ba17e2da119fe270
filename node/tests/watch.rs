//! The Watch service on real members with the Rust etcd client: live events and history replay
//! (prev_kv, filters, cancel), compaction cancels, watches on followers, progress requests,
//! thousands of watchers on few streams, a slow watcher that never blocks writers and still gets
//! every event exactly once and in order, and fragmented responses.

mod support;

use std::time::Duration;

use etcd_client::{EventType, TxnOp, WatchFilterType, WatchOptions, WatchResponse, WatchStream};

use metastore_testkit::{client, current_revision, Cluster, FAST};
use support::BIN;

async fn next(s: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("watch response in time")
        .expect("stream ok")
        .expect("stream open")
}

/// Collects events until `n` have arrived: (type, key, value, mod_revision).
async fn events(s: &mut WatchStream, n: usize) -> Vec<(EventType, String, String, i64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(s).await;
        for e in r.events() {
            let kv = e.kv().unwrap();
            out.push((
                e.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                kv.mod_revision(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_replay_prev_kv_filters_cancel_and_compaction() {
    let c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    let r1 = cl
        .put("a/1", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cl.put("a/2", "y", None).await.unwrap();
    cl.delete("a/1", None).await.unwrap();
    cl.put("b", "other", None).await.unwrap();

    // Replay from the first write, with prev_kv, then live.
    let mut s = cl
        .watch(
            "a/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(r1)
                    .with_prev_key(),
            ),
        )
        .await
        .unwrap();
    let created = next(&mut s).await;
    assert!(created.created());
    let id = created.watch_id();
    let got = events(&mut s, 3).await;
    assert_eq!(
        got.iter().map(|e| (e.0, e.1.as_str())).collect::<Vec<_>>(),
        [
            (EventType::Put, "a/1"),
            (EventType::Put, "a/2"),
            (EventType::Delete, "a/1")
        ]
    );
    assert_eq!(got[0].3, r1);
    cl.put("a/2", "z", None).await.unwrap();
    let r = next(&mut s).await;
    assert_eq!(r.watch_id(), id);
    let e = &r.events()[0];
    assert_eq!(e.kv().unwrap().value(), b"z");
    assert_eq!(
        e.prev_kv().unwrap().value(),
        b"y",
        "prev_kv of a live event"
    );

    // Filters: a NOPUT watcher on the same stream only sees deletes.
    s.watch(
        "a/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoPut]),
        ),
    )
    .await
    .unwrap();
    let created = next(&mut s).await;
    assert!(created.created());
    let noput = created.watch_id();
    assert_ne!(noput, id);
    cl.put("a/3", "p", None).await.unwrap();
    cl.delete("a/3", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let r = next(&mut s).await;
        for e in r.events() {
            seen.push((r.watch_id(), e.event_type()));
        }
    }
    assert!(seen.contains(&(noput, EventType::Delete)));
    assert!(!seen.contains(&(noput, EventType::Put)), "{seen:?}");

    // Cancel.
    s.cancel(noput).await.unwrap();
    let r = next(&mut s).await;
    assert!(r.canceled() && r.watch_id() == noput);

    // Progress request: a header at the current revision.
    s.request_progress().await.unwrap();
    let r = next(&mut s).await;
    let now = current_revision(&mut cl, "b").await;
    assert_eq!(r.header().unwrap().revision(), now);
    assert!(r.events().is_empty());

    // A watch from a compacted revision is canceled with the compaction revision.
    cl.compact(now, None).await.unwrap();
    let mut old = cl
        .watch(
            "a/",
            Some(WatchOptions::new().with_prefix().with_start_revision(r1)),
        )
        .await
        .unwrap();
    let created = next(&mut old).await;
    assert!(created.created());
    let r = next(&mut old).await;
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_watches() {
    let c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let f = (leader + 1) % 3;
    let mut fc = client(&c.members[f].client_url()).await;
    let mut s = fc.watch("k", None).await.unwrap();
    assert!(next(&mut s).await.created());
    let mut lc = client(&c.members[leader].client_url()).await;
    for i in 0..20 {
        lc.put("k", format!("{i}"), None).await.unwrap();
    }
    let got = events(&mut s, 20).await;
    let values: Vec<String> = got.iter().map(|e| e.2.clone()).collect();
    assert_eq!(values, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(got.windows(2).all(|w| w[0].3 < w[1].3), "revision order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_watchers_on_few_streams() {
    let c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    const STREAMS: usize = 10;
    const PER_STREAM: usize = 200;
    let mut streams = Vec::new();
    for s in 0..STREAMS {
        let mut st = cl.watch(format!("w/{s}/0"), None).await.unwrap();
        assert!(next(&mut st).await.created());
        for w in 1..PER_STREAM {
            st.watch(format!("w/{s}/{w}"), None).await.unwrap();
            assert!(next(&mut st).await.created());
        }
        streams.push(st);
    }
    // One txn writes every watched key at once.
    let ops: Vec<TxnOp> = (0..STREAMS)
        .flat_map(|s| (0..PER_STREAM).map(move |w| TxnOp::put(format!("w/{s}/{w}"), "v", None)))
        .collect();
    for chunk in ops.chunks(100) {
        cl.txn(etcd_client::Txn::new().and_then(chunk.to_vec()))
            .await
            .unwrap();
    }
    for st in &mut streams {
        let got = events(st, PER_STREAM).await;
        let mut keys: Vec<String> = got.iter().map(|e| e.1.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            PER_STREAM,
            "each watcher got its key exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_never_blocks_writers_and_misses_nothing() {
    let c = Cluster::start(
        BIN,
        1,
        &["--heartbeat-interval", "50", "--election-timeout", "500"],
    );
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    let mut s = cl.watch("slow", None).await.unwrap();
    assert!(next(&mut s).await.created());
    // Far more revisions than the broadcast buffer (4096) and the stream queue hold, while the
    // watcher reads nothing: the writes must all complete.
    const N: usize = 6000;
    let writes = tokio::time::timeout(Duration::from_secs(120), async {
        for i in 0..N {
            cl.put("slow", format!("{i}"), None).await.unwrap();
        }
    })
    .await;
    assert!(writes.is_ok(), "writers were blocked by a slow watcher");
    let got = events(&mut s, N).await;
    assert_eq!(got.len(), N);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.2, i.to_string(), "event {i} exactly once, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_revisions_are_fragmented_when_asked() {
    let c = Cluster::start(BIN, 1, &["--max-request-bytes", "20000"]);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    // Eight 8 KB values, each under the request limit...
    let value = "x".repeat(8000);
    for i in 0..8 {
        cl.put(format!("big/{i}"), value.clone(), None)
            .await
            .unwrap();
    }
    let mut s = cl
        .watch(
            "big/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_fragment(),
            ),
        )
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    // ... deleted in one revision: with prev_kv that revision's events are 64 KB.
    let rev = cl
        .delete(
            "big/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut responses = 0;
    let mut n = 0;
    while n < 8 {
        let r = next(&mut s).await;
        assert_eq!(r.header().unwrap().revision(), rev);
        n += r.events().len();
        responses += 1;
    }
    assert!(
        responses > 1,
        "one 64 KB revision arrived in {responses} response(s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_reach_idle_watchers() {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend(["--watch-progress-notify-interval", "200"]);
    let c = Cluster::start(BIN, 1, &flags);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    let rev = cl
        .put("p", "v", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut s = cl
        .watch("idle", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    assert!(next(&mut s).await.created());
    let r = next(&mut s).await;
    assert!(r.events().is_empty() && !r.canceled());
    assert_eq!(
        r.header().unwrap().revision(),
        rev,
        "progress at the current revision"
    );
}

/// A client that resumes from the last revision it saw gets every event exactly once, in order,
/// across a leader kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumed_watch_is_exactly_once_across_a_leader_kill() {
    let mut c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let endpoints = c.endpoints();
    // Writer: N puts of increasing values, retried until acknowledged (through any member).
    const N: usize = 300;
    let writer = tokio::spawn(async move {
        let mut acked = 0;
        let mut i = 0;
        while acked < N {
            let ep = endpoints[i % endpoints.len()].clone();
            i += 1;
            let Ok(Ok(mut cl)) =
                tokio::time::timeout(Duration::from_secs(2), metastore_testkit::try_client(&ep))
                    .await
            else {
                continue;
            };
            while acked < N {
                match tokio::time::timeout(
                    Duration::from_secs(3),
                    cl.put("resumed", format!("{acked}"), None),
                )
                .await
                {
                    Ok(Ok(_)) => acked += 1,
                    _ => break,
                }
            }
        }
    });
    // Watcher on the leader, which is killed mid-way; it resumes on another member from the
    // last revision it saw + 1.
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut ep_index = leader;
    let mut killed = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let done =
        |seen: &Vec<(i64, String)>| seen.last().is_some_and(|(_, v)| *v == (N - 1).to_string());
    'outer: while !done(&seen) {
        assert!(
            std::time::Instant::now() < deadline,
            "watch never caught up: {}",
            seen.len()
        );
        let ep = c.members[ep_index].client_url();
        let start = seen.last().map_or(0, |(r, _)| r + 1);
        let Ok(mut cl) = metastore_testkit::try_client(&ep).await else {
            ep_index = (ep_index + 1) % 3;
            continue;
        };
        let opts = if start > 0 {
            WatchOptions::new().with_start_revision(start)
        } else {
            WatchOptions::new().with_start_revision(1)
        };
        let Ok(mut s) = cl.watch("resumed", Some(opts)).await else {
            ep_index = (ep_index + 1) % 3;
            continue;
        };
        loop {
            if !killed && seen.len() >= N / 3 {
                killed = true;
                c.members[leader].kill();
            }
            let msg = tokio::time::timeout(Duration::from_secs(2), s.message()).await;
            match msg {
                Ok(Ok(Some(r))) => {
                    for e in r.events() {
                        let kv = e.kv().unwrap();
                        seen.push((kv.mod_revision(), kv.value_str().unwrap().to_string()));
                    }
                    if done(&seen) {
                        break 'outer;
                    }
                }
                // The member went away (or is silent): resume elsewhere.
                _ => {
                    ep_index = (ep_index + 1) % 3;
                    continue 'outer;
                }
            }
        }
    }
    writer.await.unwrap();
    assert!(killed, "the leader was killed during the watch");
    let revs: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revision order, no duplicates"
    );
    let values: Vec<String> = seen.iter().map(|(_, v)| v.clone()).collect();
    // Retried puts may write a value twice; every value appears, in order.
    let mut expected = 0;
    for v in &values {
        let n: usize = v.parse().unwrap();
        assert!(
            n == expected || n + 1 == expected,
            "out of order: {n} after {expected}"
        );
        expected = n + 1;
    }
    assert_eq!(expected, N);
}

/// What a stream answers to progress requests, in the three cases where etcd 3.5.13 changed
/// the answer (kube-apiserver relies on it for consistent lists from its watch cache): no
/// watchers on the stream, a watcher that starts in the future, and synced watchers (one
/// notification, watch id -1, at the current revision, after the events it covers).
async fn progress_answers(endpoint: &str) -> Vec<String> {
    // Up to 1 s for an answer that may not come.
    async fn maybe(s: &mut WatchStream) -> Option<WatchResponse> {
        tokio::time::timeout(Duration::from_secs(1), s.message())
            .await
            .ok()
            .map(|r| r.unwrap().unwrap())
    }
    let mut cl = client(endpoint).await;
    let mut out = Vec::new();
    let now = cl
        .put("progress/a", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    // A stream whose only watcher was canceled.
    let mut s = cl.watch("progress/a", None).await.unwrap();
    let id = next(&mut s).await.watch_id();
    s.cancel(id).await.unwrap();
    assert!(next(&mut s).await.canceled());
    s.request_progress().await.unwrap();
    let r = maybe(&mut s).await;
    out.push(format!("no watchers: {:?}", r.map(|r| r.watch_id())));
    // A watcher from a revision not reached yet.
    let opts = WatchOptions::new().with_start_revision(now + 5);
    let mut s = cl.watch("progress/b", Some(opts)).await.unwrap();
    assert!(next(&mut s).await.created());
    s.request_progress().await.unwrap();
    let r = maybe(&mut s).await;
    out.push(format!("future start: {:?}", r.map(|r| r.watch_id())));
    drop(s);
    // A synced watcher that was just sent an event.
    let opts = WatchOptions::new().with_prefix();
    let mut s = cl.watch("progress/", Some(opts)).await.unwrap();
    assert!(next(&mut s).await.created());
    let put = cl.put("progress/c", "2", None).await.unwrap();
    let rev = put.header().unwrap().revision();
    let e = next(&mut s).await;
    let at = e.events()[0].kv().unwrap().mod_revision();
    out.push(format!("event: {} at {}", e.events().len(), at - rev));
    s.request_progress().await.unwrap();
    let r = maybe(&mut s).await;
    out.push(format!(
        "synced: {:?}",
        r.map(|r| (
            r.watch_id(),
            r.events().len(),
            r.header().unwrap().revision() - rev
        ))
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_requests_answer_as_current_etcd_does() {
    let c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let ours = progress_answers(&c.members[0].client_url()).await;
    // The version kube-apiserver reads to trust these answers.
    let mut cl = client(&c.members[0].client_url()).await;
    assert_eq!(cl.status().await.unwrap().version(), "3.5.13");
    assert_eq!(
        ours,
        [
            "no watchers: None",
            "future start: None",
            "event: 1 at 0",
            "synced: Some((-1, 0, 0))",
        ]
    );
    let net = metastore_testkit::loopback_net();
    let etcd = support::etcd::start_etcd_from(
        &support::etcd::etcd_latest_bin(),
        &format!("{net}.200"),
        "http",
        &[],
        &[],
    );
    let theirs = progress_answers(&etcd.endpoint).await;
    assert_eq!(theirs, ours, "as the newest etcd answers");
}
