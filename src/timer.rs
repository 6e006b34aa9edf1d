//! A per-worker hashed timing wheel with coarse ticks (as pingora-timeout): O(1) to
//! arm, O(1) to cancel, no scan of all connections to expire.
//!
//! Entries live in fixed-size chunks with a free list (32 bytes each: `u32` keys and
//! links, no enum tag; chunks, not one growing vector, so growth never leaves the old
//! copies behind in the allocator: they cost a worker about 26 bytes per connection) and each wheel slot is an intrusive doubly linked list through it, so
//! cancelling unlinks in place. Owners cancel what no longer matters
//! (a closed connection, an answered call): the wheel holds at most one entry per open
//! connection, call in flight or pending backend connect, never one per past event, so
//! its memory follows what is open now and not the worker's history.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A monotonic instant in 8 bytes (an [`Instant`] takes 16): nanoseconds since a
/// process-wide base a day before the first use, plus one, so `Option<Stamp>` is 8
/// bytes too. Exact to the nanosecond for 584 years; what connections keep of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(NonZeroU64);

fn stamp_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now)
    })
}

impl Stamp {
    /// The instant this stamp names.
    pub fn instant(self) -> Instant {
        stamp_base() + Duration::from_nanos(self.0.get() - 1)
    }
}

impl From<Instant> for Stamp {
    /// An instant before the base (none in practice) becomes the base.
    fn from(t: Instant) -> Stamp {
        let n = t.saturating_duration_since(stamp_base()).as_nanos();
        let n = u64::try_from(n).unwrap_or(u64::MAX - 1).min(u64::MAX - 1);
        Stamp(NonZeroU64::new(n + 1).expect("never zero"))
    }
}

/// Tick length: timers fire up to this late.
pub const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 1024;
const NIL: u32 = u32::MAX;

/// What a timer is for; the worker interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client connection's one deadline (handshake, idle, maximum duration, ping,
    /// pong or close linger, whichever comes first; recomputed when it fires).
    Client,
    /// A backend call's timeout.
    Call,
    /// A backend connect's timeout.
    UpstreamConnect,
    /// A `/health` request waiting for the other workers.
    Health,
    /// A management connection's request-head deadline.
    AdminHead,
    /// A management connection's idle deadline.
    AdminIdle,
    /// A NATS request's time-out (key and generation of the client's request).
    ClusterRequest,
    /// The cluster's periodic work: reconnects, pings, heartbeats, isolation.
    ClusterTick,
}

/// Names one armed entry, for [`Wheel::cancel`]. A handle whose entry fired or was
/// cancelled is stale: cancelling it again does nothing, even after its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handle {
    index: u32,
    stamp: NonZeroU32,
}

/// An expired timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: usize,
    pub generation: u32,
    pub kind: Kind,
    /// The handle `arm` returned for it (now stale).
    pub handle: Handle,
}

/// One entry. A free one has stamp 0 and `next` links the free list. The owner's key
/// is stored as `u32` (every owner is a slab index far below 2^32).
#[derive(Debug)]
struct Node {
    deadline: u64,
    key: u32,
    generation: u32,
    stamp: u32,
    prev: u32,
    next: u32,
    kind: Kind,
}

/// Entries per chunk of [`Nodes`] (16 KiB).
const CHUNK: usize = 512;

/// A vector of [`Node`]s in chunks of [`CHUNK`] that never move once allocated.
#[derive(Debug, Default)]
struct Nodes {
    chunks: Vec<Vec<Node>>,
    len: usize,
}

impl Nodes {
    fn len(&self) -> usize {
        self.len
    }

