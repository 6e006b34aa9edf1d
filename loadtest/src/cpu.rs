//! CPU time and memory: our own (`getrusage`, per-thread clocks) and another process's
//! (`/proc/<pid>/stat`, `/proc/<pid>/status`).

use std::time::Duration;

/// User and system CPU time of this process (all threads, including exited ones).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTimes {
    pub fn total(&self) -> Duration {
        self.user + self.sys
    }
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// This process's CPU time, microsecond resolution.
pub fn own() -> CpuTimes {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    CpuTimes {
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
    }
}

/// CPU time of the calling thread (nanosecond resolution).
pub fn thread() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time of process `pid` from `/proc/<pid>/stat` (utime, stime; clock-tick
/// resolution, usually 10 ms). Includes exited threads.
pub fn of_pid(pid: u32) -> Option<CpuTimes> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

/// Parses utime and stime (fields 14 and 15) out of a `/proc/<pid>/stat` line.
pub fn parse_stat(s: &str) -> Option<CpuTimes> {
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // After ')': field 3 is state; utime is field 14, i.e. the 12th after ')'.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    let hz = clk_tck();
    let d = |t: u64| Duration::from_nanos(t * (1_000_000_000 / hz));
    Some(CpuTimes {
        user: d(utime),
        sys: d(stime),
    })
}

/// A `kB` field of `/proc/<pid>/status` (e.g. "VmRSS", "RssAnon"), in bytes.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
            return Some(kb * 1024);
        }
    }
    None
}

/// Resident set size of `pid` in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS")
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)]
    let cur = rl.rlim_cur as u64;
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let line =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 2 0 1 1 1";
        let t = parse_stat(line).unwrap();
        let hz = clk_tck();
        assert_eq!(t.user, Duration::from_nanos(250 * (1_000_000_000 / hz)));
        assert_eq!(t.sys, Duration::from_nanos(50 * (1_000_000_000 / hz)));
    }

    #[test]
    fn own_process() {
        assert!(of_pid(std::process::id()).is_some());
        assert!(rss(std::process::id()).unwrap() > 0);
        let _ = own();
        let _ = thread();
    }
}
