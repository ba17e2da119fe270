//! Whether a user's permissions cover a key or a key range (etcd's `range_perm_cache`): a key is
//! covered when any granted interval contains it; a range, when the granted intervals that
//! overlap it join without a gap from its start to its end.

use std::cmp::Ordering;

/// The end of an interval: a key (exclusive), or past every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Up to this key, not included.
    Key(Vec<u8>),
    /// To the end of the key space.
    Unbounded,
}

impl End {
    /// The end etcd means by `range_end` for a range starting at `key`: empty is the key
    /// alone, `"\0"` is every key from `key` on.
    pub fn of(key: &[u8], range_end: &[u8]) -> End {
        match range_end {
            [] => {
                let mut next = key.to_vec();
                next.push(0);
                End::Key(next)
            }
            [0] => End::Unbounded,
            e => End::Key(e.to_vec()),
        }
    }

    fn cmp_key(&self, key: &[u8]) -> Ordering {
        match self {
            End::Key(e) => e.as_slice().cmp(key),
            End::Unbounded => Ordering::Greater,
        }
    }
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for End {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (End::Unbounded, End::Unbounded) => Ordering::Equal,
            (End::Unbounded, _) => Ordering::Greater,
            (_, End::Unbounded) => Ordering::Less,
            (End::Key(a), End::Key(b)) => a.cmp(b),
        }
    }
}

/// A half-open interval of keys `[begin, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// First key.
    pub begin: Vec<u8>,
    /// Past the last key.
    pub end: End,
}

impl Interval {
    /// The interval etcd means by `key` and `range_end`.
    pub fn of(key: &[u8], range_end: &[u8]) -> Interval {
        Interval {
            begin: key.to_vec(),
            end: End::of(key, range_end),
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.begin.as_slice() <= key && self.end.cmp_key(key) == Ordering::Greater
    }

    fn overlaps(&self, other: &Interval) -> bool {
        other.end.cmp_key(&self.begin) == Ordering::Greater
            && self.end.cmp_key(&other.begin) == Ordering::Greater
    }
}

/// True when `granted` covers the request for `key` and `range_end` (as a Range or a
/// DeleteRange names them).
pub fn covers(granted: &[Interval], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return granted.iter().any(|g| g.contains(key));
    }
    let wanted = Interval::of(key, range_end);
    if wanted.end.cmp_key(key) != Ordering::Greater {
        // An empty range reads or deletes nothing: permitted only where its start is.
        return granted.iter().any(|g| g.contains(key));
    }
    let mut parts: Vec<&Interval> = granted.iter().filter(|g| g.overlaps(&wanted)).collect();
    parts.sort_by(|a, b| a.begin.cmp(&b.begin));
    let mut reached = match parts.first() {
        Some(first) if first.begin.as_slice() <= key => first.end.clone(),
        _ => return false,
    };
    for p in &parts[1..] {
        if reached.cmp_key(&p.begin) == Ordering::Less {
            return false;
        }
        if p.end > reached {
            reached = p.end.clone();
        }
    }
    reached >= wanted.end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(key: &str, end: &str) -> Interval {
        Interval::of(key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn a_key_is_covered_by_any_interval_holding_it() {
        let g = [iv("foo", ""), iv("p", "q")];
        assert!(covers(&g, b"foo", b""));
        assert!(covers(&g, b"pear", b""));
        assert!(!covers(&g, b"fo", b""));
        assert!(!covers(&g, b"q", b""));
        assert!(!covers(&g, b"foo0", b""));
    }

    #[test]
    fn a_range_needs_intervals_that_join_without_a_gap() {
        let g = [iv("a", "b"), iv("b", "c")];
        assert!(covers(&g, b"a", b"c"));
        assert!(covers(&g, b"a", b"b"));
        assert!(!covers(&g, b"a", b"d"));
        let gap = [iv("a", "b"), iv("c", "d")];
        assert!(!covers(&gap, b"a", b"d"));
        // A single key then the interval just after it.
        let g = [iv("x", ""), Interval::of(b"x\0", b"y")];
        assert!(covers(&g, b"x", b"y"));
    }

    #[test]
    fn a_key_alone_does_not_cover_its_prefix() {
        assert!(!covers(&[iv("foo", "")], b"foo", b"fop"));
    }

    #[test]
    fn from_key_needs_an_unbounded_grant() {
        let all = [Interval::of(b"\0", b"\0")];
        assert!(covers(&all, b"\0", b"\0"));
        assert!(covers(&all, b"anything", b""));
        assert!(!covers(&[iv("a", "z")], b"a", b"\0"));
        assert!(covers(&[Interval::of(b"a", b"\0")], b"m", b"\0"));
    }

    #[test]
    fn overlapping_grants_in_any_order() {
        let g = [iv("c", "f"), iv("a", "d"), iv("e", "h")];
        assert!(covers(&g, b"b", b"g"));
        assert!(!covers(&g, b"b", b"i"));
    }
}
