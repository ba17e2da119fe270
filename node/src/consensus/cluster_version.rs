//! The leader's watch over member versions (etcd's `monitorClusterVersions`): every few seconds
//! the leader asks each member for its version over the peer port and, once every member
//! answers with a version above the cluster version, sets the lowest of them through Raft. A
//! member that does not answer keeps the cluster version where it is: it may be the old one.

use std::time::Duration;

use crate::consensus::transport::{peer_version, Dialing};
use crate::node::NodeHandle;
use crate::replicated::command::Command;
use crate::replicated::version::{member_version, next_cluster_version, Version};

/// How often the leader looks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How often while the cluster version is below this member's (a new cluster, an upgrade):
/// requests that need the newer version wait for it.
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(300);
/// How long one member has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs until `stop` resolves: on the leader, raises the cluster version when every member
/// runs a newer one.
pub async fn monitor(
    node: NodeHandle,
    dialing: Dialing,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let behind = node.shared.state.read().cluster_version() < member_version();
        let pause = if behind {
            CATCH_UP_INTERVAL
        } else {
            CHECK_INTERVAL
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if let Some(next) = decide(&node, &dialing).await {
            match node.propose(Command::ClusterVersion(next)).await {
                Ok(_) => {
                    tracing::info!(version = %next, "every member runs {next} or newer: cluster version raised")
                }
                Err(e) => tracing::debug!(version = %next, "raising the cluster version: {e}"),
            }
        }
    }
}

/// The cluster version to set now, if this member leads and every member answers above it.
async fn decide(node: &NodeHandle, dialing: &Dialing) -> Option<Version> {
    let sh = &node.shared;
    let me = sh.member_id();
    if sh.status.read().leader_id != me {
        return None;
    }
    let (current, members) = {
        let sm = sh.state.read();
        let members: Vec<(u64, Option<String>)> = sm
            .members
            .values()
            .map(|m| (m.id, m.peer_urls.first().cloned()))
            .collect();
        (sm.cluster_version(), members)
    };
    let mut versions = Vec::with_capacity(members.len());
    for (id, url) in members {
        let v = if id == me {
            Some(member_version())
        } else if let Some(url) = url {
            match tokio::time::timeout(ASK_TIMEOUT, peer_version(&url, dialing)).await {
                Ok(Ok(v)) => Some(v),
                Ok(Err(e)) => {
                    tracing::debug!(member = format_args!("{id:x}"), "version: {e}");
                    None
                }
                Err(_) => None,
            }
        } else {
            None
        };
        versions.push(v);
    }
    next_cluster_version(current, &versions)
}
