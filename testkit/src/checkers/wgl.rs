//! Linearizability of one register (read, write, compare-and-set) by the Wing–Gong–Lowe search
//! with memoization (as in porcupine/Knossos): repeatedly linearize the earliest pending call the
//! model accepts, backtrack when a return is reached whose call is not yet linearized, and
//! remember (linearized set, state) pairs already explored. Histories are split per key by the
//! caller (P-compositionality).
//!
//! Indeterminate operations (timed out, connection lost) have no return: they may take effect at
//! any point after their call, or never. Ones whose written value nobody observed are dropped
//! (linearizing them last is always possible and changes nothing); the rest keep an open return.

use std::collections::HashSet;

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Linearizable get.
    Read,
    /// Unconditional put of a value no other operation writes.
    Write(String),
    /// Put `new` only if the register holds `expect`.
    Cas {
        /// Value compared against.
        expect: String,
        /// Value written on success (unique).
        new: String,
    },
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A read's result (`None`: key absent).
    Read(Option<String>),
    /// A put succeeded.
    Written,
    /// A compare-and-set's outcome.
    Cas(bool),
    /// No answer: the operation may or may not have happened.
    Unknown,
}

/// One operation, times in µs since the run started.
#[derive(Debug, Clone)]
pub struct RegOp {
    /// Client that issued it (for messages).
    pub client: usize,
    /// Request.
    pub input: Input,
    /// Response.
    pub output: Output,
    /// Invocation time.
    pub call: u64,
    /// Response time; `None` when indeterminate.
    pub ret: Option<u64>,
}

type State = Option<String>;

/// The register model: the state after `op` from `s`, or `None` if `op` cannot happen there.
fn step(s: &State, op: &RegOp) -> Option<State> {
    match (&op.input, &op.output) {
        (Input::Read, Output::Read(v)) => (v == s).then(|| s.clone()),
        (Input::Read, _) => Some(s.clone()),
        (Input::Write(v), _) => Some(Some(v.clone())),
        (Input::Cas { expect, new }, Output::Cas(true)) => {
            (s.as_deref() == Some(expect.as_str())).then(|| Some(new.clone()))
        }
        (Input::Cas { expect, .. }, Output::Cas(false)) => {
            (s.as_deref() != Some(expect.as_str())).then(|| s.clone())
        }
        (Input::Cas { expect, new }, _) => Some(if s.as_deref() == Some(expect.as_str()) {
            Some(new.clone())
        } else {
            s.clone()
        }),
    }
}

/// Drops operations that cannot matter: reads without a result and indeterminate writes whose
/// value nobody observed.
fn prune(ops: &[RegOp]) -> Vec<RegOp> {
    let mut observed: HashSet<&str> = HashSet::new();
    for o in ops {
        match (&o.input, &o.output) {
            (_, Output::Read(Some(v))) => {
                observed.insert(v);
            }
            (Input::Cas { expect, .. }, Output::Cas(true)) => {
                observed.insert(expect);
            }
            _ => {}
        }
    }
    ops.iter()
        .filter(|o| match (&o.input, &o.output) {
            (Input::Read, Output::Read(_)) => true,
            (Input::Read, _) => false,
            (Input::Write(v), Output::Unknown) | (Input::Cas { new: v, .. }, Output::Unknown) => {
                observed.contains(v.as_str())
            }
            _ => true,
        })
        .cloned()
        .collect()
}

