//! systemd's readiness protocol (`sd_notify`), spoken when `NOTIFY_SOCKET` is set (a unit with
//! `Type=notify`; a no-op otherwise): `READY=1` once a server serves, `RELOADING=1` while a
//! [handoff](crate::Handoff) starts the new process, `MAINPID=` the new process once it is
//! ready (the unit needs `NotifyAccess=all` for the new process's own messages), and
//! `STOPPING=1` at a graceful shutdown. Through the `sd-notify` crate.

use sd_notify::NotifyState;

use std::net::SocketAddr;

fn send(states: &[NotifyState<'_>], what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(states) {
        Ok(()) => tracing::debug!(target: "synack::notify", what, "told the service manager"),
        Err(e) => {
            tracing::warn!(target: "synack::notify", what, error = %e, "cannot tell the service manager (NOTIFY_SOCKET)")
        }
    }
}

/// `READY=1`, with the listeners' addresses in `STATUS=`.
pub(crate) fn ready(addrs: &[SocketAddr]) {
    let addrs = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let status = format!("serving on {addrs}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)], "ready");
}

/// `READY=1` after a handoff that failed: this process still serves.
pub(crate) fn ready_again() {
    send(
        &[
            NotifyState::Ready,
            NotifyState::Status("handoff failed; still serving"),
        ],
        "ready again",
    );
}

/// `RELOADING=1` with the monotonic time, as `Type=notify-reload` wants it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now], "reloading"),
        Err(_) => send(&[NotifyState::Reloading], "reloading"),
    }
}

/// The new process of a handoff is the service's main process now, and ready.
pub(crate) fn main_pid(pid: u32) {
    let status = format!("handed over to pid {pid}");
    send(
        &[
            NotifyState::MainPid(pid),
            NotifyState::Ready,
            NotifyState::Status(&status),
        ],
        "main pid",
    );
}

/// `STOPPING=1`.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping], "stopping");
}
