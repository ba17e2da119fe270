//! A member whose lease clock steps back (beyond any drift bound) must notice and stop serving
//! lease reads: three real members, the leader's lease clock is stepped back 2 s through the
//! test-only offset file; reads on the leader then go through ReadIndex, the anomaly is counted,
//! and lease reads resume once the clock has behaved for an election timeout.

mod support;

use std::time::Duration;

use metastore_testkit::{client, Cluster, FAST};
use support::BIN;

fn offset_file(c: &Cluster, i: usize) -> std::path::PathBuf {
    c.members[i].data_dir.with_extension("clock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepping_back_ends_the_lease_until_it_behaves() {
    let mut c = Cluster::create(BIN, 3, FAST);
    for i in 0..3 {
        let f = offset_file(&c, i);
        std::fs::write(&f, "0").unwrap();
        c.members[i].args.extend([
            "--unsafe-test-clock-offset-file".to_string(),
            f.display().to_string(),
        ]);
        c.members[i].start();
    }
    let leader = c.wait_ready(Duration::from_secs(30));
    let m = &c.members[leader];
    let mut cl = client(&m.client_url()).await;
    cl.put("k", "v", None).await.unwrap();
    let lease = |m: &metastore_testkit::Member| {
        m.metric("metastore_read_total{path=\"lease\"}")
            .unwrap_or(0.0)
    };
    let read_index = |m: &metastore_testkit::Member| {
        m.metric("metastore_read_total{path=\"read_index\"}")
            .unwrap_or(0.0)
    };
    // Lease reads flow.
    for _ in 0..200 {
        cl.get("k", None).await.unwrap();
    }
    assert!(
        lease(m) > 100.0,
        "lease reads before the step: {}",
        lease(m)
    );

    std::fs::write(offset_file(&c, leader), "-2000").unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (l0, r0) = (lease(m), read_index(m));
    for _ in 0..20 {
        assert_eq!(cl.get("k", None).await.unwrap().kvs()[0].value(), b"v");
    }
    let (l1, r1) = (lease(m), read_index(m));
    assert_eq!(l1, l0, "no lease read right after the clock stepped back");
    assert!(
        r1 - r0 >= 20.0,
        "the reads went through ReadIndex ({r0} -> {r1})"
    );
    assert_eq!(
        m.metric("metastore_clock_anomalies_total{kind=\"backward\"}"),
        Some(1.0),
        "the step is reported"
    );
    assert!(
        m.metric("metastore_lease_expirations_total{reason=\"clock\"}") >= Some(1.0),
        "the lease ended because of the clock"
    );
    assert!(m.log().contains("disagrees with the raw hardware clock"));

    // After an election timeout of good behaviour, lease reads come back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..50 {
        cl.get("k", None).await.unwrap();
    }
    assert!(lease(m) > l1, "lease reads resumed");
}
