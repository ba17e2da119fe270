//! Opening a member's data directory: a new cluster is bootstrapped from `--initial-cluster`, an
//! existing data directory is restored from its latest snapshot plus the log.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use raft::RawNode;
use serde::{Deserialize, Serialize};

use crate::config::{ClusterState, Config};
use crate::consensus::log::{LogError, LogLimits, PersistBatch, RaftLog};
use crate::consensus::snapshot_files::{SnapshotFileError, SnapshotFiles};
use crate::replicated::member::{cluster_id, Member};
use crate::replicated::state_machine::{SnapshotError, StateMachine};
use metastore_mvcc::{DiskValues, Store, ValuesIn};
use raft::eraftpb::SnapshotMetadata;

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
    /// The values database could not be opened.
    #[error("data dir values database: {0}")]
    Values(#[from] metastore_mvcc::MvccError),
    /// Snapshot contents failure.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The log and the snapshots disagree.
    #[error(
        "data dir {0}: the log was compacted past the newest snapshot; the data dir is damaged"
    )]
    MissingSnapshot(PathBuf),
    /// The member was removed from its cluster; its data must not be used again.
    #[error("data dir {0}: this member was removed from the cluster ({1}); it cannot rejoin with this data: add it again with MemberAdd and start it with an empty --data-dir")]
    Removed(PathBuf, String),
    /// `--initial-cluster-state existing` with an empty data dir, but the cluster was not asked.
    #[error("joining an existing cluster needs the member list from a peer")]
    NotJoined,
    /// `--force-new-cluster` cannot be used on this data dir.
    #[error("--force-new-cluster: {0}")]
    ForceNewCluster(String),
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
    write_durably(path, &bytes).map_err(io(path))
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

/// The raft-rs configuration of member `id`.
pub fn raft_config(cfg: &Config, id: u64, applied: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: cfg.election_ticks(),
        heartbeat_tick: 1,
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        // Committed entries reach the loop in bounded batches (a restart replaying a long log
        // keeps heartbeating and answering between them).
        max_committed_size_per_ready: MAX_APPLY_BATCH_BYTES,
        ..Default::default()
    }
}

/// Most entry bytes applied in one pass of the Raft loop.
pub const MAX_APPLY_BATCH_BYTES: u64 = 16 << 20;

/// Where a member keeps the values of its key space, under its data dir.
pub fn values_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("values.redb")
}

/// Where a member with configuration `cfg` keeps its values database, and the database's page
/// cache: what start-up opens and a received snapshot's database replaces.
pub fn values_home(cfg: &Config) -> crate::consensus::snapshot_transfer::ValuesHome {
    crate::consensus::snapshot_transfer::ValuesHome {
        path: values_path(&cfg.data_dir),
        cache_bytes: values_cache_bytes(cfg.quota_backend_bytes),
    }
}

/// The values database's own page cache for a quota: 1/64 of it, between 16 and 64 MiB. Values
/// are read by revision, one page each; the operating system's page cache, outside the member's
/// memory, keeps the hot part of the file (as it keeps etcd's bbolt file).
pub fn values_cache_bytes(quota_backend_bytes: u64) -> usize {
    (quota_backend_bytes / 64).clamp(16 << 20, 64 << 20) as usize
}

/// Where a member keeps its snapshot files, under its data dir.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap")
}

/// Index and term of the snapshot every new cluster starts from. Logs begin after it, so a member
/// that joins later always receives a snapshot (carrying the member list and configuration)
/// before any entry.
pub const BOOTSTRAP_INDEX: u64 = 1;

/// What a joining member learned from the cluster it joins (`--initial-cluster-state existing`).
#[derive(Debug, Clone)]
pub struct JoinInfo {
    /// Its member id, as assigned by MemberAdd.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The cluster's members as last seen.
    pub members: BTreeMap<u64, Member>,
}

/// Path of the marker written when this member is removed from its cluster.
pub fn removed_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("removed")
}

/// Where the admin API's force-new-cluster request is left for the next start.
pub fn force_new_cluster_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("force-new-cluster")
}

/// Replaces the file at `path` with `bytes` durably: written beside it, fsynced, renamed over it,
/// and the directory fsynced so the rename itself survives a crash; a crash leaves the old file
/// or the new one.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// True when the data dir has no identity yet (a member that never started here).
pub fn is_fresh(data_dir: &Path) -> bool {
    !data_dir.join("member").join("identity").exists()
}

/// The members `--initial-cluster` names, as a new cluster's state holds them.
pub fn initial_members(cfg: &Config) -> BTreeMap<u64, Member> {
    cfg.initial_cluster
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
        .collect()
}

