//! engine-eval: compare redb 4.x and fjall 3.x as the on-disk VALUE store of the
//! MetaStore MVCC key space (values keyed by 16-byte big-endian revision).
//!
//! Phases (mode=all):
//!  1. load N values in batches of B (non-durable), durable commit every 64 MiB + at end
//!  2. 200k random point gets, fresh read view every 100 gets
//!  3. hold old view; write 100k more; delete first half of all revisions; verify views
//!     (+ engine compaction: redb Database::compact / fjall major_compact)
//!  4. full ordered scan through a view
//!  5. close, reopen, read one value
//!
//! mode=load: only phase 1, printing `DURABLE <last_main>` after each durable commit
//! (used for the kill -9 test).  mode=verify: reopen after a crash and check that every
//! revision 2..=--expect-durable is present and correct.

use clap::{Parser, ValueEnum};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
enum EngineKind {
    Redb,
    Fjall,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
enum Mode {
    All,
    Load,
    Verify,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "redb vs fjall value-store evaluation for MetaStore")]
struct Args {
    #[arg(long, value_enum)]
    engine: EngineKind,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    values: u64,
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// block cache size (both engines), MiB
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// mode=verify: highest main revision reported durable before the crash
    #[arg(long, default_value_t = 0)]
    expect_durable: u64,
    /// redb: enable quick-repair (allocator state saved) on durable commits
    #[arg(long, default_value_t = false)]
    redb_quick_repair: bool,
    /// fjall: enable key-value separation (blob files) for values >= 1 KiB
    #[arg(long, default_value_t = false)]
    fjall_kv_sep: bool,
    /// point gets in phase 2
    #[arg(long, default_value_t = 200_000)]
    gets: u64,
    /// values appended in phase 3
    #[arg(long, default_value_t = 100_000)]
    extra: u64,
    /// skip the explicit engine compaction after deletes
    #[arg(long, default_value_t = false)]
    no_compact: bool,
}

const FIRST_MAIN: u64 = 2;
const DURABLE_EVERY: u64 = 64 * 1024 * 1024;
const POOL: usize = 4 * 1024 * 1024;

fn key(main: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&main.to_be_bytes());
    // sub = 0
    k
}
fn main_of(k: &[u8]) -> u64 {
    u64::from_be_bytes(k[..8].try_into().unwrap())
}

/// Value source: a 4 MiB pool of ChaCha bytes (seed 42); revision r's value is the
/// slice at a hashed offset, so values are incompressible and verifiable.
struct Values {
    pool: Vec<u8>,
    size: usize,
}
impl Values {
    fn new(size: usize) -> Self {
        let mut pool = vec![0u8; POOL + size];
        ChaCha8Rng::seed_from_u64(42).fill_bytes(&mut pool);
        Values { pool, size }
    }
    fn get(&self, main: u64) -> &[u8] {
        let mut x = main.wrapping_add(0x9E3779B97F4A7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D049BB133111EB);
        x ^= x >> 31;
        let off = (x % POOL as u64) as usize;
        &self.pool[off..off + self.size]
    }
}

fn proc_mem() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut hwm = 0;
    let mut rss = 0;
    for l in s.lines() {
        let v = || {
            l.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if l.starts_with("VmHWM:") {
            hwm = v();
        } else if l.starts_with("VmRSS:") {
            rss = v();
        }
    }
    (hwm / 1024, rss / 1024) // MiB
}

/// allocated bytes (like `du -s`) and apparent bytes
fn du(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut alloc = 0;
    let mut apparent = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else { continue };
        alloc += md.blocks() * 512;
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    stack.push(e.path());
                }
            }
        } else {
            apparent += md.len();
        }
    }
    (alloc, apparent)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

