//! The replicated auth state (users, roles, permissions, the enabled flag and the auth
//! revision) and the changes applied to it through Raft, with etcd's rules and errors.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::auth::error::AuthError;
use crate::auth::ranges::{self, Interval};

/// The user and role every right belongs to.
pub const ROOT: &str = "root";

/// What a permission allows (etcd's `authpb.Permission.Type`, same numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PermKind {
    /// Range and Watch.
    Read,
    /// Put and DeleteRange.
    Write,
    /// Both.
    ReadWrite,
}

impl PermKind {
    /// The kind etcd numbers `n`.
    pub fn from_i32(n: i32) -> Option<PermKind> {
        match n {
            0 => Some(PermKind::Read),
            1 => Some(PermKind::Write),
            2 => Some(PermKind::ReadWrite),
            _ => None,
        }
    }

    /// etcd's number for this kind.
    pub fn as_i32(self) -> i32 {
        match self {
            PermKind::Read => 0,
            PermKind::Write => 1,
            PermKind::ReadWrite => 2,
        }
    }

    fn allows(self, wanted: PermKind) -> bool {
        self == PermKind::ReadWrite || self == wanted
    }
}

/// A permission on a key (`range_end` empty), a range, or every key from `key` on
/// (`range_end` = `"\0"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub kind: PermKind,
    /// First key.
    pub key: Vec<u8>,
    /// Past the last key, as etcd spells it.
    pub range_end: Vec<u8>,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    /// bcrypt hash of the password; empty when no password can match (a no-password user,
    /// or a password changed to "").
    pub password_hash: String,
    /// The user authenticates by certificate only.
    pub no_password: bool,
    /// Granted roles (sorted, as etcd keeps them).
    pub roles: BTreeSet<String>,
}

/// A role: permissions kept sorted by key, as etcd keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Role {
    /// Its permissions.
    pub permissions: Vec<Permission>,
}

/// Who asks: the user a token or certificate named, and the auth revision it was checked at
/// (0 with no credentials, as etcd's empty `AuthInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Caller {
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The auth revision the credentials were checked at.
    pub revision: u64,
}

impl Caller {
    /// A request that carried no credentials.
    pub fn anonymous() -> Caller {
        Caller::default()
    }
}

/// A change of the auth state, proposed through Raft by the member that received the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthChange {
    /// AuthEnable.
    Enable,
    /// AuthDisable.
    Disable,
    /// UserAdd (the password already hashed by the receiving member).
    UserAdd {
        /// Name.
        name: String,
        /// bcrypt hash ("" for a no-password user).
        password_hash: String,
        /// Certificate-only user.
        no_password: bool,
    },
    /// UserDelete.
    UserDelete {
        /// Name.
        name: String,
    },
    /// UserChangePassword (hashed; "" when the new password is empty).
    UserChangePassword {
        /// Name.
        name: String,
        /// bcrypt hash.
        password_hash: String,
    },
    /// UserGrantRole.
    UserGrantRole {
        /// User.
        user: String,
        /// Role.
        role: String,
    },
    /// UserRevokeRole.
    UserRevokeRole {
        /// User.
        user: String,
        /// Role.
        role: String,
    },
    /// RoleAdd.
    RoleAdd {
        /// Name.
        name: String,
    },
    /// RoleDelete.
    RoleDelete {
        /// Name.
        name: String,
    },
    /// RoleGrantPermission (None when the request named no permission).
    RoleGrantPermission {
        /// Role.
        role: String,
        /// The permission.
        permission: Option<Permission>,
    },
    /// RoleRevokePermission.
    RoleRevokePermission {
        /// Role.
        role: String,
        /// First key.
        key: Vec<u8>,
        /// Range end as given.
        range_end: Vec<u8>,
    },
    /// Authenticate, after the receiving member checked the password: every member issues the
    /// simple token `prefix.index` for `name`.
    Authenticate {
        /// User.
        name: String,
        /// The token's random part.
        prefix: String,
    },
}

/// What an applied change means for tokens already issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthApplied {
    /// Nothing to do.
    Done,
    /// `name` authenticated: issue its token.
    Authenticated {
        /// User.
        name: String,
    },
    /// `name`'s tokens no longer hold (deleted, or its password changed).
    UserInvalidated {
        /// User.
        name: String,
    },
    /// Auth was disabled: no token holds.
    AllInvalidated,
}

