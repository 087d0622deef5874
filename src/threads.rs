//! What the threads synack starts (acceptors, workers) share: `SCHED_BATCH`, and caught panics
//! whose payload must not escape.

use std::panic::AssertUnwindSafe;

/// Puts the calling thread under `SCHED_BATCH`, or says why not.
pub(crate) fn enter_sched_batch() {
    if let Err(e) = crate::sys::set_sched_batch() {
        tracing::warn!(target: "synack::worker", error = %e, "cannot run this thread under SCHED_BATCH");
    }
}

/// A panic's message, or a placeholder when its payload is not a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Drops a caught panic's payload, whose own `Drop` may panic too: that second payload is
/// leaked rather than let loose.
pub(crate) fn forget_panic(panic: Box<dyn std::any::Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(panic))) {
        std::mem::forget(again);
    }
}
