//! Linearizable reads on followers: while the leader holds its lease it answers their ReadIndex
//! requests at once (no heartbeat round); the follower still waits to apply that far, so a write
//! acknowledged by the leader is always visible to a read on a follower that starts after it.

mod support;

use std::time::Duration;

use metastore_testkit::{client, Cluster, FAST};
use support::BIN;

async fn write_then_read_on_followers(c: &Cluster, leader: usize, rounds: usize) {
    let followers: Vec<usize> = (0..c.members.len()).filter(|i| *i != leader).collect();
    let mut w = client(&c.members[leader].client_url()).await;
    let mut readers = Vec::new();
    for f in &followers {
        readers.push(client(&c.members[*f].client_url()).await);
    }
    for i in 0..rounds {
        let v = format!("v{i}");
        w.put("k", v.clone(), None).await.unwrap();
        for r in readers.iter_mut() {
            let got = r.get("k", None).await.unwrap();
            assert_eq!(
                got.kvs()[0].value_str().unwrap(),
                v,
                "round {i}: stale follower read"
            );
        }
    }
}

fn answers(c: &Cluster, leader: usize) -> f64 {
    c.members[leader]
        .metric("metastore_lease_read_index_answers_total")
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_answers_follower_read_index_from_its_lease() {
    let c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    write_then_read_on_followers(&c, leader, 200).await;
    // 400 follower reads; a few may arrive while the lease is being (re)established.
    assert!(
        answers(&c, leader) >= 300.0,
        "answered from the lease: {}",
        answers(&c, leader)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lease_reads_follower_reads_take_the_heartbeat_round() {
    let mut flags = FAST.to_vec();
    flags.push("--lease-read=false");
    let c = Cluster::start(BIN, 3, &flags);
    let leader = c.wait_ready(Duration::from_secs(30));
    write_then_read_on_followers(&c, leader, 100).await;
    assert_eq!(answers(&c, leader), 0.0);
}
