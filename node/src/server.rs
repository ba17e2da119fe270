//! Wires a member together: opens the data dir, starts the Raft loop thread, the peer, client and
//! HTTP listeners, and shuts everything down in order on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbWatchServer,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::admin_proto::admin_server::AdminServer;
use crate::api::admin::AdminService;
use crate::api::cluster::ClusterService;
use crate::api::key_lease::KeyLeaseService;
use crate::api::kv::KvService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::config::{ClusterState, Config};
use crate::consensus::loop_env::LoopEnv;
use crate::consensus::raft_loop::{RaftLoop, SHUTDOWN_GRACE};
use crate::consensus::transport::{PeerService, Transport, MAX_PEER_MESSAGE};
use crate::node::{LoopMsg, NodeHandle, Shared};
use crate::peer_proto::peer_server::PeerServer;
use crate::replicated::command::Command;
use crate::replicated::member::peer_urls;
use crate::replicated::membership::MemberChange;

/// gRPC framing allowance above `--max-request-bytes`, as etcd allows, so oversized requests reach
/// the size check and get etcd's error instead of a transport error.
const GRPC_OVERHEAD: usize = 512 * 1024;

async fn bind_all(what: &str, addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen for {what} on {a}"))?,
        );
    }
    Ok(out)
}

/// Accepted connections with Nagle off: small responses must not wait for delayed ACKs (~40 ms).
fn incoming(l: TcpListener) -> TcpIncoming {
    TcpIncoming::from(l).with_nodelay(Some(true))
}

/// Serves `router` on `l` until `stop`, over TLS when `tls` is given.
async fn serve(
    router: tonic::transport::server::Router,
    l: TcpListener,
    tls: Option<Arc<crate::tls::ReloadingTls>>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(crate::tls::incoming(l, tls), stop)
                .await
        }
        None => router.serve_with_incoming_shutdown(incoming(l), stop).await,
    }
}

/// A listener kind's TLS, loaded now (`what` names it in the error).
fn reloading(
    settings: &Option<crate::tls::TlsSettings>,
    what: &str,
) -> anyhow::Result<Option<Arc<crate::tls::ReloadingTls>>> {
    settings
        .clone()
        .map(|s| crate::tls::ReloadingTls::new(s).map(Arc::new))
        .transpose()
        .with_context(|| format!("loading the {what} TLS certificate"))
}

/// A leader that is stopping hands leadership to its most caught-up voter first and waits (up
/// to two election timeouts) until another member leads, so writes go on without waiting out an
/// election timeout; it keeps serving meanwhile.
async fn hand_off_leadership(node: &NodeHandle, config: &Config) {
    let Ok(Some(target)) = node.ask(|reply| LoopMsg::HandOffLeadership { reply }).await else {
        return;
    };
    tracing::info!(
        to = format_args!("{target:x}"),
        "stopping: handing leadership over"
    );
    let me = node.shared.member_id();
    let deadline = tokio::time::Instant::now() + config.election_timeout * 2;
    while tokio::time::Instant::now() < deadline {
        let leader = node.shared.status.read().leader_id;
        if leader != 0 && leader != me {
            tracing::info!(
                leader = format_args!("{leader:x}"),
                "leadership handed over"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tracing::warn!("leadership was not taken over in time; stopping anyway");
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Publishes this member's name and client URLs to the replicated member list once it is part
/// of the cluster (etcd's attribute publish), so MemberList shows them and others can reach it.
async fn publish_attributes(node: NodeHandle) {
    let sh = node.shared.clone();
    let me = sh.member_id();
    loop {
        tokio::time::sleep(sh.config.heartbeat_interval * 2).await;
        let current = sh.state.read().members.get(&me).cloned();
        let Some(m) = current else { continue };
        if m.name == sh.config.name && m.client_urls == sh.config.advertise_client_urls {
            return;
        }
        if !sh.has_leader() {
            continue;
        }
        let change = MemberChange::Publish {
            id: me,
            name: sh.config.name.clone(),
            client_urls: sh.config.advertise_client_urls.clone(),
        };
        if let Err(e) = node.propose(Command::Member(change)).await {
            tracing::debug!("publishing member attributes: {e}");
        }
    }
}

/// The exit status of a member that stopped on a panic (EX_SOFTWARE).
pub const EXIT_PANIC: i32 = 70;

/// Makes every panic, on any thread, end the process with [`EXIT_PANIC`] after one log line
/// saying where: a panicked task may have left shared state half-changed, and a member that
/// keeps running without its Raft loop or a server is a zombie nothing restarts. (Go's runtime
/// does the same for etcd.) Binaries call this once at start.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(thread = name, "panic: {info}; stopping the member");
        default(info);
        std::process::exit(EXIT_PANIC);
    }));
}

