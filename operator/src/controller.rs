//! The controller: watches MetaStores and what they own, runs one reconcile (`reconcile.rs`, in
//! phases) per change or requeue, counts them in the metrics and backs off after failures; the
//! MetaStoreBackup controller (`backup_controller.rs`) runs beside it.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::constants::REQUEUE_AFTER_ERROR;
use crate::context::{Context, Error};
use crate::crd::MetaStore;

/// One reconcile of one MetaStore.
pub async fn reconcile(ms: Arc<MetaStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let r = crate::reconcile::run(&ms, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &r {
        ctx.metrics.failures.with_label_values(&[e.reason()]).inc();
    }
    r
}

/// Backs off after a failed reconcile.
pub fn error_policy(_ms: Arc<MetaStore>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("reconcile failed: {e}");
    Action::requeue(REQUEUE_AFTER_ERROR)
}

/// Runs the controller until shutdown, watching MetaStores (in `namespace`, or all) and the
/// objects they own.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (mss, sets, svcs): (Api<MetaStore>, Api<StatefulSet>, Api<Service>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let metastores = Controller::new(mss, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .owns(svcs, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(name = %obj.name, "reconciled"),
                Err(e) => tracing::debug!("controller: {e}"),
            }
        });
    futures::join!(metastores, crate::backup_controller::run(ctx, namespace));
}
