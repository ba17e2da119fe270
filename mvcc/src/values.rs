//! Where the key space keeps its values: inline in the in-memory index (tests, the simulation),
//! or on disk in a [`redb`] database keyed by revision, like etcd's bbolt `key` bucket, so a
//! member's memory holds the index and not the data.
//!
//! Values on disk are immutable once written (a revision's value never changes), so:
//! - writes collect in memory and reach the database in one non-durable commit per applied batch
//!   ([`Values::commit`]); a durable commit ([`DiskValues::sync`]) precedes every local snapshot;
//! - a copy of the store (a view) pins the database as of the last commit (a redb read
//!   transaction), so it keeps reading the values it references while the live store goes on;
//! - values compacted away are deleted only once a snapshot taken after the compaction is durable
//!   ([`Values::release_deletes`]): the previous snapshot, from which a restart may begin, still
//!   references them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};

use crate::image::{Image, ImageError, ImageState, ImageableFile};
use crate::MvccError;

/// A revision as a database key: `main` then `sub`, big-endian, so keys sort in revision order.
pub(crate) type RevKey = [u8; 16];

/// The database key of revision `main`/`sub`.
pub(crate) fn rev_key(main: i64, sub: i64) -> RevKey {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&main.to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

// Keys as references: redb compares them with one memcmp (arrays byte by byte).
const VALUES: TableDefinition<&RevKey, &[u8]> = TableDefinition::new("values");

/// Bytes of written values gathered before they are committed to the database when a store is
/// rebuilt from a snapshot (bounds the memory a restore holds).
const RESTORE_FLUSH_BYTES: u64 = 4 << 20;

/// A version's value as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// The bytes themselves.
    Inline(Bytes),
    /// Stored on disk under the version's revision; its length.
    Stored(u32),
}

impl Value {
    /// Length of the value in bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Value::Inline(b) => b.len(),
            Value::Stored(n) => *n as usize,
        }
    }
}

/// Where a store's values live.
#[derive(Debug, Clone, Default)]
pub(crate) enum Values {
    /// In the index.
    #[default]
    Memory,
    /// In a database.
    Disk(DiskValues),
}

/// A database of values, shared by the live store and its views.
pub struct DiskValues {
    db: Arc<Database>,
    /// Images of the database's file are taken through this (`None`: not in a file).
    image: Option<Arc<ImageState>>,
    /// The values table as of the last commit.
    table: Arc<ReadOnlyTable<&'static RevKey, &'static [u8]>>,
    /// Written since the last commit.
    pending: BTreeMap<RevKey, Bytes>,
    /// Bytes in `pending`.
    pending_bytes: u64,
    /// Revisions compacted away, by compaction sequence, not yet deletable.
    deferred: Vec<(u64, Vec<RevKey>)>,
    /// Revisions to delete at the next commit.
    pub(crate) ready: Vec<RevKey>,
    /// Compactions seen so far (their sequence numbers).
    compactions: u64,
}

/// A copy is a read view: it reads what the original reads, but does not carry the deletions the
/// original owes the database (only the live store commits them).
impl Clone for DiskValues {
    fn clone(&self) -> Self {
        DiskValues {
            db: self.db.clone(),
            image: self.image.clone(),
            table: self.table.clone(),
            pending: self.pending.clone(),
            pending_bytes: self.pending_bytes,
            deferred: Vec::new(),
            ready: Vec::new(),
            compactions: self.compactions,
        }
    }
}

impl std::fmt::Debug for DiskValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskValues")
            .field("pending", &self.pending.len())
            .field("deferred", &self.deferred.len())
            .field("compactions", &self.compactions)
            .finish()
    }
}

fn storage(e: impl std::fmt::Display) -> MvccError {
    MvccError::Storage(e.to_string())
}

