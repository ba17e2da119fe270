//! The Lease service on real members with the Rust etcd client: grant, attach, keep-alive and
//! time-to-live (also through followers), list, revoke deleting attached keys in one revision
//! (seen by watchers), expiry decided by the leader, never early, and not early across a leader
//! change either; etcd's errors for bad requests.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions};
use metastore_testkit::{client, Cluster, FAST};
use support::BIN;

fn code_and_message(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_attach_keepalive_ttl_list_and_revoke() {
    let c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let f = (leader + 1) % 3;
    // Everything through a follower: writes through Raft, keep-alive and TTL forwarded.
    let mut cl = client(&c.members[f].client_url()).await;
    let g = cl.lease_grant(60, None).await.unwrap();
    let id = g.id();
    assert_eq!(g.ttl(), 60);
    for k in ["a", "b", "c"] {
        cl.put(k, "v", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
    }
    let t = cl
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.granted_ttl(), 60);
    assert!(t.ttl() > 55 && t.ttl() <= 60, "{}", t.ttl());
    let mut keys = t.keys().to_vec();
    keys.sort();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    // A key overwritten without the lease leaves it.
    cl.put("c", "v2", None).await.unwrap();
    let (mut keeper, mut stream) = cl.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let ka = stream.message().await.unwrap().unwrap();
    assert_eq!((ka.id(), ka.ttl()), (id, 60));
    let leases = cl.leases().await.unwrap();
    assert!(leases.leases().iter().any(|l| l.id() == id));

    // Revoke: the attached keys go in one revision, and a watcher sees them go.
    let mut w = cl
        .watch("", Some(WatchOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert!(w.message().await.unwrap().unwrap().created());
    cl.lease_revoke(id).await.unwrap();
    let r = w.message().await.unwrap().unwrap();
    let deleted: Vec<(EventType, String, i64)> = r
        .events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            (
                e.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.mod_revision(),
            )
        })
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted
        .iter()
        .all(|d| d.0 == EventType::Delete && d.2 == deleted[0].2));
    assert!(cl.get("a", None).await.unwrap().kvs().is_empty());
    assert_eq!(cl.get("c", None).await.unwrap().kvs()[0].value(), b"v2");
    let gone = cl.lease_time_to_live(id, None).await.unwrap();
    assert_eq!(gone.ttl(), -1);
    keeper.keep_alive().await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_requests_get_etcds_errors() {
    let c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    let e = cl
        .put("k", "v", Some(PutOptions::new().with_lease(424242)))
        .await
        .unwrap_err();
    assert_eq!(
        code_and_message(e),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".into()
        )
    );
    let id = cl.lease_grant(30, None).await.unwrap().id();
    let e = cl
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(id)))
        .await
        .unwrap_err();
    assert_eq!(
        code_and_message(e),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists".into()
        )
    );
    let e = cl.lease_grant(9_000_000_001, None).await.unwrap_err();
    assert_eq!(
        code_and_message(e),
        (
            tonic::Code::OutOfRange,
            "etcdserver: too large lease TTL".into()
        )
    );
    let e = cl.lease_revoke(777).await.unwrap_err();
    assert_eq!(code_and_message(e).0, tonic::Code::NotFound);
    // A txn naming a missing lease changes nothing.
    let txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::put(
        "t",
        "v",
        Some(PutOptions::new().with_lease(31337)),
    )]);
    assert_eq!(
        code_and_message(cl.txn(txn).await.unwrap_err()).0,
        tonic::Code::NotFound
    );
    assert!(cl.get("t", None).await.unwrap().kvs().is_empty());
    // etcd's put checks.
    let e = cl
        .put("k", "v", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap_err();
    assert_eq!(
        code_and_message(e),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: value is provided".into()
        )
    );
    let e = cl
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_lease().with_lease(id)),
        )
        .await
        .unwrap_err();
    assert_eq!(
        code_and_message(e),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: lease is provided".into()
        )
    );
    // The shortest lease outlives an election: 1.5 election timeouts, rounded up.
    assert_eq!(cl.lease_grant(0, None).await.unwrap().ttl(), 1);
}

/// Waits until `key` is gone; returns when.
async fn gone_at(cl: &mut etcd_client::Client, key: &str, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if cl.get(key, None).await.is_ok_and(|r| r.kvs().is_empty()) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{key} never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_never_early_and_on_time() {
    let c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    let granted = Instant::now();
    let id = cl.lease_grant(2, None).await.unwrap().id();
    cl.put("ttl", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let at = gone_at(&mut cl, "ttl", Duration::from_secs(10)).await;
    let took = at.duration_since(granted);
    eprintln!("a 2 s lease expired after {took:?}");
    assert!(took >= Duration::from_secs(2), "expired early: {took:?}");
    assert!(took < Duration::from_secs(3), "expired late: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_change_never_expires_a_lease_early() {
    let mut c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let f = (leader + 1) % 3;
    let mut cl = client(&c.members[f].client_url()).await;
    let id = cl.lease_grant(4, None).await.unwrap().id();
    cl.put("held", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    c.members[leader].kill();
    // The new leader gives the lease a full TTL from when it takes over.
    let at = gone_at(&mut cl, "held", Duration::from_secs(20)).await;
    let after_kill = at.duration_since(killed);
    eprintln!("lease of 4 s, leader killed 2 s in: key gone {after_kill:?} after the kill");
    assert!(
        after_kill >= Duration::from_secs(4),
        "expired before a full TTL under the new leader: {after_kill:?}"
    );
}
