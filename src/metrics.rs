//! Prometheus metrics (SPEC §9), one series per AWS CloudWatch metric. Each worker
//! writes only its own counters (single-writer atomics: a load and a store, no locked
//! instruction on the message path); a scrape sums them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::Config;

/// Upper bounds (seconds) of the integration-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 29.0,
];

/// One worker's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub connects: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub integration_errors: AtomicU64,
    pub client_errors: AtomicU64,
    pub execution_errors: AtomicU64,
    pub open_connections: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub upstream_connections: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

/// Adds `n` to a counter only this thread writes.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Subtracts from a gauge only this thread writes.
#[inline]
pub fn sub(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).saturating_sub(n), Relaxed);
}

impl Counters {
    /// One message of `bytes` payload bytes went to a client.
    pub fn message_out(&self, bytes: usize) {
        add(&self.messages_out, 1);
        add(&self.bytes_out, bytes as u64);
    }

    /// Records one integration's latency.
    pub fn latency(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            add(&self.latency_buckets[i], 1);
        }
        add(&self.latency_sum_us, d.as_micros() as u64);
        add(&self.latency_count, 1);
    }
}

/// Every worker's counters.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<Counters>,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| Counters::default()).collect(),
        }
    }

    pub fn worker(&self, i: u8) -> &Counters {
        &self.workers[i as usize]
    }

    fn sum(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self, config: &Config) -> Vec<u8> {
        let mut s = String::new();
        let api = &config.api.name;
        let mut counter = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{api=\"{api}\"}} {v}"
            );
        };
        counter(
            "wsgate_connect_total",
            "Connections accepted (AWS ConnectCount).",
            "counter",
            self.sum(|c| &c.connects),
        );
        counter(
            "wsgate_integration_errors_total",
            "Integration failures: unreachable, malformed, timed out, non-2xx (AWS IntegrationError).",
            "counter",
            self.sum(|c| &c.integration_errors),
        );
        counter(
            "wsgate_client_errors_total",
            "Client errors: Forbidden, protocol violations, limits (AWS ClientError).",
            "counter",
            self.sum(|c| &c.client_errors),
        );
        counter(
            "wsgate_execution_errors_total",
            "Errors while executing an integration (AWS ExecutionError).",
            "counter",
            self.sum(|c| &c.execution_errors),
        );
        counter(
            "wsgate_open_connections",
            "Open client connections.",
            "gauge",
            self.sum(|c| &c.open_connections),
        );
        counter(
            "wsgate_upstream_connections",
            "Open pooled backend connections.",
            "gauge",
            self.sum(|c| &c.upstream_connections),
        );
        let _ = writeln!(s, "# HELP wsgate_messages_total Messages (AWS MessageCount).\n# TYPE wsgate_messages_total counter");
        let _ = writeln!(
            s,
            "wsgate_messages_total{{api=\"{api}\",direction=\"in\"}} {}",
            self.sum(|c| &c.messages_in)
        );
        let _ = writeln!(
            s,
            "wsgate_messages_total{{api=\"{api}\",direction=\"out\"}} {}",
            self.sum(|c| &c.messages_out)
        );
        let _ = writeln!(
            s,
            "# HELP wsgate_bytes_total Payload bytes.\n# TYPE wsgate_bytes_total counter"
        );
        let _ = writeln!(
            s,
            "wsgate_bytes_total{{api=\"{api}\",direction=\"in\"}} {}",
            self.sum(|c| &c.bytes_in)
        );
        let _ = writeln!(
            s,
            "wsgate_bytes_total{{api=\"{api}\",direction=\"out\"}} {}",
            self.sum(|c| &c.bytes_out)
        );
        let name = "wsgate_integration_latency_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Backend call latency (AWS IntegrationLatency).\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.sum(|c| &c.latency_buckets[i]);
            let _ = writeln!(s, "{name}_bucket{{api=\"{api}\",le=\"{b}\"}} {cumulative}");
        }
        let count = self.sum(|c| &c.latency_count);
        let _ = writeln!(s, "{name}_bucket{{api=\"{api}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(
            s,
            "{name}_sum{{api=\"{api}\"}} {}",
            self.sum(|c| &c.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count{{api=\"{api}\"}} {count}");
        s.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_summed_and_histograms_cumulative() {
        let m = Metrics::new(2);
        add(&m.worker(0).messages_in, 3);
        add(&m.worker(1).messages_in, 4);
        m.worker(0).latency(std::time::Duration::from_millis(2));
        m.worker(1).latency(std::time::Duration::from_millis(30));
        let c = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[api]\nname = \"x\"\n[integrations.m]\ntype = \"mock\"\n",
            &Default::default(),
        )
        .unwrap();
        let text = String::from_utf8(m.render(&c)).unwrap();
        assert!(
            text.contains("wsgate_messages_total{api=\"x\",direction=\"in\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("wsgate_integration_latency_seconds_bucket{api=\"x\",le=\"0.0025\"} 1")
        );
        assert!(text.contains("wsgate_integration_latency_seconds_bucket{api=\"x\",le=\"0.05\"} 2"));
        assert!(text.contains("wsgate_integration_latency_seconds_count{api=\"x\"} 2"));
    }
}
