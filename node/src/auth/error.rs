//! etcd's authentication errors, with the messages etcd's clients recognise.

/// An authentication or authorization failure, as etcd names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// AuthEnable without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of a name in use.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// No credentials where auth needs them, or UserAdd of an empty name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a name in use.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd of an empty name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Authenticate with a wrong name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// The caller may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Authenticate while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown, expired, malformed or badly signed.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock everyone out (deleting root while enabled, ...) or an invalid
    /// permission range.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// The request was authorized under auth settings that have changed since.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// Authenticate as a user created without a password (it authenticates by certificate).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
}
