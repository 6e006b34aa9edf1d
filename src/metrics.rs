//! Prometheus metrics (SPEC §9), one series per AWS CloudWatch metric. Each worker
//! writes only its own counters (single-writer atomics: a load and a store, no locked
//! instruction on the message path); a scrape sums them. Message, error and latency
//! series carry the route, as CloudWatch's per-route dimension does.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::Config;

/// Upper bounds (seconds) of the integration-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 29.0,
];

/// Per-route counters of one worker.
#[derive(Debug, Default)]
pub struct RouteCounters {
    pub messages_in: AtomicU64,
    /// Messages refused by a throttling bucket (SPEC §10.3).
    pub throttled: AtomicU64,
    pub integration_errors: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub connects: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub client_errors: AtomicU64,
    pub execution_errors: AtomicU64,
    pub open_connections: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub upstream_connections: AtomicU64,
    /// Entries armed in the worker's timer wheel (bounded by what is open now).
    pub timer_entries: AtomicU64,
    /// Management requests refused for failed auth (403).
    pub management_refused: AtomicU64,
    /// Upgrade requests refused (429) over the connect bucket (SPEC §10.3).
    pub connects_throttled: AtomicU64,
    /// Access-log lines dropped: the destination did not take them in time.
    pub access_log_dropped: AtomicU64,
    /// Group memberships held (SPEC §15, `crate::groups`).
    pub group_memberships: AtomicU64,
    /// Group sends and broadcasts a member missed: its outbound buffer was full.
    pub group_skipped: AtomicU64,
    /// SPEC §15's `wsgate_cluster_*` series (written only with `[cluster]`).
    pub cluster: crate::cluster::metrics::Counters,
    routes: Box<[RouteCounters]>,
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
    fn new(routes: usize) -> Counters {
        Counters {
            routes: (0..routes).map(|_| RouteCounters::default()).collect(),
            ..Counters::default()
        }
    }

    /// One message of `bytes` payload bytes went to a client.
    pub fn message_out(&self, bytes: usize) {
        add(&self.messages_out, 1);
        add(&self.bytes_out, bytes as u64);
    }

    /// One client message, routed to `route` (`None`: no route matched).
    pub fn message_in(&self, route: Option<usize>, bytes: usize) {
        add(&self.messages_in, 1);
        add(&self.bytes_in, bytes as u64);
        if let Some(r) = route.and_then(|r| self.routes.get(r)) {
            add(&r.messages_in, 1);
        }
    }

    /// One message of `route` was refused by a throttling bucket.
    pub fn throttled(&self, route: usize) {
        if let Some(r) = self.routes.get(route) {
            add(&r.throttled, 1);
        }
    }

    /// One backend call of `route` ended after `d`; `ok` is a 2xx answer.
    pub fn integration(&self, route: usize, d: std::time::Duration, ok: bool) {
        let Some(r) = self.routes.get(route) else {
            return;
        };
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            add(&r.latency_buckets[i], 1);
        }
        add(&r.latency_sum_us, d.as_micros() as u64);
        add(&r.latency_count, 1);
        if !ok {
            add(&r.integration_errors, 1);
        }
    }
}

/// A single-series metric: name, help, type, and which counter it sums.
type Simple = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Counters) -> &AtomicU64,
);

/// Every worker's counters.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<Counters>,
}

