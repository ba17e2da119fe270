//! `metastore-operator`: reconciles MetaStore resources. Serves /metrics and /healthz, and with
//! `--leader-election` only the replica holding the Lease reconciles.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use metastore_operator::constants::{
    LEADER_LEASE_GRACE_SECONDS, LEADER_LEASE_SECONDS, OPERATOR_NAME,
};
use metastore_operator::context::Context;
use metastore_operator::controller;
use metastore_operator::metrics::Metrics;

/// Command-line flags (also from METASTORE_OPERATOR_* environment variables).
#[derive(Parser, Debug)]
#[command(
    name = "metastore-operator",
    version,
    about = "Runs MetaStore clusters on Kubernetes"
)]
struct Flags {
    /// Kubeconfig file (default: in-cluster config, then ~/.kube/config).
    #[arg(long, env = "METASTORE_OPERATOR_KUBECONFIG")]
    kubeconfig: Option<String>,
    /// Only watch this namespace (default: all).
    #[arg(long, env = "METASTORE_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Address for /metrics and /healthz.
    #[arg(
        long,
        env = "METASTORE_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Reconcile only while holding a Lease, so several replicas can run.
    #[arg(long, env = "METASTORE_OPERATOR_LEADER_ELECTION", default_value_t = false,
        action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_election: bool,
    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "METASTORE_OPERATOR_LEASE_NAMESPACE",
        default_value = "default"
    )]
    lease_namespace: String,
    /// This replica's identity (default: $POD_NAME or the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log filter.
    #[arg(long, env = "METASTORE_OPERATOR_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

async fn client(flags: &Flags) -> anyhow::Result<Client> {
    match &flags.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {path}"))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {path}"))?;
            Client::try_from(cfg).context("building the Kubernetes client")
        }
        None => Client::try_default()
            .await
            .context("no kubeconfig: not in a cluster and ~/.kube/config is unusable"),
    }
}

async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    axum::serve(l, app).await.context("metrics server")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&flags.log_level))
        .with_writer(std::io::stderr)
        .init();
    let client = client(&flags).await?;
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let http = tokio::spawn(serve_http(flags.metrics_addr, metrics.clone()));
    let identity = flags
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok());
    let ctx = Arc::new(Context::new(client.clone(), metrics, identity.clone()));

    if flags.leader_election {
        let mut builder =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), OPERATOR_NAME)
                .with_namespace(flags.lease_namespace.clone())
                .with_duration(LEADER_LEASE_SECONDS)
                .with_grace(LEADER_LEASE_GRACE_SECONDS);
        if let Some(id) = &identity {
            builder = builder.with_identity(id.clone());
        }
        let manager = builder.build().await.context("leader election")?;
        let (mut leading, _task) = manager.watch().await;
        tracing::info!("waiting to become the leader");
        while !*leading.borrow_and_update() {
            leading.changed().await.context("leader election stopped")?;
        }
        tracing::info!("leading: reconciling");
        tokio::select! {
            _ = controller::run(ctx, flags.namespace.clone()) => {}
            _ = leading.wait_for(|l| !*l) => {
                // Another replica may take over at any moment: stop acting at once.
                anyhow::bail!("lost leadership");
            }
            r = http => anyhow::bail!("metrics server stopped: {r:?}"),
        }
    } else {
        tokio::select! {
            _ = controller::run(ctx, flags.namespace.clone()) => {}
            r = http => anyhow::bail!("metrics server stopped: {r:?}"),
        }
    }
    tracing::info!("stopped");
    Ok(())
}