    fn capacity(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    fn push(&mut self, node: Node) {
        if self.len == self.capacity() {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[self.len / CHUNK].push(node);
        self.len += 1;
    }

    fn get(&self, i: usize) -> Option<&Node> {
        self.chunks.get(i / CHUNK).and_then(|c| c.get(i % CHUNK))
    }
}

impl std::ops::Index<usize> for Nodes {
    type Output = Node;

    fn index(&self, i: usize) -> &Node {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Nodes {
    fn index_mut(&mut self, i: usize) -> &mut Node {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[derive(Debug)]
pub struct Wheel {
    start: Instant,
    /// The next tick not yet expired.
    now_tick: u64,
    /// Head of each slot's list (an index into `nodes`, or `NIL`).
    heads: Vec<u32>,
    nodes: Nodes,
    /// Head of the free list through `nodes` (`NIL`: none free).
    free: u32,
    /// Armed entries.
    armed: usize,
    next_stamp: u32,
}

impl Wheel {
    pub fn new(start: Instant) -> Wheel {
        Wheel {
            start,
            now_tick: 0,
            heads: vec![NIL; SLOTS],
            nodes: Nodes::default(),
            free: NIL,
            armed: 0,
            next_stamp: 0,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.start).as_millis() / TICK.as_millis()) as u64
    }

    /// Arms a timer that fires at `at` (rounded up to the next tick).
    pub fn arm(&mut self, at: Instant, key: usize, generation: u32, kind: Kind) -> Handle {
        let deadline = (self.tick_of(at) + 1).max(self.now_tick);
        let slot = (deadline % SLOTS as u64) as usize;
        self.next_stamp = self.next_stamp.wrapping_add(1).max(1);
        let stamp = NonZeroU32::new(self.next_stamp).expect("never zero");
        let head = self.heads[slot];
        let node = Node {
            deadline,
            key: u32::try_from(key).expect("timer keys are slab indices below 2^32"),
            generation,
            stamp: stamp.get(),
            prev: NIL,
            next: head,
            kind,
        };
        let index = if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = node;
            i
        } else {
            let i = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("fewer than 2^32 - 1 timers");
            self.nodes.push(node);
            i
        };
        self.armed += 1;
        if head != NIL {
            self.nodes[head as usize].prev = index;
        }
        self.heads[slot] = index;
        Handle { index, stamp }
    }

    /// Disarms a timer; `false` when it had already fired or been cancelled.
    pub fn cancel(&mut self, h: Handle) -> bool {
        match self.nodes.get(h.index as usize) {
            Some(n) if n.stamp == h.stamp.get() => {
                self.unlink(h.index);
                true
            }
            _ => false,
        }
    }

    /// When an armed timer fires (at tick granularity); `None` when it is stale.
    pub fn deadline(&self, h: Handle) -> Option<Instant> {
        match self.nodes.get(h.index as usize) {
            Some(n) if n.stamp == h.stamp.get() => {
                Some(self.start + Duration::from_millis(n.deadline * TICK.as_millis() as u64))
            }
            _ => None,
        }
    }

    /// Takes an armed entry out of its slot's list and onto the free list; returns
    /// what it held (its links as they were).
    fn unlink(&mut self, index: u32) -> Node {
        let n = &mut self.nodes[index as usize];
        let node = Node {
            deadline: n.deadline,
            key: n.key,
            generation: n.generation,
            stamp: n.stamp,
            prev: n.prev,
            next: n.next,
            kind: n.kind,
        };
        n.stamp = 0;
        n.next = self.free;
        self.free = index;
        self.armed -= 1;
        if node.prev == NIL {
            self.heads[(node.deadline % SLOTS as u64) as usize] = node.next;
        } else {
            self.nodes[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        node
    }

    /// Moves time to `now` and appends every expired entry to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Entry>) {
        let target = self.tick_of(now);
        // Past a full turn, every slot is visited once; later rounds stay in place.
        let last = target.min(self.now_tick + SLOTS as u64);
        while self.now_tick <= last {
            let mut i = self.heads[(self.now_tick % SLOTS as u64) as usize];
            while i != NIL {
                let next = self.nodes[i as usize].next;
                if self.nodes[i as usize].deadline <= target {
                    let n = self.unlink(i);
                    out.push(Entry {
                        key: n.key as usize,
                        generation: n.generation,
                        kind: n.kind,
                        handle: Handle {
                            index: i,
                            stamp: NonZeroU32::new(n.stamp).expect("an armed entry"),
                        },
                    });
                }
                i = next;
            }
            self.now_tick += 1;
        }
        self.now_tick = self.now_tick.max(target + 1);
        if self.armed == 0 && self.nodes.capacity() > 4096 {
            // A burst is over: give its memory back.
            self.nodes = Nodes::default();
            self.free = NIL;
        }
    }

    /// How long the event loop may sleep: until the next tick while timers are armed.
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.armed == 0 {
            return None;
        }
        let next = self.start + Duration::from_millis(self.now_tick * TICK.as_millis() as u64);
        Some(next.saturating_duration_since(now))
    }

    /// Armed entries.
    pub fn len(&self) -> usize {
        self.armed
    }

    pub fn is_empty(&self) -> bool {
        self.armed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_after_its_deadline() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.arm(t0 + Duration::from_millis(50), 7, 1, Kind::Client);
        w.arm(t0 + Duration::from_secs(30), 8, 1, Kind::Client); // several turns away
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_millis(40), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_millis(70), &mut out);
        assert_eq!(out.iter().map(|e| e.key).collect::<Vec<_>>(), vec![7]);
        out.clear();
        w.expire(t0 + Duration::from_secs(29), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_secs(31), &mut out);
        assert_eq!(out.iter().map(|e| e.key).collect::<Vec<_>>(), vec![8]);
        assert!(w.is_empty());
        assert_eq!(w.poll_timeout(t0), None);
    }

    #[test]
    fn a_timer_in_the_past_fires_on_the_next_expire() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(1), &mut out);
        w.arm(t0, 1, 0, Kind::Call);
        assert!(w.poll_timeout(t0 + Duration::from_secs(1)).unwrap() <= TICK);
        w.expire(t0 + Duration::from_secs(1) + TICK, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, Kind::Call);
    }

    #[test]
    fn cancelled_entries_never_fire_and_free_their_room() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        // Many entries in one slot; cancel every other one, from the middle too.
        let hs: Vec<Handle> = (0..100)
            .map(|k| w.arm(t0 + Duration::from_millis(500), k, 0, Kind::Client))
            .collect();
        for h in hs.iter().step_by(2) {
            assert!(w.cancel(*h));
            assert!(!w.cancel(*h), "a second cancel is a no-op");
        }
        assert_eq!(w.len(), 50);
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(1), &mut out);
        let mut keys: Vec<usize> = out.iter().map(|e| e.key).collect();
        keys.sort();
        assert_eq!(keys, (1..100).step_by(2).collect::<Vec<_>>());
        assert!(w.is_empty());
        // A fired handle is stale even once its slab slot is reused.
        let fired = out[0].handle;
        let fresh = w.arm(t0 + Duration::from_secs(5), 1000, 0, Kind::Call);
        assert!(!w.cancel(fired));
        assert!(w.deadline(fresh).is_some());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn churn_does_not_grow_the_wheel() {
        // Connections that open and close long before their timers are due leave
        // nothing behind (defect 8 of issue 8: 550k closed connections kept 43 MB).
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        for k in 0..100_000 {
            let h = w.arm(t0 + Duration::from_secs(7200), k, 0, Kind::Client);
            assert!(w.cancel(h));
        }
        assert_eq!(w.len(), 0);
        assert!(
            w.nodes.capacity() <= CHUNK,
            "capacity {}",
            w.nodes.capacity()
        );
    }

