//! The decisions of one backend pool, with no sockets (sans-IO): which connection a
//! call goes on, when to open one, queue or refuse a call, whether a reply leaves the
//! connection reusable, and whether a failed call is retried once (SPEC §5, §16).
//!
//! The worker reports events (a call wants a connection, a reply ended, a connection
//! failed, a call timed out) and carries out the [`Decision`]s the pool queues for it,
//! oldest first. Carrying one out may report more events (a connect that fails at
//! once, a write that fails): their decisions join the same queue, so the worker runs
//! them in one flat loop however long the wait queue is ([`Pool::claim`]).
//!
//! Calls and connections are the worker's slab keys. `pipeline = 1`: a connection
//! carries one call at a time. `pipeline = N` (SPEC §16): a connected connection
//! carries up to N calls, their replies in request order (the worker keeps each
//! connection's FIFO of calls; the pool counts them). A new call joins the
//! connection this loop turn's calls go on while it has room (one write carries
//! them), else takes an idle connection, else the least-loaded one with room, else
//! opens one while the pool has room, else waits. The head-of-line trade-off: a
//! slow reply holds the replies behind it on its connection. A connection being opened takes no second call until it is
//! connected ([`Pool::connected`]), so a connect failure fails one call only.

use std::collections::VecDeque;
use std::net::SocketAddr;

/// What the worker does next for this pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write `call`'s request on the idle connection `conn`.
    Send { call: usize, conn: usize },
    /// Open a new connection for `call` (the slot is already counted). If no socket
    /// can be made, report [`Pool::open_failed`].
    Open { call: usize },
    /// As `Open`, for the one retry a call gets (SPEC §5).
    Retry { call: usize },
    /// End `call` with a failure.
    Fail { call: usize, why: Why },
    /// Close `conn` (its slot is already freed; its call, if any, has its own decision).
    Close { conn: usize },
}

/// Why a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// More than `max_queued_requests` calls wait (the gateway's own limit).
    QueueFull,
    /// No socket could be opened (the gateway's own failure).
    NoSocket,
    /// The backend failed: unreachable, closed, or a malformed reply.
    Backend,
}

/// How a reply ended, as far as the connection's reuse is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyEnd {
    /// The reply allows another request (HTTP/1.1, no `Connection: close`, framed).
    pub keep_alive: bool,
    /// Bytes arrived after the reply: the backend and we disagree on framing.
    pub leftover: bool,
    /// The whole request was written (a reply that came before its end leaves the
    /// backend waiting for the rest).
    pub request_written: bool,
}

impl ReplyEnd {
    /// Whether the connection may carry the next call (SPEC §16).
    pub fn reusable(self) -> bool {
        self.keep_alive && !self.leftover && self.request_written
    }
}

/// What is known about a connection that failed, and the call it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The call on the connection, if any.
    pub call: Option<usize>,
    /// The connection served a call before this one.
    pub reused: bool,
    /// Some byte of this call's reply had arrived.
    pub reply_started: bool,
    /// The call was already retried once.
    pub retried: bool,
}

impl Failure {
    /// SPEC §5: only a reused connection that closed before any byte of the reply is
    /// retried, once, on a fresh connection (the backend never saw the request, or
    /// closed a stale keep-alive connection under it).
    pub fn retry(self) -> bool {
        self.reused && !self.reply_started && !self.retried
    }
}

/// One pool: the keep-alive connections of one worker to one backend address (and,
/// for `https://`, one server name and trust anchor set).
#[derive(Debug)]
pub struct Pool {
    pub addr: SocketAddr,
    /// The worker's TLS client for an `https://` backend.
    pub tls: Option<super::tls::Connector>,
    /// Most connections open at once.
    pub size: usize,
    /// Most calls waiting for a connection.
    pub max_queued: usize,
    /// Most calls in flight on one connection (SPEC §16 `pipeline`; 1: none
    /// pipelined).
    pub pipeline: usize,
    /// Idle connections, most recently used last.
    idle: Vec<usize>,
    /// Connected connections with `1..pipeline` calls in flight, and that number
    /// (only with `pipeline > 1`). A full one is in no list.
    partial: Vec<(usize, usize)>,
    /// The connection that got a call this loop turn ([`Pool::end_turn`]): while it
    /// has room, the turn's next calls join it and leave in the same write.
    turn: Option<usize>,
    /// Connections open or opening.
    open: usize,
    /// Calls waiting for a connection, oldest first.
    queue: VecDeque<usize>,
    /// Decisions not carried out yet, oldest first.
    decisions: VecDeque<Decision>,
    /// The worker is carrying out decisions (see [`Pool::claim`]).
    running: bool,
}

