//! Linearizability of one register (read, write, compare-and-set) by the Wing–Gong–Lowe search
//! with memoization (as in porcupine/Knossos): repeatedly linearize the earliest pending call the
//! model accepts, backtrack when a return is reached whose call is not yet linearized, and
//! remember (linearized set, state) pairs already explored. Histories are split per key by the
//! caller (P-compositionality).
//!
//! Indeterminate operations (timed out, connection lost) have no return: they may take effect at
//! any point after their call, or never. Two reductions keep the search small without ever
//! rejecting a linearizable history:
//! - Values nobody can tell apart are one state. A value no read returned and no compare-and-set
//!   compared against ("dead") behaves exactly like any other such value, so they share the
//!   memo entries.
//! - An indeterminate operation is linearized only where it changes the state (taking effect
//!   without changing anything is the same as never happening), and one that leaves a dead value
//!   ("kills" the register) only right before a failed compare-and-set: that is the only thing a
//!   dead value can explain (no read returns it, no successful compare-and-set expects it), and a
//!   kill followed by anything else is the same as no kill.
//!
//! Dropping unobserved indeterminate writes instead, as this checker once did, is wrong: an
//! unanswered compare-and-set whose new value nobody saw can be the reason a later one failed.

use std::collections::{HashMap, HashSet};

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

/// The register's state as far as the model can tell values apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    /// The key does not exist.
    Absent,
    /// A value some read returned or some compare-and-set compared against (its index).
    Value(u32),
    /// Any other value.
    Dead,
    /// A dead value an indeterminate operation just wrote: only a failed compare-and-set may
    /// come next.
    Killed,
}

/// What an operation can do, with values mapped to states.
#[derive(Debug, Clone, Copy)]
enum Effect {
    /// A read that returned this state.
    Read(State),
    /// An acknowledged write.
    Write(State),
    /// A compare-and-set that succeeded.
    CasSucceeded { expect: State, new: State },
    /// A compare-and-set that failed.
    CasFailed { expect: State },
    /// A write that may or may not have happened.
    MaybeWrite(State),
    /// A compare-and-set that may or may not have happened.
    MaybeCas { expect: State, new: State },
}

impl Effect {
    /// The state after this operation from `s`, or `None` if it cannot (or need not) happen
    /// there.
    fn step(self, s: State) -> Option<State> {
        let kill = |new: State| {
            if new == State::Dead {
                State::Killed
            } else {
                new
            }
        };
        match (self, s) {
            (Effect::CasFailed { expect }, s) => {
                (s != expect).then_some(if s == State::Killed { State::Dead } else { s })
            }
            // After a kill only a failed compare-and-set is worth trying (see the module doc).
            (_, State::Killed) => None,
            (Effect::Read(v), s) => (v == s).then_some(s),
            (Effect::Write(new), _) => Some(new),
            (Effect::CasSucceeded { expect, new }, s) => (s == expect).then_some(new),
            (Effect::MaybeWrite(new), s) => (new != s).then(|| kill(new)),
            (Effect::MaybeCas { expect, new }, s) => (s == expect).then(|| kill(new)),
        }
    }

    /// Whether the operation may never have happened (its return does not bind).
    fn optional(self) -> bool {
        matches!(self, Effect::MaybeWrite(_) | Effect::MaybeCas { .. })
    }
}

/// Maps values to states: the ones some operation observes get their own index, the rest are
/// [`State::Dead`].
struct Values(HashMap<String, u32>);

impl Values {
    fn observed_in(ops: &[RegOp]) -> Values {
        let mut map = HashMap::new();
        for o in ops {
            let seen = match (&o.input, &o.output) {
                (Input::Read, Output::Read(Some(v))) => v,
                (Input::Cas { expect, .. }, _) => expect,
                _ => continue,
            };
            let next = map.len() as u32;
            map.entry(seen.clone()).or_insert(next);
        }
        Values(map)
    }

    fn state(&self, v: Option<&str>) -> State {
        match v {
            None => State::Absent,
            Some(v) => self.0.get(v).map_or(State::Dead, |i| State::Value(*i)),
        }
    }

    /// The operation's effect; `None` for reads without a result, which constrain nothing.
    fn effect(&self, o: &RegOp) -> Option<Effect> {
        let val = |v: &String| self.state(Some(v));
        Some(match (&o.input, &o.output) {
            (Input::Read, Output::Read(v)) => Effect::Read(self.state(v.as_deref())),
            (Input::Read, _) => return None,
            (Input::Write(v), Output::Unknown) => Effect::MaybeWrite(val(v)),
            (Input::Write(v), _) => Effect::Write(val(v)),
            (Input::Cas { expect, new }, Output::Cas(true)) => Effect::CasSucceeded {
                expect: val(expect),
                new: val(new),
            },
            (Input::Cas { expect, .. }, Output::Cas(false)) => Effect::CasFailed {
                expect: val(expect),
            },
            (Input::Cas { expect, new }, _) => Effect::MaybeCas {
                expect: val(expect),
                new: val(new),
            },
        })
    }
}