    #[test]
    fn stamps_round_trip_and_keep_order() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_nanos(1);
        let (s0, s1) = (Stamp::from(t0), Stamp::from(t1));
        assert_eq!(s0.instant(), t0);
        assert_eq!(s1.instant(), t1);
        assert!(s0 < s1);
        let far = t0 + Duration::from_secs(400 * 86_400);
        assert_eq!(Stamp::from(far).instant(), far);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }

    #[test]
    fn entries_span_chunks() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let n = 3 * CHUNK + 7;
        let hs: Vec<Handle> = (0..n)
            .map(|k| {
                w.arm(
                    t0 + Duration::from_millis(20 + (k % 50) as u64),
                    k,
                    0,
                    Kind::Client,
                )
            })
            .collect();
        assert_eq!(w.nodes.capacity(), 4 * CHUNK);
        for h in hs.iter().skip(1).step_by(3) {
            assert!(w.cancel(*h));
        }
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(1), &mut out);
        let mut keys: Vec<usize> = out.iter().map(|e| e.key).collect();
        keys.sort();
        let want: Vec<usize> = (0..n).filter(|k| k % 3 != 1).collect();
        assert_eq!(keys, want);
        assert!(w.is_empty());
    }

    #[test]
    fn an_entry_is_32_bytes() {
        // Every open connection holds one: keep it small (issue 13).
        assert_eq!(std::mem::size_of::<Node>(), 32);
    }

    #[test]
    fn freed_entries_are_reused_in_any_order() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let hs: Vec<Handle> = (0..10)
            .map(|k| {
                w.arm(
                    t0 + Duration::from_millis(100 + k as u64 * 10),
                    k,
                    0,
                    Kind::Call,
                )
            })
            .collect();
        for i in [3, 7, 0, 9] {
            assert!(w.cancel(hs[i]));
        }
        let again: Vec<Handle> = (10..14)
            .map(|k| w.arm(t0 + Duration::from_millis(50), k, 0, Kind::Call))
            .collect();
        assert_eq!(w.nodes.len(), 10, "the four freed entries were reused");
        for i in [3, 7, 0, 9] {
            assert!(!w.cancel(hs[i]), "stale after reuse");
        }
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_secs(1), &mut out);
        let mut keys: Vec<usize> = out.iter().map(|e| e.key).collect();
        keys.sort();
        assert_eq!(keys, vec![1, 2, 4, 5, 6, 8, 10, 11, 12, 13]);
        assert!(again.iter().all(|h| !w.cancel(*h)));
        assert!(w.is_empty());
    }

    #[test]
    fn deadline_reports_the_tick() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        let h = w.arm(t0 + Duration::from_millis(95), 1, 0, Kind::Health);
        let d = w.deadline(h).unwrap();
        assert!(d >= t0 + Duration::from_millis(95) && d <= t0 + Duration::from_millis(110));
    }
}
