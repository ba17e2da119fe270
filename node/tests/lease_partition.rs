//! Three real members; the leader is cut off from both followers (iptables DROP between their
//! loopback addresses — each member dials its peers from its own address — inside a network
//! namespace the test creates by re-running itself under `unshare`) while clients keep
//! reading linearizably from it and writing through the majority side. Every read and write is
//! recorded and the history is checked for linearizability: the old leader's lease must end
//! before the majority can elect a new leader and commit, so no read is stale.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metastore_testkit::checkers::register::{self, History};
use metastore_testkit::{client, Cluster, FAST};
use support::BIN;

const KEY: &str = "register";

/// iptables rules that drop traffic between address pairs; removed on drop.
struct Partition {
    rules: Vec<(String, String)>,
}

impl Partition {
    fn iptables(action: &str, src: &str, dst: &str) -> bool {
        Command::new("iptables")
            .args([action, "INPUT", "-s", src, "-d", dst, "-j", "DROP"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Cuts `a` off from each of `others`, both directions.
    fn isolate(a: &str, others: &[&str]) -> Partition {
        let mut rules = Vec::new();
        for b in others {
            for (s, d) in [(a, *b), (*b, a)] {
                assert!(
                    Partition::iptables("-I", s, d),
                    "iptables is needed for this test (scripts/install-deps.sh installs it; run as root)"
                );
                rules.push((s.to_string(), d.to_string()));
            }
        }
        Partition { rules }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for (s, d) in &self.rules {
            Partition::iptables("-D", s, d);
        }
    }
}

#[test]
fn isolated_leader_serves_no_stale_read() {
    if !metastore_testkit::in_namespace("isolated_leader_serves_no_stale_read", false) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(isolated_leader_body());
}

async fn isolated_leader_body() {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend(["--request-timeout", "1000"]);
    let c = Cluster::start(BIN, 3, &flags);
    let leader = c.wait_ready(Duration::from_secs(30));
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut init = client(&c.members[leader].client_url()).await;
    init.put(KEY, "init", None).await.unwrap();

    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Writers through the followers (the side that keeps a majority).
    for (w, f) in followers.iter().enumerate() {
        let ep = c.members[*f].client_url();
        let (h, stop) = (history.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut cl = client(&ep).await;
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("w{w}-{seq}");
                seq += 1;
                let inv = h.now();
                let ok =
                    tokio::time::timeout(Duration::from_secs(3), cl.put(KEY, value.clone(), None))
                        .await
                        .is_ok_and(|r| r.is_ok());
                h.write(value, inv, ok);
                if !ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // Readers: two on the (soon isolated) leader, one on a follower.
    for m in [leader, leader, followers[0]] {
        let ep = c.members[m].client_url();
        let (h, stop) = (history.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut cl = client(&ep).await;
            while !stop.load(Ordering::Relaxed) {
                let inv = h.now();
                match tokio::time::timeout(Duration::from_secs(3), cl.get(KEY, None)).await {
                    Ok(Ok(r)) => {
                        let value = r
                            .kvs()
                            .first()
                            .map(|kv| kv.value_str().unwrap_or("").to_string());
                        if let Some(value) = value {
                            h.read(value, inv);
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lease_reads_before = c.members[leader]
        .http_get("/metrics")
        .unwrap()
        .1
        .lines()
        .find(|l| l.starts_with("metastore_read_total{path=\"lease\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        lease_reads_before > 0.0,
        "the leader served lease reads before the partition"
    );

    let ips: Vec<String> = followers.iter().map(|f| c.members[*f].ip.clone()).collect();
    let cut_at = history.now();
    let partition = Partition::isolate(&c.members[leader].ip, &[&ips[0], &ips[1]]);
    // Long enough for the majority to elect a new leader and commit many writes.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let healed_at = history.now();
    drop(partition);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let h = history.ops();
    let writes_during = h
        .iter()
        .filter(|o| o.write && o.res.is_some_and(|r| r > cut_at + 100_000 && r < healed_at))
        .count();
    assert!(
        writes_during > 10,
        "the majority kept writing during the partition ({writes_during})"
    );
    let leader_reads_after_cut = h
        .iter()
        .filter(|o| !o.write && o.inv > cut_at && o.inv < healed_at)
        .count();
    eprintln!(
        "history: {} ops, {} writes acknowledged during the partition, {} reads invoked during it",
        h.len(),
        writes_during,
        leader_reads_after_cut
    );
    register::assert_linearizable(&h, "init");
}
