//! Token buckets for throttling (SPEC §10.3, AWS's stage and route throttling).
//!
//! A [`Limit`] is what the configuration says (a rate per second and a burst); a
//! [`Bucket`] is one worker's (or one connection's) state: fractional tokens and the
//! time they were last counted, refilled lazily from a monotonic time the caller
//! passes in (µs; the bucket reads no clock). A bucket starts full. A rate of 0 is
//! unlimited: such a bucket always has a token and costs one comparison.

/// A configured rate and burst. `rate == 0.0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limit {
    /// Tokens added per second.
    pub rate: f64,
    /// Tokens a full bucket holds (at least one when limited, see [`Limit::capacity`]).
    pub burst: f64,
}

/// The largest rate or burst a configuration may set.
pub const MAX_VALUE: f64 = 1e9;

impl Limit {
    /// No limit.
    pub const UNLIMITED: Limit = Limit {
        rate: 0.0,
        burst: 0.0,
    };

    pub fn new(rate: f64, burst: f64) -> Limit {
        Limit { rate, burst }
    }

    /// Whether this limit throttles anything.
    pub fn is_limited(&self) -> bool {
        self.rate > 0.0
    }

    /// One worker's share when `workers` workers share the limit: rate and burst both
    /// divided evenly (SPEC §10.3), so the process as a whole keeps the configured
    /// numbers without any shared write.
    pub fn share(self, workers: usize) -> Limit {
        let n = workers.max(1) as f64;
        Limit {
            rate: self.rate / n,
            burst: self.burst / n,
        }
    }

    /// Tokens a full bucket holds: the burst, but never less than one token, so a
    /// small burst divided among many workers (or a burst of 0) still lets the rate
    /// through rather than refusing everything.
    fn capacity(&self) -> f64 {
        self.burst.max(1.0)
    }
}

/// One token bucket: 16 bytes; its [`Limit`] is kept by the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date (µs, the caller's monotonic clock).
    at_us: u64,
}

impl Bucket {
    /// A full bucket at `now_us`.
    pub fn full(limit: &Limit, now_us: u64) -> Bucket {
        Bucket {
            tokens: limit.capacity(),
            at_us: now_us,
        }
    }

    /// Adds the tokens earned since the last refill (capped at the capacity) and
    /// tells whether one is available. Takes nothing: see [`Bucket::take`].
    pub fn ready(&mut self, limit: &Limit, now_us: u64) -> bool {
        if !limit.is_limited() {
            return true;
        }
        let elapsed = now_us.saturating_sub(self.at_us);
        if elapsed > 0 {
            let earned = elapsed as f64 * limit.rate / 1e6;
            self.tokens = (self.tokens + earned).min(limit.capacity());
            self.at_us = now_us;
        }
        self.tokens >= 1.0
    }

    /// Takes one token (after [`Bucket::ready`] said there is one).
    pub fn take(&mut self, limit: &Limit) {
        if limit.is_limited() {
            self.tokens = (self.tokens - 1.0).max(0.0);
        }
    }

    /// Refills, then takes a token if there is one: `true` when the event may pass.
    pub fn try_take(&mut self, limit: &Limit, now_us: u64) -> bool {
        let ok = self.ready(limit, now_us);
        if ok {
            self.take(limit);
        }
        ok
    }
}

/// One worker's buckets, in its `Scratch`; absent when nothing is throttled.
#[derive(Debug)]
pub struct Buckets {
    pub connect_limit: Limit,
    pub connect: Bucket,
    pub stage_limit: Limit,
    pub stage: Bucket,
    /// Per route id: its limit (unlimited when the route sets none) and bucket.
    pub routes: Box<[(Limit, Bucket)]>,
    /// One connection's limit (not divided: a connection lives on one worker).
    pub per_connection: Limit,
}

impl Buckets {
    /// This worker's share of the configured limits, every bucket full at `now_us`;
    /// `None` when no limit is set (then throttling costs nothing).
    pub fn new(
        connect: Limit,
        stage: Limit,
        routes: impl Iterator<Item = Limit>,
        per_connection: Limit,
        workers: usize,
        now_us: u64,
    ) -> Option<Box<Buckets>> {
        let routes: Vec<Limit> = routes.map(|l| l.share(workers)).collect();
        let any = connect.is_limited()
            || stage.is_limited()
            || per_connection.is_limited()
            || routes.iter().any(Limit::is_limited);
        if !any {
            return None;
        }
        let (connect, stage) = (connect.share(workers), stage.share(workers));
        Some(Box::new(Buckets {
            connect_limit: connect,
            connect: Bucket::full(&connect, now_us),
            stage_limit: stage,
            stage: Bucket::full(&stage, now_us),
            routes: routes
                .into_iter()
                .map(|l| (l, Bucket::full(&l, now_us)))
                .collect(),
            per_connection,
        }))
    }

    /// A new connection's upgrade request: may it proceed?
    pub fn connect(&mut self, now_us: u64) -> bool {
        self.connect.try_take(&self.connect_limit, now_us)
    }

