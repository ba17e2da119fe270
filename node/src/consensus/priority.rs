//! Thread priority for work that should only use CPU the member does not need (snapshots, the
//! values sweep): on a busy machine it takes the Raft loop's spare CPU, not the loop's turn.

/// The niceness of background job threads (the loop runs at the process's own).
const JOB_NICENESS: libc::c_int = 10;

/// Lowers the calling thread's priority (on Linux, PRIO_PROCESS with id 0 is this thread).
pub(crate) fn lower_this_threads_priority() {
    // SAFETY: setpriority has no memory effects; a failure leaves the priority as it was.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, JOB_NICENESS) };
    if rc != 0 {
        tracing::debug!(
            "cannot lower a background thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