impl DiskValues {
    /// Opens (or creates) the values database at `path` with a page cache of `cache_bytes`; its
    /// file can be imaged ([`ValuesDatabase::image`]).
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, MvccError> {
        let at = |e: &dyn std::fmt::Display| storage(format!("{}: {e}", path.display()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| at(&e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let (backend, image) = ImageableFile::new(file, dir).map_err(|e| at(&e))?;
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)
            .map_err(|e| at(&e))?;
        Self::from_database(db, Some(image))
    }

    /// A values database in memory (tests).
    pub fn in_memory() -> Result<Self, MvccError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Self::from_database(db, None)
    }

    fn from_database(db: Database, image: Option<Arc<ImageState>>) -> Result<Self, MvccError> {
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(VALUES).map_err(storage)?;
        txn.commit().map_err(storage)?;
        ValuesDatabase {
            db: Arc::new(db),
            image,
        }
        .handle()
    }

    fn read_table(
        db: &Database,
    ) -> Result<ReadOnlyTable<&'static RevKey, &'static [u8]>, MvccError> {
        db.begin_read()
            .map_err(storage)?
            .open_table(VALUES)
            .map_err(storage)
    }

    /// The database alone, for a holder that reads only now and then: a `DiskValues` pins the
    /// database as of its last commit, and a pin held for long keeps every page freed since
    /// from being reused (the file grows).
    pub fn database(&self) -> ValuesDatabase {
        ValuesDatabase {
            db: self.db.clone(),
            image: self.image.clone(),
        }
    }

    /// A fresh handle on the same database with nothing pending: the target of a store rebuilt
    /// from a snapshot.
    pub fn fresh_handle(&self) -> Result<Self, MvccError> {
        self.database().handle()
    }
}

/// A values database without a pinned view (see [`DiskValues::database`]).
#[derive(Clone)]
pub struct ValuesDatabase {
    db: Arc<Database>,
    image: Option<Arc<ImageState>>,
}

impl ValuesDatabase {
    /// A handle reading the database as it is now, with nothing pending.
    pub fn handle(&self) -> Result<DiskValues, MvccError> {
        Ok(DiskValues {
            db: self.db.clone(),
            image: self.image.clone(),
            table: Arc::new(DiskValues::read_table(&self.db)?),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            deferred: Vec::new(),
            ready: Vec::new(),
            compactions: 0,
        })
    }

    /// A copy of the database's file as of a durable commit made now, read as a stream while
    /// the member goes on (see [`crate::image`]). It holds every value committed before the call
    /// and still there when the image begins.
    pub fn image(&self) -> Result<Image, ImageError> {
        let state = self.image.clone().ok_or(ImageError::NotAFile)?;
        sync(&self.db).map_err(|e| ImageError::Io(e.to_string()))?;
        Image::begin(state)
    }
}

/// A durable commit of everything committed so far, which records the allocator state (opening
/// after a crash, or an image of the file, then does not walk the whole file).
fn sync(db: &Database) -> Result<(), MvccError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    txn.set_quick_repair(true);
    txn.commit().map_err(storage)
}

impl DiskValues {
    /// Makes every commit so far durable (an empty commit with immediate durability).
    pub fn sync(&self) -> Result<(), MvccError> {
        sync(&self.db)
    }

    /// How many values the database holds as of the last commit (one read of a table header).
    pub(crate) fn count(&self) -> Result<u64, MvccError> {
        use redb::ReadableTableMetadata as _;
        self.table.len().map_err(storage)
    }

