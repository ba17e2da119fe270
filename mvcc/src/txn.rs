//! etcd Txn: static validation, compares, and atomic execution of a branch (nested txns too).

use std::collections::HashSet;

use etcd_client::proto::{
    PbCompare, PbDeleteResponse, PbPutResponse, PbResponseOp, PbTargetUnion, PbTxnOpRequest,
    PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};

use crate::consts::compare_result;
use crate::store::{header, Applied, Store};
use crate::MvccError;

/// Checks a txn before it is proposed, as etcd's API layer does: operation counts, empty keys, and
/// no key written twice (two puts, or a put inside a deleted range) in one branch.
pub fn validate_txn(req: &PbTxnRequest, max_txn_ops: usize) -> Result<(), MvccError> {
    if req.compare.len() > max_txn_ops
        || req.success.len() > max_txn_ops
        || req.failure.len() > max_txn_ops
    {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for branch in [&req.success, &req.failure] {
        for op in branch.iter() {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) if r.key.is_empty() => {
                    return Err(MvccError::EmptyKey)
                }
                Some(PbTxnOpRequest::RequestPut(r)) if r.key.is_empty() => {
                    return Err(MvccError::EmptyKey)
                }
                Some(PbTxnOpRequest::RequestDeleteRange(r)) if r.key.is_empty() => {
                    return Err(MvccError::EmptyKey)
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => validate_txn(t, max_txn_ops)?,
                _ => {}
            }
        }
        let mut puts = HashSet::new();
        let mut deletes = Vec::new();
        collect_writes(branch, &mut puts, &mut deletes)?;
        for key in &puts {
            if deletes
                .iter()
                .any(|(k, e): &(Vec<u8>, Vec<u8>)| in_range(key, k, e))
            {
                return Err(MvccError::DuplicateKey);
            }
        }
    }
    Ok(())
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// Puts and deletes of a branch, nested txns included (either of their branches may run).
fn collect_writes(
    ops: &[PbTxnRequestOp],
    puts: &mut HashSet<Vec<u8>>,
    deletes: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), MvccError> {
    for op in ops {
        match &op.request {
            Some(PbTxnOpRequest::RequestPut(p)) if !puts.insert(p.key.clone()) => {
                return Err(MvccError::DuplicateKey);
            }
            Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                deletes.push((d.key.clone(), d.range_end.clone()))
            }
            Some(PbTxnOpRequest::RequestTxn(t)) => {
                // Each nested branch is checked on its own; its writes join ours.
                let mut s = puts.clone();
                collect_writes(&t.success, &mut s, deletes)?;
                let mut f = puts.clone();
                collect_writes(&t.failure, &mut f, deletes)?;
                puts.extend(s);
                puts.extend(f);
            }
            _ => {}
        }
    }
    Ok(())
}

fn compare_ints(result: i32, have: i64, want: i64) -> bool {
    match result {
        compare_result::EQUAL => have == want,
        compare_result::GREATER => have > want,
        compare_result::LESS => have < want,
        compare_result::NOT_EQUAL => have != want,
        _ => false,
    }
}

impl Store {
    /// One compare against the current state (every key of its range must satisfy it).
    fn compare(&self, c: &PbCompare) -> Result<bool, MvccError> {
        let kvs = self.kvs_at(&c.key, &c.range_end, self.revision)?;
        let Some(target) = &c.target_union else {
            return Ok(false);
        };
        if kvs.is_empty() {
            return Ok(match target {
                // A missing key has no value to compare.
                PbTargetUnion::Value(_) => false,
                PbTargetUnion::Version(w)
                | PbTargetUnion::CreateRevision(w)
                | PbTargetUnion::ModRevision(w)
                | PbTargetUnion::Lease(w) => compare_ints(c.result, 0, *w),
            });
        }
        Ok(kvs.iter().all(|kv| match target {
            PbTargetUnion::Version(w) => compare_ints(c.result, kv.version, *w),
            PbTargetUnion::CreateRevision(w) => compare_ints(c.result, kv.create_revision, *w),
            PbTargetUnion::ModRevision(w) => compare_ints(c.result, kv.mod_revision, *w),
            PbTargetUnion::Lease(w) => compare_ints(c.result, kv.lease, *w),
            PbTargetUnion::Value(w) => {
                let ord = kv.value.as_slice().cmp(w.as_slice());
                match c.result {
                    compare_result::EQUAL => ord.is_eq(),
                    compare_result::GREATER => ord.is_gt(),
                    compare_result::LESS => ord.is_lt(),
                    compare_result::NOT_EQUAL => ord.is_ne(),
                    _ => false,
                }
            }
        }))
    }

