//! A thread's slots: one attempt at most in each, its index the attempt's poll token; the
//! free slots; and, per slot, a socket kept from a finished attempt for the next one.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Socket};

use super::attempt::Attempt;
use crate::plan::{CloseMode, Plan};

/// A socket kept from a finished attempt, disconnected and ready to connect again; it stays
/// with its slot, so a registration keeps the slot's token.
pub(super) struct Spare {
    pub sock: Socket,
    pub registered: bool,
}

/// The slots of one thread.
#[derive(Default)]
pub(super) struct Pool {
    slots: Vec<Option<Attempt>>,
    spares: Vec<Option<Spare>>,
    free: Vec<usize>,
    live: usize,
}

impl Pool {
    /// Attempts in flight.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Every slot's index, used or not.
    pub fn indices(&self) -> std::ops::Range<usize> {
        0..self.slots.len()
    }

    /// A free slot (a new one when none is free), and the spare socket it holds, if any.
    pub fn take(&mut self) -> (usize, Option<Spare>) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.spares.push(None);
                self.slots.len() - 1
            }
        };
        (slot, self.spares[slot].take())
    }

    /// Gives back a slot taken for an attempt that never started.
    pub fn give_back(&mut self, slot: usize) {
        self.free.push(slot);
    }

    /// Puts a started attempt in its slot.
    pub fn put(&mut self, slot: usize, a: Attempt) {
        self.slots[slot] = Some(a);
        self.live += 1;
    }

    pub fn get(&self, slot: usize) -> Option<&Attempt> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Attempt> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Takes an ended attempt out; its slot is free again, with `spare` kept for the next.
    pub fn end(&mut self, slot: usize) -> Option<Attempt> {
        let a = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.live -= 1;
        Some(a)
    }

    /// Keeps a socket in a slot for its next attempt.
    pub fn keep(&mut self, slot: usize, spare: Spare) {
        self.spares[slot] = Some(spare);
    }
}

/// A new socket with the plan's options, bound to source address number `source` (modulo
/// their count) if any.
pub(super) fn new_socket(plan: &Plan, domain: Domain, source: usize) -> io::Result<Socket> {
    let sock = synack_sys::tcp_socket(domain)?;
    if plan.close == CloseMode::Rst {
        let _ = sock.set_linger(Some(Duration::ZERO));
    }
    if !plan.sources.is_empty() {
        let src = plan.sources[source % plan.sources.len()];
        let _ = synack_sys::set_bind_address_no_port(&sock);
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    Ok(sock)
}
