//! Backups on real members with the real etcdctl (issue 18, node side): `etcdctl snapshot save`
//! → `metastore-node snapshot status` (revision and HashKV as the member reports them) →
//! `snapshot restore` into a new 3-member cluster, which serves the same keys, values, versions
//! and revisions, the same HashKV and the same lease, under a new cluster id; corrupt and
//! truncated files are refused without writing a data dir; and `--force-new-cluster` turns the
//! survivor of a 3-member cluster that lost two members under load into a one-voter cluster
//! holding every acknowledged write.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use metastore_testkit::checkers::register;
use metastore_testkit::load::{Load, REGISTER};
use metastore_testkit::{etcdctl, Cluster, FAST};
use support::BIN;

fn snapshot_cmd(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("snapshot")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Keys, values, versions and revisions as etcdctl prints them (the header dropped).
fn everything(ep: &str) -> serde_json::Value {
    let (ok, out) = etcdctl(ep, &["get", "", "--prefix", "-w", "json"]);
    assert!(ok, "{out}");
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["header"] = serde_json::Value::Null;
    v
}

fn hashkv(ep: &str, rev: i64) -> serde_json::Value {
    let (ok, out) = etcdctl(
        ep,
        &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"],
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["HashKV"]["hash"].clone()
}

fn cluster_id(ep: &str) -> serde_json::Value {
    let (ok, out) = etcdctl(ep, &["endpoint", "status", "-w", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["Status"]["header"]["cluster_id"].clone()
}

#[test]
fn save_status_restore_into_a_new_cluster_and_refuse_damaged_files() {
    let old = Cluster::start(BIN, 1, FAST);
    old.wait_ready(Duration::from_secs(30));
    let ep = old.members[0].client_url();
    // The leader's own cluster-version entry changes the state a snapshot holds beyond the
    // keys: let it land first, so the two snapshots below are of the same state.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(support::wait_cluster_version(&ep));
    // History worth restoring: overwrites, a delete, a txn, a key on a lease, a compaction.
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("d", "5")] {
        assert!(etcdctl(&ep, &["put", k, v]).0);
    }
    assert!(etcdctl(&ep, &["del", "c"]).0);
    let (ok, out) = etcdctl(&ep, &["lease", "grant", "600"]);
    assert!(ok, "{out}");
    let lease = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(etcdctl(&ep, &["put", "leased", "x", &format!("--lease={lease}")]).0);
    assert!(etcdctl(&ep, &["compaction", "2"]).0);
    assert!(etcdctl(&ep, &["put", "a", "6"]).0);
    let want = everything(&ep);
    let rev = want["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["mod_revision"].as_i64().unwrap())
        .max()
        .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("backup.db");
    let file_s = file.display().to_string();
    let (ok, out) = etcdctl(&ep, &["snapshot", "save", &file_s]);
    assert!(ok, "{out}");

    // Status: the member's revision and HashKV.
    let (code, out) = snapshot_cmd(&["status", &file_s, "-w", "json"]);
    assert_eq!(code, 0, "{out}");
    let st: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(st["revision"].as_i64(), Some(rev));
    assert_eq!(st["totalKey"].as_u64(), Some(4), "a, b, d, leased");
    assert_eq!(st["hash"], hashkv(&ep, rev));
    let (code, out) = snapshot_cmd(&["status", &file_s, "-w", "table"]);
    assert!(code == 0 && out.contains("TOTAL KEYS"), "{out}");
    // `metastore-node snapshot save` (what the operator's PVC backup Jobs run) writes a file
    // with the same content, and says what it wrote.
    let saved = tmp.path().join("by-node/nested/backup.db");
    let summary = tmp.path().join("summary.json");
    let (code, out) = snapshot_cmd(&[
        "save",
        &saved.display().to_string(),
        &format!("--endpoints={ep}"),
        &format!("--summary-file={}", summary.display()),
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out2) = snapshot_cmd(&["status", &saved.display().to_string(), "-w", "json"]);
    assert_eq!(code, 0, "{out2}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(out2.trim()).unwrap(),
        st
    );
    let sum: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let bytes_saved = std::fs::read(&saved).unwrap();
    assert_eq!(sum["revision"].as_i64(), Some(rev));
    assert_eq!(sum["size"].as_u64(), Some(bytes_saved.len() as u64));
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&bytes_saved)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sum["sha256"].as_str(), Some(sha.as_str()));
    assert!(!tmp.path().join("by-node/nested/backup.db.part").exists());
    // No member to ask: an error, and no file.
    let (code, out) = snapshot_cmd(&[
        "save",
        &tmp.path().join("none.db").display().to_string(),
        "--endpoints=http://127.0.0.1:1",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(!tmp.path().join("none.db").exists() && !tmp.path().join("none.db.part").exists());
    let old_id = cluster_id(&ep);

    // Damaged files are refused, and leave no data dir behind.
    let mut bytes = std::fs::read(&file).unwrap();
    // The new cluster: a new token, so a new cluster id.
    let mut fresh = Cluster::create(BIN, 3, FAST);
    for m in &mut fresh.members {
        m.args.push("--initial-cluster-token=restored".into());
    }
    let args = |m: &metastore_testkit::Member| {
        let mut a = vec!["restore".to_string(), String::new()];
        a.extend(m.args.iter().cloned());
        a
    };
    let restore = |m: &metastore_testkit::Member, f: &Path| {
        let mut a = args(m);
        a[1] = f.display().to_string();
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        snapshot_cmd(&a)
    };
    let bad = tmp.path().join("bad.db");
    bytes[600] ^= 0x40;
    std::fs::write(&bad, &bytes).unwrap();
    let (code, out) = restore(&fresh.members[0], &bad);
    assert!(
        code == 1 && out.contains("integrity hash mismatch"),
        "{out}"
    );
    bytes[600] ^= 0x40;
    std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
    let (code, out) = restore(&fresh.members[0], &bad);
    assert!(code == 1 && out.contains("truncated"), "{out}");
    assert!(!fresh.members[0].data_dir.exists(), "a data dir was left");

    // Restore into the new 3-member cluster and start it with the same flags.
    for m in &fresh.members {
        let (code, out) = restore(m, &file);
        assert!(code == 0 && out.contains("restored snapshot"), "{out}");
    }
    // A second restore into the same data dir is refused.
    let (code, out) = restore(&fresh.members[0], &file);
    assert!(code == 1 && out.contains("not empty"), "{out}");
    for m in &mut fresh.members {
        m.start();
    }
    fresh.wait_ready(Duration::from_secs(30));
    for m in &fresh.members {
        let ep2 = m.client_url();
        assert_eq!(everything(&ep2), want, "{}", m.name);
        assert_eq!(hashkv(&ep2, rev), st["hash"], "{}", m.name);
    }
    let ep2 = fresh.members[1].client_url();
    assert_ne!(
        cluster_id(&ep2),
        old_id,
        "a restored cluster is a new cluster"
    );
    let (ok, out) = etcdctl(&ep2, &["member", "list"]);
    assert!(ok && out.lines().count() == 3, "{out}");
    let (ok, out) = etcdctl(&ep2, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ok && out.contains("leased"), "lease kept: {out}");
    // It takes writes, at the next revision.
    let (ok, out) = etcdctl(&ep2, &["put", "after", "restore", "-w", "json"]);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["header"]["revision"].as_i64(), Some(rev + 1));
}

/// `snapshot restore s3://bucket/key`, as the operator's init container runs it: the object is
/// downloaded from a real SeaweedFS with credentials from the environment and restored; run
/// again, it leaves the data dir alone; a missing object or bad credentials fail clearly and
/// leave nothing behind.
#[test]
fn restore_from_an_s3_object_once() {
    use metastore_testkit::s3::{SeaweedFs, ACCESS_KEY, SECRET_KEY};
    let old = Cluster::start(BIN, 1, FAST);
    old.wait_ready(Duration::from_secs(30));
    let ep = old.members[0].client_url();
    for i in 0..50 {
        assert!(etcdctl(&ep, &["put", &format!("k{i:02}"), &"v".repeat(i * 40)]).0);
    }
    let want = everything(&ep);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("backup.db");
    let (ok, out) = etcdctl(&ep, &["snapshot", "save", &file.display().to_string()]);
    assert!(ok, "{out}");
    let s3 = SeaweedFs::start(15000 + (std::process::id() % 300) as u16 * 10);
    s3.create_bucket("backups");
    s3.put_file("backups", "ns/demo/b1.db", &file);

    let mut fresh = Cluster::create(BIN, 1, FAST);
    let m = &mut fresh.members[0];
    let run = |url: &str, key: &str, m: &metastore_testkit::Member| {
        let out = Command::new(BIN)
            .args(["snapshot", "restore", url, "--skip-if-initialized"])
            .arg(format!("--s3-endpoint={}", s3.endpoint))
            .args(&m.args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", key)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run("s3://backups/ns/demo/missing.db", SECRET_KEY, m);
    assert!(code == Some(1) && out.contains("missing.db"), "{out}");
    let (code, out) = run("s3://backups/ns/demo/b1.db", "wrong-secret", m);
    assert_eq!(code, Some(1), "{out}");
    assert!(!m.data_dir.exists(), "a failed restore left a data dir");
    let (code, out) = run("s3://backups/ns/demo/b1.db", SECRET_KEY, m);
    assert!(
        code == Some(0) && out.contains("restored snapshot"),
        "{out}"
    );
    let (code, out) = run("s3://backups/ns/demo/b1.db", SECRET_KEY, m);
    assert!(
        code == Some(0) && out.contains("already holds a member"),
        "{out}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(m.data_dir.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("snapshot-download")
        })
        .collect();
    assert!(leftovers.is_empty(), "download left behind: {leftovers:?}");
    m.start();
    fresh.wait_ready(Duration::from_secs(30));
    assert_eq!(everything(&fresh.members[0].client_url()), want);
}

#[test]
fn force_new_cluster_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let eps = c.endpoints();
    let rec = rt.block_on(async {
        let mut cl = metastore_testkit::client(&eps[leader]).await;
        cl.put(REGISTER, "init", None).await.unwrap();
        let load = Load::start(vec![eps[leader].clone()], 3, 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Two members lose their volumes: the quorum is gone and cannot come back.
        for i in (0..3).filter(|i| *i != leader) {
            c.members[i].kill();
            std::fs::remove_dir_all(&c.members[i].data_dir).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        load.stop().await
    });
    assert!(rec.acked_writes() > 20, "the load ran");
    // The survivor crashes too, then restarts as the only voter.
    let m = &mut c.members[leader];
    m.kill();
    m.args.push("--force-new-cluster".into());
    m.start();
    let ep = m.client_url();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !etcdctl(&ep, &["put", "alive", "yes"]).0 {
        assert!(std::time::Instant::now() < deadline, "{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out) = etcdctl(&ep, &["member", "list"]);
    assert!(ok && out.lines().count() == 1, "{out}");
    let lost = rt.block_on(rec.lost_writes(&ep));
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The register's last acknowledged value (or a later indeterminate one) is what it holds:
    // the recorded history, with the final read, is linearizable.
    register::assert_linearizable(&rec.history, "init");
    // Started again without the flag, it stays a one-member cluster with the same data.
    let m = &mut c.members[leader];
    m.terminate();
    m.args.pop();
    m.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = etcdctl(&ep, &["get", "alive", "--print-value-only"]);
        if ok && out.trim() == "yes" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", m.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rt.block_on(rec.lost_writes(&ep)).is_empty());
}

/// The operator's disaster-recovery call: `ForceNewCluster` on a survivor is refused while the
/// cluster has a leader; once two of three members are gone it is accepted, the member exits,
/// and started again (as a kubelet would) it is a one-voter cluster with every write, and the
/// request is not applied a second time.
#[test]
fn the_admin_api_forces_a_new_cluster_on_a_survivor() {
    use metastore_node::admin_proto::admin_client::AdminClient;
    use metastore_node::admin_proto::ForceNewClusterRequest;
    let mut c = Cluster::start(BIN, 3, FAST);
    let leader = c.wait_ready(Duration::from_secs(30));
    let ep = c.members[leader].client_url();
    for i in 0..20 {
        assert!(etcdctl(&ep, &["put", &format!("k{i}"), &format!("v{i}")]).0);
    }
    let survivor = (leader + 1) % 3;
    let s_ep = c.members[survivor].client_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt.block_on(async {
        let mut cl = metastore_testkit::client(&s_ep).await;
        cl.status().await.unwrap().header().unwrap().member_id()
    });
    let force = |member_id: u64| {
        rt.block_on(async {
            let mut a = AdminClient::connect(s_ep.clone()).await.unwrap();
            a.force_new_cluster(ForceNewClusterRequest { member_id })
                .await
                .map(|r| r.into_inner().commit_index)
        })
    };
    let e = force(id).unwrap_err();
    assert!(e.message().contains("has a leader"), "{e:?}");
    let e = force(id + 1).unwrap_err();
    assert!(e.message().contains("not"), "{e:?}");
    for i in (0..3).filter(|i| *i != survivor) {
        c.members[i].kill();
        std::fs::remove_dir_all(&c.members[i].data_dir).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let commit = loop {
        match force(id) {
            Ok(commit) => break commit,
            Err(e) => assert!(
                std::time::Instant::now() < deadline && e.message().contains("has a leader"),
                "{e:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(commit > 20, "commit index {commit}");
    let m = &mut c.members[survivor];
    assert_eq!(m.wait_exit(Duration::from_secs(20)), Some(0), "{}", m.log());
    for round in 0..2 {
        m.start();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !etcdctl(&s_ep, &["put", "alive", "yes"]).0 {
            assert!(std::time::Instant::now() < deadline, "{}", m.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        let (ok, out) = etcdctl(&s_ep, &["member", "list"]);
        assert!(ok && out.lines().count() == 1, "round {round}: {out}");
        let (ok, out) = etcdctl(&s_ep, &["get", "k19", "--print-value-only"]);
        assert!(ok && out.trim() == "v19", "{out}");
        assert!(!m.data_dir.join("member/force-new-cluster").exists());
        m.terminate();
    }
}
