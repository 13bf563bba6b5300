//! Process-tree accounting from `/proc`: descendants, RSS (vfork-aware), CPU time, and a
//! background RSS sampler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::unistd::{sysconf, SysconfVar};

/// Bytes per page and clock ticks per second, read once.
pub struct Sys {
    pub page: u64,
    pub clk_tck: f64,
}

impl Sys {
    pub fn get() -> Sys {
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        let clk_tck = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
        Sys { page, clk_tck }
    }
}

/// Fields of `/proc/PID/stat` after the `comm)` field: index 0 is field 3 (state), 1 is ppid, ...
pub fn read_stat(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let r = s.iter().rposition(|&b| b == b')')?;
    let rest = String::from_utf8_lossy(s.get(r + 2..)?).into_owned();
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn field(st: &[String], idx: usize) -> u64 {
    st.get(idx).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `root` and all its live descendants (by ppid).
pub fn tree_pids(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(st) = read_stat(pid) {
                children.entry(field(&st, 1) as i32).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if read_stat(p).is_none() {
            continue;
        }
        out.push(p);
        if let Some(k) = children.get(&p) {
            stack.extend(k);
        }
    }
    out
}

const PF_FORKNOEXEC: u64 = 0x40;

fn uss_bytes(pid: i32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    s.lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

fn uptime_s() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// RSS in bytes summed over the tree of `root`.
///
/// The root and every exec'd descendant count fully. A descendant that forked but has not exec'd
/// (`PF_FORKNOEXEC`) shares its parent's pages: younger than 1 s it is a (v)fork on its way to
/// exec (a vfork child's RSS *is* the parent's) and counts 0; older, it is a forked worker and
/// counts by its private pages only.
pub fn tree_rss(sys: &Sys, root: i32) -> u64 {
    let mut total = 0;
    let mut now: Option<f64> = None;
    for p in tree_pids(root) {
        if p != root {
            let Some(st) = read_stat(p) else { continue };
            if field(&st, 6) & PF_FORKNOEXEC != 0 {
                let now = *now.get_or_insert_with(uptime_s);
                if now - field(&st, 19) as f64 / sys.clk_tck < 1.0 {
                    continue;
                }
                total += uss_bytes(p);
                continue;
            }
        }
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/statm")) {
            let pages: u64 = s
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            total += pages * sys.page;
        }
    }
    total
}

/// user+sys seconds of the live tree, including what its members reaped.
pub fn tree_cpu(sys: &Sys, root: i32) -> f64 {
    let ticks: u64 = tree_pids(root)
        .into_iter()
        .filter_map(read_stat)
        .map(|st| (11..15).map(|i| field(&st, i)).sum::<u64>())
        .sum();
    ticks as f64 / sys.clk_tck
}

/// Start time (field 22) of a process, to recognise it later despite pid reuse.
pub fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|st| field(&st, 19))
}

/// Median of a few tree-RSS samples 100 ms apart, in bytes.
pub fn spot_rss(sys: &Sys, root: i32) -> u64 {
    let mut v: Vec<u64> = (0..3)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            tree_rss(sys, root)
        })
        .collect();
    v.sort_unstable();
    v[1]
}

/// Samples the tree RSS of a process every 100 ms on its own thread.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(root: i32) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (samples.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let sys = Sys::get();
            while !st2.load(Ordering::Relaxed) {
                let v = tree_rss(&sys, root);
                if let Ok(mut g) = s2.lock() {
                    g.push((Instant::now(), v));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssSampler {
            samples,
            stop,
            handle: Some(handle),
        }
    }

    /// Highest sample taken between `t0` and `t1`, in bytes.
    pub fn peak(&self, t0: Instant, t1: Instant) -> Option<u64> {
        let g = self.samples.lock().ok()?;
        g.iter()
            .filter(|(t, _)| *t >= t0 && *t <= t1)
            .map(|(_, v)| *v)
            .max()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