/// What every founding member of a new cluster writes: `sm` as the snapshot at
/// [`BOOTSTRAP_INDEX`], its members the voters, and the log starting after it.
fn write_founding_snapshot(
    log: &mut RaftLog,
    snapshots: &SnapshotFiles,
    sm: &StateMachine,
) -> Result<(), BootstrapError> {
    let mut meta = SnapshotMetadata::default();
    meta.index = BOOTSTRAP_INDEX;
    meta.term = BOOTSTRAP_INDEX;
    meta.mut_conf_state().voters = sm.members.keys().copied().collect();
    snapshots.write(&meta, |w| {
        sm.write_snapshot(w, ValuesIn::Body)
            .map_err(|e| e.to_string())
    })?;
    log.persist(PersistBatch {
        snapshot: Some(meta),
        ..Default::default()
    })?;
    Ok(())
}

/// Creates the data directory of a founding member of a new cluster whose state is `sm`
/// (`snapshot restore`): `sm` must already carry the new cluster's id and members. The member
/// then starts from it with the same flags, as from any new data directory.
pub fn create_restored(cfg: &Config, sm: &StateMachine) -> Result<Identity, BootstrapError> {
    let member_dir = cfg.data_dir.join("member");
    fs::create_dir_all(&member_dir).map_err(io(&member_dir))?;
    let mut log = RaftLog::open_with(
        &member_dir.join("wal"),
        LogLimits::for_quota(cfg.quota_backend_bytes),
    )?;
    let snapshots = SnapshotFiles::open(&snapshot_dir(&cfg.data_dir))?;
    write_founding_snapshot(&mut log, &snapshots, sm)?;
    log.sync()?;
    let id = Identity {
        member_id: cfg.member_id,
        name: cfg.name.clone(),
        cluster_id: sm.cluster_id,
        bootstrap_members: sm.members.clone(),
    };
    write_identity(&member_dir.join("identity"), &id)?;
    Ok(id)
}

