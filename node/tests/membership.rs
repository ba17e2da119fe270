//! Live membership changes on real members under continuous client load: grow 1→3→5 (add
//! learner → start → wait until caught up → promote) and shrink 5→3→1 (move leadership off the
//! member first, or remove the leader directly), with every register operation checked for
//! linearizability, every acknowledged write checked at the end, and lease reads in use at every
//! steady state.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use metastore_testkit::checkers::register;
use metastore_testkit::load::{Load, REGISTER};
use metastore_testkit::{add_learner, client, Cluster, FAST};
use support::BIN;

/// Raft ids of the members, by index in the cluster.
type Ids = HashMap<usize, u64>;

fn endpoints(c: &Cluster) -> Vec<String> {
    c.running()
        .into_iter()
        .map(|i| c.members[i].client_url())
        .collect()
}

fn lease_reads(c: &Cluster, i: usize) -> f64 {
    c.members[i]
        .metric("metastore_read_total{path=\"lease\"}")
        .unwrap_or(0.0)
}

/// Waits for one leader among the running members.
fn wait_leader(c: &Cluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = c.leader() {
            return l;
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// At a steady state: `voters` voters everywhere, and the leader serves lease reads.
async fn assert_steady(c: &Cluster, voters: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = wait_leader(c);
        let m = &c.members[l];
        let before = lease_reads(c, l);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ok = c.leader() == Some(l)
            && lease_reads(c, l) > before
            && m.metric("metastore_lease_policy_enabled") == Some(1.0)
            && c.running()
                .iter()
                .all(|i| c.members[*i].metric("metastore_cluster_voters") == Some(voters as f64));
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not steady at {voters} voters with lease reads: leader {} policy {:?} voters {:?}",
            m.name,
            m.metric("metastore_lease_policy_enabled"),
            c.running()
                .iter()
                .map(|i| c.members[*i].metric("metastore_cluster_voters"))
                .collect::<Vec<_>>()
        );
    }
}

async fn initial_ids(c: &Cluster) -> Ids {
    let mut cl = client(&c.members[0].client_url()).await;
    let list = cl.member_list().await.unwrap();
    let mut ids = Ids::new();
    for m in list.members() {
        let i = c.members.iter().position(|x| x.name == m.name()).unwrap();
        ids.insert(i, m.id());
    }
    ids
}

/// Adds a learner, starts it, promotes it once it has caught up.
async fn grow(c: &mut Cluster, ids: &mut Ids, load: &Load) {
    let mut cl = client(&c.members[wait_leader(c)].client_url()).await;
    let i = c.prepare_joiner();
    let added = add_learner(&mut cl, &c.members[i].peer_url()).await;
    let id = added.member().unwrap().id();
    assert!(added.member().unwrap().is_learner());
    ids.insert(i, id);
    c.members[i].start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match cl.member_promote(id).await {
            Ok(r) => {
                assert!(r.members().iter().any(|m| m.id() == id && !m.is_learner()));
                break;
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("in sync with leader") || msg.contains("in progress"),
                    "promote: {msg}"
                );
                assert!(Instant::now() < deadline, "learner never caught up: {msg}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    c.wait_ready(Duration::from_secs(30));
    load.set_endpoints(endpoints(c));
}

/// Removes one voter: the leader itself when `remove_leader`, else the newest member (moving
/// leadership off it first when it leads).
async fn shrink(c: &mut Cluster, ids: &Ids, load: &Load, remove_leader: bool) {
    let leader = wait_leader(c);
    let running = c.running();
    let target = if remove_leader {
        leader
    } else {
        *running.iter().max().unwrap()
    };
    let other = *running.iter().find(|i| **i != target).unwrap();
    if !remove_leader && target == leader {
        let mut cl = client(&c.members[leader].client_url()).await;
        cl.move_leader(ids[&other]).await.unwrap();
        assert_eq!(wait_leader(c), other, "leadership moved");
    }
    load.set_endpoints(
        running
            .iter()
            .filter(|i| **i != target)
            .map(|i| c.members[*i].client_url())
            .collect(),
    );
    // Through a member that stays (forwarded to the leader when it does not lead).
    let mut cl = client(&c.members[other].client_url()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cl.member_remove(ids[&target]).await {
            Ok(r) => {
                assert!(r.members().iter().all(|m| m.id() != ids[&target]));
                break;
            }
            Err(e) => {
                // A leader change mid-request: retry, as an operator would.
                assert!(Instant::now() < deadline, "remove: {e}");
                if e.to_string().contains("member not found") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let code = c.members[target].wait_exit(Duration::from_secs(20));
    assert_eq!(
        code,
        Some(0),
        "a removed member stops by itself: {}",
        metastore_testkit::tail(&c.members[target].log())
    );
    c.wait_ready(Duration::from_secs(30));
}

async fn scale_under_load(remove_leader: bool) {
    let mut c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let mut ids = initial_ids(&c).await;
    client(&c.members[0].client_url())
        .await
        .put(REGISTER, "init", None)
        .await
        .unwrap();
    let load = Load::start(endpoints(&c), 3, 3);
    assert_steady(&c, 1).await;
    for n in [2, 3] {
        grow(&mut c, &mut ids, &load).await;
        if n == 3 {
            assert_steady(&c, 3).await;
        }
    }
    for _ in 0..2 {
        grow(&mut c, &mut ids, &load).await;
    }
    assert_steady(&c, 5).await;
    for n in [4, 3] {
        shrink(&mut c, &ids, &load, remove_leader).await;
        if n == 3 {
            assert_steady(&c, 3).await;
        }
    }
    for _ in 0..2 {
        shrink(&mut c, &ids, &load, remove_leader).await;
    }
    assert_steady(&c, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rec = load.stop().await;

    let acked = rec.acked_writes();
    let reads = rec.reads();
    eprintln!(
        "history: {} register ops ({acked} acknowledged writes, {reads} reads), {} acknowledged log writes",
        rec.history.len(),
        rec.acked_logs.len()
    );
    assert!(acked > 50 && reads > 50, "the load ran throughout");
    register::assert_linearizable(&rec.history, "init");
    // No acknowledged write is lost.
    let last = c.running()[0];
    let lost = rec.lost_writes(&c.members[last].client_url()).await;
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_1_3_5_and_shrink_5_3_1_under_load_moving_leadership_off_first() {
    scale_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shrink_by_removing_the_leader_itself_under_load() {
    scale_under_load(true).await;
}
