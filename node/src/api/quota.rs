//! The storage quota (`--quota-backend-bytes`), shared by every service that adds data: a write
//! that would take the store past it is refused, and the NOSPACE alarm is raised through Raft
//! (as etcd does) so every member refuses such writes until space is freed (compaction) and the
//! alarm is disarmed.

use metastore_mvcc::MvccError;
use tonic::Status;

use crate::api::status::mvcc_status;
use crate::node::NodeHandle;
use crate::replicated::command::Command;
use crate::replicated::state_machine::{StateMachine, ALARM_NOSPACE};

/// Bytes a lease grant is charged against the quota.
pub const LEASE_GRANT_BYTES: usize = StateMachine::LEASE_BYTES as usize;

/// The quota of one member.
#[derive(Clone)]
pub struct Quota {
    node: NodeHandle,
}

impl Quota {
    /// The quota `node` was configured with.
    pub fn new(node: NodeHandle) -> Self {
        Quota { node }
    }

    /// Admits a write adding `adds` bytes, or refuses it with etcd's NOSPACE error and raises the
    /// alarm.
    pub async fn admit(&self, adds: usize) -> Result<(), Status> {
        let node = &self.node;
        let quota = node.shared.config.quota_backend_bytes;
        let size = node.shared.state.read().held_bytes();
        if size + adds as u64 <= quota {
            return Ok(());
        }
        let alarm = Command::Alarm(etcd_client::proto::PbAlarmRequest {
            action: 1,
            member_id: node.shared.member_id(),
            alarm: ALARM_NOSPACE,
        });
        if let Err(e) = node.propose(alarm).await {
            tracing::warn!("cannot raise the NOSPACE alarm: {e}");
        }
        Err(mvcc_status(&MvccError::NoSpace))
    }
}
