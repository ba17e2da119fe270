//! The Cluster and Maintenance APIs on real members: etcd's errors for every refused change (and
//! the cluster keeps serving), the real `etcdctl member add --learner / promote / remove / list`,
//! a learner joining after log compaction, a removed member refusing its old data, and members
//! of different clusters refusing each other.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, MemberAddOptions};
use metastore_testkit::{add_learner, client, etcdctl, Cluster, FAST};
use support::BIN;

/// `etcdctl member list` rows: (hex id, status, name, is_learner).
fn member_rows(endpoint: &str) -> Vec<(String, String, String, bool)> {
    let (ok, out) = etcdctl(endpoint, &["member", "list"]);
    assert!(ok, "{out}");
    out.lines()
        .filter(|l| l.contains(", "))
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                f[5].trim() == "true",
            )
        })
        .collect()
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>, code: tonic::Code, msg: &str) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            assert_eq!(s.code(), code, "{}", s.message());
            assert_eq!(s.message(), msg);
        }
        other => panic!("expected {code:?} {msg:?}, got {other:?}"),
    }
}

async fn promote_when_ready(cl: &mut etcd_client::Client, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = cl.member_promote(id).await {
        assert!(Instant::now() < deadline, "never promoted: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_get_etcds_errors_and_the_cluster_keeps_serving() {
    use tonic::Code::{FailedPrecondition, InvalidArgument, NotFound, Unavailable};
    const NOT_ENOUGH: &str =
        "etcdserver: re-configuration failed due to not enough started members";

    // One member: its only voter cannot go.
    let mut one = Cluster::start(BIN, 1, FAST);
    one.wait_ready(Duration::from_secs(30));
    let mut cl = client(&one.members[0].client_url()).await;
    let me = cl.member_list().await.unwrap().members()[0].id();
    expect_err(cl.member_remove(me).await, FailedPrecondition, NOT_ENOUGH);
    let j = one.prepare_joiner();
    let url = one.members[j].peer_url();
    expect_err(
        cl.member_add(["not a url"], None).await,
        InvalidArgument,
        "etcdserver: given member URLs are invalid",
    );
    expect_err(
        cl.member_add([one.members[0].peer_url()], None).await,
        FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
    let learner = add_learner(&mut cl, &url).await.member().unwrap().id();
    // Not started yet: not in sync.
    expect_err(
        cl.member_promote(learner).await,
        FailedPrecondition,
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
    expect_err(
        cl.member_add(
            ["http://127.0.0.1:1"],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await,
        FailedPrecondition,
        "etcdserver: too many learner members in cluster",
    );
    expect_err(
        cl.member_promote(me).await,
        FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );
    expect_err(
        cl.member_remove(12345).await,
        NotFound,
        "etcdserver: member not found",
    );
    expect_err(
        cl.member_promote(12345).await,
        NotFound,
        "etcdserver: member not found",
    );
    expect_err(
        cl.member_update(12345, vec!["http://127.0.0.1:9".to_string()])
            .await,
        NotFound,
        "etcdserver: member not found",
    );
    expect_err(
        cl.move_leader(learner).await,
        FailedPrecondition,
        "etcdserver: bad leader transferee",
    );
    // The learner's status, once started, says so.
    one.members[j].start();
    let mut lc = client(&one.members[j].client_url()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = lc.status().await {
            if s.is_learner() && s.raft_applied_index() > 1 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "learner never applied anything");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // MoveLeader on a member that does not lead.
    expect_err(
        lc.move_leader(me).await,
        FailedPrecondition,
        "etcdserver: not leader",
    );
    // Learners can be removed; the cluster still serves.
    cl.member_remove(learner).await.unwrap();
    assert_eq!(one.members[j].wait_exit(Duration::from_secs(20)), Some(0));
    cl.put("still", "serving", None).await.unwrap();
    let s = cl.status().await.unwrap();
    assert_eq!(s.leader(), me);
    assert!(!s.is_learner());
    assert!(s.raft_applied_index() >= s.raft_index() - 1);

    // Three members, one down: removing a live voter would break the active quorum.
    let mut three = Cluster::start(BIN, 3, FAST);
    let leader = three.wait_ready(Duration::from_secs(30));
    let mut cl = client(&three.members[leader].client_url()).await;
    let list = cl.member_list().await.unwrap();
    let id_of = |name: &str| {
        list.members()
            .iter()
            .find(|m| m.name() == name)
            .unwrap()
            .id()
    };
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (down, live) = (others[0], others[1]);
    three.members[down].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    expect_err(
        cl.member_remove(id_of(&three.members[live].name)).await,
        Unavailable,
        "etcdserver: unhealthy cluster",
    );
    // Removing the member that is down is fine.
    cl.member_remove(id_of(&three.members[down].name))
        .await
        .unwrap();
    cl.put("k", "v", None).await.unwrap();
    let got = cl.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
    // Updating a member's peer URLs to another member's is refused; to a fresh URL works.
    let leader_url = three.members[leader].peer_url();
    expect_err(
        cl.member_update(id_of(&three.members[live].name), vec![leader_url.clone()])
            .await,
        FailedPrecondition,
        "etcdserver: Peer URLs already exists",
    );
    let live_url = three.members[live].peer_url();
    let r = cl
        .member_update(id_of(&three.members[live].name), vec![live_url.clone()])
        .await
        .unwrap();
    assert_eq!(r.members().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_add_learner_promote_remove_list() {
    let mut c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let ep = c.members[0].client_url();
    assert!(etcdctl(&ep, &["put", "a", "1"]).0);
    for _ in 0..2 {
        let i = c.prepare_joiner();
        let name = c.members[i].name.clone();
        let purl = format!("--peer-urls={}", c.members[i].peer_url());
        let (ok, out) = etcdctl(&ep, &["member", "add", &name, &purl, "--learner"]);
        assert!(ok, "{out}");
        assert!(
            out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
            "{out}"
        );
        let id = out
            .split_whitespace()
            .nth(1)
            .expect("Member <id> added")
            .to_string();
        let row = member_rows(&ep).into_iter().find(|r| r.0 == id).unwrap();
        assert_eq!(row.1, "unstarted");
        assert!(row.3, "added as a learner");
        c.members[i].start();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out) = etcdctl(&ep, &["member", "promote", &id]);
            if ok {
                assert!(out.contains("promoted"), "{out}");
                break;
            }
            assert!(out.contains("in sync with leader"), "{out}");
            assert!(Instant::now() < deadline, "{out}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let row = member_rows(&ep).into_iter().find(|r| r.0 == id).unwrap();
        assert_eq!(
            (row.1.as_str(), row.2.as_str(), row.3),
            ("started", name.as_str(), false)
        );
    }
    c.wait_ready(Duration::from_secs(30));
    let rows = member_rows(&ep);
    assert_eq!(rows.len(), 3);
    // Data written before the growth is on the new members.
    for i in 1..3 {
        let (ok, out) = etcdctl(
            &c.members[i].client_url(),
            &["get", "a", "--print-value-only"],
        );
        assert!(ok && out.trim() == "1", "{out}");
    }
    // Remove one again with etcdctl.
    let victim = rows.iter().find(|r| r.2 == "m2").unwrap().0.clone();
    let (ok, out) = etcdctl(&ep, &["member", "remove", &victim]);
    assert!(ok && out.contains("removed"), "{out}");
    assert_eq!(c.members[2].wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(member_rows(&ep).len(), 2);
    let (ok, out) = etcdctl(&ep, &["member", "remove", &victim]);
    assert!(!ok && out.contains("member not found"), "{out}");
    // Its data dir can never be used again.
    let (code, err) = c.members[2].run_to_exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("was removed from the cluster"), "{err}");
}

/// A joining member's discovery list may name the member itself (a headless Service's name
/// resolves to every pod, this one included), whose port is bound but not yet serving: the join
/// goes on through the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_whose_discovery_names_itself_joins_through_the_others() {
    let mut c = Cluster::start(BIN, 1, FAST);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    cl.put("before", "join", None).await.unwrap();
    let i = c.prepare_joiner();
    let own = c.members[i].peer_url();
    let id = add_learner(&mut cl, &own).await.member().unwrap().id();
    // Only itself in --initial-cluster; the cluster is found through discovery, which names
    // the joiner first.
    let name = c.members[i].name.clone();
    let leader = c.members[0].peer_url();
    let args = &mut c.members[i].args;
    let at = args.iter().position(|a| a == "--initial-cluster").unwrap();
    args[at + 1] = format!("{name}={own}");
    args.extend([
        "--discovery-peer-urls".to_string(),
        format!("{own},{leader}"),
    ]);
    c.members[i].start();
    promote_when_ready(&mut cl, id).await;
    let mut jc = client(&c.members[i].client_url()).await;
    let got = jc
        .get("before", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(got.kvs()[0].value(), b"join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joining_after_log_compaction_catches_up_by_snapshot() {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend([
        "--snapshot-count",
        "100",
        "--snapshot-catchup-entries",
        "10",
    ]);
    let mut c = Cluster::start(BIN, 1, &flags);
    c.wait_ready(Duration::from_secs(30));
    let mut cl = client(&c.members[0].client_url()).await;
    for i in 0..450 {
        cl.put(format!("key/{i:04}"), format!("v{i}"), None)
            .await
            .unwrap();
    }
    assert!(
        c.members[0]
            .metric("metastore_snapshots_saved_total")
            .unwrap()
            >= 4.0
    );
    let i = c.prepare_joiner();
    let id = add_learner(&mut cl, &c.members[i].peer_url())
        .await
        .member()
        .unwrap()
        .id();
    c.members[i].start();
    promote_when_ready(&mut cl, id).await;
    // The snapshot brought the leader's values database file.
    assert!(
        c.members[i]
            .metric("metastore_snapshot_images_installed_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    // Writes after the snapshot arrive through the log.
    cl.put("after", "join", None).await.unwrap();
    let mut jc = client(&c.members[i].client_url()).await;
    let opts = || GetOptions::new().with_serializable();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = jc.get("after", Some(opts())).await.unwrap();
        if !got.kvs().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = jc
        .get("key/", Some(opts().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(all.count(), 450);
    let one = jc.get("key/0123", Some(opts())).await.unwrap();
    assert_eq!(one.kvs()[0].value(), b"v123");
    assert!(
        c.members[i]
            .metric("metastore_snapshots_installed_total")
            .unwrap()
            >= 1.0
    );
    let log = c.members[i].log();
    assert!(log.contains("installing snapshot"), "caught up by snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_different_clusters_refuse_each_other() {
    // Cluster A (1 member) adds a learner whose peer URL belongs to B, a separate cluster.
    let a = Cluster::start(BIN, 1, FAST);
    let b = Cluster::start(
        BIN,
        1,
        &[
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--initial-cluster-token",
            "other",
        ],
    );
    a.wait_ready(Duration::from_secs(30));
    b.wait_ready(Duration::from_secs(30));
    let mut bc = client(&b.members[0].client_url()).await;
    bc.put("b-key", "b", None).await.unwrap();
    let mut ac = client(&a.members[0].client_url()).await;
    add_learner(&mut ac, &b.members[0].peer_url()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // B refused A's messages and snapshots: its data and membership are its own.
    assert!(a.members[0].log().contains("cluster ID mismatch"));
    let got = bc.get("b-key", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"b");
    let list = bc.member_list().await.unwrap();
    assert_eq!(list.members().len(), 1);
    assert_eq!(list.members()[0].name(), "m0");
    assert_ne!(
        list.header().unwrap().cluster_id(),
        ac.member_list()
            .await
            .unwrap()
            .header()
            .unwrap()
            .cluster_id()
    );
}