/// The auth state every member holds alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Requests are checked.
    pub enabled: bool,
    /// Raised by every change that alters who may do what; credentials checked at an older
    /// revision are refused for key-space requests.
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> Self {
        // etcd's store starts at revision 1.
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

impl AuthState {
    /// True when the user exists and holds the root role.
    fn has_root(&self, name: &str) -> bool {
        self.users.get(name).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// etcd's `IsAdminPermitted`: anyone while auth is off, else a user with the root role.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = caller.user.as_deref().ok_or(AuthError::UserEmpty)?;
        match self.users.get(name) {
            None => Err(AuthError::UserNotFound),
            Some(u) if u.roles.contains(ROOT) => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// Applies one change for `caller` (every change but Authenticate needs an admin).
    pub fn apply(
        &mut self,
        caller: &Caller,
        change: &AuthChange,
    ) -> Result<AuthApplied, AuthError> {
        if !matches!(change, AuthChange::Authenticate { .. }) {
            self.check_admin(caller)?;
        }
        let applied = match change {
            AuthChange::Enable => {
                if !self.enabled {
                    let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                    if !root.roles.contains(ROOT) {
                        return Err(AuthError::RootRoleNotExist);
                    }
                    self.enabled = true;
                }
                // etcd does not raise the revision here.
                return Ok(AuthApplied::Done);
            }
            AuthChange::Disable => {
                if !self.enabled {
                    return Ok(AuthApplied::Done);
                }
                self.enabled = false;
                AuthApplied::AllInvalidated
            }
            AuthChange::UserAdd {
                name,
                password_hash,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name.clone(),
                    User {
                        password_hash: if *no_password {
                            String::new()
                        } else {
                            password_hash.clone()
                        },
                        no_password: *no_password,
                        roles: BTreeSet::new(),
                    },
                );
                AuthApplied::Done
            }
            AuthChange::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
                AuthApplied::UserInvalidated { name: name.clone() }
            }
            AuthChange::UserChangePassword {
                name,
                password_hash,
            } => {
                let u = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                if !u.no_password {
                    u.password_hash = password_hash.clone();
                }
                AuthApplied::UserInvalidated { name: name.clone() }
            }
            AuthChange::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                // Role root may be granted before it exists, as etcd allows.
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.insert(role.clone()) {
                    return Ok(AuthApplied::Done);
                }
                AuthApplied::Done
            }
            AuthChange::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
                AuthApplied::Done
            }
            AuthChange::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
                AuthApplied::Done
            }
            AuthChange::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    u.roles.remove(name);
                }
                AuthApplied::Done
            }
            AuthChange::RoleGrantPermission { role, permission } => {
                let p = permission.as_ref().ok_or(AuthError::PermissionNotGiven)?;
                if !valid_range(&p.key, &p.range_end) {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                match r
                    .permissions
                    .iter_mut()
                    .find(|q| q.key == p.key && q.range_end == p.range_end)
                {
                    Some(q) => q.kind = p.kind,
                    None => {
                        r.permissions.push(p.clone());
                        r.permissions.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                AuthApplied::Done
            }
            AuthChange::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = r.permissions.len();
                r.permissions
                    .retain(|q| !(q.key == *key && q.range_end == *range_end));
                if r.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                AuthApplied::Done
            }
            AuthChange::Authenticate { name, .. } => {
                if !self.enabled {
                    return Err(AuthError::AuthNotEnabled);
                }
                match self.users.get(name) {
                    Some(u) if !u.no_password => {}
                    _ => return Err(AuthError::AuthFailed),
                }
                return Ok(AuthApplied::Authenticated { name: name.clone() });
            }
        };
        self.revision += 1;
        Ok(applied)
    }

    /// The user record `name`, for UserGet: an admin may read anyone, a user themself.
    pub fn user_get(&self, caller: &Caller, name: &str) -> Result<&User, AuthError> {
        if caller.user.as_deref() != Some(name) || !self.enabled {
            self.check_admin(caller)?;
        }
        self.users.get(name).ok_or(AuthError::UserNotFound)
    }

    /// The role `name`, for RoleGet: an admin may read any, a user the roles it holds.
    pub fn role_get(&self, caller: &Caller, name: &str) -> Result<&Role, AuthError> {
        let holds = caller
            .user
            .as_deref()
            .and_then(|u| self.users.get(u))
            .is_some_and(|u| u.roles.contains(name));
        if !holds {
            self.check_admin(caller)?;
        }
        self.roles.get(name).ok_or(AuthError::RoleNotFound)
    }

    /// etcd's `isOpPermitted`: may `caller` do `wanted` on `key`..`range_end`?
    pub fn check(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        wanted: PermKind,
    ) -> Result<(), AuthError> {
        let name = self.known_caller(caller)?;
        let Some(name) = name else { return Ok(()) };
        if self.has_root(name) {
            return Ok(());
        }
        let granted = self.intervals(name, wanted);
        if ranges::covers(&granted, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// With auth on, the caller's name after the checks every key-space request passes first
    /// (credentials given, not older than the auth state); None with auth off.
    fn known_caller<'a>(&self, caller: &'a Caller) -> Result<Option<&'a str>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        let name = caller.user.as_deref().ok_or(AuthError::UserEmpty)?;
        if caller.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if caller.revision < self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        if !self.users.contains_key(name) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(Some(name))
    }

    /// True when `caller` is an admin for a key-space request (root bypasses every range
    /// check; etcd ≥ 3.5.10 also spares it the lease's attached keys).
    pub fn is_root(&self, caller: &Caller) -> bool {
        caller.user.as_deref().is_some_and(|n| self.has_root(n))
    }

    /// Every interval `name`'s roles grant for `wanted`.
    fn intervals(&self, name: &str, wanted: PermKind) -> Vec<Interval> {
        let Some(user) = self.users.get(name) else {
            return Vec::new();
        };
        user.roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.permissions.iter())
            .filter(|p| p.kind.allows(wanted))
            .map(|p| Interval::of(&p.key, &p.range_end))
            .collect()
    }
}