/// Opens or creates the member's data directory. A joining member passes what it learned from
/// the cluster; a new cluster's members bootstrap from `--initial-cluster`.
pub fn open(
    cfg: &Config,
    join: Option<JoinInfo>,
    logger: &slog::Logger,
) -> Result<Opened, BootstrapError> {
    let member_dir = cfg.data_dir.join("member");
    fs::create_dir_all(&member_dir).map_err(io(&member_dir))?;
    let marker = removed_marker(&cfg.data_dir);
    if let Ok(text) = fs::read_to_string(&marker) {
        return Err(BootstrapError::Removed(
            cfg.data_dir.clone(),
            text.trim().to_string(),
        ));
    }
    let mut log = RaftLog::open_with(
        &member_dir.join("wal"),
        LogLimits::for_quota(cfg.quota_backend_bytes),
    )?;
    let snapshots = SnapshotFiles::open(&snapshot_dir(&cfg.data_dir))?;
    snapshots.remove_leftovers()?;
    // A values database received with the snapshot this member starts from, if a crash came
    // before it replaced the old one.
    let home = values_home(cfg);
    home.settle_pending(snapshots.newest()?)
        .map_err(io(&member_dir))?;
    let values = DiskValues::open(&home.path, home.cache_bytes)?;
    let identity_path = member_dir.join("identity");

    let identity = match read_identity(&identity_path)? {
        Some(id) => {
            // A member restarted from its data dir is who the data dir says, whatever the
            // bootstrap flags; but a new-cluster member's flags must still describe it.
            let wrong = match cfg.cluster_state {
                ClusterState::New => id.member_id != cfg.member_id,
                ClusterState::Existing => id.name != cfg.name,
            };
            if wrong {
                return Err(BootstrapError::WrongMember {
                    path: cfg.data_dir.clone(),
                    found: id.member_id,
                    want: cfg.member_id,
                });
            }
            id
        }
        None if cfg.cluster_state == ClusterState::Existing => {
            let join = join.ok_or(BootstrapError::NotJoined)?;
            let id = Identity {
                member_id: join.member_id,
                name: cfg.name.clone(),
                cluster_id: join.cluster_id,
                bootstrap_members: join.members,
            };
            write_identity(&identity_path, &id)?;
            tracing::info!(
                member = format_args!("{:x}", id.member_id),
                cluster = format_args!("{:x}", id.cluster_id),
                "joining: created data dir {}",
                cfg.data_dir.display()
            );
            id
        }
        None => {
            let members = initial_members(cfg);
            let id = Identity {
                member_id: cfg.member_id,
                name: cfg.name.clone(),
                cluster_id: cluster_id(&members.keys().copied().collect::<Vec<_>>()),
                bootstrap_members: members.clone(),
            };
            if log.is_blank() {
                let sm = StateMachine::bootstrap(id.cluster_id, members);
                write_founding_snapshot(&mut log, &snapshots, &sm)?;
            }
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
    let latest = snapshots.open_latest()?;

    let (state, applied) = match latest {
        Some((meta, body, len)) => {
            if meta.index > log.hard_state().commit {
                if raft::Storage::term(&log, meta.index).ok() == Some(meta.term) {
                    // A local snapshot of applied entries: the commit index is persisted lazily,
                    // so it may lag the snapshot, but the log holds the snapshot's entry and
                    // every durable entry after it. Keep them: replacing the log here would lose
                    // entries this member already acknowledged.
                    let mut hs = log.hard_state().clone();
                    hs.commit = meta.index;
                    log.persist(PersistBatch {
                        hard_state: Some(hs),
                        ..Default::default()
                    })?;
                } else {
                    // Crash between saving a received snapshot and replacing the log: finish it.
                    log.persist(PersistBatch {
                        snapshot: Some(meta.clone()),
                        ..Default::default()
                    })?;
                }
            }
            let index = meta.index;
            log.set_snapshot(meta);
            // Streamed from the file: the state is built once, never copied.
            let into = Store::on_disk(values.fresh_handle()?);
            (StateMachine::read_snapshot(body, len, into)?, index)
        }
        None => {
            if log.truncated_index() > 0 {
                return Err(BootstrapError::MissingSnapshot(cfg.data_dir.clone()));
            }
            (
                StateMachine::bootstrap_in(
                    Store::on_disk(values.fresh_handle()?),
                    identity.cluster_id,
                    identity.bootstrap_members.clone(),
                ),
                0,
            )
        }
    };

    let requested = force_new_cluster_marker(&cfg.data_dir);
    if cfg.force_new_cluster || requested.exists() {
        force_new_cluster(&mut log, &state, identity.member_id)?;
        // The removals are durable: a restart must not force again (members added since would
        // be removed).
        if requested.exists() {
            fs::remove_file(&requested).map_err(io(&requested))?;
        }
    }
    sweep_in_background(state.store.clone());
    let rc = raft_config(cfg, identity.member_id, applied);
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

/// `--force-new-cluster`: removals of every other member are appended to the log and committed
/// with everything before them, so the member replays its log, then the removals, and runs as
/// the only voter. Unlike etcd, entries after the persisted commit index are kept, not dropped:
/// the commit index is persisted lazily here, so it may lag entries this member acknowledged
/// (an entry that was never committed had no acknowledged client: applying it is allowed).
/// Refused for a learner (it may lack committed entries).
fn force_new_cluster(
    log: &mut RaftLog,
    state: &StateMachine,
    me: u64,
) -> Result<(), BootstrapError> {
    let cs = log.conf_state().clone();
    if !cs.voters.contains(&me) && !cs.voters_outgoing.contains(&me) {
        return Err(BootstrapError::ForceNewCluster(
            "this member is not a voter; recover from a voter's data dir".into(),
        ));
    }
    let others: std::collections::BTreeSet<u64> = cs
        .voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .copied()
        .chain(state.members.keys().copied())
        .filter(|id| *id != me)
        .collect();
    let mut hs = log.hard_state().clone();
    hs.commit = raft::Storage::last_index(log)?.max(hs.commit);
    let entries: Vec<raft::eraftpb::Entry> = others
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let cc = crate::replicated::membership::conf_change(
                &crate::replicated::membership::MemberChange::Remove(*id),
            )?;
            let mut e = raft::eraftpb::Entry::default();
            e.set_entry_type(raft::eraftpb::EntryType::EntryConfChangeV2);
            e.term = hs.term;
            e.index = hs.commit + 1 + i as u64;
            e.data = protobuf::Message::write_to_bytes(&cc)
                .map_err(|e| tracing::error!("encoding a removal: {e}"))
                .ok()?
                .into();
            Some(e)
        })
        .collect();
    hs.commit += entries.len() as u64;
    tracing::warn!(
        removed = ?others.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(),
        commit = hs.commit,
        "--force-new-cluster: restarting as the only voter with every committed entry"
    );
    log.persist(PersistBatch {
        entries,
        hard_state: Some(hs),
        ..Default::default()
    })?;
    Ok(())
}

/// Deletes, off the Raft thread, stored values that `view` does not reference (left by a crash
/// between a compaction and the next snapshot, or by a snapshot install).
pub fn sweep_in_background(view: Store) {
    let spawned = std::thread::Builder::new()
        .name("values-sweep".into())
        .spawn(move || {
            // It reads the whole values database: only with CPU the member does not need.
            crate::consensus::priority::lower_this_threads_priority();
            match view.sweep_unreferenced() {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed unreferenced stored values"),
                Err(e) => tracing::warn!("sweeping stored values failed: {e}"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("could not start the values sweep: {e}");
    }
}