impl Pool {
    pub fn new(addr: SocketAddr, size: usize, max_queued: usize) -> Pool {
        Pool {
            addr,
            tls: None,
            size,
            max_queued,
            pipeline: 1,
            idle: Vec::new(),
            partial: Vec::new(),
            turn: None,
            open: 0,
            queue: VecDeque::new(),
            decisions: VecDeque::new(),
            running: false,
        }
    }

    /// The backend, for log lines: its address, and its TLS server name.
    pub fn name(&self) -> String {
        match &self.tls {
            Some(tls) => format!("{} (https, {tls})", self.addr),
            None => self.addr.to_string(),
        }
    }

    /// Connections open or opening.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Calls waiting for a connection.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Idle connections.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }

    /// `call` wants a connection: with `pipeline > 1`, the one this turn's calls
    /// already go on while it has room (SPEC §16: they leave in one write); else the
    /// most recently used idle one, else the least-loaded one with room (the first
    /// such on a tie), a new one while the pool has room, else a place in the queue,
    /// else it fails. The scans are over this pool's connections with room
    /// (`pool_size` at most).
    pub fn call(&mut self, call: usize) {
        let joined = self
            .turn
            .and_then(|t| self.partial.iter().position(|&(c, _)| c == t));
        if let Some(i) = joined {
            let (conn, n) = self.partial.swap_remove(i);
            self.decide(Decision::Send { call, conn });
            self.track(conn, n + 1);
        } else if let Some(conn) = self.idle.pop() {
            self.decide(Decision::Send { call, conn });
            self.track(conn, 1);
        } else if let Some(i) = (0..self.partial.len()).min_by_key(|&i| self.partial[i].1) {
            let (conn, n) = self.partial.swap_remove(i);
            self.decide(Decision::Send { call, conn });
            self.track(conn, n + 1);
        } else if self.open < self.size {
            self.open += 1;
            self.decide(Decision::Open { call });
        } else if self.queue.len() < self.max_queued {
            self.queue.push_back(call);
        } else {
            self.decide(Decision::Fail {
                call,
                why: Why::QueueFull,
            });
        }
    }

    /// The socket for an `Open` or `Retry` of `call` could not be made: the call
    /// fails and its slot goes to the next waiting call.
    pub fn open_failed(&mut self, call: usize) {
        self.release_slot();
        self.decide(Decision::Fail {
            call,
            why: Why::NoSocket,
        });
        self.serve_queue();
    }

    /// A decision's call was gone when the worker got to it: its slot (an opened
    /// one, or the idle connection `conn` it was to use) goes to the next call.
    pub fn unused(&mut self, conn: Option<usize>) {
        match conn {
            Some(conn) => self.free(conn),
            None => {
                self.release_slot();
                self.serve_queue();
            }
        }
    }

    /// The reply on `conn` is complete (and delivered): the connection serves the
    /// next waiting call or goes idle, unless `end` says it cannot be reused.
    pub fn reply(&mut self, conn: usize, end: ReplyEnd) {
        self.replied(conn, end, 0);
    }

    /// As [`Pool::reply`] on a connection that still has `in_flight` calls (the
    /// worker's count, after this reply): with room, it takes waiting calls up to
    /// `pipeline`. Not reusable: it closes, and the worker fails its other calls
    /// ([`Pool::abandon`]).
    pub fn replied(&mut self, conn: usize, end: ReplyEnd, in_flight: usize) {
        if end.reusable() {
            self.untrack(conn);
            self.room(conn, in_flight);
        } else {
            self.lose(conn);
        }
    }

    /// The connection `conn`, opened for one call, is connected: with
    /// `pipeline > 1` it takes waiting calls, or more calls later.
    pub fn connected(&mut self, conn: usize) {
        if self.pipeline > 1 {
            self.untrack(conn);
            self.room(conn, 1);
        }
    }