    pub(crate) fn get(&self, key: &RevKey) -> Result<Bytes, MvccError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        match self.table.get(key).map_err(storage)? {
            Some(g) => Ok(Bytes::copy_from_slice(g.value())),
            None => Err(MvccError::Storage(format!(
                "the value of revision {}/{} is missing from the values database",
                i64::from_be_bytes(key[..8].try_into().unwrap_or_default()),
                i64::from_be_bytes(key[8..].try_into().unwrap_or_default()),
            ))),
        }
    }

    /// One non-durable commit of `inserts` and `removes` (the log replays them after a crash).
    fn write(
        db: &Database,
        inserts: &BTreeMap<RevKey, Bytes>,
        removes: &[RevKey],
    ) -> Result<(), MvccError> {
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        {
            let mut t = txn.open_table(VALUES).map_err(storage)?;
            for (k, v) in inserts {
                t.insert(k, v.as_ref()).map_err(storage)?;
            }
            for k in removes {
                t.remove(k).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Keeps `bytes` under `key` until the next commit.
    pub(crate) fn put(&mut self, key: RevKey, bytes: Bytes) {
        self.pending_bytes += bytes.len() as u64;
        self.pending.insert(key, bytes);
    }

    pub(crate) fn commit(&mut self) -> Result<(), MvccError> {
        if self.pending.is_empty() && self.ready.is_empty() {
            return Ok(());
        }
        Self::write(&self.db, &self.pending, &self.ready)?;
        self.pending.clear();
        self.pending_bytes = 0;
        self.ready.clear();
        self.table = Arc::new(Self::read_table(&self.db)?);
        Ok(())
    }

    /// Feeds `f` the value of every revision in `keep` (sorted), in revision order, from one
    /// ordered scan of the pinned table (sequential reads, not one lookup per value). Fails when
    /// one is missing.
    fn scan(
        &self,
        keep: &[RevKey],
        mut f: impl FnMut(&RevKey, &[u8]) -> Result<(), MvccError>,
    ) -> Result<(), MvccError> {
        let (Some(first), Some(last)) = (keep.first(), keep.last()) else {
            return Ok(());
        };
        let mut wanted = keep.iter().peekable();
        for item in self.table.range::<&RevKey>(first..=last).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let k = k.value();
            match wanted.peek() {
                Some(w) if *w == k => {
                    f(k, v.value())?;
                    wanted.next();
                }
                _ => {}
            }
            if wanted.peek().is_none() {
                break;
            }
        }
        // Values written since the pin (none for a view taken after a commit).
        for k in wanted {
            f(k, &self.get(k)?)?;
        }
        Ok(())
    }

    /// Deletes, in chunks of separate commits, every stored value at or below `up_to` (a main
    /// revision) that `keep` does not name (sorted): what a crash or a snapshot install left
    /// behind. Values above `up_to` may belong to entries not yet replayed, and stay.
    fn sweep(&self, keep: &[RevKey], up_to: i64) -> Result<u64, MvccError> {
        let limit = rev_key(up_to, i64::MAX);
        let mut removed = 0u64;
        let mut from = rev_key(0, 0);
        loop {
            // Collect one chunk from a read view, then delete it in one commit.
            let table = Self::read_table(&self.db)?;
            let mut doomed = Vec::new();
            let mut last = None;
            for item in table.range::<&RevKey>(&from..=&limit).map_err(storage)? {
                let (k, _) = item.map_err(storage)?;
                let k = *k.value();
                last = Some(k);
                if keep.binary_search(&k).is_err() {
                    doomed.push(k);
                }
                if doomed.len() >= 10_000 {
                    break;
                }
            }
            drop(table);
            if !doomed.is_empty() {
                Self::write(&self.db, &BTreeMap::new(), &doomed)?;
                removed += doomed.len() as u64;
            }
            match last {
                Some(k) if doomed.len() >= 10_000 => {
                    from = k;
                }
                _ => return Ok(removed),
            }
        }
    }
}

/// Values gathered for one commit of a bulk load (a received snapshot's values section): their
/// revisions and their bytes end to end, so a batch is two allocations, reused.
#[derive(Debug, Default)]
pub(crate) struct ValueBatch {
    keys: Vec<RevKey>,
    ends: Vec<usize>,
    data: Vec<u8>,
}

impl ValueBatch {
    /// Appends the value of `key`, whose `len` bytes `fill` writes.
    pub(crate) fn push(
        &mut self,
        key: RevKey,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), MvccError>,
    ) -> Result<(), MvccError> {
        let start = self.data.len();
        self.data.resize(start + len, 0);
        fill(&mut self.data[start..])?;
        self.keys.push(key);
        self.ends.push(self.data.len());
        Ok(())
    }

    /// True when the batch holds enough for one commit.
    pub(crate) fn is_full(&self) -> bool {
        self.data.len() >= BULK_BATCH_BYTES || self.keys.len() >= BULK_BATCH_VALUES
    }

    /// True when the batch holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.ends.clear();
        self.data.clear();
    }
}

/// Bytes of values a bulk load gathers per commit (larger commits measured slower: the
/// transaction's dirty pages outgrow the cache).
const BULK_BATCH_BYTES: usize = RESTORE_FLUSH_BYTES as usize;

/// Values a bulk load gathers per commit at most (empty values take no bytes).
const BULK_BATCH_VALUES: usize = 64 * 1024;

/// Writes the batches `full` delivers, one non-durable commit each, and hands every written batch
/// back through `empty` for reuse; returns when `full` closes. Runs beside the decoder, so
/// decoding the next batch overlaps writing this one (the database takes one writer at a time).
pub(crate) fn write_batches(
    db: &Database,
    full: std::sync::mpsc::Receiver<ValueBatch>,
    empty: std::sync::mpsc::SyncSender<ValueBatch>,
) -> Result<(), MvccError> {
    for mut batch in full {
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None).map_err(storage)?;
        {
            let mut t = txn.open_table(VALUES).map_err(storage)?;
            let mut start = 0;
            for (k, end) in batch.keys.iter().zip(&batch.ends) {
                t.insert(k, &batch.data[start..*end]).map_err(storage)?;
                start = *end;
            }
        }
        txn.commit().map_err(storage)?;
        batch.clear();
        // The decoder may be done and gone: the batch is simply dropped.
        let _ = empty.try_send(batch);
    }
    Ok(())
}