impl Metrics {
    /// Counters for `workers` workers and `routes` routes (config route ids).
    pub fn new(workers: usize, routes: usize) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| Counters::new(routes)).collect(),
        }
    }

    pub fn worker(&self, i: u8) -> &Counters {
        &self.workers[i as usize]
    }

    fn sum(&self, f: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    fn route_sum(&self, route: usize, f: impl Fn(&RouteCounters) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .filter_map(|w| w.routes.get(route))
            .map(|r| f(r).load(Relaxed))
            .sum()
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self, config: &Config) -> Vec<u8> {
        let mut s = String::new();
        let api = &config.api.name;
        let head = |s: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let simple: [Simple; 11] = [
            (
                "wsgate_connect_total",
                "Connections accepted (AWS ConnectCount).",
                "counter",
                |c| &c.connects,
            ),
            (
                "wsgate_client_errors_total",
                "Client errors: Forbidden, protocol violations, limits (AWS ClientError).",
                "counter",
                |c| &c.client_errors,
            ),
            (
                "wsgate_execution_errors_total",
                "Errors while executing an integration (AWS ExecutionError).",
                "counter",
                |c| &c.execution_errors,
            ),
            (
                "wsgate_open_connections",
                "Open client connections.",
                "gauge",
                |c| &c.open_connections,
            ),
            (
                "wsgate_upstream_connections",
                "Open pooled backend connections.",
                "gauge",
                |c| &c.upstream_connections,
            ),
            (
                "wsgate_timer_entries",
                "Armed timers: at most one per open connection, call in flight or backend connect.",
                "gauge",
                |c| &c.timer_entries,
            ),
            (
                "wsgate_management_refused_total",
                "Management API requests refused for failed auth (403).",
                "counter",
                |c| &c.management_refused,
            ),
            (
                "wsgate_connects_throttled_total",
                "Upgrade requests refused with 429 over throttling.connect_rate (AWS ClientError).",
                "counter",
                |c| &c.connects_throttled,
            ),
            (
                "wsgate_access_log_dropped_total",
                "Access-log lines dropped because the destination was full, slow or failing.",
                "counter",
                |c| &c.access_log_dropped,
            ),
            (
                "wsgate_group_memberships",
                "Group memberships held (a connection in a group) [ext].",
                "gauge",
                |c| &c.group_memberships,
            ),
            (
                "wsgate_group_skipped_total",
                "Group sends and broadcasts a member missed because its outbound buffer was full.",
                "counter",
                |c| &c.group_skipped,
            ),
        ];
        for (name, help, kind, f) in simple {
            head(&mut s, name, help, kind);
            let _ = writeln!(s, "{name}{{api=\"{api}\"}} {}", self.sum(f));
        }
        head(
            &mut s,
            "wsgate_messages_total",
            "Messages (AWS MessageCount).",
            "counter",
        );
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
        head(&mut s, "wsgate_bytes_total", "Payload bytes.", "counter");
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
        let label = |route: usize| {
            format!(
                "api=\"{api}\",route=\"{}\"",
                escape(&config.routes[route].key)
            )
        };
        head(
            &mut s,
            "wsgate_route_messages_total",
            "Client messages by the route they selected.",
            "counter",
        );
        for route in 0..config.routes.len() {
            let _ = writeln!(
                s,
                "wsgate_route_messages_total{{{}}} {}",
                label(route),
                self.route_sum(route, |r| &r.messages_in)
            );
        }
        head(
            &mut s,
            "wsgate_throttled_total",
            "Messages refused with Too Many Requests by a throttling bucket (stage, route or connection).",
            "counter",
        );
        for route in 0..config.routes.len() {
            let v = self.route_sum(route, |r| &r.throttled);
            let _ = writeln!(s, "wsgate_throttled_total{{{}}} {v}", label(route));
        }
        head(
            &mut s,
            "wsgate_integration_errors_total",
            "Integration failures: unreachable, malformed, timed out, non-2xx (AWS IntegrationError).",
            "counter",
        );
        for route in 0..config.routes.len() {
            let v = self.route_sum(route, |r| &r.integration_errors);
            let _ = writeln!(s, "wsgate_integration_errors_total{{{}}} {v}", label(route));
        }
        let name = "wsgate_integration_latency_seconds";
        head(
            &mut s,
            name,
            "Backend call latency (AWS IntegrationLatency).",
            "histogram",
        );
        for route in 0..config.routes.len() {
            let l = label(route);
            let mut cumulative = 0;
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += self.route_sum(route, |r| &r.latency_buckets[i]);
                let _ = writeln!(s, "{name}_bucket{{{l},le=\"{b}\"}} {cumulative}");
            }
            let count = self.route_sum(route, |r| &r.latency_count);
            let _ = writeln!(s, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
            let _ = writeln!(
                s,
                "{name}_sum{{{l}}} {}",
                self.route_sum(route, |r| &r.latency_sum_us) as f64 / 1e6
            );
            let _ = writeln!(s, "{name}_count{{{l}}} {count}");
        }
        if config.cluster.is_some() {
            crate::cluster::metrics::render(&mut s, api, self.workers.iter().map(|w| &w.cluster));
        }
        s.into_bytes()
    }
}

/// Escapes a Prometheus label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_summed_and_histograms_cumulative_per_route() {
        let c = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[api]\nname = \"x\"\n[integrations.m]\ntype = \"mock\"\n[routes.join]\nintegration = \"m\"\n",
            &Default::default(),
        )
        .unwrap();
        let m = Metrics::new(2, c.routes.len());
        m.worker(0).message_in(Some(0), 10);
        m.worker(1).message_in(Some(0), 5);
        m.worker(1).message_in(None, 1);
        m.worker(0)
            .integration(0, std::time::Duration::from_millis(2), true);
        m.worker(1)
            .integration(0, std::time::Duration::from_millis(30), false);
        let text = String::from_utf8(m.render(&c)).unwrap();
        assert!(
            text.contains("wsgate_messages_total{api=\"x\",direction=\"in\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("wsgate_bytes_total{api=\"x\",direction=\"in\"} 16"),
            "{text}"
        );
        assert!(
            text.contains("wsgate_route_messages_total{api=\"x\",route=\"join\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("wsgate_integration_errors_total{api=\"x\",route=\"join\"} 1"),
            "{text}"
        );
        let bucket = "wsgate_integration_latency_seconds_bucket{api=\"x\",route=\"join\"";
        assert!(
            text.contains(&format!("{bucket},le=\"0.0025\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket},le=\"0.05\"}} 2")),
            "{text}"
        );
        assert!(
            text.contains("wsgate_integration_latency_seconds_count{api=\"x\",route=\"join\"} 2")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