    /// A `Send` decision's call was gone when the worker got to it: `conn`, which
    /// has `in_flight` calls (the worker's count), may take another.
    pub fn returned(&mut self, conn: usize, in_flight: usize) {
        self.untrack(conn);
        self.room(conn, in_flight);
    }

    /// The loop turn ended (its requests were written): the next turn's first call
    /// picks a connection afresh.
    pub fn end_turn(&mut self) {
        self.turn = None;
    }

    /// `call` was in flight on a connection that closed (and was reported with
    /// [`Pool::failed`], [`Pool::cancel`] or a non-reusable [`Pool::replied`]): it
    /// fails, not retried, since the backend may have run it (SPEC §16).
    pub fn abandon(&mut self, call: usize) {
        self.decide(Decision::Fail {
            call,
            why: Why::Backend,
        });
    }

    /// `conn` failed (or closed while idle): it is closed; its call is retried once
    /// on a fresh connection when [`Failure::retry`] says so, else it fails.
    pub fn failed(&mut self, conn: usize, f: Failure) {
        self.idle.retain(|&c| c != conn);
        self.untrack(conn);
        self.release_slot();
        self.decide(Decision::Close { conn });
        if let Some(call) = f.call {
            if f.retry() {
                // The slot just freed: the retry goes before the waiting calls.
                self.open += 1;
                self.decide(Decision::Retry { call });
            } else {
                self.decide(Decision::Fail {
                    call,
                    why: Why::Backend,
                });
            }
        }
        self.serve_queue();
    }

    /// `call` timed out (the worker ends it): it leaves the queue, or the connection
    /// `conn` it was on closes (mid-request, it cannot be reused).
    pub fn cancel(&mut self, call: usize, conn: Option<usize>) {
        match conn {
            Some(conn) => self.lose(conn),
            None => self.queue.retain(|&c| c != call),
        }
    }

    /// Whether the caller should now carry out the queued decisions: `false` while
    /// an outer loop is already doing so (it will pick up the new ones too).
    pub fn claim(&mut self) -> bool {
        !std::mem::replace(&mut self.running, true)
    }

    /// The next decision to carry out; `None` ends the claim.
    pub fn next_decision(&mut self) -> Option<Decision> {
        let d = self.decisions.pop_front();
        if d.is_none() {
            self.running = false;
        }
        d
    }

    fn decide(&mut self, d: Decision) {
        if let Decision::Send { conn, .. } = d {
            self.turn = Some(conn);
        }
        self.decisions.push_back(d);
    }

    /// `conn` can take a call: the oldest waiting one, else it goes idle.
    fn free(&mut self, conn: usize) {
        self.room(conn, 0);
    }

    /// `conn` has `n` calls in flight: with room for more (`pipeline > 1`), it is
    /// offered to new calls.
    fn track(&mut self, conn: usize, n: usize) {
        if n < self.pipeline {
            self.partial.push((conn, n));
        }
    }

    /// `conn` leaves the list of connections with room (if it is there).
    fn untrack(&mut self, conn: usize) {
        if let Some(i) = self.partial.iter().position(|&(c, _)| c == conn) {
            self.partial.swap_remove(i);
        }
    }

    /// `conn` has `n` calls in flight and room up to `pipeline`: the oldest waiting
    /// calls go on it, then it is idle, has room, or is full.
    fn room(&mut self, conn: usize, mut n: usize) {
        while n < self.pipeline {
            let Some(call) = self.queue.pop_front() else {
                break;
            };
            self.decide(Decision::Send { call, conn });
            n += 1;
        }
        if n == 0 {
            self.idle.push(conn);
        } else {
            self.track(conn, n);
        }
    }

    /// `conn` closes; its slot goes to the oldest waiting call.
    fn lose(&mut self, conn: usize) {
        self.idle.retain(|&c| c != conn);
        self.untrack(conn);
        self.release_slot();
        self.decide(Decision::Close { conn });
        self.serve_queue();
    }

    /// One connection (or connect attempt) fewer. The worker reports each once.
    fn release_slot(&mut self) {
        debug_assert!(self.open > 0, "a slot released twice");
        self.open = self.open.saturating_sub(1);
    }

    /// A slot is free: the oldest waiting call opens a connection.
    fn serve_queue(&mut self) {
        if self.open < self.size {
            if let Some(call) = self.queue.pop_front() {
                self.open += 1;
                self.decide(Decision::Open { call });
            }
        }
    }
}

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod tests;