/// Result of a check: the number of operations considered, or why the history is not
/// linearizable.
pub fn check(ops: &[RegOp], initial: Option<&str>) -> Result<usize, String> {
    let ops = prune(ops);
    let n = ops.len();
    // Events: (time, is_ret, op). Calls sort before returns at equal times (permissive).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call, false, i));
        events.push((o.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort();
    // Doubly linked list over events; node 0 is the head sentinel, event k is node k + 1.
    let len = events.len() + 1;
    let mut next: Vec<usize> = (1..=len).collect();
    let mut prev: Vec<usize> = (0..len).map(|i| i.wrapping_sub(1)).collect();
    next[len - 1] = usize::MAX;
    let mut ret_node = vec![0usize; n];
    let mut call_node = vec![0usize; n];
    for (k, (_, is_ret, i)) in events.iter().enumerate() {
        if *is_ret {
            ret_node[*i] = k + 1;
        } else {
            call_node[*i] = k + 1;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        if nx != usize::MAX {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, x: usize| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        if nx != usize::MAX {
            prev[nx] = x;
        }
    };

    let words = n.div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = initial.map(str::to_string);
    let mut best = 0usize;
    let mut stuck_at: Option<usize> = None;
    let mut entry = next[0];
    let mut steps: u64 = 0;
    while entry != usize::MAX {
        steps += 1;
        if steps > 50_000_000 {
            return Err(format!(
                "search gave up after {steps} steps ({n} ops): history too concurrent to decide"
            ));
        }
        let (_, is_ret, i) = events[entry - 1];
        if !is_ret {
            if let Some(s2) = step(&state, &ops[i]) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), s2.clone())) {
                    stack.push((i, std::mem::replace(&mut state, s2)));
                    unlink(&mut next, &mut prev, call_node[i]);
                    unlink(&mut next, &mut prev, ret_node[i]);
                    if stack.len() > best {
                        best = stack.len();
                    }
                    entry = next[0];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return whose call is not linearized: undo the last choice.
            if stack.len() + 1 >= best {
                stuck_at = Some(i);
            }
            let Some((j, s)) = stack.pop() else {
                let o = &ops[stuck_at.unwrap_or(i)];
                return Err(format!(
                    "not linearizable: no order explains {:?} -> {:?} by client {} (called at {} µs, returned at {:?} µs); {} of {} operations could be ordered",
                    o.input, o.output, o.client, o.call, o.ret, best, n
                ));
            };
            state = s;
            linearized[j / 64] &= !(1 << (j % 64));
            relink(&mut next, &mut prev, ret_node[j]);
            relink(&mut next, &mut prev, call_node[j]);
            entry = next[call_node[j]];
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, input: Input, output: Output, call: u64, ret: Option<u64>) -> RegOp {
        RegOp {
            client,
            input,
            output,
            call,
            ret,
        }
    }
    fn w(v: &str) -> Input {
        Input::Write(v.into())
    }
    fn r(v: &str) -> Output {
        Output::Read(Some(v.into()))
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(1, Input::Read, r("a"), 11, Some(20)),
            op(0, w("b"), Output::Written, 21, Some(40)),
            // Concurrent with the write of b: either value is fine.
            op(1, Input::Read, r("a"), 25, Some(30)),
            op(2, Input::Read, r("b"), 26, Some(31)),
        ];
        assert!(check(&h, None).is_ok());
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(0, w("b"), Output::Written, 11, Some(20)),
            op(1, Input::Read, r("a"), 21, Some(30)),
        ];
        let e = check(&h, None).unwrap_err();
        assert!(e.contains("not linearizable"), "{e}");
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // b then a read by two sequential reads while the write of b is pending.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(0, w("b"), Output::Written, 11, Some(100)),
            op(1, Input::Read, r("b"), 20, Some(30)),
            op(1, Input::Read, r("a"), 31, Some(40)),
        ];
        assert!(check(&h, None).is_err());
    }

    #[test]
    fn compare_and_set_must_follow_its_expected_value() {
        let ok = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(
                1,
                Input::Cas {
                    expect: "a".into(),
                    new: "c".into(),
                },
                Output::Cas(true),
                11,
                Some(20),
            ),
            op(0, Input::Read, r("c"), 21, Some(30)),
        ];
        assert!(check(&ok, None).is_ok());
        // A CAS that succeeded although b (written before it started) was there.
        let bad = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(0, w("b"), Output::Written, 11, Some(20)),
            op(
                1,
                Input::Cas {
                    expect: "a".into(),
                    new: "c".into(),
                },
                Output::Cas(true),
                21,
                Some(30),
            ),
        ];
        assert!(check(&bad, None).is_err());
        // A failed CAS while its expected value was surely there.
        let bad = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(
                1,
                Input::Cas {
                    expect: "a".into(),
                    new: "c".into(),
                },
                Output::Cas(false),
                11,
                Some(20),
            ),
        ];
        assert!(check(&bad, None).is_err());
    }

    #[test]
    fn indeterminate_writes_may_or_may_not_happen() {
        // Never observed: ignored.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(1, w("x"), Output::Unknown, 11, None),
            op(0, Input::Read, r("a"), 20, Some(30)),
        ];
        assert!(check(&h, None).is_ok());
        // Observed long after its call: it happened, late.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(1, w("x"), Output::Unknown, 11, None),
            op(0, Input::Read, r("a"), 20, Some(30)),
            op(0, Input::Read, r("x"), 500, Some(600)),
            op(2, Input::Read, r("x"), 601, Some(700)),
        ];
        assert!(check(&h, None).is_ok());
        // But not before it was called.
        let h = vec![
            op(0, Input::Read, r("x"), 0, Some(5)),
            op(1, w("x"), Output::Unknown, 11, None),
        ];
        assert!(check(&h, None).is_err());
        // And once observed and then overwritten, it cannot reappear.
        let h = vec![
            op(1, w("x"), Output::Unknown, 0, None),
            op(0, Input::Read, r("x"), 10, Some(20)),
            op(0, w("b"), Output::Written, 21, Some(30)),
            op(0, Input::Read, r("x"), 31, Some(40)),
        ];
        assert!(check(&h, None).is_err());
    }

    #[test]
    fn a_long_history_of_six_clients_is_decided() {
        // 6 clients, 3000 ops, every read returns the latest completed write.
        let mut h = Vec::new();
        let mut t = 0;
        let mut last = "init".to_string();
        for k in 0..3000u64 {
            let c = (k % 6) as usize;
            if k % 3 == 0 {
                let v = format!("v{k}");
                h.push(op(
                    c,
                    Input::Write(v.clone()),
                    Output::Written,
                    t,
                    Some(t + 15),
                ));
                last = v;
            } else {
                h.push(op(c, Input::Read, r(&last), t + 16, Some(t + 25)));
            }
            t += 5;
        }
        assert_eq!(check(&h, Some("init")), Ok(3000));
    }
}
