//! Backups into a real S3-compatible server (SeaweedFS on loopback) from a real member, no
//! Kubernetes: the operator's upload path streams the snapshot into the bucket; the object read
//! back is byte-for-byte what was reported (size, SHA-256), and `metastore-node snapshot status`
//! on it gives the member's revision and HashKV. Wrong credentials fail and leave no object.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use metastore_operator::backup::{bucket, upload_snapshot, S3Credentials};
use metastore_operator::backup_crd::S3Target;
use metastore_operator::executor::Dial;
use metastore_testkit::s3::{SeaweedFs, ACCESS_KEY, SECRET_KEY};
use metastore_testkit::{etcdctl, member_args, node_bin};
use sha2::{Digest, Sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_streams_into_seaweedfs_and_restores_from_there() {
    let pid = std::process::id();
    let ip = format!("127.{}.{}.1", 60 + pid % 100, pid % 200);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{ip}:2379");
    let mut node = Command::new(node_bin())
        .args(member_args(
            "m0",
            &ip,
            &dir.path().join("m0"),
            &format!("m0=http://{ip}:2380"),
        ))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(&url, &["put", "k0", "v0"]).0 {
        assert!(Instant::now() < deadline, "member did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Enough data for several 8 MiB parts.
    let mut c = metastore_testkit::client(&url).await;
    let value = "x".repeat(64 * 1024);
    for i in 0..400 {
        c.put(format!("big/{i:04}"), value.clone(), None)
            .await
            .unwrap();
    }
    let rev = c
        .get("k0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    let s3 = SeaweedFs::start(14000 + (pid % 300) as u16 * 10);
    s3.create_bucket("backups");
    let target = S3Target {
        bucket: "backups".into(),
        prefix: "team/".into(),
        endpoint: Some(s3.endpoint.clone()),
        region: None,
        credentials_secret: "unused".into(),
    };
    let creds = S3Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
    };
    let key = target.key("ns", "demo", "b1");
    let store = bucket(&target, &creds).unwrap();
    let up = upload_snapshot(
        &Dial::default(),
        std::slice::from_ref(&url),
        &store,
        &key,
        format!("s3://backups/{key}"),
    )
    .await
    .unwrap();
    assert_eq!(up.revision, rev);
    assert!(up.size > 3 * 8 * 1024 * 1024, "{} bytes", up.size);
    assert_eq!(s3.keys("backups"), vec![key.clone()]);

    // Read back: the same bytes, and a snapshot the node recognises at the member's revision.
    let file = dir.path().join("back.db");
    let (ok, _) = s3.request("GET", &format!("/backups/{key}"), Some(&file));
    assert!(ok);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, up.size);
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha, up.sha256);
    let out = Command::new(node_bin())
        .args([
            "snapshot",
            "status",
            &file.display().to_string(),
            "-w",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["revision"].as_i64(), Some(rev));
    let hash = c.maintenance_client().hash_kv(rev).await.unwrap().hash();
    assert_eq!(st["hash"].as_u64(), Some(hash as u64));

    // Wrong credentials: refused, nothing stored.
    let bad = S3Credentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: "wrong".into(),
    };
    let store = bucket(&target, &bad).unwrap();
    let key2 = target.key("ns", "demo", "b2");
    let r = upload_snapshot(&Dial::default(), &[url], &store, &key2, "x".into()).await;
    assert!(r.is_err());
    assert_eq!(s3.keys("backups"), vec![key]);
    let _ = node.kill();
    let _ = node.wait();
}
