//! TLS on real members, used by the real etcdctl: three members with client and peer mutual TLS
//! (https:// URLs, `--client-cert-auth`, `--peer-client-cert-auth`) replicate, forward to the
//! leader and serve etcdctl with a client certificate; plain http, no client certificate and a
//! certificate of another CA are refused; forged peer messages under a member's id (a heartbeat,
//! and issue 17's attacks: an append that would write a key, a snapshot that would replace the
//! state, both fitting the log) from a certificate of the right CA for another host are dropped
//! and nothing is written; admin calls are limited to allowed common names; and a member's
//! certificate rotated on disk (to one of a new CA) is served to the next connection without a
//! restart. Also: metrics over https, and rotation to a new CA under linearizable load.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metastore_node::peer_proto::peer_client::PeerClient;
use metastore_node::peer_proto::{MembersRequest, RaftBatch};
use metastore_testkit::certs::Ca;
use metastore_testkit::{etcdctl, Cluster, FAST};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use support::BIN;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Lays out every member of `c` for client and peer mutual TLS: its own directory under `tmp`
/// (named after it) with `server.crt`/`.key` (client listener, valid for its IP and localhost),
/// `peer.crt`/`.key` (valid for its IP) and `ca.crt`, all issued by `ca`; https:// client and
/// peer URLs (metrics stay plain); `extra` flags appended.
fn mutual_tls(c: &mut Cluster, tmp: &Path, ca: &Ca, extra: &[&str]) {
    for m in &mut c.members {
        let dir = tmp.join(&m.name);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = ca.issue(&dir, "server", &[&m.ip, "localhost"]);
        let (pcert, pkey) = ca.issue(&dir, "peer", &[&m.ip]);
        for a in m.args.iter_mut() {
            if !a.ends_with(":2381") {
                *a = a.replace("http://", "https://");
            }
        }
        let ca_file = s(&dir.join("ca.crt"));
        m.args.extend(
            [
                "--cert-file",
                &s(&cert),
                "--key-file",
                &s(&key),
                "--trusted-ca-file",
                &ca_file,
                "--client-cert-auth",
                "--peer-cert-file",
                &s(&pcert),
                "--peer-key-file",
                &s(&pkey),
                "--peer-trusted-ca-file",
                &ca_file,
                "--peer-client-cert-auth",
            ]
            .map(String::from),
        );
        m.args.extend(extra.iter().map(|a| a.to_string()));
    }
}

