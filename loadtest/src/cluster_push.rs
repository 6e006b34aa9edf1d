//! `cluster-push`: the `push` scenario with its clients spread over several gateway
//! nodes (`--gateway ws://127.0.0.2:P/,ws://127.0.0.3:P/`, round robin) and every
//! push posted to one management URL (`--mgmt`), typically of a node that owns none
//! of the clients, so each push crosses NATS (SPEC §15). The same checks as `push`:
//! pushes/s, push-to-receipt p50/p99, exactly-once by sequence number. With
//! `--gateway-pid` (one per node, and the nats-server's if wanted) the report adds
//! the gateways' CPU per push, read from `/proc/<pid>/stat` before and after.
//!
//! With one `--gateway` it is the same-node push row, measured the same way.

use crate::cpu;
use crate::push::{self, PushOpts, PushResult};
use crate::stats::{r2, Report};
use crate::ws::Target;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ClusterPushOpts {
    /// `push.target` is the first node; `push.more_targets` the others.
    pub push: PushOpts,
    /// Processes whose CPU counts as the gateway's (every node, and NATS).
    pub gateway_pids: Vec<u32>,
}

impl ClusterPushOpts {
    /// Clients over `targets` (at least one), pushes to `mgmt`.
    pub fn new(targets: Vec<Target>, mgmt: std::net::SocketAddr) -> crate::Result<Self> {
        let mut it = targets.into_iter();
        let first = it.next().ok_or("at least one --gateway")?;
        let mut p = PushOpts::new(first, mgmt);
        p.more_targets = it.collect();
        Ok(ClusterPushOpts {
            push: p,
            gateway_pids: Vec::new(),
        })
    }

    pub fn nodes(&self) -> usize {
        1 + self.push.more_targets.len()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClusterPushResult {
    pub push: PushResult,
    /// CPU of the `gateway_pids` over the whole run (setup included, so an upper
    /// bound); None without pids.
    pub gateway_cpu: Option<Duration>,
}

impl ClusterPushResult {
    pub fn faults(&self) -> u64 {
        self.push.faults()
    }

    /// Gateway CPU µs per delivered push.
    pub fn gateway_cpu_us_per_push(&self) -> Option<f64> {
        let cpu = self.gateway_cpu?;
        (self.push.delivered > 0).then(|| cpu.as_secs_f64() * 1e6 / self.push.delivered as f64)
    }

    pub fn report(&self, o: &ClusterPushOpts) -> Report {
        let mut r = self.push.report(&o.push);
        r.title = "cluster-push".into();
        let gateways: Vec<String> = std::iter::once(&o.push.target)
            .chain(&o.push.more_targets)
            .map(Target::url)
            .collect();
        r.rows.retain(|(k, _)| k != "url");
        r.rows
            .insert(0, ("gateways".into(), gateways.join(",").into()));
        r.rows
            .insert(1, ("nodes".into(), (o.nodes() as u64).into()));
        if let Some(us) = self.gateway_cpu_us_per_push() {
            r.add("gateway_cpu_us_per_push", r2(us));
        }
        r
    }
}

fn cpu_of(pids: &[u32]) -> Option<Duration> {
    pids.iter()
        .map(|&p| cpu::of_pid(p).map(|c| c.total()))
        .sum::<Option<Duration>>()
}

pub fn run(o: &ClusterPushOpts) -> crate::Result<ClusterPushResult> {
    let before = cpu_of(&o.gateway_pids);
    let push = push::run(&o.push)?;
    let after = cpu_of(&o.gateway_pids);
    let gateway_cpu = match (before, after) {
        (Some(b), Some(a)) if !o.gateway_pids.is_empty() => Some(a.saturating_sub(b)),
        _ => None,
    };
    Ok(ClusterPushResult { push, gateway_cpu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::parse_url;

    #[test]
    fn options_spread_clients_over_every_gateway() {
        let t = |u: &str| parse_url(u).unwrap();
        let mgmt = "127.0.0.4:9001".parse().unwrap();
        let o = ClusterPushOpts::new(
            vec![t("ws://127.0.0.2:8080/"), t("ws://127.0.0.3:8080/")],
            mgmt,
        )
        .unwrap();
        assert_eq!(o.nodes(), 2);
        assert_eq!(o.push.target.addr.to_string(), "127.0.0.2:8080");
        assert_eq!(o.push.more_targets[0].addr.to_string(), "127.0.0.3:8080");
        assert!(ClusterPushOpts::new(Vec::new(), mgmt).is_err());
        let r = ClusterPushResult {
            push: PushResult {
                delivered: 1000,
                ..Default::default()
            },
            gateway_cpu: Some(Duration::from_millis(5)),
        };
        assert_eq!(r.gateway_cpu_us_per_push(), Some(5.0));
        let rep = r.report(&o).to_json();
        assert_eq!(rep["scenario"], "cluster-push");
        assert_eq!(rep["nodes"], 2);
        assert_eq!(rep["gateways"], "ws://127.0.0.2:8080/,ws://127.0.0.3:8080/");
        assert_eq!(rep["gateway_cpu_us_per_push"], 5.0);
    }
}