/// Result of a check: the number of operations considered, or why the history is not
/// linearizable.
pub fn check(ops: &[RegOp], initial: Option<&str>) -> Result<usize, String> {
    let values = Values::observed_in(ops);
    let (ops, effects): (Vec<&RegOp>, Vec<Effect>) = ops
        .iter()
        .filter_map(|o| values.effect(o).map(|e| (o, e)))
        .unzip();
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
    let mut state = values.state(initial);
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
            if let Some(s2) = effects[i].step(state) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), s2)) {
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
        } else if effects[i].optional() {
            // An operation that may never have happened does not have to happen by now.
            entry = next[entry];
        } else {
            // A return whose call is not linearized: undo the last choice.
            if stack.len() + 1 >= best {
                stuck_at = Some(i);
            }
            let Some((j, s)) = stack.pop() else {
                let o = ops[stuck_at.unwrap_or(i)];
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

    fn cas(expect: &str, new: &str) -> Input {
        Input::Cas {
            expect: expect.into(),
            new: new.into(),
        }
    }

    #[test]
    fn an_unanswered_unseen_compare_and_set_explains_a_later_failed_one() {
        // The fault suite's pattern: g1-42 is there, a CAS to g1-43 gets no answer and nobody
        // ever reads g1-43, then a CAS expecting g1-42 fails. Only the unanswered one explains it.
        let h = vec![
            op(0, w("g1-42"), Output::Written, 0, Some(10)),
            op(1, cas("g1-42", "g1-43"), Output::Unknown, 20, None),
            op(2, cas("g1-42", "g1-44"), Output::Cas(false), 30, Some(40)),
            op(2, w("g1-45"), Output::Written, 50, Some(60)),
            op(0, Input::Read, r("g1-45"), 70, Some(80)),
        ];
        assert_eq!(check(&h, None), Ok(5));
        // The same with an unanswered blind write.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(1, w("x"), Output::Unknown, 20, None),
            op(2, cas("a", "c"), Output::Cas(false), 30, Some(40)),
        ];
        assert!(check(&h, None).is_ok());
        // But it cannot have happened before it was called.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(2, cas("a", "c"), Output::Cas(false), 30, Some(40)),
            op(1, cas("a", "b"), Output::Unknown, 50, None),
        ];
        assert!(check(&h, None).is_err());
        // An unanswered write seen later may follow a value nobody saw.
        let h = vec![
            op(0, w("d"), Output::Written, 0, Some(10)),
            op(1, w("x"), Output::Unknown, 20, None),
            op(2, Input::Read, r("x"), 30, Some(40)),
        ];
        assert!(check(&h, None).is_ok());
        // A compare-and-set cannot take effect from a value other than the one it expects.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(1, cas("z", "b"), Output::Unknown, 20, None),
            op(2, cas("a", "c"), Output::Cas(false), 30, Some(40)),
        ];
        assert!(check(&h, None).is_err());
    }

    #[test]
    fn an_unanswered_write_cannot_hide_a_stale_read() {
        // If x happened, nobody could read a afterwards; if it did not, b hid a.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(1, w("x"), Output::Unknown, 11, None),
            op(0, w("b"), Output::Written, 20, Some(30)),
            op(2, Input::Read, r("a"), 40, Some(50)),
        ];
        assert!(check(&h, None).is_err());
        // A killed register cannot be read back to life either: the read of a after the failed
        // CAS (which needs x to have happened) is stale.
        let h = vec![
            op(0, w("a"), Output::Written, 0, Some(10)),
            op(1, w("x"), Output::Unknown, 11, None),
            op(2, cas("a", "c"), Output::Cas(false), 20, Some(30)),
            op(0, Input::Read, r("a"), 40, Some(50)),
        ];
        assert!(check(&h, None).is_err());
    }

    #[test]
    fn many_unanswered_operations_are_decided_quickly() {
        // 6 clients, 3000 ops: a third CAS (half of them unanswered, never observed), the rest
        // reads of the latest value, and failed CASes that need an unanswered one before them.
        let mut h = Vec::new();
        let mut t = 0;
        let mut last = "init".to_string();
        for k in 0..3000u64 {
            let c = (k % 6) as usize;
            match k % 6 {
                0 => {
                    let v = format!("v{k}");
                    h.push(op(c, cas(&last, &v), Output::Cas(true), t, Some(t + 15)));
                    last = v;
                }
                1 => h.push(op(
                    c,
                    cas(&last, &format!("u{k}")),
                    Output::Unknown,
                    t,
                    None,
                )),
                2 => h.push(op(
                    c,
                    cas(&last, &format!("f{k}")),
                    Output::Cas(false),
                    t + 16,
                    Some(t + 25),
                )),
                3 => h.push(op(
                    c,
                    w(&format!("v{k}")),
                    Output::Written,
                    t + 26,
                    Some(t + 30),
                )),
                _ => {}
            }
            if k % 6 == 3 {
                last = format!("v{k}");
            } else if k % 6 > 3 {
                h.push(op(c, Input::Read, r(&last), t + 31, Some(t + 40)));
            }
            t += 50;
        }
        assert_eq!(check(&h, Some("init")), Ok(3000));
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