#[test]
fn mutual_tls_on_clients_and_peers_with_etcdctl_and_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("metastore test CA");
    let mut c = Cluster::create(BIN, 3, FAST);
    mutual_tls(
        &mut c,
        tmp.path(),
        &ca,
        &[
            "--peer-cert-allowed-cn=peer",
            "--admin-cert-allowed-cn=admin,ops",
        ],
    );
    for m in &mut c.members {
        m.start();
    }
    let leader = c.wait_ready(Duration::from_secs(30));
    let follower = (leader + 1) % 3;
    let client_dir = tmp.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    let (ccert, ckey) = ca.issue(&client_dir, "client", &["client"]);
    let cacert = s(&client_dir.join("ca.crt"));
    let (acert, akey) = ca.issue(&client_dir, "admin", &["admin"]);
    let tls_as = |ip: &str, (cert, key): (&PathBuf, &PathBuf), args: &[&str]| {
        let mut all = vec![
            "--cacert",
            &cacert,
            "--cert",
            &s(cert),
            "--key",
            &s(key),
            "--command-timeout=5s",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        etcdctl(&format!("https://{ip}:2379"), &all)
    };
    let tls = |ip: &str, args: &[&str]| tls_as(ip, (&ccert, &ckey), args);

    // Writes through the leader replicate to the others over peer TLS.
    let lip = c.members[leader].ip.clone();
    let fip = c.members[follower].ip.clone();
    let (ok, out) = tls(&lip, &["put", "k", "v1"]);
    assert!(ok, "{out}");
    let (ok, out) = tls(&fip, &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "v1", "{out}");
    // A follower forwards what only the leader serves (member list, a lease's TTL) over
    // client TLS to the leader.
    let (ok, out) = tls(&fip, &["member", "list"]);
    assert!(ok && out.lines().count() == 3, "{out}");
    let (ok, out) = tls(&lip, &["lease", "grant", "60"]);
    assert!(ok, "{out}");
    let lease = out.split_whitespace().nth(1).unwrap().to_string();
    let (ok, out) = tls(&fip, &["lease", "timetolive", &lease]);
    assert!(ok && out.contains("remaining"), "{out}");

    // Admin calls: only certificates named in --admin-cert-allowed-cn, and a member forwarding
    // one to the leader with its own certificate; reads of the membership stay open.
    let admin = (&acert, &akey);
    let (ok, out) = tls(&lip, &["endpoint", "hashkv"]);
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = tls(&fip, &["defrag"]);
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = tls_as(&lip, admin, &["endpoint", "hashkv"]);
    assert!(ok, "{out}");
    let spare = format!("https://{}.250:2380", lip.rsplit_once('.').unwrap().0);
    let add = ["member", "add", "spare", "--learner", "--peer-urls", &spare];
    let (ok, out) = tls(&fip, &add);
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = tls_as(&fip, admin, &add);
    assert!(ok, "forwarded admin call refused: {out}");
    let spare_id = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let (ok, out) = tls_as(&fip, admin, &["member", "remove", &spare_id]);
    assert!(ok, "{out}");
    let denied: f64 = c
        .members
        .iter()
        .filter_map(|m| m.metric("metastore_admin_calls_denied_total"))
        .sum();
    assert_eq!(denied, 3.0);

    // Refused: plain http, no client certificate, a certificate of another CA.
    let (ok, out) = etcdctl(
        &format!("http://{lip}:2379"),
        &["--command-timeout=3s", "get", "k"],
    );
    assert!(!ok, "plain http served: {out}");
    let (ok, out) = etcdctl(
        &format!("https://{lip}:2379"),
        &["--cacert", &cacert, "--command-timeout=3s", "get", "k"],
    );
    assert!(!ok, "no client certificate served: {out}");
    let other = Ca::new("another CA");
    let other_dir = tmp.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let (ocert, okey) = other.issue(&other_dir, "client", &["client"]);
    let (ok, out) = etcdctl(
        &format!("https://{lip}:2379"),
        &[
            "--cacert",
            &cacert,
            "--cert",
            &s(&ocert),
            "--key",
            &s(&okey),
            "--command-timeout=3s",
            "get",
            "k",
        ],
    );
    assert!(!ok, "a certificate of another CA served: {out}");

    // Peer identity: a certificate of the cluster's CA for a host that is no member's, and the
    // leader's own peer certificate claiming to be another member, are both refused.
    let fname = c.members[follower].name.clone();
    let lname = c.members[leader].name.clone();
    let stranger_dir = tmp.path().join("stranger");
    std::fs::create_dir_all(&stranger_dir).unwrap();
    let (scert, skey) = ca.issue(&stranger_dir, "peer", &["127.0.0.99"]);
    // Where the follower's log ends (at rest, after the put above: commit = last index).
    let f_last = c.members[follower]
        .metric("metastore_raft_commit_index")
        .unwrap() as u64;
    let f_term = c.members[follower].metric("metastore_raft_term").unwrap() as u64;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let peer_url = format!("https://{fip}:2380");
        let ca_pem = std::fs::read(&cacert).unwrap();
        let dial = |cert: PathBuf, key: PathBuf| {
            let peer_url = peer_url.clone();
            let ca_pem = ca_pem.clone();
            async move {
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
                    .identity(tonic::transport::Identity::from_pem(
                        std::fs::read(cert).unwrap(),
                        std::fs::read(key).unwrap(),
                    ));
                let ch = tonic::transport::Endpoint::from_shared(peer_url)
                    .unwrap()
                    .tls_config(tls)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                PeerClient::new(ch)
            }
        };
        let mut stranger = dial(scert, skey).await;
        let info = stranger
            .members(MembersRequest {})
            .await
            .unwrap()
            .into_inner();
        let id_of = |name: &str| info.members.iter().find(|m| m.name == name).unwrap().id;
        let (fid, lid) = (id_of(&fname), id_of(&lname));
        let third = info
            .members
            .iter()
            .map(|m| m.id)
            .find(|id| *id != fid && *id != lid)
            .unwrap();
        let heartbeat = |from: u64| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgHeartbeat);
            m.from = from;
            m.to = fid;
            m.term = 1;
            RaftBatch {
                messages: vec![m.write_to_bytes().unwrap()],
                cluster_id: info.cluster_id,
            }
        };
        let _ = stranger
            .stream(futures::stream::iter(vec![heartbeat(lid)]))
            .await;
        // The attacks of issue 17 under the leader's id, fitting the follower's log: an append
        // that would write a key, and a snapshot that would replace the whole state.
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        (append.from, append.to, append.term) = (lid, fid, f_term);
        (append.index, append.log_term, append.commit) = (f_last, f_term, f_last + 1);
        let mut e = raft::eraftpb::Entry::default();
        (e.term, e.index) = (f_term, f_last + 1);
        e.data =
            metastore_node::replicated::command::Command::Put(etcd_client::proto::PbPutRequest {
                key: b"forged".to_vec(),
                value: b"x".to_vec(),
                ..Default::default()
            })
            .encode()
            .into();
        append.mut_entries().push(e);
        let mut snap = Message::default();
        snap.set_msg_type(MessageType::MsgSnapshot);
        (snap.from, snap.to, snap.term) = (lid, fid, f_term);
        let meta = snap.mut_snapshot().mut_metadata();
        (meta.index, meta.term) = (f_last + 100, f_term);
        meta.mut_conf_state().voters = vec![lid];
        let batch = |m: Message| RaftBatch {
            messages: vec![m.write_to_bytes().unwrap()],
            cluster_id: info.cluster_id,
        };
        let _ = stranger
            .stream(futures::stream::iter(vec![batch(append), batch(snap)]))
            .await;
        let ldir = tmp.path().join(&lname);
        let mut leader_cert = dial(ldir.join("peer.crt"), ldir.join("peer.key")).await;
        let _ = leader_cert
            .stream(futures::stream::iter(vec![heartbeat(third)]))
            .await;
        // The leader's host but not the --peer-cert-allowed-cn name.
        let (ncert, nkey) = ca.issue(&stranger_dir, "not-peer", &[&lip]);
        let mut misnamed = dial(ncert, nkey).await;
        let _ = misnamed
            .stream(futures::stream::iter(vec![heartbeat(lid)]))
            .await;
    });
    let mismatches = c.members[follower]
        .metric("metastore_peer_messages_rejected_total{reason=\"identity_mismatch\"}")
        .unwrap_or(0.0);
    assert_eq!(mismatches, 5.0, "forged senders not refused");
    // Nothing was written: the forged key is nowhere, and the follower's log did not move.
    for m in &c.members {
        let (ok, out) = tls(&m.ip, &["get", "forged", "--consistency=s"]);
        assert!(ok && out.trim().is_empty(), "{}: {out}", m.name);
    }
    assert_eq!(
        c.members[follower].metric("metastore_raft_commit_index"),
        Some(f_last as f64)
    );
    // The members' own traffic was never refused.
    for m in &c.members {
        let r = m
            .metric("metastore_peer_messages_rejected_total{reason=\"identity_mismatch\"}")
            .unwrap_or(0.0);
        assert!(m.name == fname || r == 0.0, "{} refused {r}", m.name);
    }
    let (ok, out) = tls(&lip, &["put", "k", "v1"]);
    assert!(ok, "{out}");

    // Rotation: the follower's client-facing certificate is replaced by one of the new CA on disk.
    // A client trusting only the new CA cannot verify it before, and can after, without a
    // restart (the client CA stays the old one, so the old client certificate still works).
    let fdir = tmp.path().join(&c.members[follower].name);
    let new_dir = tmp.path().join("new");
    std::fs::create_dir_all(&new_dir).unwrap();
    let only_new = s(&other_dir.join("ca.crt"));
    let with_new_ca = |ip: &str| {
        etcdctl(
            &format!("https://{ip}:2379"),
            &[
                "--cacert",
                &only_new,
                "--cert",
                &s(&ccert),
                "--key",
                &s(&ckey),
                "--command-timeout=3s",
                "get",
                "k",
                "--print-value-only",
            ],
        )
    };
    assert!(!with_new_ca(&fip).0);
    let (ncert, nkey) = other.issue(&new_dir, "server", &[&fip, "localhost"]);
    // Key, then certificate, over the files the member was started with.
    std::fs::copy(&nkey, fdir.join("server.key")).unwrap();
    std::fs::copy(&ncert, fdir.join("server.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = with_new_ca(&fip);
        if ok && out.trim() == "v1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotated certificate not served: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        c.members[follower].child.is_some(),
        "the member was not restarted"
    );
}