    /// A message for `route`, with the connection's own bucket if it has one: may it
    /// be integrated? A token is taken from every bucket only when all have one, so
    /// a message refused by one limit costs the others nothing.
    pub fn message(&mut self, route: usize, conn: Option<&mut Bucket>, now_us: u64) -> bool {
        let pc = self.per_connection;
        let (sl, sb) = (&self.stage_limit, &mut self.stage);
        let mut route = self.routes.get_mut(route);
        let mut conn = conn;
        let ok = conn.as_mut().is_none_or(|b| b.ready(&pc, now_us))
            && route.as_mut().is_none_or(|(l, b)| b.ready(l, now_us))
            && sb.ready(sl, now_us);
        if ok {
            if let Some(b) = conn {
                b.take(&pc);
            }
            if let Some((l, b)) = route {
                b.take(l);
            }
            sb.take(sl);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    /// How many of `n` events spaced `gap_us` apart pass `limit`, from `start_us`.
    fn passed(b: &mut Bucket, limit: &Limit, start_us: u64, n: u64, gap_us: u64) -> usize {
        (0..n)
            .filter(|i| b.try_take(limit, start_us + i * gap_us))
            .count()
    }

    #[test]
    fn a_full_bucket_passes_its_burst_then_the_rate() {
        let l = Limit::new(5.0, 10.0);
        let mut b = Bucket::full(&l, 0);
        assert_eq!(passed(&mut b, &l, 0, 40, 0), 10, "the burst at once");
        // One second later: five tokens more, no more.
        assert_eq!(passed(&mut b, &l, S, 40, 0), 5);
        // Events spaced at the rate all pass.
        assert_eq!(passed(&mut b, &l, 2 * S, 20, S / 5), 20);
    }

    #[test]
    fn tokens_are_fractional() {
        let l = Limit::new(2.0, 1.0);
        let mut b = Bucket::full(&l, 0);
        assert!(b.try_take(&l, 0));
        assert!(!b.try_take(&l, S / 4), "half a token is not one");
        assert!(b.try_take(&l, S / 2), "the two halves make one");
        assert!(!b.try_take(&l, S / 2));
    }

    #[test]
    fn a_long_idle_caps_at_the_burst() {
        let l = Limit::new(100.0, 3.0);
        let mut b = Bucket::full(&l, 0);
        assert_eq!(passed(&mut b, &l, 0, 10, 0), 3);
        assert_eq!(passed(&mut b, &l, 3600 * S, 10, 0), 3, "an hour earns 3");
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let l = Limit::new(0.0, 0.0);
        let mut b = Bucket::full(&l, 0);
        assert_eq!(passed(&mut b, &l, 0, 100_000, 0), 100_000);
        assert!(!l.is_limited());
        assert!(Limit::new(0.0, 50.0).share(4) == Limit::new(0.0, 12.5));
    }

    #[test]
    fn a_burst_below_one_still_passes_the_rate() {
        // burst 1 over 4 workers is a quarter token each: keep one.
        let l = Limit::new(4.0, 1.0).share(4);
        let mut b = Bucket::full(&l, 0);
        assert_eq!(passed(&mut b, &l, 0, 10, 0), 1);
        assert_eq!(passed(&mut b, &l, 10 * S, 10, S), 10);
    }

    #[test]
    fn a_clock_that_does_not_move_forward_earns_nothing() {
        let l = Limit::new(10.0, 1.0);
        let mut b = Bucket::full(&l, 5 * S);
        assert!(b.try_take(&l, 5 * S));
        assert!(!b.try_take(&l, 0), "an earlier time is no refill");
        assert!(b.try_take(&l, 5 * S + S / 10));
    }

    #[test]
    fn workers_share_rate_and_burst_evenly() {
        let l = Limit::new(500.0, 1000.0).share(4);
        assert_eq!(l, Limit::new(125.0, 250.0));
    }

    #[test]
    fn nothing_configured_is_no_buckets() {
        let none = Buckets::new(
            Limit::UNLIMITED,
            Limit::UNLIMITED,
            [Limit::UNLIMITED; 3].into_iter(),
            Limit::UNLIMITED,
            2,
            0,
        );
        assert!(none.is_none());
    }

    #[test]
    fn a_message_takes_from_every_bucket_or_from_none() {
        let route = Limit::new(1.0, 2.0);
        let mut w = Buckets::new(
            Limit::UNLIMITED,
            Limit::new(1.0, 3.0),
            [route, Limit::UNLIMITED].into_iter(),
            Limit::new(1.0, 5.0),
            1,
            0,
        )
        .unwrap();
        let mut conn = Bucket::full(&w.per_connection, 0);
        assert!(w.message(0, Some(&mut conn), 0));
        assert!(w.message(0, Some(&mut conn), 0));
        // The route's bucket is empty; the stage keeps its last token.
        assert!(!w.message(0, Some(&mut conn), 0));
        assert!(w.message(1, Some(&mut conn), 0), "another route passes");
        assert!(!w.message(1, Some(&mut conn), 0), "the stage is empty now");
        // The refused messages took nothing from the connection's bucket.
        assert_eq!(passed(&mut conn, &w.per_connection, 0, 10, 0), 2);
        assert!(
            !w.message(7, None, 0),
            "an unknown route still needs the stage's token"
        );
    }

    #[test]
    fn connects_have_their_own_bucket() {
        let mut w = Buckets::new(
            Limit::new(5.0, 10.0),
            Limit::UNLIMITED,
            std::iter::empty(),
            Limit::UNLIMITED,
            2,
            0,
        )
        .unwrap();
        assert_eq!(
            (0..40).filter(|_| w.connect(0)).count(),
            5,
            "half the burst"
        );
        assert_eq!(
            (0..40).filter(|_| w.connect(2 * S)).count(),
            5,
            "half the rate, capped"
        );
    }
}