/// Runs a member until it is told to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Certificates are loaded before anything listens: a bad file is a start-up error.
    let client_tls = reloading(&config.client_tls, "client")?;
    let peer_tls = reloading(&config.peer_tls, "peer")?;
    let metrics_tls = reloading(&config.metrics_tls, "metrics")?;
    let client_listeners = bind_all("clients", &config.client_addrs).await?;
    let peer_listeners = bind_all("peers", &config.peer_addrs).await?;
    let metrics_listeners = bind_all("metrics", &config.metrics_addrs).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    // The HTTP endpoints answer from now on: /livez stays 200 while the data dir loads.
    let member: crate::http::Member = Arc::default();
    for l in metrics_listeners {
        let app = crate::http::router(member.clone());
        let stop = stopped(stop_rx.clone());
        let tls = metrics_tls.clone();
        servers.spawn(async move {
            match tls {
                Some(tls) => axum::serve(crate::tls::TlsListener::new(l, tls)?, app)
                    .with_graceful_shutdown(stop)
                    .await
                    .context("metrics server"),
                None => axum::serve(l, app)
                    .with_graceful_shutdown(stop)
                    .await
                    .context("metrics server"),
            }
        });
    }

    let mut config = config;
    // Dial peers from our own advertised peer address when it is a literal local IP.
    let local_ip = config
        .advertise_peer_urls
        .first()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| {
            u.host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse().ok())
        })
        .filter(|ip: &std::net::IpAddr| config.peer_addrs.iter().any(|a| a.ip() == *ip));

    let dialing = crate::consensus::transport::Dialing {
        local: local_ip,
        tls: config.peer_tls.clone().map(Arc::new),
    };
    // A member joining an existing cluster with an empty data dir asks the cluster who it is.
    let join = if config.cluster_state == ClusterState::Existing
        && crate::consensus::bootstrap::is_fresh(&config.data_dir)
        && !crate::consensus::bootstrap::removed_marker(&config.data_dir).exists()
    {
        let peers: Vec<String> = config
            .initial_cluster
            .iter()
            .filter(|m| m.name != config.name)
            .flat_map(|m| m.peer_urls.clone())
            .chain(config.discovery_peer_urls.iter().cloned())
            .collect();
        let info = crate::consensus::transport::discover(
            &peers,
            &config.advertise_peer_urls,
            &config.peer_addrs,
            &dialing,
        )
        .await
        .context("cannot join the existing cluster")?;
        Some(info)
    } else {
        None
    };

    let logger = crate::consensus::logger::logger();
    let cfg = config.clone();
    let opened =
        tokio::task::spawn_blocking(move || crate::consensus::bootstrap::open(&cfg, join, &logger))
            .await
            .context("opening the data dir panicked")?
            .with_context(|| format!("cannot open data dir {}", config.data_dir.display()))?;
    // From here on the member is who its data dir says.
    config.member_id = opened.identity.member_id;
    let version = crate::replicated::version::member_version();
    crate::replicated::version::check_compatible(opened.state.cluster_version(), version)
        .context("refusing to start")?;

    let (tx, rx) = crossbeam_channel::unbounded();
    let peers = peer_urls(&opened.state.members);
    let shared = Arc::new(
        Shared::new(config.clone(), opened.state.clone(), opened.applied)
            .context("registering metrics")?,
    );
    let mut removed_rx = shared.removed.subscribe();
    let mut restart_rx = shared.restart.subscribe();
    let transport = Arc::new(Transport::new(
        config.member_id,
        opened.state.cluster_id,
        dialing.clone(),
        tx.clone(),
        tokio::runtime::Handle::current(),
        opened.snapshots.clone(),
        {
            let shared = shared.clone();
            Arc::new(move || {
                let state = shared.state.read();
                (
                    state.store.disk_values().map(|v| v.database()),
                    state.cluster_version() >= crate::consensus::snapshot_transfer::IMAGE_FROM,
                )
            })
        },
    ));
    transport.set_peers(&peers);
    let dialing_for_versions = dialing;
    tracing::info!(
        name = %config.name,
        member = format_args!("{:x}", config.member_id),
        cluster = format_args!("{:x}", opened.state.cluster_id),
        applied = opened.applied,
        %version,
        cluster_version = %opened.state.cluster_version(),
        "starting member"
    );
    if !config.read_lease.guard_clock {
        tracing::error!(
            lease_ms = config.read_lease.duration.as_millis() as u64,
            "UNSAFE TEST SWITCH --unsafe-lease-skip-safety-checks: the lease length is not \
             checked and clock anomalies are ignored; linearizable reads may be stale"
        );
    }
    if let Some(f) = &config.test_clock_offset_file {
        tracing::warn!(file = %f.display(), "test switch: the lease clock is offset by this file");
    }

    let env = LoopEnv::system(
        config.test_clock_offset_file.clone(),
        transport.clone(),
        shared.started.elapsed(),
        tx.clone(),
    );
    let snapshot_files = opened.snapshots.clone();
    let raft_loop = RaftLoop::new(opened, shared.clone(), rx, env);
    let raft_thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| raft_loop.run())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // The log or disk failed: continuing could lose acknowledged writes.
                    tracing::error!("raft loop failed, stopping: {e}");
                    std::process::exit(1);
                }
                Err(_) => {
                    // Without the loop nothing commits or applies: a process that stays up
                    // would only answer "stopped". Exit, so the supervisor restarts the member.
                    tracing::error!("raft loop panicked, stopping");
                    std::process::exit(EXIT_PANIC);
                }
            }
        })
        .context("starting the raft thread")?;

    let _ = member.set(shared.clone());
    let node = NodeHandle::new(shared.clone(), tx.clone());
    tokio::spawn(crate::consensus::cluster_version::monitor(
        node.clone(),
        dialing_for_versions,
        stopped(stop_rx.clone()),
    ));
    for l in peer_listeners {
        let svc = PeerServer::new(PeerService::new(
            tx.clone(),
            shared.clone(),
            snapshot_files.clone(),
        ))
        .max_decoding_message_size(MAX_PEER_MESSAGE);
        let stop = stopped(stop_rx.clone());
        let tls = peer_tls.clone();
        servers.spawn(async move {
            let router = tonic::transport::Server::builder().add_service(svc);
            serve(router, l, tls, stop).await.context("peer server")
        });
    }
    for l in client_listeners {
        let kv = PbKvServer::new(KvService::new(node.clone()))
            .max_decoding_message_size(config.max_request_bytes + GRPC_OVERHEAD);
        let admin = AdminServer::new(AdminService::new(node.clone()));
        let cluster = PbClusterServer::new(ClusterService::new(node.clone()));
        let maintenance = PbMaintenanceServer::new(MaintenanceService::new(node.clone()));
        let lease = PbLeaseServer::new(KeyLeaseService::new(node.clone()));
        let auth = crate::etcd_auth_proto::etcdserverpb::auth_server::AuthServer::new(
            crate::api::auth::AuthService::new(node.clone()),
        );
        let watch = PbWatchServer::new(WatchService::new(
            node.clone(),
            config.watch_progress_interval,
        ));
        let stop = stopped(stop_rx.clone());
        let max_streams = config.max_concurrent_streams;
        let tls = client_tls.clone();
        servers.spawn(async move {
            let router = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(max_streams))
                .add_service(kv)
                .add_service(admin)
                .add_service(cluster)
                .add_service(maintenance)
                .add_service(watch)
                .add_service(lease)
                .add_service(auth);
            serve(router, l, tls, stop).await.context("client server")
        });
    }

    let publisher = tokio::spawn(publish_attributes(node.clone()));
    let compactor = tokio::spawn(crate::compactor::run(node.clone(), config.auto_compaction));
    let outcome = tokio::select! {
        _ = termination() => Ok(()),
        _ = removed_rx.wait_for(|r| *r) => {
            // Let the removal's commit reach the others before going (as etcd does).
            tokio::time::sleep(config.heartbeat_interval * 10).await;
            tracing::warn!("stopping: this member was removed from the cluster");
            Ok(())
        }
        _ = restart_rx.wait_for(|r| *r) => {
            tracing::warn!("stopping to be restarted (force-new-cluster on the next start)");
            Ok(())
        }
        Some(r) = servers.join_next() => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("a server stopped unexpectedly")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a server task failed: {e}")),
        },
    };
    publisher.abort();
    compactor.abort();
    hand_off_leadership(&node, &config).await;
    tracing::info!("shutting down: finishing in-flight requests");
    // The listeners close first (clients are told to go elsewhere; what they sent before is
    // served in full), and only then do proposals and reads refuse: a request the member took
    // is never answered "server stopped" while the Raft loop could still serve it.
    let _ = stop_tx.send(true);
    // In-flight requests finish (or time out) before the loop stops.
    let drained = tokio::time::timeout(config.request_timeout + SHUTDOWN_GRACE, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    shared.stopping.store(true, Ordering::Relaxed);
    if drained.is_err() {
        tracing::warn!("some requests did not finish in time");
    }
    let _ = tx.send(LoopMsg::Shutdown);
    let joined = tokio::task::spawn_blocking(move || raft_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::warn!("raft thread did not stop cleanly");
    }
    transport.shutdown();
    tracing::info!("stopped");
    outcome
}