struct Report {
    engine: &'static str,
}
impl Report {
    fn kv(&self, k: &str, v: impl std::fmt::Display) {
        println!("RESULT {} {} {}", self.engine, k, v);
        std::io::stdout().flush().ok();
    }
    fn mem(&self, phase: &str) {
        let (hwm, rss) = proc_mem();
        self.kv(&format!("{phase}.vmhwm_mib"), hwm);
        self.kv(&format!("{phase}.vmrss_mib"), rss);
    }
    fn size(&self, phase: &str, dir: &Path) {
        let (a, ap) = du(dir);
        self.kv(&format!("{phase}.du_mib"), format!("{:.1}", mib(a)));
        self.kv(&format!("{phase}.apparent_mib"), format!("{:.1}", mib(ap)));
    }
    fn rate(&self, phase: &str, n: u64, bytes: u64, d: Duration) {
        let s = d.as_secs_f64();
        self.kv(&format!("{phase}.secs"), format!("{s:.2}"));
        self.kv(&format!("{phase}.ops_per_s"), format!("{:.0}", n as f64 / s));
        if bytes > 0 {
            self.kv(&format!("{phase}.mib_per_s"), format!("{:.1}", mib(bytes) / s));
        }
    }
    fn lat(&self, phase: &str, lats: &mut [u32]) {
        lats.sort_unstable();
        let p = |q: f64| lats[((lats.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
        self.kv(&format!("{phase}.p50_us"), format!("{:.1}", p(0.50)));
        self.kv(&format!("{phase}.p99_us"), format!("{:.1}", p(0.99)));
        self.kv(&format!("{phase}.p999_us"), format!("{:.1}", p(0.999)));
    }
}

/// The engine-neutral operations the workload needs.  A "view" is an owned snapshot.
trait Store {
    type View;
    /// write a batch of inserts (main, value) and removes; durable = fsync
    fn write_batch(&mut self, ins: &[(u64, &[u8])], del: &[u64], durable: bool);
    fn view(&self) -> Self::View;
    /// get returns value length and checks content if `expect` given
    fn get(&self, v: &Self::View, main: u64, expect: Option<&[u8]>) -> Option<usize>;
    /// full ordered scan: (count, bytes, first main, last main)
    fn scan(&self, v: &Self::View) -> (u64, u64, u64, u64);
    /// scan verifying values against `vals` up to `upto`: returns (count, max main, bad)
    fn verify_scan(&self, v: &Self::View, vals: &Values) -> (u64, u64, u64);
    /// explicit space reclamation; returns whether anything was done
    fn compact(&mut self) -> bool;
    fn extra_stats(&self, r: &Report, phase: &str);
}

// ------------------------------------------------------------------ redb
mod redb_store {
    use super::*;
    use redb::{
        Builder, Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
        ReadableTableMetadata, TableDefinition,
    };

    pub const VALUES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("kv_values");

    pub struct RedbStore {
        pub db: Database,
        pub quick_repair: bool,
    }

    pub fn open(dir: &Path, cache: usize, quick_repair: bool) -> RedbStore {
        std::fs::create_dir_all(dir).unwrap();
        let db = Builder::new()
            .set_cache_size(cache)
            .create(dir.join("values.redb"))
            .expect("redb open");
        // make sure the table exists (durably)
        let tx = db.begin_write().unwrap();
        tx.open_table(VALUES).unwrap();
        tx.commit().unwrap();
        RedbStore { db, quick_repair }
    }

    impl Store for RedbStore {
        type View = ReadTransaction;
        fn write_batch(&mut self, ins: &[(u64, &[u8])], del: &[u64], durable: bool) {
            let mut tx = self.db.begin_write().unwrap();
            if durable {
                tx.set_durability(Durability::Immediate).unwrap();
                tx.set_quick_repair(self.quick_repair);
            } else {
                tx.set_durability(Durability::None).unwrap();
            }
            {
                let mut t = tx.open_table(VALUES).unwrap();
                for (m, v) in ins {
                    t.insert(&key(*m), *v).unwrap();
                }
                for m in del {
                    t.remove(&key(*m)).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        fn view(&self) -> ReadTransaction {
            self.db.begin_read().unwrap()
        }
        fn get(&self, v: &ReadTransaction, main: u64, expect: Option<&[u8]>) -> Option<usize> {
            let t = v.open_table(VALUES).unwrap();
            let g = t.get(&key(main)).unwrap()?;
            let val = g.value();
            if let Some(e) = expect {
                assert_eq!(val, e, "redb value mismatch at {main}");
            }
            Some(val.len())
        }
        fn scan(&self, v: &ReadTransaction) -> (u64, u64, u64, u64) {
            let t = v.open_table(VALUES).unwrap();
            let (mut n, mut b, mut first, mut last) = (0u64, 0u64, 0u64, 0u64);
            for r in t.range::<&[u8; 16]>(..).unwrap() {
                let (k, val) = r.unwrap();
                let m = main_of(k.value());
                if n == 0 {
                    first = m;
                }
                last = m;
                n += 1;
                b += val.value().len() as u64 + 16;
            }
            (n, b, first, last)
        }
        fn verify_scan(&self, v: &ReadTransaction, vals: &Values) -> (u64, u64, u64) {
            let t = v.open_table(VALUES).unwrap();
            let (mut n, mut maxm, mut bad) = (0, 0, 0);
            for r in t.iter().unwrap() {
                let (k, val) = r.unwrap();
                let m = main_of(k.value());
                if val.value() != vals.get(m) {
                    bad += 1;
                }
                n += 1;
                maxm = maxm.max(m);
            }
            (n, maxm, bad)
        }
        fn compact(&mut self) -> bool {
            let mut rounds = 0;
            while self.db.compact().expect("redb compact") {
                rounds += 1;
            }
            rounds > 0
        }
        fn extra_stats(&self, r: &Report, phase: &str) {
            let tx = self.db.begin_write().unwrap();
            let s = tx.stats().unwrap();
            r.kv(&format!("{phase}.redb_stored_mib"), format!("{:.1}", mib(s.stored_bytes())));
            r.kv(
                &format!("{phase}.redb_fragmented_mib"),
                format!("{:.1}", mib(s.fragmented_bytes())),
            );
            r.kv(&format!("{phase}.redb_tree_height"), s.tree_height());
            drop(tx);
            let rt = self.db.begin_read().unwrap();
            let t = rt.open_table(VALUES).unwrap();
            r.kv(&format!("{phase}.len"), t.len().unwrap());
        }
    }
}

// ------------------------------------------------------------------ fjall
mod fjall_store {
    use super::*;
    use fjall::{
        Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Readable,
        Snapshot,
    };

    pub struct FjallStore {
        pub db: Database,
        pub ks: Keyspace,
    }

    pub fn open(dir: &Path, cache: u64, kv_sep: bool) -> FjallStore {
        let db = Database::builder(dir).cache_size(cache).open().expect("fjall open");
        let ks = db
            .keyspace("kv_values", || {
                let o = KeyspaceCreateOptions::default();
                if kv_sep {
                    o.with_kv_separation(Some(KvSeparationOptions::default()))
                } else {
                    o
                }
            })
            .unwrap();
        FjallStore { db, ks }
    }

    impl Store for FjallStore {
        type View = Snapshot;
        fn write_batch(&mut self, ins: &[(u64, &[u8])], del: &[u64], durable: bool) {
            let mut b = self.db.batch(); // default durability: Buffer (write(2), no fsync)
            for (m, v) in ins {
                b.insert(&self.ks, key(*m), *v);
            }
            for m in del {
                b.remove(&self.ks, key(*m));
            }
            b.commit().unwrap();
            if durable {
                self.db.persist(PersistMode::SyncAll).unwrap();
            }
        }
        fn view(&self) -> Snapshot {
            self.db.snapshot()
        }
        fn get(&self, v: &Snapshot, main: u64, expect: Option<&[u8]>) -> Option<usize> {
            let val = v.get(&self.ks, key(main)).unwrap()?;
            if let Some(e) = expect {
                assert_eq!(&val[..], e, "fjall value mismatch at {main}");
            }
            Some(val.len())
        }
        fn scan(&self, v: &Snapshot) -> (u64, u64, u64, u64) {
            let (mut n, mut b, mut first, mut last) = (0u64, 0u64, 0u64, 0u64);
            for g in v.iter(&self.ks) {
                let (k, val) = g.into_inner().unwrap();
                let m = main_of(&k);
                if n == 0 {
                    first = m;
                }
                last = m;
                n += 1;
                b += val.len() as u64 + 16;
            }
            (n, b, first, last)
        }
        fn verify_scan(&self, v: &Snapshot, vals: &Values) -> (u64, u64, u64) {
            let (mut n, mut maxm, mut bad) = (0, 0, 0);
            for g in v.iter(&self.ks) {
                let (k, val) = g.into_inner().unwrap();
                let m = main_of(&k);
                if &val[..] != vals.get(m) {
                    bad += 1;
                }
                n += 1;
                maxm = maxm.max(m);
            }
            (n, maxm, bad)
        }
        fn compact(&mut self) -> bool {
            // flush memtable so tombstones reach disk tables, then major-compact (doc(hidden) API)
            self.ks.rotate_memtable_and_wait().unwrap();
            self.ks.major_compact().unwrap();
            true
        }
        fn extra_stats(&self, r: &Report, phase: &str) {
            r.kv(&format!("{phase}.fjall_tables"), self.ks.table_count());
            r.kv(&format!("{phase}.fjall_l0_tables"), self.ks.l0_table_count());
            r.kv(&format!("{phase}.fjall_blob_files"), self.ks.blob_file_count());
            r.kv(&format!("{phase}.fjall_journals"), self.db.journal_count());
            r.kv(&format!("{phase}.fjall_approx_len"), self.ks.approximate_len());
        }
    }
}

// ------------------------------------------------------------------ workload

/// Phase 1 (and the append part of phase 3): write mains [from, from+n).
fn load<S: Store>(s: &mut S, vals: &Values, from: u64, n: u64, batch: u64, announce: bool) {
    let mut since_durable = 0u64;
    let mut m = from;
    let end = from + n;
    let mut ins: Vec<(u64, &[u8])> = Vec::with_capacity(batch as usize);
    while m < end {
        ins.clear();
        let hi = (m + batch).min(end);
        for x in m..hi {
            ins.push((x, vals.get(x)));
        }
        since_durable += (hi - m) * vals.size as u64;
        let durable = since_durable >= DURABLE_EVERY || hi == end;
        s.write_batch(&ins, &[], durable);
        if durable {
            since_durable = 0;
            if announce {
                println!("DURABLE {}", hi - 1);
                std::io::stdout().flush().ok();
            }
        }
        m = hi;
    }
}

fn run<S: Store>(args: &Args, r: &Report, open: impl Fn() -> S) {
    let vals = Values::new(args.value_size);
    r.mem("start");
    let t = Instant::now();
    let mut s = open();
    r.kv("open_new.ms", format!("{:.1}", t.elapsed().as_secs_f64() * 1e3));

    if args.mode == Mode::Verify {
        let v = s.view();
        let t = Instant::now();
        let (n, maxm, bad) = s.verify_scan(&v, &vals);
        r.kv("verify.scan_secs", format!("{:.2}", t.elapsed().as_secs_f64()));
        r.kv("verify.count", n);
        r.kv("verify.max_main", maxm);
        r.kv("verify.bad_values", bad);
        let want = args.expect_durable.saturating_sub(FIRST_MAIN - 1);
        let contiguous = maxm + 1 - FIRST_MAIN == n;
        r.kv("verify.contiguous", contiguous);
        r.kv(
            "verify.durable_intact",
            n >= want && bad == 0 && contiguous && maxm >= args.expect_durable,
        );
        r.kv("verify.beyond_durable", maxm.saturating_sub(args.expect_durable));
        r.size("verify", &args.dir);
        r.mem("verify");
        return;
    }

    // ---- 1. load
    let n = args.values;
    let t = Instant::now();
    load(&mut s, &vals, FIRST_MAIN, n, args.batch, args.mode == Mode::Load);
    let d = t.elapsed();
    r.rate("load", n, n * args.value_size as u64, d);
    r.size("load", &args.dir);
    s.extra_stats(r, "load");
    r.mem("load");
    if args.mode == Mode::Load {
        return;
    }
    let last_loaded = FIRST_MAIN + n - 1;

    // ---- 2. random point reads
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut lats = Vec::with_capacity(args.gets as usize);
    let t = Instant::now();
    let mut view = s.view();
    for i in 0..args.gets {
        if i % 100 == 0 && i > 0 {
            view = s.view();
        }
        let m = rng.gen_range(FIRST_MAIN..=last_loaded);
        let expect = if i % 1000 == 0 { Some(vals.get(m)) } else { None };
        let t0 = Instant::now();
        let len = s.get(&view, m, expect);
        lats.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        assert_eq!(len, Some(args.value_size), "missing revision {m}");
    }
    drop(view);
    r.rate("get", args.gets, 0, t.elapsed());
    r.lat("get", &mut lats);
    r.mem("get");

    // ---- 3. old view held while appending + deleting
    let old = s.view();
    let t = Instant::now();
    load(&mut s, &vals, last_loaded + 1, args.extra, args.batch, false);
    r.rate("append_with_view", args.extra, args.extra * args.value_size as u64, t.elapsed());
    let last = last_loaded + args.extra;
    let total = last - FIRST_MAIN + 1;
    let del_end = FIRST_MAIN + total / 2; // exclusive
    let t = Instant::now();
    let mut m = FIRST_MAIN;
    let mut since_durable = 0u64;
    let mut del = Vec::with_capacity(args.batch as usize);
    while m < del_end {
        del.clear();
        let hi = (m + args.batch).min(del_end);
        del.extend(m..hi);
        since_durable += (hi - m) * args.value_size as u64;
        let durable = since_durable >= DURABLE_EVERY || hi == del_end;
        if durable {
            since_durable = 0;
        }
        s.write_batch(&[], &del, durable);
        m = hi;
    }
    let ndel = del_end - FIRST_MAIN;
    r.rate("delete", ndel, 0, t.elapsed());
    s.extra_stats(r, "delete");
    r.mem("delete_view_held");
    r.size("delete_view_held", &args.dir);
    // verify
    let probe = FIRST_MAIN + 12345 % (ndel.max(1));
    let old_ok = s.get(&old, probe, Some(vals.get(probe))) == Some(args.value_size);
    let new_v = s.view();
    let new_gone = s.get(&new_v, probe, None).is_none();
    let new_has_new = s.get(&new_v, last, Some(vals.get(last))).is_some();
    let old_lacks_new = s.get(&old, last, None).is_none();
    r.kv("view.old_sees_deleted", old_ok);
    r.kv("view.old_lacks_appended", old_lacks_new);
    r.kv("view.new_deleted_gone", new_gone);
    r.kv("view.new_sees_appended", new_has_new);
    assert!(old_ok && new_gone && new_has_new && old_lacks_new);
    drop(new_v);
    drop(old);
    r.size("delete", &args.dir);

    // ---- 4a. scan before explicit compaction (fjall: tombstones present)
    let v = s.view();
    let t = Instant::now();
    let (cnt, bytes, first, lastk) = s.scan(&v);
    drop(v);
    assert_eq!(cnt, last - del_end + 1);
    assert_eq!((first, lastk), (del_end, last));
    r.rate("scan_precompact", cnt, bytes, t.elapsed());

    // compaction
    if !args.no_compact {
        let t = Instant::now();
        let did = s.compact();
        r.kv("compact.did", did);
        r.kv("compact.secs", format!("{:.2}", t.elapsed().as_secs_f64()));
        s.extra_stats(r, "compact");
        r.size("compact", &args.dir);
        r.mem("compact");
    }

    // ---- 4b. full ordered scan
    let v = s.view();
    let t = Instant::now();
    let (cnt, bytes, _, _) = s.scan(&v);
    drop(v);
    assert_eq!(cnt, last - del_end + 1);
    r.rate("scan", cnt, bytes, t.elapsed());
    r.mem("scan");

    // ---- 5. close, reopen
    let t = Instant::now();
    drop(s);
    r.kv("close.ms", format!("{:.1}", t.elapsed().as_secs_f64() * 1e3));
    r.size("closed", &args.dir);
    let t = Instant::now();
    let s = open();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let v = s.view();
    let got = s.get(&v, last, Some(vals.get(last)));
    let total_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(got, Some(args.value_size));
    assert!(s.get(&v, FIRST_MAIN, None).is_none());
    drop(v);
    r.kv("reopen.open_ms", format!("{open_ms:.1}"));
    r.kv("reopen.open_and_get_ms", format!("{total_ms:.1}"));
    r.size("reopen", &args.dir);
    r.mem("reopen");
}

fn main() {
    let args = Args::parse();
    let cache = args.cache_mib * 1024 * 1024;
    let r = Report {
        engine: match args.engine {
            EngineKind::Redb => "redb",
            EngineKind::Fjall => "fjall",
        },
    };
    r.kv(
        "config",
        format!(
            "values={} value_size={} batch={} cache_mib={} mode={:?} redb_quick_repair={} fjall_kv_sep={}",
            args.values, args.value_size, args.batch, args.cache_mib, args.mode,
            args.redb_quick_repair, args.fjall_kv_sep
        ),
    );
    let dir = args.dir.clone();
    match args.engine {
        EngineKind::Redb => {
            let qr = args.redb_quick_repair;
            run(&args, &r, || redb_store::open(&dir, cache as usize, qr))
        }
        EngineKind::Fjall => {
            let kv = args.fjall_kv_sep;
            run(&args, &r, || fjall_store::open(&dir, cache, kv))
        }
    }
}
