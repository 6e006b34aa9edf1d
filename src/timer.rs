//! A per-worker hashed timing wheel with coarse ticks (as pingora-timeout): O(1) to
//! arm, no scan of all connections to expire. Timers are never cancelled; the owner
//! checks on expiry whether the timer still matters (the connection's generation and
//! state), which keeps arming cheap and the wheel free of back-pointers.

use std::time::{Duration, Instant};

/// Tick length: timers fire up to this late.
pub const TICK: Duration = Duration::from_millis(10);
const SLOTS: usize = 1024;

/// What a timer is for; the worker interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: usize,
    pub generation: u32,
    pub kind: u8,
    deadline: u64,
}

#[derive(Debug)]
pub struct Wheel {
    start: Instant,
    /// The next tick not yet expired.
    now_tick: u64,
    slots: Vec<Vec<Entry>>,
    len: usize,
}

impl Wheel {
    pub fn new(start: Instant) -> Wheel {
        Wheel {
            start,
            now_tick: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.start).as_millis() / TICK.as_millis()) as u64
    }

    /// Arms a timer that fires at `at` (rounded up to the next tick).
    pub fn arm(&mut self, at: Instant, key: usize, generation: u32, kind: u8) {
        let deadline = (self.tick_of(at) + 1).max(self.now_tick);
        self.slots[(deadline % SLOTS as u64) as usize].push(Entry {
            key,
            generation,
            kind,
            deadline,
        });
        self.len += 1;
    }

    /// Moves time to `now` and appends every expired entry to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Entry>) {
        let target = self.tick_of(now);
        // Past a full turn, every slot is visited once; later rounds stay in place.
        let last = target.min(self.now_tick + SLOTS as u64);
        while self.now_tick <= last {
            let slot = &mut self.slots[(self.now_tick % SLOTS as u64) as usize];
            let mut i = 0;
            while i < slot.len() {
                if slot[i].deadline <= target {
                    out.push(slot.swap_remove(i));
                    self.len -= 1;
                } else {
                    i += 1;
                }
            }
            self.now_tick += 1;
        }
        self.now_tick = self.now_tick.max(target + 1);
    }

    /// How long the event loop may sleep: until the next tick while timers are armed.
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let next = self.start + Duration::from_millis(self.now_tick * TICK.as_millis() as u64);
        Some(next.saturating_duration_since(now))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_after_its_deadline() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.arm(t0 + Duration::from_millis(50), 7, 1, 0);
        w.arm(t0 + Duration::from_secs(30), 8, 1, 0); // several turns of the wheel away
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
        w.arm(t0, 1, 0, 2);
        assert!(w.poll_timeout(t0 + Duration::from_secs(1)).unwrap() <= TICK);
        w.expire(t0 + Duration::from_secs(1) + TICK, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, 2);
    }
}
