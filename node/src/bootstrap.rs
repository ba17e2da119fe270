//! Opening a member's data directory: a new cluster is bootstrapped from `--initial-cluster`, an
//! existing data directory is restored from its latest snapshot plus the log.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use raft::RawNode;
use serde::{Deserialize, Serialize};

use crate::config::{cluster_id, ClusterState, Config};
use crate::raft_log::{LogError, PersistBatch, RaftLog};
use crate::snapshot_files::{SnapshotFileError, SnapshotFiles};
use crate::state_machine::{Member, SnapshotError, StateMachine};

/// Who this data directory belongs to, fixed when it is first created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// Raft id of the member.
    pub member_id: u64,
    /// Name given at creation.
    pub name: String,
    /// Cluster id (0 until a joining member learns it).
    pub cluster_id: u64,
    /// The members the cluster was bootstrapped with (the state at index 0).
    pub bootstrap_members: BTreeMap<u64, Member>,
}

/// Why the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Filesystem failure.
    #[error("data dir {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The identity file is damaged.
    #[error("data dir identity {0}: damaged ({1})")]
    Identity(PathBuf, String),
    /// The data directory belongs to another member.
    #[error("data dir {path} belongs to member {found:x}, but the flags make this member {want:x}; use that member's flags or an empty --data-dir")]
    WrongMember {
        /// Data dir.
        path: PathBuf,
        /// Id in the data dir.
        found: u64,
        /// Id from the flags.
        want: u64,
    },
    /// Log failure.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Snapshot file failure.
    #[error(transparent)]
    SnapshotFile(#[from] SnapshotFileError),
    /// Snapshot contents failure.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The log and the snapshots disagree.
    #[error(
        "data dir {0}: the log was compacted past the newest snapshot; the data dir is damaged"
    )]
    MissingSnapshot(PathBuf),
    /// raft-rs refused the configuration or state.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

/// A member's storage, opened and ready to run.
pub struct Opened {
    /// The Raft node.
    pub raw: RawNode<RaftLog>,
    /// The state machine at `applied`.
    pub state: StateMachine,
    /// Index the state machine reflects.
    pub applied: u64,
    /// Snapshot directory.
    pub snapshots: SnapshotFiles,
    /// Identity of the data dir.
    pub identity: Identity,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootstrapError + '_ {
    move |source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_identity(path: &Path, id: &Identity) -> Result<(), BootstrapError> {
    let bytes =
        bincode::serialize(id).map_err(|e| BootstrapError::Identity(path.into(), e.to_string()))?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io(&tmp))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn read_identity(path: &Path) -> Result<Option<Identity>, BootstrapError> {
    match fs::read(path) {
        Ok(b) => bincode::deserialize(&b)
            .map(Some)
            .map_err(|e| BootstrapError::Identity(path.into(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// The raft-rs configuration of this member.
pub fn raft_config(cfg: &Config, applied: u64) -> raft::Config {
    raft::Config {
        id: cfg.member_id,
        election_tick: cfg.election_ticks(),
        heartbeat_tick: 1,
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        ..Default::default()
    }
}

/// Opens or creates the member's data directory.
pub fn open(cfg: &Config, logger: &slog::Logger) -> Result<Opened, BootstrapError> {
    let member_dir = cfg.data_dir.join("member");
    fs::create_dir_all(&member_dir).map_err(io(&member_dir))?;
    let mut log = RaftLog::open(&member_dir.join("wal"))?;
    let snapshots = SnapshotFiles::open(&member_dir.join("snap"))?;
    let identity_path = member_dir.join("identity");
    let latest = snapshots.load_latest()?;

    let identity = match read_identity(&identity_path)? {
        Some(id) => {
            if id.member_id != cfg.member_id {
                return Err(BootstrapError::WrongMember {
                    path: cfg.data_dir.clone(),
                    found: id.member_id,
                    want: cfg.member_id,
                });
            }
            id
        }
        None => {
            let bootstrap_members: BTreeMap<u64, Member> = cfg
                .initial_cluster
                .iter()
                .map(|m| {
                    (
                        m.id,
                        Member {
                            id: m.id,
                            name: m.name.clone(),
                            peer_urls: m.peer_urls.clone(),
                            client_urls: vec![],
                            is_learner: false,
                        },
                    )
                })
                .collect();
            let ids: Vec<u64> = bootstrap_members.keys().copied().collect();
            let new = cfg.cluster_state == ClusterState::New;
            if new && log.is_blank() {
                let mut cs = raft::eraftpb::ConfState::default();
                cs.voters = ids.clone();
                log.persist(PersistBatch {
                    conf_state: Some(cs),
                    ..Default::default()
                })?;
            }
            let id = Identity {
                member_id: cfg.member_id,
                name: cfg.name.clone(),
                cluster_id: if new { cluster_id(&ids) } else { 0 },
                bootstrap_members,
            };
            write_identity(&identity_path, &id)?;
            tracing::info!(
                member = format_args!("{:x}", id.member_id),
                cluster = format_args!("{:x}", id.cluster_id),
                "created data dir {}",
                cfg.data_dir.display()
            );
            id
        }
    };

    let (state, applied) = match &latest {
        Some(snap) => {
            let meta = snap.get_metadata();
            if meta.index > log.hard_state().commit {
                // Crash between saving a received snapshot and replacing the log: finish it now.
                log.persist(PersistBatch {
                    snapshot: Some(meta.clone()),
                    ..Default::default()
                })?;
            }
            log.set_snapshot(snap.clone());
            (StateMachine::from_snapshot(&snap.data)?, meta.index)
        }
        None => {
            if log.truncated_index() > 0 {
                return Err(BootstrapError::MissingSnapshot(cfg.data_dir.clone()));
            }
            (
                StateMachine::bootstrap(identity.cluster_id, identity.bootstrap_members.clone()),
                0,
            )
        }
    };

    let rc = raft_config(cfg, applied);
    rc.validate()?;
    let raw = RawNode::new(&rc, log, logger)?;
    Ok(Opened {
        raw,
        state,
        applied,
        snapshots,
        identity,
    })
}
