//! Linearizability of a single read/write register whose writes all write distinct values
//! (Gibbons & Korach's zone criterion, polynomial for this case): group each write with the reads
//! that returned its value (a cluster); a cluster's zone runs from the earliest response to the
//! latest invocation among its operations. The history is linearizable iff every read follows
//! the start of its write, no two forward zones overlap, and no backward zone lies inside a
//! forward zone. Writes that failed or timed out may or may not have happened: unread ones are
//! dropped, read ones get an open end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One completed (or, for writes, possibly indeterminate) operation, times in µs.
#[derive(Debug, Clone)]
pub struct Op {
    /// Value written, or value a read returned.
    pub value: String,
    /// A write (else a read).
    pub write: bool,
    /// Invocation time.
    pub inv: u64,
    /// Response time; `None` for a write whose outcome is unknown.
    pub res: Option<u64>,
}

/// A history being recorded by concurrent clients (clones share it); times in µs since it was
/// created.
#[derive(Clone)]
pub struct History {
    t0: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    /// An empty history whose time zero is now.
    pub fn new() -> History {
        History {
            t0: Instant::now(),
            ops: Arc::default(),
        }
    }

    /// The current time in the history's µs (take it before invoking an operation).
    pub fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    /// Records a write of `value` invoked at `inv`: acknowledged now if `ok`, else indeterminate.
    pub fn write(&self, value: String, inv: u64, ok: bool) {
        let res = ok.then(|| self.now());
        self.ops.lock().unwrap().push(Op {
            value,
            write: true,
            inv,
            res,
        });
    }

    /// Records a read invoked at `inv` that has just returned `value`.
    pub fn read(&self, value: String, inv: u64) {
        let res = Some(self.now());
        self.ops.lock().unwrap().push(Op {
            value,
            write: false,
            inv,
            res,
        });
    }

    /// The operations recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

struct Cluster {
    write_inv: u64,
    first_res: u64,
    last_inv: u64,
    reads: usize,
}

/// Checks the history; `initial` is the value the register holds before any operation.
pub fn check(ops: &[Op], initial: &str) -> Result<(), String> {
    // The initial value is written at time 0..1, strictly before every operation (shifted by 2).
    let ops: Vec<Op> = ops
        .iter()
        .map(|o| Op {
            inv: o.inv + 2,
            res: o.res.map(|r| r.saturating_add(2)),
            ..o.clone()
        })
        .collect();
    let mut clusters: BTreeMap<&str, Cluster> = BTreeMap::new();
    clusters.insert(
        initial,
        Cluster {
            write_inv: 0,
            first_res: 1,
            last_inv: 0,
            reads: 0,
        },
    );
    for w in ops.iter().filter(|o| o.write) {
        if w.value == initial || clusters.contains_key(w.value.as_str()) {
            return Err(format!("value {:?} written twice", w.value));
        }
        clusters.insert(
            &w.value,
            Cluster {
                write_inv: w.inv,
                first_res: w.res.unwrap_or(u64::MAX),
                last_inv: w.inv,
                reads: 0,
            },
        );
    }
    for r in ops.iter().filter(|o| !o.write) {
        let res = r.res.ok_or("a read without a response")?;
        let c = clusters
            .get_mut(r.value.as_str())
            .ok_or_else(|| format!("read returned {:?}, which nobody wrote", r.value))?;
        if res < c.write_inv {
            return Err(format!(
                "read of {:?} ended at {res} before its write began at {}",
                r.value, c.write_inv
            ));
        }
        c.first_res = c.first_res.min(res);
        c.last_inv = c.last_inv.max(r.inv);
        c.reads += 1;
    }
    // Unread writes with unknown outcome may never have happened.
    let zones: Vec<(&str, u64, u64)> = clusters
        .iter()
        .filter(|(v, c)| c.first_res != u64::MAX || c.reads > 0 || *v == &initial)
        .map(|(v, c)| (*v, c.first_res, c.last_inv))
        .collect();
    let mut forward: Vec<(&str, u64, u64)> = zones.iter().filter(|z| z.1 < z.2).copied().collect();
    forward.sort_by_key(|z| z.1);
    for pair in forward.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.1 < a.2 {
            return Err(format!(
                "values {:?} and {:?} were both current over an overlapping interval \
                 ({}..{} and {}..{}): a stale or lost write",
                a.0, b.0, a.1, a.2, b.1, b.2
            ));
        }
    }
    for back in zones.iter().filter(|z| z.1 >= z.2) {
        let (lo, hi) = (back.2, back.1);
        for f in &forward {
            if f.1 < lo && hi < f.2 {
                return Err(format!(
                    "value {:?} (read/written within {lo}..{hi}) was overwritten while {:?} had to be current ({}..{})",
                    back.0, f.0, f.1, f.2
                ));
            }
        }
    }
    Ok(())
}

