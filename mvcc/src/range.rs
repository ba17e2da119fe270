//! etcd Range: bounds, revision checks, filters, sorting, limit and count.

use etcd_client::proto::{PbKeyValue, PbRangeRequest, PbRangeResponse};

use crate::consts::{sort_order, sort_target};
use crate::store::{bounds, empty_bounds, header, visible_at, KeyData, Store, KV_OVERHEAD_BYTES};
use crate::MvccError;

impl Store {
    /// Checks a read revision (`<= 0` = current) and resolves it.
    pub(crate) fn read_revision(&self, requested: i64, current: i64) -> Result<i64, MvccError> {
        if requested <= 0 {
            return Ok(current);
        }
        if requested > current {
            return Err(MvccError::FutureRevision);
        }
        if requested < self.compacted {
            return Err(MvccError::Compacted);
        }
        Ok(requested)
    }

    /// Live key-values in `[key, range_end)` at `rev`, in key order.
    pub(crate) fn kvs_at(
        &self,
        key: &[u8],
        range_end: &[u8],
        rev: i64,
    ) -> Result<Vec<PbKeyValue>, MvccError> {
        let b = bounds(key, range_end);
        let mut out = Vec::new();
        if empty_bounds(&b) {
            return Ok(out);
        }
        let mut bytes = 0u64;
        for (k, h) in self.keys.range::<_, [u8]>(b) {
            let Some(v) = visible_at(h, rev) else {
                continue;
            };
            bytes += kv_response_bytes(k, v.data.as_ref(), false);
            self.check_response_bytes(bytes, self.max_response_bytes)?;
            out.extend(v.to_kv(k, &self.values)?);
        }
        Ok(out)
    }

    /// Refuses a response that has grown past `cap`.
    fn check_response_bytes(&self, bytes: u64, cap: u64) -> Result<(), MvccError> {
        if bytes > cap {
            return Err(MvccError::ResponseTooLarge(self.max_response_bytes));
        }
        Ok(())
    }

    /// Bytes the response to `r` would take at `rev`, from the index alone (no value read).
    pub(crate) fn range_bytes(&self, r: &PbRangeRequest, rev: i64) -> u64 {
        if r.count_only {
            return 0;
        }
        let b = bounds(&r.key, &r.range_end);
        if empty_bounds(&b) {
            return 0;
        }
        let limit = usize::try_from(r.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        self.keys
            .range::<_, [u8]>(b)
            .filter_map(|(k, h)| visible_at(h, rev).and_then(|v| v.data.as_ref().map(|d| (k, d))))
            .take(limit)
            .map(|(k, d)| kv_response_bytes(k, Some(d), r.keys_only))
            .sum()
    }

    /// etcd Range at the current revision.
    pub fn range(&self, req: &PbRangeRequest) -> Result<PbRangeResponse, MvccError> {
        self.range_within(req, self.revision)
    }

    /// etcd Range where `current` is the newest revision visible (inside a txn it is the txn's).
    pub(crate) fn range_within(
        &self,
        r: &PbRangeRequest,
        current: i64,
    ) -> Result<PbRangeResponse, MvccError> {
        self.range_capped(r, current, self.max_response_bytes)
    }

    /// [`Store::range_within`] refusing a response past `cap` bytes as it is built (a txn that
    /// writes checks its ranges before executing and passes no cap).
    pub(crate) fn range_capped(
        &self,
        r: &PbRangeRequest,
        current: i64,
        cap: u64,
    ) -> Result<PbRangeResponse, MvccError> {
        if r.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        let rev = self.read_revision(r.revision, current)?;
        let order = effective_order(r);
        let filtered = r.max_mod_revision != 0
            || r.min_mod_revision != 0
            || r.max_create_revision != 0
            || r.min_create_revision != 0;
        if !filtered && order == sort_order::NONE {
            return self.range_in_key_order(r, rev, current, cap);
        }
        // Sorting and filtering need every key-value of the range first.
        let mut kvs = self.kvs_at(&r.key, &r.range_end, rev)?;
        let count = kvs.len() as i64;

        let prune =
            |kvs: &mut Vec<PbKeyValue>, keep: &dyn Fn(&PbKeyValue) -> bool| kvs.retain(keep);
        if r.max_mod_revision != 0 {
            prune(&mut kvs, &|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            prune(&mut kvs, &|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            prune(&mut kvs, &|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            prune(&mut kvs, &|kv| kv.create_revision >= r.min_create_revision);
        }

        if order != sort_order::NONE {
            match r.sort_target {
                sort_target::VERSION => kvs.sort_by_key(|kv| kv.version),
                sort_target::CREATE => kvs.sort_by_key(|kv| kv.create_revision),
                sort_target::MOD => kvs.sort_by_key(|kv| kv.mod_revision),
                sort_target::VALUE => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
                _ => {}
            }
            if order == sort_order::DESCEND {
                kvs.reverse();
            }
        }

        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.count_only {
            kvs.clear();
        } else if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(PbRangeResponse {
            header: header(current),
            kvs,
            more,
            count,
        })
    }

    /// The common Range — no revision filters, key order: one pass that counts every live key
    /// but copies only what the response carries (at most `limit` key-values, no values for
    /// `keys_only`, nothing for `count_only`), so a large range does not copy the key space
    /// under the state lock to answer a count or a page.
    fn range_in_key_order(
        &self,
        r: &PbRangeRequest,
        rev: i64,
        current: i64,
        cap: u64,
    ) -> Result<PbRangeResponse, MvccError> {
        let limit = usize::try_from(r.limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let mut kvs = Vec::new();
        let mut count: usize = 0;
        let mut bytes = 0u64;
        let b = bounds(&r.key, &r.range_end);
        if !empty_bounds(&b) {
            for (k, h) in self.keys.range::<_, [u8]>(b) {
                let Some((v, d)) = visible_at(h, rev).and_then(|v| v.data.as_ref().map(|d| (v, d)))
                else {
                    continue;
                };
                count += 1;
                if r.count_only || kvs.len() >= limit {
                    continue;
                }
                bytes += kv_response_bytes(k, Some(d), r.keys_only);
                self.check_response_bytes(bytes, cap)?;
                kvs.push(PbKeyValue {
                    key: k.clone(),
                    create_revision: d.create_revision,
                    mod_revision: v.main,
                    version: d.version,
                    value: if r.keys_only {
                        Vec::new()
                    } else {
                        self.values.load(v.main, v.sub, &d.value)?.to_vec()
                    },
                    lease: d.lease,
                });
            }
        }
        Ok(PbRangeResponse {
            header: header(current),
            kvs,
            more: count > limit,
            count: count as i64,
        })
    }
}

/// What one key-value adds to a response: its key, its value (none for `keys_only`, or for a
/// tombstone) and [`KV_OVERHEAD_BYTES`].
fn kv_response_bytes(key: &[u8], data: Option<&KeyData>, keys_only: bool) -> u64 {
    let value = match data {
        Some(d) if !keys_only => d.value.len() as u64,
        _ => 0,
    };
    key.len() as u64 + value + KV_OVERHEAD_BYTES
}

/// The sort order etcd applies: a non-key target with no order means ascending, and ascending
/// by key is the order the key space is already in (`NONE`).
fn effective_order(r: &PbRangeRequest) -> i32 {
    if r.sort_target != sort_target::KEY && r.sort_order == sort_order::NONE {
        sort_order::ASCEND
    } else if r.sort_target == sort_target::KEY && r.sort_order == sort_order::ASCEND {
        sort_order::NONE
    } else {
        r.sort_order
    }
}
