//! A single-member MetaStore driven by the real `etcdctl` (Debian etcd-client) and the Rust
//! `etcd-client` crate: the everyday KV commands, their etcd-shaped errors, and bad flags.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use metastore_testkit::Cluster;
use support::BIN;

fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("etcdctl is installed (scripts/install-deps.sh)");
    if let Some(mut si) = child.stdin.take() {
        if let Some(input) = stdin {
            si.write_all(input).expect("stdin");
        }
    }
    let out = child.wait_with_output().expect("etcdctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn etcdctl_put_get_prefix_del_txn_compaction() {
    let c = Cluster::start(BIN, 1, &[]);
    c.wait_ready(Duration::from_secs(20));
    let ep = c.members[0].client_url();
    let ok = |args: &[&str]| {
        let (ok, out, err) = etcdctl(&ep, args, None);
        assert!(ok, "etcdctl {args:?} failed: {err}");
        out
    };

    assert_eq!(ok(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(&["put", "foo/a", "1"]), "OK\n");
    assert_eq!(ok(&["put", "foo/b", "2"]), "OK\n");
    assert_eq!(ok(&["put", "zed", "z"]), "OK\n");
    assert_eq!(ok(&["get", "foo"]), "foo\nbar\n");
    assert_eq!(ok(&["get", "foo/", "--prefix"]), "foo/a\n1\nfoo/b\n2\n");
    assert_eq!(
        ok(&["get", "foo", "--prefix", "--keys-only"]),
        "foo\n\nfoo/a\n\nfoo/b\n\n"
    );
    assert_eq!(
        ok(&["get", "", "--from-key", "--limit=2"]),
        "foo\nbar\nfoo/a\n1\n"
    );
    assert!(ok(&["get", "foo/", "--prefix", "-w", "fields"]).contains("\"Count\" : 2"));
    assert_eq!(
        ok(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by=KEY",
            "--order=DESCEND",
            "--print-value-only"
        ]),
        "2\n1\nbar\n"
    );
    // Revisions: 4 puts on a fresh store (which starts at revision 1).
    assert!(ok(&["get", "foo", "-w", "fields"]).contains("\"Revision\" : 5"));
    assert_eq!(ok(&["get", "foo", "--rev=2"]), "foo\nbar\n");
    assert_eq!(ok(&["put", "foo", "baz", "--prev-kv"]), "OK\nfoo\nbar\n");

    assert_eq!(ok(&["del", "foo/", "--prefix"]), "2\n");
    assert_eq!(ok(&["get", "foo/", "--prefix"]), "");
    assert_eq!(ok(&["del", "nothing"]), "0\n");

    // txn: compare, then success or failure branch.
    let (okt, out, err) = etcdctl(
        &ep,
        &["txn"],
        Some(b"value(\"foo\") = \"baz\"\n\nput foo qux\nget zed\n\nput foo never\n\n"),
    );
    assert!(okt, "txn: {err}");
    assert_eq!(out, "SUCCESS\n\nOK\n\nzed\nz\n");
    let (okt, out, _) = etcdctl(
        &ep,
        &["txn"],
        Some(b"mod(\"foo\") < \"2\"\n\nput foo never\n\nput other yes\n\n"),
    );
    assert!(okt);
    assert_eq!(out, "FAILURE\n\nOK\n");
    assert_eq!(ok(&["get", "foo", "--print-value-only"]), "qux\n");
    assert_eq!(ok(&["get", "other", "--print-value-only"]), "yes\n");

    // Compaction: old revisions are gone, with etcd's error; current data is intact.
    assert_eq!(ok(&["compaction", "5"]), "compacted revision 5\n");
    let (okc, _, err) = etcdctl(&ep, &["get", "foo", "--rev=3"], None);
    assert!(!okc);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    let (okc, _, err) = etcdctl(&ep, &["compaction", "4"], None);
    assert!(!okc);
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    let (okc, _, err) = etcdctl(&ep, &["get", "foo", "--rev=1000"], None);
    assert!(!okc);
    assert!(
        err.contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
    assert_eq!(ok(&["get", "foo", "--rev=5"]), "foo\nbar\n");

    // Oversized value: etcd's error, and nothing is lost.
    let big = vec![b'x'; 1_600_000];
    let (okb, _, err) = etcdctl(&ep, &["put", "big"], Some(&big));
    assert!(!okb);
    assert!(err.contains("etcdserver: request is too large"), "{err}");
    assert_eq!(ok(&["get", "big"]), "");
    assert_eq!(ok(&["get", "foo", "--print-value-only"]), "qux\n");
}

#[tokio::test]
async fn bad_requests_get_etcd_errors_and_the_server_keeps_serving() {
    let c = Cluster::start(BIN, 1, &[]);
    c.wait_ready(Duration::from_secs(20));
    let mut cl = metastore_testkit::client(&c.members[0].client_url()).await;

    let err = cl.put("", "v", None).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: key is not provided"), "{err}");
    let err = cl.get("", None).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: key is not provided"), "{err}");

    let ops: Vec<etcd_client::TxnOp> = (0..129)
        .map(|i| etcd_client::TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    let err = cl
        .txn(etcd_client::Txn::new().and_then(ops))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etcdserver: too many operations in txn request"),
        "{err}"
    );

    let dup = vec![
        etcd_client::TxnOp::put("same", "1", None),
        etcd_client::TxnOp::put("same", "2", None),
    ];
    let err = cl
        .txn(etcd_client::Txn::new().and_then(dup))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etcdserver: duplicate key given in txn request"),
        "{err}"
    );

    let err = cl
        .put(
            "leased",
            "v",
            Some(etcd_client::PutOptions::new().with_lease(12345)),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );

    let err = cl
        .put(
            "k",
            "",
            Some(etcd_client::PutOptions::new().with_ignore_value()),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("etcdserver: key not found"), "{err}");

    // 128 operations is the limit, and it is allowed.
    let ops: Vec<etcd_client::TxnOp> = (0..128)
        .map(|i| etcd_client::TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    let r = cl.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
    assert!(r.succeeded());
    // Still serving, nothing half-applied from the rejected requests.
    let got = cl
        .get(
            "k",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(got.count(), 128);
    assert!(cl.get("same", None).await.unwrap().kvs().is_empty());
    let metrics = c.members[0].http_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("metastore_grpc_requests_total{code=\"InvalidArgument\",method=\"Put\"}"),
        "{metrics}"
    );
}

#[test]
fn malformed_flags_exit_2_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--election-timeout", "100"], "--election-timeout"),
        (
            &["--initial-cluster-state", "sideways"],
            "--initial-cluster-state",
        ),
        (
            &["--listen-client-urls", "not a url"],
            "--listen-client-urls",
        ),
        (&["--no-such-flag"], "--no-such-flag"),
        (&["--heartbeat-interval", "abc"], "--heartbeat-interval"),
    ];
    for (args, needle) in cases {
        let out = Command::new(BIN).args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("metastore-node: error: "),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn health_endpoints_and_clean_sigterm() {
    let mut c = Cluster::start(BIN, 1, &[]);
    c.wait_ready(Duration::from_secs(20));
    let m = &c.members[0];
    assert_eq!(
        m.http_get("/health").unwrap(),
        (200, r#"{"health":"true","reason":""}"#.to_string())
    );
    assert_eq!(m.http_get("/livez").unwrap().0, 200);
    assert_eq!(m.http_get("/readyz").unwrap().0, 200);
    let metrics = m.http_get("/metrics").unwrap().1;
    for name in [
        "metastore_raft_term",
        "metastore_raft_commit_index",
        "metastore_raft_applied_index",
        "metastore_wal_fsync_duration_seconds_bucket",
        "metastore_apply_duration_seconds_bucket",
        "metastore_proposals_submitted_total",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
    assert_eq!(c.members[0].terminate(), Some(0));
}