/// Panics with the violation unless `ops` is linearizable from `initial` (see [`check`]).
pub fn assert_linearizable(ops: &[Op], initial: &str) {
    if let Err(e) = check(ops, initial) {
        panic!("linearizability violation: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &str, inv: u64, res: u64) -> Op {
        Op {
            value: v.into(),
            write: true,
            inv,
            res: Some(res),
        }
    }
    fn r(v: &str, inv: u64, res: u64) -> Op {
        Op {
            value: v.into(),
            write: false,
            inv,
            res: Some(res),
        }
    }

    /// Exhaustive search for a legal order, for cross-checking on small histories.
    fn brute(ops: &[Op], initial: &str) -> bool {
        fn go(ops: &[Op], done: &mut Vec<bool>, cur: &str) -> bool {
            if done.iter().all(|d| *d) {
                return true;
            }
            // An op may go next if no pending op finished before it started.
            let min_res = ops
                .iter()
                .zip(done.iter())
                .filter(|(_, d)| !**d)
                .map(|(o, _)| o.res.unwrap_or(u64::MAX))
                .min()
                .unwrap_or(u64::MAX);
            for i in 0..ops.len() {
                if done[i] || ops[i].inv > min_res {
                    continue;
                }
                let o = &ops[i];
                if !o.write && o.value != cur {
                    continue;
                }
                done[i] = true;
                let next = if o.write {
                    o.value.clone()
                } else {
                    cur.to_string()
                };
                if go(ops, done, &next) {
                    return true;
                }
                done[i] = false;
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], initial)
    }

    #[test]
    fn stale_read_is_caught() {
        // a written and acknowledged, then a later read still sees the initial value.
        let h = vec![w("a", 0, 10), r("a", 12, 14), r("init", 20, 22)];
        assert!(check(&h, "init").is_err());
        assert!(!brute(&h, "init"));
    }

    #[test]
    fn concurrent_reads_either_way_are_fine() {
        let h = vec![
            w("a", 0, 10),
            r("init", 1, 3),
            r("a", 5, 8),
            r("init", 6, 9),
        ];
        assert!(check(&h, "init").is_ok());
        assert!(brute(&h, "init"));
    }

    #[test]
    fn agrees_with_exhaustive_search_on_random_small_histories() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut checked = (0, 0);
        for _ in 0..20000 {
            let n = 2 + rnd(5) as usize;
            let mut ops = Vec::new();
            let mut writes = 0;
            for _ in 0..n {
                let inv = rnd(20);
                let res = inv + 1 + rnd(8);
                if rnd(2) == 0 {
                    writes += 1;
                    ops.push(w(&format!("v{writes}"), inv, res));
                } else {
                    let v = rnd(writes + 1);
                    let val = if v == 0 {
                        "init".to_string()
                    } else {
                        format!("v{v}")
                    };
                    ops.push(r(&val, inv, res));
                }
            }
            // Reads of values written later in the list are fine: check handles any order.
            let fast = check(&ops, "init").is_ok();
            let slow = brute(&ops, "init");
            assert_eq!(fast, slow, "disagree on {ops:?}");
            if slow {
                checked.0 += 1
            } else {
                checked.1 += 1
            }
        }
        assert!(
            checked.0 > 100 && checked.1 > 100,
            "both outcomes exercised: {checked:?}"
        );
    }
}
