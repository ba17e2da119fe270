//! Auth is replicated state: enabled through one member, it is enforced by every member, by a
//! member that caught up through a snapshot, and after restarts.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, Permission};
use metastore_testkit::Cluster;
use support::BIN;

const FAST: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];
const READY: Duration = Duration::from_secs(30);

async fn connect(url: &str, user: Option<(&str, &str)>) -> Client {
    let mut opts = ConnectOptions::new().with_timeout(Duration::from_secs(10));
    if let Some((u, p)) = user {
        opts = opts.with_user(u, p);
    }
    Client::connect([url], Some(opts)).await.unwrap()
}

/// What `member` answers to an anonymous read, bob's allowed read, bob's denied read and bob's
/// denied write.
async fn enforced(url: &str) -> Vec<String> {
    let outcome = |r: Result<(), etcd_client::Error>| match r {
        Ok(()) => "ok".to_string(),
        Err(etcd_client::Error::GRpcStatus(s)) => s.message().to_string(),
        Err(e) => e.to_string(),
    };
    let mut anon = connect(url, None).await;
    let mut bob = connect(url, Some(("bob", "bobpw"))).await;
    vec![
        outcome(anon.get("pub/a", None).await.map(|_| ())),
        outcome(bob.get("pub/a", None).await.map(|_| ())),
        outcome(bob.get("secret", None).await.map(|_| ())),
        outcome(bob.put("pub/a", "x", None).await.map(|_| ())),
    ]
}

const EXPECTED: [&str; 4] = [
    "etcdserver: user name is empty",
    "ok",
    "etcdserver: permission denied",
    "etcdserver: permission denied",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_enabled_through_one_member_holds_on_every_member_after_snapshot_and_restart() {
    let mut flags: Vec<&str> = FAST.to_vec();
    flags.extend([
        "--snapshot-count",
        "300",
        "--snapshot-catchup-entries",
        "50",
    ]);
    let mut c = Cluster::start(BIN, 3, &flags);
    let first = c.wait_ready(READY);
    // Auth entries are written once every member runs a version that reads them.
    support::wait_cluster_version(&c.members[first].client_url()).await;
    // One member misses everything below and must catch up from a snapshot.
    let lagger = (first + 1) % 3;
    c.members[lagger].kill();
    let deadline = Instant::now() + READY;
    let leader = loop {
        match c.leader() {
            Some(l) if l != lagger => break l,
            _ => assert!(Instant::now() < deadline, "no leader"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let other = (0..3).find(|i| *i != leader && *i != lagger).unwrap();

    // Set up through a follower: the changes go through the log.
    let mut admin = connect(&c.members[other].client_url(), None).await;
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.user_add("bob", "bobpw", None).await.unwrap();
    admin.role_add("reader").await.unwrap();
    admin
        .role_grant_permission("reader", Permission::read("pub/").with_prefix())
        .await
        .unwrap();
    admin.user_grant_role("bob", "reader").await.unwrap();
    admin.put("pub/a", "1", None).await.unwrap();
    admin.auth_enable().await.unwrap();

    let mut root = connect(&c.members[leader].client_url(), Some(("root", "rootpw"))).await;
    for i in 0..1200 {
        root.put(format!("fill/{i:05}"), "v", None).await.unwrap();
    }
    for i in [leader, other] {
        assert_eq!(
            enforced(&c.members[i].client_url()).await,
            EXPECTED,
            "member {i}"
        );
    }

    c.members[lagger].start();
    let deadline = Instant::now() + READY;
    loop {
        let installed = c.members[lagger].metric("metastore_snapshots_installed_total");
        if installed.unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lagging member never installed a snapshot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_ready(READY);
    assert_eq!(
        enforced(&c.members[lagger].client_url()).await,
        EXPECTED,
        "the member that installed a snapshot"
    );

    // Every member restarted: the auth state comes back from disk.
    for m in &mut c.members {
        m.kill();
    }
    for m in &mut c.members {
        m.start();
    }
    c.wait_ready(READY);
    for i in 0..3 {
        assert_eq!(
            enforced(&c.members[i].client_url()).await,
            EXPECTED,
            "member {i} after restart"
        );
    }
    // And auth disabled through one member opens every member.
    let mut root = connect(&c.members[lagger].client_url(), Some(("root", "rootpw"))).await;
    root.auth_disable().await.unwrap();
    for i in 0..3 {
        let mut anon = connect(&c.members[i].client_url(), None).await;
        let deadline = Instant::now() + READY;
        while anon.get("secret", None).await.is_err() {
            assert!(Instant::now() < deadline, "member {i} still enforces auth");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