/// GET `path` over TLS from `addr` (HTTP/1.1, ALPN http/1.1), trusting `ca`, presenting
/// `client` (certificate, key) when given; the status code and body, or the error.
fn https_get(
    addr: &str,
    path: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        Some((c, k)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(k).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let name = ServerName::from(sock.ip());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf) {
        Ok(_) => {}
        // Some servers close without close_notify; what arrived is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok((
        code,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

/// `--listen-metrics-urls https://...` serves /metrics and the health endpoints over TLS with
/// the client certificate settings, as etcd does: a client certificate is needed under
/// `--client-cert-auth`, and plain http gets no answer.
#[test]
fn metrics_over_https_with_the_client_certificate_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("metrics CA");
    let mut c = Cluster::create(BIN, 1, FAST);
    let m = &mut c.members[0];
    let dir = tmp.path();
    let (cert, key) = ca.issue(dir, "server", &[&m.ip]);
    let (ccert, ckey) = ca.issue(dir, "prometheus", &["prometheus"]);
    for a in m.args.iter_mut() {
        if !a.ends_with(":2380") {
            *a = a.replace("http://", "https://");
        }
    }
    m.args.extend(
        [
            "--cert-file",
            &s(&cert),
            "--key-file",
            &s(&key),
            "--trusted-ca-file",
            &s(&dir.join("ca.crt")),
            "--client-cert-auth",
        ]
        .map(String::from),
    );
    m.start();
    let addr = m.metrics_addr();
    let ca_file = dir.join("ca.crt");
    let client = Some((ccert.as_path(), ckey.as_path()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = https_get(&addr, "/readyz", &ca_file, client);
        if let Ok((200, _)) = r {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no /readyz over https: {r:?}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = https_get(&addr, "/metrics", &ca_file, client).unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("metastore_admin_calls_denied_total"),
        "{body}"
    );
    assert!(
        https_get(&addr, "/metrics", &ca_file, None).is_err(),
        "served without a client certificate"
    );
    assert_eq!(m.http_get("/metrics"), None, "plain http answered");
}

/// Certificate rotation under load: 3 members with client and peer mutual TLS serve a
/// linearizable register workload whose clients reconnect every few operations (so handshakes
/// keep happening) while every member moves to a new CA on disk — first both CAs trusted, then
/// new server and peer certificates (key written before certificate, as the docs say). Zero
/// failed requests, the history linearizable, no acknowledged write lost, and afterwards every
/// member serves its new certificate.
#[test]
fn rotation_to_a_new_ca_under_linearizable_load() {
    use metastore_testkit::checkers::register;
    use metastore_testkit::load::{Load, LoadOptions, REGISTER};
    let tmp = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let mut c = Cluster::create(BIN, 3, FAST);
    mutual_tls(&mut c, tmp.path(), &old_ca, &[]);
    for m in &mut c.members {
        m.start();
    }
    c.wait_ready(Duration::from_secs(30));
    // The client: an old-CA certificate, trusting both CAs from the start.
    let cdir = tmp.path().join("client");
    let ndir = tmp.path().join("new");
    let (ccert, ckey) = old_ca.issue(&cdir, "client", &["client"]);
    let (_, _) = new_ca.issue(&ndir, "probe", &["probe"]);
    let old_pem = std::fs::read_to_string(cdir.join("ca.crt")).unwrap();
    let new_pem = std::fs::read_to_string(ndir.join("ca.crt")).unwrap();
    let both = format!("{old_pem}{new_pem}");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&ccert).unwrap(),
        std::fs::read(&ckey).unwrap(),
    );
    let tls_with = |ca_pem: &str| {
        etcd_client::TlsOptions::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .identity(identity.clone())
    };
    let endpoints: Vec<String> = c
        .members
        .iter()
        .map(|m| format!("https://{}:2379", m.ip))
        .collect();
    let connect = |ep: String, tls: etcd_client::TlsOptions| async move {
        let opts = etcd_client::ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        etcd_client::Client::connect([ep], Some(opts)).await
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rec = rt.block_on(async {
        let mut cl = connect(endpoints[0].clone(), tls_with(&both))
            .await
            .unwrap();
        cl.put(REGISTER, "init", None).await.unwrap();
        let load = Load::start_with(
            endpoints.clone(),
            3,
            3,
            LoadOptions {
                tls: Some(tls_with(&both)),
                reconnect_every: 10,
                ..Default::default()
            },
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Phase 1: every member trusts both CAs (clients and peers).
        for m in &c.members {
            std::fs::write(tmp.path().join(&m.name).join("ca.crt"), &both).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Phase 2: new-CA server and peer certificates, one member at a time.
        for m in &c.members {
            let dir = tmp.path().join(&m.name);
            let fresh = ndir.join(&m.name);
            for (name, sans) in [
                ("server", vec![m.ip.as_str(), "localhost"]),
                ("peer", vec![m.ip.as_str()]),
            ] {
                let (cert, key) = new_ca.issue(&fresh, name, &sans);
                std::fs::copy(&key, dir.join(format!("{name}.key"))).unwrap();
                std::fs::copy(&cert, dir.join(format!("{name}.crt"))).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rec = load.stop().await;
        let lost = rec.lost_writes_via(&mut cl).await;
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        // Every member now serves a certificate of the new CA to new connections.
        for ep in &endpoints {
            let mut only_new = connect(ep.clone(), tls_with(&new_pem))
                .await
                .unwrap_or_else(|e| panic!("{ep} does not serve the new certificate: {e}"));
            only_new
                .get(REGISTER, None)
                .await
                .unwrap_or_else(|e| panic!("{ep}: {e}"));
        }
        rec
    });
    eprintln!(
        "history: {} register ops, {} acknowledged writes, {} failed, {} not connected",
        rec.history.len(),
        rec.acked_writes(),
        rec.failed,
        rec.unreachable
    );
    // A refused handshake shows as a connection not made: neither may happen.
    assert_eq!(
        (rec.failed, rec.unreachable),
        (0, 0),
        "requests failed during the rotation"
    );
    assert!(rec.acked_writes() > 50 && rec.reads() > 50);
    register::assert_linearizable(&rec.history, "init");
}

/// With `--client-cert-auth` and auth on, a request without a token acts as the user its
/// certificate's common name names (a `--no-password` user, as etcd intends); a token wins over
/// the certificate; a common name that is no user gets nothing.
#[test]
fn the_certificate_common_name_is_the_user_when_auth_is_on() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("auth CA");
    let mut c = Cluster::create(BIN, 1, FAST);
    mutual_tls(&mut c, tmp.path(), &ca, &[]);
    c.members[0].start();
    c.wait_ready(Duration::from_secs(30));
    let ip = c.members[0].ip.clone();
    let dir = tmp.path().join("clients");
    let cacert = s(&dir.join("ca.crt"));
    let certs: Vec<(PathBuf, PathBuf)> = ["root", "alice", "mallory"]
        .iter()
        .map(|cn| ca.issue(&dir, cn, &[cn]))
        .collect();
    let as_cert = |who: usize, args: &[&str]| {
        let (cert, key) = &certs[who];
        let mut all = vec![
            "--cacert".to_string(),
            cacert.clone(),
            "--cert".into(),
            s(cert),
            "--key".into(),
            s(key),
            "--command-timeout=5s".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        etcdctl(&format!("https://{ip}:2379"), &all)
    };
    let (root, alice, mallory) = (0, 1, 2);
    let setup: [&[&str]; 8] = [
        &["user", "add", "root", "--no-password"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice", "--no-password"],
        &["user", "add", "bob:bobpw"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "app/",
            "--prefix=true",
        ],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ];
    for args in setup {
        // Auth entries wait for the cluster version, set a moment after the start.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out) = as_cert(root, args);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{args:?}: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (ok, out) = as_cert(alice, &["put", "app/x", "1"]);
    assert!(ok, "alice by certificate may write app/: {out}");
    let (ok, out) = as_cert(alice, &["put", "other", "1"]);
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = as_cert(alice, &["get", "app/x", "--print-value-only"]);
    assert!(ok && out.trim() == "1", "{out}");
    let (ok, out) = as_cert(alice, &["user", "list"]);
    assert!(
        !ok && out.contains("permission denied"),
        "alice is no admin: {out}"
    );
    let (ok, out) = as_cert(root, &["user", "list"]);
    assert!(
        ok && out.contains("alice"),
        "root by certificate is admin: {out}"
    );
    let (ok, out) = as_cert(mallory, &["get", "app/x"]);
    assert!(!ok && out.contains("permission denied"), "{out}");
    // A token wins over the certificate: alice's certificate with bob's password acts as bob.
    let (ok, out) = as_cert(alice, &["--user=bob:bobpw", "get", "app/x"]);
    assert!(!ok && out.contains("permission denied"), "{out}");
}
