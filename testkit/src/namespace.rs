//! Tests that change the machine's network or mounts (iptables rules, tmpfs) run inside a
//! network and mount namespace of their own.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Runs test `test` again under `unshare --net --mount` (a network and mount namespace of its
/// own, so iptables rules and tmpfs mounts touch nothing outside) unless already there. Returns
/// true in the process that should do the work; in the outer one, waits (bounded) and asserts
/// the inner run passed. `ignored` re-runs an `#[ignore]`d test (passes `--ignored`).
pub fn in_namespace(test: &str, ignored: bool) -> bool {
    // One namespaced test at a time per binary: two clusters under faults on two cores would
    // mostly measure the machine.
    static SERIAL: Mutex<()> = Mutex::new(());
    if std::env::var_os("METASTORE_TEST_NS").is_some() {
        // Inside: bring loopback up (a new network namespace starts with it down).
        let ok = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip link set lo up failed inside the test namespace");
        return true;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"]);
    if ignored {
        cmd.arg("--ignored");
    }
    cmd.env("METASTORE_TEST_NS", "1");
    let mut child = cmd
        .spawn()
        .expect("unshare (util-linux) is needed; run as root (scripts/install-deps.sh)");
    // Bounded: a profile that hangs is killed (by PID: our own child) and fails.
    let limit = Duration::from_secs(
        std::env::var("METASTORE_NS_TEST_LIMIT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1200),
    );
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "{test} failed inside its namespace ({st})");
            return false;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