    /// Which branch each (nested) txn takes, decided before anything is written, and the
    /// failures etcd reports before executing (missing key for ignore_value/ignore_lease, bad
    /// read revisions), so execution itself cannot fail half-way.
    fn plan(
        &self,
        t: &PbTxnRequest,
        decisions: &mut Vec<bool>,
        range_bytes: &mut u64,
    ) -> Result<(), MvccError> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        decisions.push(ok);
        let branch = if ok { &t.success } else { &t.failure };
        for op in branch {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    let rev = self.read_revision(r.revision, self.revision)?;
                    // Refused before anything is written: ranges in a txn are not capped while
                    // they run (that would leave the txn half-applied).
                    *range_bytes += self.range_bytes(r, rev);
                    if *range_bytes > self.max_response_bytes {
                        return Err(MvccError::ResponseTooLarge(self.max_response_bytes));
                    }
                }
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    if p.key.is_empty() {
                        return Err(MvccError::EmptyKey);
                    }
                    if (p.ignore_value || p.ignore_lease) && !self.is_live(&p.key) {
                        return Err(MvccError::KeyNotFound);
                    }
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) if d.key.is_empty() => {
                    return Err(MvccError::EmptyKey)
                }
                Some(PbTxnOpRequest::RequestTxn(inner)) => {
                    self.plan(inner, decisions, range_bytes)?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Executes a planned txn; `decisions` are consumed in the order `plan` produced them.
    fn execute(
        &mut self,
        t: &PbTxnRequest,
        main: i64,
        sub: &mut i64,
        decisions: &mut std::vec::IntoIter<bool>,
        events: &mut Vec<etcd_client::proto::PbEvent>,
    ) -> Result<PbTxnResponse, MvccError> {
        let ok = decisions.next().unwrap_or(false);
        let branch = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let resp = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    // Sees the writes made earlier in this txn. Planned: only the values
                    // database can fail it.
                    let current = if *sub > 0 { main } else { main - 1 };
                    let rr = self.range_capped(r, current, u64::MAX)?;
                    PbTxnOpResponse::ResponseRange(rr)
                }
                Some(PbTxnOpRequest::RequestPut(p)) => {
                    let ev = self.write_put(p, main, *sub)?;
                    *sub += 1;
                    let prev = if p.prev_kv { ev.prev_kv.clone() } else { None };
                    events.push(ev);
                    PbTxnOpResponse::ResponsePut(PbPutResponse {
                        header: None,
                        prev_kv: prev,
                    })
                }
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
                    let (deleted, evs) = self.write_delete(&d.key, &d.range_end, main, sub)?;
                    events.extend(evs);
                    PbTxnOpResponse::ResponseDeleteRange(PbDeleteResponse {
                        header: None,
                        deleted: deleted.len() as i64,
                        prev_kvs: if d.prev_kv { deleted } else { vec![] },
                    })
                }
                Some(PbTxnOpRequest::RequestTxn(inner)) => {
                    PbTxnOpResponse::ResponseTxn(self.execute(inner, main, sub, decisions, events)?)
                }
                None => continue,
            };
            responses.push(PbResponseOp {
                response: Some(resp),
            });
        }
        Ok(PbTxnResponse {
            header: None,
            succeeded: ok,
            responses,
        })
    }

    /// etcd Txn: all or nothing; every write in it shares one new revision.
    pub fn txn(&mut self, req: &PbTxnRequest) -> Result<Applied<PbTxnResponse>, MvccError> {
        let main = self.revision + 1;
        let mut decisions = Vec::new();
        self.plan(req, &mut decisions, &mut 0)?;
        let mut sub = 0;
        let mut events = Vec::new();
        let mut resp =
            self.execute(req, main, &mut sub, &mut decisions.into_iter(), &mut events)?;
        if sub > 0 {
            self.revision = main;
        }
        set_headers(&mut resp, self.revision);
        Ok(Applied {
            response: resp,
            events,
        })
    }
}

/// Gives the txn response and every inner response a header at the final revision.
fn set_headers(t: &mut PbTxnResponse, revision: i64) {
    t.header = header(revision);
    for r in &mut t.responses {
        match &mut r.response {
            Some(PbTxnOpResponse::ResponseRange(x)) => x.header = header(revision),
            Some(PbTxnOpResponse::ResponsePut(x)) => x.header = header(revision),
            Some(PbTxnOpResponse::ResponseDeleteRange(x)) => x.header = header(revision),
            Some(PbTxnOpResponse::ResponseTxn(x)) => set_headers(x, revision),
            None => {}
        }
    }
}
