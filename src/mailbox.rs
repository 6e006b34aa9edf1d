//! Cross-worker mail: a management call that lands on worker A for a connection owned
//! by worker B travels to B over a bounded lock-free queue, B is woken by its
//! `mio::Waker`, acts, and the answer travels back to A the same way. A full request
//! queue is refused at once (429), so a stuck worker cannot pile up memory; answers
//! use an unbounded queue so no promised answer is ever dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::{ArrayQueue, SegQueue};
use mio::Waker;

/// Requests one worker may have waiting from the others.
pub const REQUEST_CAPACITY: usize = 4096;

/// What to do to a connection (SPEC §8).
#[derive(Debug)]
pub enum Op {
    /// Send `body` as one message.
    Post(Vec<u8>),
    Get,
    /// Close with this code and reason.
    Delete {
        code: u16,
        reason: String,
    },
    /// Health check: answer at once.
    Ping,
    /// Add the connection to this group (SPEC §15, `crate::groups`).
    Join(Box<[u8]>),
    /// Remove the connection from this group.
    Leave(Box<[u8]>),
    /// A group send or broadcast: deliver to this worker's members (no connection).
    Send(crate::groups::Send),
}

/// Where an answer goes: a worker's management connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    pub worker: u8,
    pub admin_key: usize,
    pub admin_generation: u32,
}

/// A request for the worker owning `slot`.
#[derive(Debug)]
pub struct Request {
    pub slot: u32,
    /// The connection id's 40-bit generation.
    pub generation: u64,
    pub op: Op,
    pub reply_to: ReplyTo,
}

/// The owning worker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// POST queued the whole message.
    Sent,
    /// DELETE started the close.
    Closed,
    Info {
        connected_at_ms: u64,
        last_active_ms: u64,
        source_ip: String,
        user_agent: Option<String>,
    },
    /// Not a live, open connection: 410.
    Gone,
    /// The outbound buffer would exceed its limit: 429.
    Full,
    /// A body that is not UTF-8 while binary is rejected: 400.
    NotText,
    Pong,
    /// Joined or left a group (or was already in / out of it): 204.
    Member,
    /// A group cap refused the join: 429.
    GroupCap(crate::groups::Refused),
    /// A worker delivered a group send or broadcast to its members.
    Delivered,
}

/// One worker's inboxes.
pub struct Inbox {
    pub requests: ArrayQueue<Request>,
    pub answers: SegQueue<(ReplyTo, Answer)>,
    pub waker: Arc<Waker>,
    /// A wake is already on its way: senders in a burst skip the `eventfd` write.
    notified: AtomicBool,
}

impl Inbox {
    fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// Called by the owner before it drains: later mail wakes it again.
    pub fn rearm(&self) {
        self.notified.store(false, Ordering::Release);
    }
}

/// Every worker's inboxes, shared by all workers.
pub struct Mailboxes {
    pub inboxes: Vec<Inbox>,
    /// During shutdown: workers that still have integration calls in flight.
    pub draining: std::sync::atomic::AtomicUsize,
}

impl Mailboxes {
    pub fn new(wakers: Vec<Arc<Waker>>) -> Mailboxes {
        let inboxes = wakers
            .into_iter()
            .map(|waker| Inbox {
                requests: ArrayQueue::new(REQUEST_CAPACITY),
                answers: SegQueue::new(),
                waker,
                notified: AtomicBool::new(false),
            })
            .collect::<Vec<_>>();
        let draining = std::sync::atomic::AtomicUsize::new(inboxes.len());
        Mailboxes { inboxes, draining }
    }

    /// Sends a request to `worker`; hands it back when that worker's queue is full.
    pub fn send(&self, worker: usize, req: Request) -> Result<(), Request> {
        let inbox = &self.inboxes[worker];
        inbox.requests.push(req)?;
        inbox.wake();
        Ok(())
    }

    /// Sends an answer back to the worker that asked.
    pub fn answer(&self, to: ReplyTo, answer: Answer) {
        let inbox = &self.inboxes[to.worker as usize];
        inbox.answers.push((to, answer));
        inbox.wake();
    }
}
