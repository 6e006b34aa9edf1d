//! The cluster's Prometheus series (SPEC §15, §9): per worker, single-writer atomics
//! like every other counter (written by the worker only, summed at a scrape).
//!
//! - `wsgate_cluster_nats_connected{worker}`: 1 while that worker's NATS connection
//!   is up;
//! - `wsgate_cluster_reconnects_total`: NATS connections made after a worker's first;
//! - `wsgate_cluster_remote_calls_total{status}`: management calls for other nodes'
//!   ids, by the status returned;
//! - `wsgate_cluster_remote_call_seconds`: their round trip through NATS (histogram,
//!   the integration-latency buckets).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::metrics::{add, LATENCY_BUCKETS};

/// Statuses counted separately; anything else counts as `other`.
pub const STATUSES: [u16; 8] = [200, 204, 400, 410, 413, 429, 503, 0];

/// One worker's cluster counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub nats_connected: AtomicU64,
    pub reconnects: AtomicU64,
    remote_calls: [AtomicU64; STATUSES.len()],
    rtt_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    rtt_sum_us: AtomicU64,
    rtt_count: AtomicU64,
}

impl Counters {
    /// A remote call answered `status` after `rtt` (`None`: answered without NATS).
    pub fn remote_call(&self, status: u16, rtt: Option<Duration>) {
        let i = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len() - 1);
        add(&self.remote_calls[i], 1);
        if let Some(d) = rtt {
            let s = d.as_secs_f64();
            if let Some(b) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
                add(&self.rtt_buckets[b], 1);
            }
            add(&self.rtt_sum_us, d.as_micros() as u64);
            add(&self.rtt_count, 1);
        }
    }
}

/// Appends the cluster series for `workers`' counters.
pub fn render<'a>(s: &mut String, api: &str, workers: impl Iterator<Item = &'a Counters> + Clone) {
    let sum = |f: &dyn Fn(&Counters) -> &AtomicU64| -> u64 {
        workers.clone().map(|w| f(w).load(Relaxed)).sum()
    };
    let name = "wsgate_cluster_nats_connected";
    let _ = writeln!(
        s,
        "# HELP {name} 1 while the worker's NATS connection is up.\n# TYPE {name} gauge"
    );
    for (i, w) in workers.clone().enumerate() {
        let v = w.nats_connected.load(Relaxed);
        let _ = writeln!(s, "{name}{{api=\"{api}\",worker=\"{i}\"}} {v}");
    }
    let name = "wsgate_cluster_reconnects_total";
    let _ = writeln!(
        s,
        "# HELP {name} NATS connections made after a worker's first.\n# TYPE {name} counter"
    );
    let _ = writeln!(s, "{name}{{api=\"{api}\"}} {}", sum(&|c| &c.reconnects));
    let name = "wsgate_cluster_remote_calls_total";
    let _ = writeln!(s, "# HELP {name} Management calls for connections on other nodes, by status.\n# TYPE {name} counter");
    for (i, st) in STATUSES.iter().enumerate() {
        let label = if *st == 0 {
            "other".to_string()
        } else {
            st.to_string()
        };
        let v = sum(&|c| &c.remote_calls[i]);
        let _ = writeln!(s, "{name}{{api=\"{api}\",status=\"{label}\"}} {v}");
    }
    let name = "wsgate_cluster_remote_call_seconds";
    let _ = writeln!(s, "# HELP {name} Round trip of a remote management call through NATS.\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += sum(&|c| &c.rtt_buckets[i]);
        let _ = writeln!(s, "{name}_bucket{{api=\"{api}\",le=\"{b}\"}} {cumulative}");
    }
    let count = sum(&|c| &c.rtt_count);
    let _ = writeln!(s, "{name}_bucket{{api=\"{api}\",le=\"+Inf\"}} {count}");
    let _ = writeln!(
        s,
        "{name}_sum{{api=\"{api}\"}} {}",
        sum(&|c| &c.rtt_sum_us) as f64 / 1e6
    );
    let _ = writeln!(s, "{name}_count{{api=\"{api}\"}} {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_round_trips_are_summed() {
        let w = [Counters::default(), Counters::default()];
        w[0].remote_call(200, Some(Duration::from_millis(2)));
        w[1].remote_call(200, Some(Duration::from_millis(20)));
        w[1].remote_call(418, None);
        w[1].nats_connected.store(1, Relaxed);
        let mut s = String::new();
        render(&mut s, "x", w.iter());
        assert!(
            s.contains("wsgate_cluster_remote_calls_total{api=\"x\",status=\"200\"} 2"),
            "{s}"
        );
        assert!(
            s.contains("wsgate_cluster_remote_calls_total{api=\"x\",status=\"other\"} 1"),
            "{s}"
        );
        assert!(
            s.contains("wsgate_cluster_nats_connected{api=\"x\",worker=\"1\"} 1"),
            "{s}"
        );
        assert!(
            s.contains("wsgate_cluster_remote_call_seconds_bucket{api=\"x\",le=\"0.0025\"} 1"),
            "{s}"
        );
        assert!(
            s.contains("wsgate_cluster_remote_call_seconds_count{api=\"x\"} 2"),
            "{s}"
        );
    }
}