/// etcd's `isValidPermissionRange` (3.5.8 on): a key, then no end, an end after the key, or
/// `"\0"` for every key from it on.
fn valid_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || range_end > key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Caller {
        Caller {
            user: Some(ROOT.into()),
            revision: 0,
        }
    }

    fn apply(s: &mut AuthState, c: AuthChange) -> Result<AuthApplied, AuthError> {
        s.apply(&admin(), &c)
    }

    fn user(name: &str) -> AuthChange {
        AuthChange::UserAdd {
            name: name.into(),
            password_hash: "h".into(),
            no_password: false,
        }
    }

    fn grant(user: &str, role: &str) -> AuthChange {
        AuthChange::UserGrantRole {
            user: user.into(),
            role: role.into(),
        }
    }

    fn perm(role: &str, kind: PermKind, key: &str, end: &str) -> AuthChange {
        AuthChange::RoleGrantPermission {
            role: role.into(),
            permission: Some(Permission {
                kind,
                key: key.into(),
                range_end: end.into(),
            }),
        }
    }

    /// root with the root role, auth enabled, user bob with role r (read on foo).
    fn enabled() -> AuthState {
        let mut s = AuthState::default();
        for c in [
            user(ROOT),
            grant(ROOT, ROOT),
            user("bob"),
            AuthChange::RoleAdd { name: "r".into() },
            perm("r", PermKind::Read, "foo", ""),
            grant("bob", "r"),
            AuthChange::Enable,
        ] {
            apply(&mut s, c).unwrap();
        }
        s
    }

    fn as_user(s: &AuthState, name: &str) -> Caller {
        Caller {
            user: Some(name.into()),
            revision: s.revision,
        }
    }

    #[test]
    fn enable_needs_root_with_the_root_role_and_keeps_the_revision() {
        let mut s = AuthState::default();
        assert_eq!(s.revision, 1);
        assert_eq!(
            apply(&mut s, AuthChange::Enable),
            Err(AuthError::RootUserNotExist)
        );
        apply(&mut s, user(ROOT)).unwrap();
        assert_eq!(
            apply(&mut s, AuthChange::Enable),
            Err(AuthError::RootRoleNotExist)
        );
        apply(&mut s, grant(ROOT, ROOT)).unwrap();
        assert_eq!(s.revision, 3);
        apply(&mut s, AuthChange::Enable).unwrap();
        assert!(s.enabled);
        assert_eq!(s.revision, 3);
        assert_eq!(
            apply(&mut s, AuthChange::Disable),
            Ok(AuthApplied::AllInvalidated)
        );
        assert_eq!(s.revision, 4);
        assert_eq!(apply(&mut s, AuthChange::Disable), Ok(AuthApplied::Done));
        assert_eq!(s.revision, 4);
    }

    #[test]
    fn root_cannot_be_removed_while_enabled() {
        let mut s = enabled();
        let del = AuthChange::UserDelete { name: ROOT.into() };
        assert_eq!(apply(&mut s, del), Err(AuthError::InvalidAuthMgmt));
        let del = AuthChange::RoleDelete { name: ROOT.into() };
        assert_eq!(apply(&mut s, del), Err(AuthError::InvalidAuthMgmt));
        let revoke = AuthChange::UserRevokeRole {
            user: ROOT.into(),
            role: ROOT.into(),
        };
        assert_eq!(apply(&mut s, revoke), Err(AuthError::InvalidAuthMgmt));
    }

    #[test]
    fn management_needs_an_admin_once_enabled() {
        let mut s = enabled();
        let bob = as_user(&s, "bob");
        let add = AuthChange::RoleAdd { name: "x".into() };
        assert_eq!(s.apply(&bob, &add), Err(AuthError::PermissionDenied));
        assert_eq!(
            s.apply(&Caller::anonymous(), &add),
            Err(AuthError::UserEmpty)
        );
        let ghost = as_user(&s, "ghost");
        assert_eq!(s.apply(&ghost, &add), Err(AuthError::UserNotFound));
        // A user reads itself and the roles it holds, nothing else.
        assert!(s.user_get(&bob, "bob").is_ok());
        assert_eq!(
            s.user_get(&bob, ROOT).err(),
            Some(AuthError::PermissionDenied)
        );
        assert!(s.role_get(&bob, "r").is_ok());
        assert_eq!(
            s.role_get(&bob, ROOT).err(),
            Some(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn grants_replace_the_kind_on_the_same_range_and_stay_sorted() {
        let mut s = enabled();
        let rev = s.revision;
        apply(&mut s, perm("r", PermKind::ReadWrite, "foo", "")).unwrap();
        apply(&mut s, perm("r", PermKind::Write, "a", "b")).unwrap();
        let r = &s.roles["r"];
        assert_eq!(r.permissions.len(), 2);
        assert_eq!(r.permissions[0].key, b"a");
        assert_eq!(r.permissions[1].kind, PermKind::ReadWrite);
        assert_eq!(s.revision, rev + 2);
        let revoke = AuthChange::RoleRevokePermission {
            role: "r".into(),
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
        };
        assert_eq!(apply(&mut s, revoke), Err(AuthError::PermissionNotGranted));
        let bad = perm("r", PermKind::Read, "b", "a");
        assert_eq!(apply(&mut s, bad), Err(AuthError::InvalidAuthMgmt));
        let none = AuthChange::RoleGrantPermission {
            role: "r".into(),
            permission: None,
        };
        assert_eq!(apply(&mut s, none), Err(AuthError::PermissionNotGiven));
    }

    #[test]
    fn granting_a_role_twice_changes_nothing() {
        let mut s = enabled();
        let rev = s.revision;
        apply(&mut s, grant("bob", "r")).unwrap();
        assert_eq!(s.revision, rev);
        assert_eq!(
            apply(&mut s, grant("bob", "nope")),
            Err(AuthError::RoleNotFound)
        );
    }

    #[test]
    fn key_space_checks() {
        let s = enabled();
        let bob = as_user(&s, "bob");
        assert_eq!(s.check(&bob, b"foo", b"", PermKind::Read), Ok(()));
        assert_eq!(
            s.check(&bob, b"foo", b"", PermKind::Write),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check(&bob, b"foo", b"fop", PermKind::Read),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.check(&Caller::anonymous(), b"foo", b"", PermKind::Read),
            Err(AuthError::UserEmpty)
        );
        let old = Caller {
            user: Some("bob".into()),
            revision: s.revision - 1,
        };
        assert_eq!(
            s.check(&old, b"foo", b"", PermKind::Read),
            Err(AuthError::AuthOldRevision)
        );
        let root = as_user(&s, ROOT);
        assert_eq!(s.check(&root, b"\0", b"\0", PermKind::Write), Ok(()));
    }

    #[test]
    fn deleting_a_role_takes_it_from_every_user() {
        let mut s = enabled();
        apply(&mut s, AuthChange::RoleDelete { name: "r".into() }).unwrap();
        assert!(s.users["bob"].roles.is_empty());
    }

    #[test]
    fn authenticate_refuses_no_password_users_and_disabled_auth() {
        let mut s = AuthState::default();
        let auth = |name: &str| AuthChange::Authenticate {
            name: name.into(),
            prefix: "p".into(),
        };
        assert_eq!(apply(&mut s, auth("x")), Err(AuthError::AuthNotEnabled));
        let mut s = enabled();
        apply(
            &mut s,
            AuthChange::UserAdd {
                name: "cert".into(),
                password_hash: "ignored".into(),
                no_password: true,
            },
        )
        .unwrap();
        assert_eq!(s.users["cert"].password_hash, "");
        assert_eq!(
            s.apply(&Caller::anonymous(), &auth("cert")),
            Err(AuthError::AuthFailed)
        );
        assert_eq!(
            s.apply(&Caller::anonymous(), &auth("bob")),
            Ok(AuthApplied::Authenticated { name: "bob".into() })
        );
    }
}