impl Values {
    /// The bytes of a value.
    pub(crate) fn load(&self, main: i64, sub: i64, v: &Value) -> Result<Bytes, MvccError> {
        match (v, self) {
            (Value::Inline(b), _) => Ok(b.clone()),
            (Value::Stored(_), Values::Disk(d)) => d.get(&rev_key(main, sub)),
            (Value::Stored(_), Values::Memory) => Err(MvccError::Storage(
                "a stored value in a store without a values database".into(),
            )),
        }
    }

    /// Keeps a newly written value; returns what the index holds for it.
    pub(crate) fn store(&mut self, main: i64, sub: i64, bytes: Bytes) -> Value {
        match self {
            Values::Memory => Value::Inline(bytes),
            Values::Disk(d) => {
                let len = bytes.len() as u32;
                d.put(rev_key(main, sub), bytes);
                Value::Stored(len)
            }
        }
    }

    /// See [`DiskValues::scan`].
    pub(crate) fn scan(
        &self,
        keep: &[RevKey],
        f: impl FnMut(&RevKey, &[u8]) -> Result<(), MvccError>,
    ) -> Result<(), MvccError> {
        match self {
            Values::Memory => Ok(()),
            Values::Disk(d) => d.scan(keep, f),
        }
    }

    /// Forgets the values of compacted versions, once the snapshots that may still need them
    /// are superseded (see the module doc).
    pub(crate) fn compacted(&mut self, revs: Vec<RevKey>) {
        if let Values::Disk(d) = self {
            d.compactions += 1;
            if !revs.is_empty() {
                let seq = d.compactions;
                d.deferred.push((seq, revs));
            }
        }
    }

    /// The compaction sequence reached: a snapshot taken now covers compactions up to it.
    pub(crate) fn compaction_mark(&self) -> u64 {
        match self {
            Values::Memory => 0,
            Values::Disk(d) => d.compactions,
        }
    }

    /// A snapshot covering compactions up to `mark` is durable: their values may go.
    pub(crate) fn release_deletes(&mut self, mark: u64) {
        if let Values::Disk(d) = self {
            let (now, later): (Vec<_>, Vec<_>) =
                d.deferred.drain(..).partition(|(seq, _)| *seq <= mark);
            d.deferred = later;
            d.ready.extend(now.into_iter().flat_map(|(_, revs)| revs));
        }
    }

    /// Writes pending values and deletions to the database (not durably).
    pub(crate) fn commit(&mut self) -> Result<(), MvccError> {
        match self {
            Values::Memory => Ok(()),
            Values::Disk(d) => d.commit(),
        }
    }

    /// Commits when enough is pending (a restore's bounded memory).
    pub(crate) fn commit_if_large(&mut self) -> Result<(), MvccError> {
        match self {
            Values::Disk(d) if d.pending_bytes >= RESTORE_FLUSH_BYTES => d.commit(),
            _ => Ok(()),
        }
    }

    /// The database, when values are on disk.
    pub(crate) fn disk(&self) -> Option<&DiskValues> {
        match self {
            Values::Memory => None,
            Values::Disk(d) => Some(d),
        }
    }

    /// The database to bulk-load into, when values are on disk.
    pub(crate) fn bulk_target(&self) -> Option<Arc<Database>> {
        self.disk().map(|d| d.db.clone())
    }

    /// Reads the database as it is now (after a bulk load wrote to it directly).
    pub(crate) fn refresh(&mut self) -> Result<(), MvccError> {
        if let Values::Disk(d) = self {
            d.table = Arc::new(DiskValues::read_table(&d.db)?);
        }
        Ok(())
    }

    /// See [`DiskValues::sweep`].
    pub(crate) fn sweep(&self, keep: &[RevKey], up_to: i64) -> Result<u64, MvccError> {
        match self {
            Values::Memory => Ok(0),
            Values::Disk(d) => d.sweep(keep, up_to),
        }
    }
}
