//! Which permissions each key-space request needs (etcd's `authApplierV3` and the read path's
//! checks), following etcd 3.5's latest rules: a txn's compares and both branches, nested txns
//! included; a put's prev_kv and the keys already on its lease; a revoke's attached keys.

use etcd_client::proto::{
    PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTxnOpRequest, PbTxnRequest,
};

use crate::auth::error::AuthError;
use crate::auth::state::{AuthState, Caller, PermKind};

impl AuthState {
    /// Range (and a read-only txn's ranges): read on the range.
    pub fn check_range(&self, caller: &Caller, r: &PbRangeRequest) -> Result<(), AuthError> {
        self.check(caller, &r.key, &r.range_end, PermKind::Read)
    }

    /// Put: write on the key, read on it too for prev_kv, and (but for root) write on every
    /// key already attached to the lease it names.
    pub fn check_put<'a, K>(
        &self,
        caller: &Caller,
        r: &PbPutRequest,
        lease_keys: impl Fn(i64) -> K,
    ) -> Result<(), AuthError>
    where
        K: IntoIterator<Item = &'a Vec<u8>>,
    {
        self.check(caller, &r.key, &[], PermKind::Write)?;
        if r.lease != 0 && self.enabled && !self.is_root(caller) {
            for k in lease_keys(r.lease) {
                self.check(caller, k, &[], PermKind::Write)?;
            }
        }
        if r.prev_kv {
            self.check(caller, &r.key, &[], PermKind::Read)?;
        }
        Ok(())
    }

    /// DeleteRange: write on the range, read on it too for prev_kv.
    pub fn check_delete(&self, caller: &Caller, r: &PbDeleteRequest) -> Result<(), AuthError> {
        self.check(caller, &r.key, &r.range_end, PermKind::Write)?;
        if r.prev_kv {
            self.check(caller, &r.key, &r.range_end, PermKind::Read)?;
        }
        Ok(())
    }

    /// Txn: read on every compare, then every operation of both branches, at any depth,
    /// whichever branch would run.
    pub fn check_txn<'a, K>(
        &self,
        caller: &Caller,
        t: &PbTxnRequest,
        lease_keys: &impl Fn(i64) -> K,
    ) -> Result<(), AuthError>
    where
        K: IntoIterator<Item = &'a Vec<u8>>,
    {
        if !self.enabled {
            return Ok(());
        }
        for c in &t.compare {
            self.check(caller, &c.key, &c.range_end, PermKind::Read)?;
        }
        for op in t.success.iter().chain(t.failure.iter()) {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => self.check_range(caller, r)?,
                Some(PbTxnOpRequest::RequestPut(p)) => self.check_put(caller, p, lease_keys)?,
                Some(PbTxnOpRequest::RequestDeleteRange(d)) => self.check_delete(caller, d)?,
                Some(PbTxnOpRequest::RequestTxn(inner)) => {
                    self.check_txn(caller, inner, lease_keys)?
                }
                None => {}
            }
        }
        Ok(())
    }

    /// LeaseRevoke: write on every key attached to the lease.
    pub fn check_lease_revoke<'a>(
        &self,
        caller: &Caller,
        keys: impl IntoIterator<Item = &'a Vec<u8>>,
    ) -> Result<(), AuthError> {
        for k in keys {
            self.check(caller, k, &[], PermKind::Write)?;
        }
        Ok(())
    }

    /// Requests that need an authenticated user but no key permission (lease grant and
    /// keep-alive, status, alarm list, member list): credentials given and current.
    pub fn check_user(&self, caller: &Caller) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = caller.user.as_deref().ok_or(AuthError::UserEmpty)?;
        if caller.revision != 0 && caller.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        if !self.users.contains_key(name) {
            return Err(AuthError::UserNotFound);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use etcd_client::proto::{PbCompare, PbTxnRequestOp};

    use super::*;
    use crate::auth::state::{AuthChange, Permission, ROOT};

    fn state() -> AuthState {
        let root = Caller {
            user: Some(ROOT.into()),
            revision: 0,
        };
        let mut s = AuthState::default();
        let grant = |kind, key: &str, end: &str| AuthChange::RoleGrantPermission {
            role: "r".into(),
            permission: Some(Permission {
                kind,
                key: key.into(),
                range_end: end.into(),
            }),
        };
        let changes = vec![
            AuthChange::UserAdd {
                name: ROOT.into(),
                password_hash: String::new(),
                no_password: false,
            },
            AuthChange::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            AuthChange::UserAdd {
                name: "bob".into(),
                password_hash: String::new(),
                no_password: false,
            },
            AuthChange::RoleAdd { name: "r".into() },
            grant(PermKind::ReadWrite, "rw", ""),
            grant(PermKind::Write, "w", ""),
            grant(PermKind::Read, "r", ""),
            AuthChange::UserGrantRole {
                user: "bob".into(),
                role: "r".into(),
            },
            AuthChange::Enable,
        ];
        for c in changes {
            s.apply(&root, &c).unwrap();
        }
        s
    }

    fn bob(s: &AuthState) -> Caller {
        Caller {
            user: Some("bob".into()),
            revision: s.revision,
        }
    }

    fn put(key: &str, prev_kv: bool, lease: i64) -> PbPutRequest {
        PbPutRequest {
            key: key.into(),
            prev_kv,
            lease,
            ..Default::default()
        }
    }

    fn no_keys(_: i64) -> Vec<&'static Vec<u8>> {
        Vec::new()
    }

    #[test]
    fn put_needs_read_for_prev_kv_and_write_on_the_lease_keys() {
        let s = state();
        let b = bob(&s);
        assert_eq!(s.check_put(&b, &put("w", false, 0), no_keys), Ok(()));
        assert_eq!(
            s.check_put(&b, &put("w", true, 0), no_keys),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check_put(&b, &put("rw", true, 0), no_keys), Ok(()));
        let attached = [b"r".to_vec()];
        assert_eq!(
            s.check_put(&b, &put("w", false, 7), |_| attached.iter()),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn a_txn_is_checked_in_both_branches_and_nested_txns() {
        let s = state();
        let b = bob(&s);
        let op = |r| PbTxnRequestOp { request: Some(r) };
        let ok = PbTxnRequest {
            compare: vec![PbCompare {
                key: b"r".to_vec(),
                ..Default::default()
            }],
            success: vec![op(PbTxnOpRequest::RequestPut(put("w", false, 0)))],
            failure: vec![op(PbTxnOpRequest::RequestRange(PbRangeRequest {
                key: b"rw".to_vec(),
                ..Default::default()
            }))],
        };
        assert_eq!(s.check_txn(&b, &ok, &no_keys), Ok(()));
        let mut bad_failure = ok.clone();
        bad_failure.failure = vec![op(PbTxnOpRequest::RequestPut(put("r", false, 0)))];
        assert_eq!(
            s.check_txn(&b, &bad_failure, &no_keys),
            Err(AuthError::PermissionDenied)
        );
        let nested = PbTxnRequest {
            success: vec![op(PbTxnOpRequest::RequestTxn(bad_failure))],
            ..Default::default()
        };
        assert_eq!(
            s.check_txn(&b, &nested, &no_keys),
            Err(AuthError::PermissionDenied)
        );
        let mut bad_compare = ok;
        bad_compare.compare[0].key = b"w".to_vec();
        assert_eq!(
            s.check_txn(&b, &bad_compare, &no_keys),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn delete_with_prev_kv_needs_read() {
        let s = state();
        let b = bob(&s);
        let d = |key: &str, prev_kv| PbDeleteRequest {
            key: key.into(),
            prev_kv,
            ..Default::default()
        };
        assert_eq!(s.check_delete(&b, &d("w", false)), Ok(()));
        assert_eq!(
            s.check_delete(&b, &d("w", true)),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check_delete(&b, &d("rw", true)), Ok(()));
    }
}
