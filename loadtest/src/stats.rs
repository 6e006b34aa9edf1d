//! Latency histograms (HdrHistogram, nanoseconds), end-of-run reports (a human table or
//! JSON) and the once-a-second progress line shown when stdout is a terminal.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A latency histogram in nanoseconds, 1 ns .. 100 s, 3 significant digits.
pub struct Latency(pub Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds"))
    }
}

impl Latency {
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }
    pub fn add(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }
    pub fn count(&self) -> u64 {
        self.0.len()
    }
    /// Percentile in microseconds (0 when empty).
    pub fn pct_us(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.value_at_quantile(p / 100.0) as f64 / 1000.0
        }
    }
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_us: self.pct_us(50.0),
            p90_us: self.pct_us(90.0),
            p99_us: self.pct_us(99.0),
            p999_us: self.pct_us(99.9),
            max_us: if self.0.is_empty() {
                0.0
            } else {
                self.0.max() as f64 / 1000.0
            },
            mean_us: if self.0.is_empty() {
                0.0
            } else {
                self.0.mean() / 1000.0
            },
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count, "p50_us": r2(self.p50_us), "p90_us": r2(self.p90_us),
            "p99_us": r2(self.p99_us), "p999_us": r2(self.p999_us), "max_us": r2(self.max_us),
            "mean_us": r2(self.mean_us),
        })
    }
}

pub fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// An ordered list of named values, printed as a two-column table or as one JSON object.
pub struct Report {
    pub title: String,
    pub rows: Vec<(String, Value)>,
}

impl Report {
    pub fn new(title: &str) -> Report {
        Report {
            title: title.to_string(),
            rows: Vec::new(),
        }
    }
    pub fn add(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.rows.push((key.to_string(), v.into()));
        self
    }
    pub fn latency(&mut self, prefix: &str, l: &LatencySummary) -> &mut Self {
        self.add(&format!("{prefix}_p50_us"), r2(l.p50_us))
            .add(&format!("{prefix}_p90_us"), r2(l.p90_us))
            .add(&format!("{prefix}_p99_us"), r2(l.p99_us))
            .add(&format!("{prefix}_p999_us"), r2(l.p999_us))
            .add(&format!("{prefix}_max_us"), r2(l.max_us))
    }
    /// The load generator's own CPU: `loadgen_cpu_window_s` (when the send window was
    /// measured apart), `loadgen_cpu_us_per_<unit>` over that window (or the whole run),
    /// and user/system seconds, so a reader sees whether the generator was the bottleneck.
    pub fn cpu(
        &mut self,
        own: &crate::cpu::CpuTimes,
        window: Option<Duration>,
        unit: &str,
        count: u64,
    ) -> &mut Self {
        if let Some(w) = window {
            self.add("loadgen_cpu_window_s", r3(w.as_secs_f64()));
        }
        let measured = window.unwrap_or_else(|| own.total()).as_secs_f64();
        let per = if count > 0 {
            measured * 1e6 / count as f64
        } else {
            0.0
        };
        self.add(&format!("loadgen_cpu_us_per_{unit}"), r3(per))
            .add("loadgen_cpu_user_s", r3(own.user.as_secs_f64()))
            .add("loadgen_cpu_sys_s", r3(own.sys.as_secs_f64()))
    }
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("scenario".into(), Value::String(self.title.clone()));
        for (k, v) in &self.rows {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
    pub fn to_table(&self) -> String {
        let w = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut s = format!("== {} ==\n", self.title);
        for (k, v) in &self.rows {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!("  {k:<w$}  {v}\n"));
        }
        s
    }
    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.to_table());
        }
    }
}

pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Counters the worker threads add to now and then (relaxed atomics, a few times a
/// second per thread), read by the progress printer.
#[derive(Clone)]
pub struct Progress {
    names: Arc<Vec<&'static str>>,
    counters: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
}

impl Progress {
    pub fn new(names: &[&'static str]) -> Progress {
        Progress {
            names: Arc::new(names.to_vec()),
            counters: Arc::new(names.iter().map(|_| AtomicU64::new(0)).collect()),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        if n > 0 {
            self.counters[i].fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn get(&self, i: usize) -> u64 {
        self.counters[i].load(Ordering::Relaxed)
    }
    /// Prints a line per second (rates of every counter) until `finish`, only when
    /// stdout is a terminal and `enabled`. Bounded by `limit`.
    pub fn spawn_printer(
        &self,
        enabled: bool,
        limit: Duration,
    ) -> Option<std::thread::JoinHandle<()>> {
        if !enabled || !std::io::stdout().is_terminal() {
            return None;
        }
        let me = self.clone();
        Some(std::thread::spawn(move || {
            let start = Instant::now();
            let mut last: Vec<u64> = (0..me.names.len()).map(|i| me.get(i)).collect();
            let mut tick = 0u64;
            while !me.stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                tick += 1;
                let next = start + Duration::from_secs(tick);
                while Instant::now() < next && !me.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if me.stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut line = format!("[{tick:>3}s]");
                for (i, name) in me.names.iter().enumerate() {
                    let v = me.get(i);
                    line.push_str(&format!(" {name}/s={}", v - last[i]));
                    last[i] = v;
                }
                let cpu = crate::cpu::own();
                line.push_str(&format!(" loadgen_cpu={:.2}s", cpu.total().as_secs_f64()));
                println!("{line}");
            }
        }))
    }
    pub fn finish(&self, h: Option<std::thread::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_report() {
        let mut l = Latency::default();
        for i in 1..=1000u64 {
            l.record(i * 1000);
        }
        let s = l.summary();
        assert!((s.p50_us - 500.0).abs() < 1.0, "{}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() < 2.0, "{}", s.p99_us);
        let mut r = Report::new("t");
        r.add("msgs", 5u64).latency("lat", &s);
        assert_eq!(r.to_json()["msgs"], 5);
        assert!(r.to_table().contains("lat_p99_us"));
    }
}
