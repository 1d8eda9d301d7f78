//! What the load tool reads of the server process from /proc, and the descriptor limit it
//! raises for itself (and for an iotpipe it starts).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The server's processes (one, or a cluster's nodes) observed through /proc/PID: CPU time and
/// memory are their sums.
#[derive(Debug, Clone)]
pub struct ServerProc {
    /// Their process ids.
    pub pids: Vec<u32>,
}

impl ServerProc {
    /// One process.
    pub fn one(pid: u32) -> Self {
        Self { pids: vec![pid] }
    }

    /// User + system CPU time so far, all threads of every process; `None` once one is gone.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.pids
            .iter()
            .map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                cpu_from_stat(&stat)
            })
            .sum()
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Peak resident memory since the process started, in KiB (summed: an upper bound of the
    /// peak of the sum).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, key: &str) -> Option<u64> {
        self.pids
            .iter()
            .map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                status_field_kib(&status, key)
            })
            .sum()
    }

    /// Samples the resident memory every 100 ms until the returned guard is dropped; the guard's
    /// [`RssSampler::peak_kib`] is the largest value seen (VmHWM cannot be reset without root, and
    /// a peer may have run other scenarios before).
    pub fn sample_rss(&self) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(self.rss_kib().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (proc_, p, s) = (self.clone(), peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = proc_.rss_kib() {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler { peak, stop }
    }
}

/// See [`ServerProc::sample_rss`].
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    /// The largest resident size seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// utime + stime of a /proc/PID/stat line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn cpu_from_stat(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / clock_ticks_per_sec()))
}

/// USER_HZ: 100 on every Linux architecture the project builds for.
fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

fn status_field_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit); returns the
/// soft limit in force afterwards. Children started later inherit it.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux's C libraries, not on every target
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want as libc::rlim_t {
            let raised =
                libc::rlimit { rlim_cur: (want as libc::rlim_t).min(lim.rlim_max), rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_from_a_stat_line_with_spaces_in_the_name() {
        let stat = "1234 (tokio (worker) 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(cpu_from_stat(stat), Some(Duration::from_millis(3000)));
        assert_eq!(cpu_from_stat("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tiotpipe\nVmHWM:\t   90112 kB\nVmRSS:\t   80000 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS:"), Some(80000));
        assert_eq!(status_field_kib(status, "VmHWM:"), Some(90112));
        assert_eq!(status_field_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = ServerProc::one(std::process::id());
        assert!(me.rss_kib().unwrap() > 0);
        assert!(me.peak_rss_kib().unwrap() >= me.rss_kib().unwrap() / 2);
        assert!(me.cpu_time().is_some());
        assert!(raise_fd_limit(64) >= 64);
    }
}
