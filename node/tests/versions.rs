//! Version rules between real members of two builds (this one, and the previous minor version
//! built from the same source by `scripts/node-previous.sh`): the cluster version stays at the
//! oldest member's while it runs, so no entry kind it cannot read is written; it rises once
//! every member runs the new version; a member of the old version given an entry kind it does
//! not know stops with a clear error instead of skipping it.

mod support;

use std::time::{Duration, Instant};

use metastore_node::admin_proto::admin_client::AdminClient;
use metastore_node::admin_proto::VersionRequest;
use metastore_testkit::{client, Cluster, FAST};
use support::BIN;

const NEW: &str = env!("CARGO_PKG_VERSION");

fn previous_build() -> String {
    std::env::var("METASTORE_NODE_PREVIOUS").expect(
        "run through `make test`: METASTORE_NODE_PREVIOUS names the previous version's build",
    )
}

/// `(member version, cluster version)` as the member's admin API reports them.
async fn versions(url: &str) -> Option<(String, String)> {
    let mut a = AdminClient::connect(url.to_string()).await.ok()?;
    let r = a.version(VersionRequest {}).await.ok()?.into_inner();
    Some((r.member_version, r.cluster_version))
}

async fn cluster_versions(c: &Cluster) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in c.running() {
        out.push(versions(&c.members[i].client_url()).await.map(|v| v.1));
    }
    out
}

async fn put(c: &Cluster, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut cl = client(&c.members[c.wait_ready(Duration::from_secs(20))].client_url()).await;
        match cl.put(key, "v", None).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "put {key}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_entry_kinds_wait_for_every_member_and_an_old_member_stops_on_one() {
    let previous = previous_build();
    let mut c = Cluster::create(BIN, 3, FAST);
    c.members[2].bin = previous.clone().into();
    for m in &mut c.members {
        m.start();
    }
    c.wait_ready(Duration::from_secs(30));
    let old = versions(&c.members[2].client_url())
        .await
        .expect("m2 answers");
    assert_ne!(old.0, NEW, "the previous build reports another version");
    let new = versions(&c.members[0].client_url())
        .await
        .expect("m0 answers");
    assert_eq!(new.0, NEW);

    // Several of the leader's checks later, with writes going on, the cluster still runs the old
    // version: the new entry kind (the cluster-version entry) was never written, or the old
    // member would have stopped on it.
    for i in 0..8 {
        put(&c, &format!("mixed/{i}")).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    for m in &c.members {
        assert_eq!(
            m.http_get("/livez").map(|r| r.0),
            Some(200),
            "{} stopped:\n{}",
            m.name,
            m.log()
        );
    }
    assert!(
        cluster_versions(&c)
            .await
            .iter()
            .all(|v| v.as_deref() == Some(old.0.as_str())),
        "cluster version while an old member runs: {:?}",
        cluster_versions(&c).await
    );

    // The old member upgraded: the cluster version rises to the new one on every member.
    assert_eq!(c.members[2].terminate(), Some(0));
    c.members[2].bin = BIN.into();
    c.members[2].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = cluster_versions(&c).await;
        if v.len() == 3 && v.iter().all(|v| v.as_deref() == Some(NEW)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster version never rose: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    put(&c, "upgraded").await;

    // Downgraded again, the member meets the cluster-version entry in its log at start and
    // stops with a clear error rather than skipping an entry the others applied.
    assert_eq!(c.members[2].terminate(), Some(0));
    c.members[2].bin = previous.into();
    let (code, log) = c.members[2].run_to_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{log}");
    assert!(
        log.contains(&format!("entry kind 9 is unknown to MetaStore {}", old.0))
            && log.contains("this member must be upgraded"),
        "{log}"
    );
    // The others go on.
    put(&c, "after").await;
}

/// The node's half of an upgrade: every member restarted in turn (SIGTERM; a leader hands off)
/// under a linearizable load. No write fails: a stopping member finishes what it accepted, and
/// the client takes another member while it is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_fails_no_write() {
    use metastore_testkit::checkers::register;
    use metastore_testkit::load::{Load, REGISTER};
    let mut c = Cluster::start(BIN, 3, FAST);
    c.wait_ready(Duration::from_secs(30));
    let eps = c.endpoints();
    let mut cl = client(&eps[0]).await;
    cl.put(REGISTER, "init", None).await.unwrap();
    let load = Load::start(eps.clone(), 2, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = c.wait_ready(Duration::from_secs(20));
    let order: Vec<usize> = (0..3).filter(|i| *i != leader).chain([leader]).collect();
    for i in order {
        assert_eq!(c.members[i].terminate(), Some(0), "{}", c.members[i].log());
        c.members[i].start();
        c.wait_ready(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rec = load.stop().await;
    eprintln!(
        "rolling restart: {} register ops, {} acknowledged writes, {} failed ({} writes), {} not sent: {:#?}",
        rec.history.len(),
        rec.acked_writes(),
        rec.failed,
        rec.failed_writes,
        rec.unreachable,
        rec.errors
    );
    assert!(rec.acked_writes() > 20, "the load ran");
    register::assert_linearizable(&rec.history, "init");
    let lost = rec.lost_writes(&eps[0]).await;
    assert!(lost.is_empty(), "lost acknowledged writes: {lost:?}");
    assert_eq!(rec.failed_writes, 0, "{:#?}", rec.errors);
}
