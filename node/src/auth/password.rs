//! Password hashing with bcrypt, as etcd: the member that receives a password hashes it
//! (at `--bcrypt-cost`) before anything goes through Raft, and checks it on Authenticate.

/// etcd's default bcrypt cost.
pub const DEFAULT_COST: u32 = 10;

/// The cost to use for `--bcrypt-cost`: bcrypt's range is 4–31; outside it etcd warns and uses
/// the default.
pub fn effective_cost(flag: u32) -> u32 {
    if (4..=31).contains(&flag) {
        flag
    } else {
        tracing::warn!(flag, "--bcrypt-cost outside 4..=31; using {DEFAULT_COST}");
        DEFAULT_COST
    }
}

/// The bcrypt hash of `password`.
pub fn hash(password: &str, cost: u32) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(password, cost)
}

/// True when `password` matches `hash` (an empty hash matches nothing).
pub fn matches(password: &str, hash: &str) -> bool {
    !hash.is_empty() && bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_their_password_only() {
        let h = hash("pw", 4).unwrap();
        assert!(matches("pw", &h));
        assert!(!matches("pW", &h));
        assert!(!matches("", ""));
        let empty = hash("", 4).unwrap();
        assert!(matches("", &empty));
        assert_eq!(effective_cost(2), DEFAULT_COST);
        assert_eq!(effective_cost(12), 12);
    }
}
