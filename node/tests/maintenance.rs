//! Maintenance on real members with the Rust etcd client: HashKV agrees across members (so they
//! can be compared for divergence) and honours its revision, Snapshot streams a consistent copy
//! framed as etcdctl expects (512-byte aligned, SHA-256 trailer), Defragment is accepted,
//! automatic compaction bounds history, and the Auth API answers.

mod support;

use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use metastore_testkit::{client, current_revision, Cluster, FAST};
use support::BIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_kv_agrees_across_members_and_snapshots_are_framed() {
    let c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let mut lc = client(&c.members[leader].client_url()).await;
    for i in 0..50 {
        lc.put(format!("k{}", i % 7), format!("v{i}"), None)
            .await
            .unwrap();
    }
    lc.delete("k3", None).await.unwrap();
    let rev = current_revision(&mut lc, "k1").await;
    // Every member, once it has applied `rev`, hashes the same history alike.
    let mut hashes = Vec::new();
    for m in &c.members {
        let mut cl = client(&m.client_url()).await;
        cl.get("k1", None).await.unwrap(); // linearizable: applied up to now
        let h = cl.hash_kv(rev).await.unwrap();
        hashes.push(h.hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    // An earlier revision hashes differently; a future one is refused.
    let earlier = lc.hash_kv(rev - 5).await.unwrap().hash();
    assert_ne!(earlier, hashes[0]);
    assert!(lc.hash_kv(rev + 1000).await.is_err());

    let mut s = lc.snapshot().await.unwrap();
    let mut bytes = Vec::new();
    let mut last_remaining = u64::MAX;
    while let Some(part) = s.message().await.unwrap() {
        assert!(part.remaining_bytes() < last_remaining);
        last_remaining = part.remaining_bytes();
        bytes.extend_from_slice(part.blob());
    }
    assert_eq!(last_remaining, 0);
    assert_eq!(bytes.len() % 512, 32, "etcdctl's framing check");
    use sha2::{Digest, Sha256};
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(body).as_slice(), trailer);

    lc.defragment().await.unwrap();
    // The Auth API answers (no users yet; auth itself is tested in auth_conformance.rs).
    assert!(lc.user_list().await.unwrap().users().is_empty());
    // Nothing broke.
    lc.put("after", "ok", None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_bounds_history() {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend([
        "--auto-compaction-mode",
        "periodic",
        "--auto-compaction-retention",
        "1s",
    ]);
    let c = Cluster::start(BIN, 1, &flags);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    let first = cl
        .put("k", "v0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        i += 1;
        cl.put("k", format!("v{i}"), None).await.unwrap();
        let old = cl
            .get("k", Some(GetOptions::new().with_revision(first)))
            .await;
        if old.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "history was never compacted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Recent history is still there.
    let now = current_revision(&mut cl, "k").await;
    assert!(cl
        .get("k", Some(GetOptions::new().with_revision(now - 1)))
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_quota_raises_nospace_until_space_is_freed_and_the_alarm_disarmed() {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend(["--quota-backend-bytes", "3000"]);
    let c = Cluster::start(BIN, 3, &flags);
    let leader = c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[leader].client_url()).await;
    let big = "x".repeat(1000);
    cl.put("k1", big.clone(), None).await.unwrap();
    cl.put("k2", big.clone(), None).await.unwrap();
    let no_space = |e: etcd_client::Error| match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::ResourceExhausted
                && s.message() == "etcdserver: mvcc: database space exceeded"
        }
        _ => false,
    };
    assert!(no_space(cl.put("k3", big.clone(), None).await.unwrap_err()));
    // The alarm is replicated: every member now refuses even small writes.
    for m in &c.members {
        let mut mc = client(&m.client_url()).await;
        let alarms = mc
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(alarms.alarms().len(), 1);
        assert!(no_space(mc.put("small", "v", None).await.unwrap_err()));
        let st = mc.status().await.unwrap();
        assert!(
            st.errors().iter().any(|e| e.contains("NOSPACE")),
            "{:?}",
            st.errors()
        );
    }
    // Reads, deletes and compaction still work; freeing space and disarming restores writes.
    assert_eq!(cl.get("k1", None).await.unwrap().kvs().len(), 1);
    let rev = cl
        .delete("k1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    cl.compact(rev, None).await.unwrap();
    cl.defragment().await.unwrap();
    let member = cl.status().await.unwrap().header().unwrap().member_id();
    let mut alarm_member = 0;
    for a in cl
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap()
        .alarms()
    {
        alarm_member = a.member_id();
    }
    assert_eq!(
        alarm_member, member,
        "raised by the member that saw the quota exceeded"
    );
    let off = cl
        .alarm(
            etcd_client::AlarmAction::Deactivate,
            etcd_client::AlarmType::Nospace,
            Some({
                let mut o = etcd_client::AlarmOptions::new();
                o.with_member(alarm_member);
                o
            }),
        )
        .await
        .unwrap();
    assert_eq!(off.alarms().len(), 1, "names the alarm it disarmed");
    cl.put("small", "v", None).await.unwrap();
}
