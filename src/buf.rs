//! Per-worker buffer free list. A connection borrows a `Vec<u8>` only while it holds
//! partial input or pending output and gives it back when drained, so an idle
//! connection owns no buffer.

/// Buffers above this capacity are freed instead of kept, so one 16 MiB message does
/// not pin 16 MiB for the life of the worker.
pub const KEEP_MAX_CAPACITY: usize = 256 * 1024;
/// The free list keeps at most this many bytes of capacity in all, so a burst of
/// backed-up connections does not pin its peak after they drain.
pub const KEEP_TOTAL_BYTES: usize = 8 * 1024 * 1024;

/// A free list of byte buffers.
#[derive(Debug)]
pub struct Pool {
    free: Vec<Vec<u8>>,
    keep: usize,
    /// Capacity held by `free`, in bytes.
    kept_bytes: usize,
}

impl Pool {
    /// A pool that keeps at most `keep` idle buffers.
    pub fn new(keep: usize) -> Pool {
        Pool {
            free: Vec::with_capacity(keep),
            keep,
            kept_bytes: 0,
        }
    }

    /// An empty buffer, recycled when one is free.
    pub fn take(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(b) => {
                self.kept_bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    /// Returns a buffer; its contents are discarded.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if self.free.len() < self.keep
            && cap <= KEEP_MAX_CAPACITY
            && self.kept_bytes + cap <= KEEP_TOTAL_BYTES
        {
            buf.clear();
            self.kept_bytes += cap;
            self.free.push(buf);
        }
    }

    /// Gives back `slot`'s buffer if it holds no bytes.
    pub fn give_if_empty(&mut self, slot: &mut Option<Vec<u8>>) {
        if slot.as_ref().is_some_and(|b| b.is_empty()) {
            self.give(slot.take().expect("checked"));
        }
    }

    /// Number of idle buffers held.
    pub fn idle(&self) -> usize {
        self.free.len()
    }
}

/// Where `needle` first occurs in `hay` (protocol heads and lines: short needles).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled_and_huge_ones_dropped() {
        let mut p = Pool::new(2);
        let mut b = p.take();
        b.extend_from_slice(b"abc");
        let cap = b.capacity();
        p.give(b);
        let b = p.take();
        assert!(b.is_empty());
        assert_eq!(b.capacity(), cap);
        p.give(Vec::with_capacity(KEEP_MAX_CAPACITY + 1));
        assert_eq!(p.idle(), 0);
        let mut slot = Some(Vec::new());
        p.give_if_empty(&mut slot);
        assert!(slot.is_none());
        assert_eq!(p.idle(), 1);
    }

    #[test]
    fn the_free_list_keeps_a_bounded_number_of_bytes() {
        let mut p = Pool::new(1024);
        for _ in 0..1024 {
            p.give(Vec::with_capacity(KEEP_MAX_CAPACITY));
        }
        assert_eq!(p.idle(), KEEP_TOTAL_BYTES / KEEP_MAX_CAPACITY);
        let b = p.take();
        assert_eq!(p.kept_bytes, KEEP_TOTAL_BYTES - b.capacity());
    }
}
