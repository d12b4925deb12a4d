//! Output: the host line, UTC time stamps, plain and markdown tables, `target/bench/PART.json`,
//! and small /proc readings (RSS, descriptors, CPU ticks) the parts report.

use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// "CPU model, N cores, Linux RELEASE".
pub fn host_desc() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(": "))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A table printed twice: aligned plain text, and markdown for docs/benchmarks.md.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Aligned columns: the first left-aligned, the others right-aligned.
    pub fn plain(&self) -> String {
        let cols = self.headers.len();
        let mut width = vec![0; cols];
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in width.iter().enumerate() {
                let c = r.get(i).map_or("", String::as_str);
                let pad = w - c.chars().count().min(*w);
                if i == 0 {
                    line.push_str(c);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str("  ");
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|", self.headers.join(" | "));
        for i in 0..self.headers.len() {
            out.push_str(if i == 0 { " --- |" } else { " ---: |" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

/// Writes `value` to `DIR/PART.json` and says where.
pub fn write_json<T: Serialize>(dir: &Path, part: &str, value: &T) {
    let path = dir.join(format!("{part}.json"));
    match serde_json::to_string_pretty(value) {
        Ok(text) => match std::fs::write(&path, text + "\n") {
            Ok(()) => println!("\nresults: {}", path.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
        },
        Err(e) => eprintln!("bench: {part}: results do not serialise: {e}"),
    }
}

/// The resident set (VmRSS) of a process in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// How many file descriptors a process has open.
pub fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The numeric fields `idx` of `/proc/PID/stat` after the command (which may hold spaces and
/// parentheses), counted from the state as 0: ppid is 1, utime 11, stime 12, cutime 13,
/// cstime 14.
fn stat_fields<const N: usize>(pid: u32, idx: [usize; N]) -> Option<[u64; N]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let mut out = [0u64; N];
    for (o, i) in out.iter_mut().zip(idx) {
        *o = f.get(i)?.parse().ok()?;
    }
    Some(out)
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid, [11, 12]).map(|f| f.iter().sum())
}

/// User plus system CPU time of a process and of its children it has reaped (forked workers
/// that exited, such as socat's), in clock ticks.
pub fn cpu_ticks_reaped(pid: u32) -> Option<u64> {
    stat_fields(pid, [11, 12, 13, 14]).map(|f| f.iter().sum())
}

/// The live children of a process (every thread's `children` list).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether a process has no live children.
pub fn childless(pid: u32) -> bool {
    children(pid).is_empty()
}

/// h2load's "finished in ..., N req/s" figure.
pub fn h2load_req_per_sec(text: &str) -> Option<f64> {
    let l = text.lines().find(|l| l.starts_with("finished in"))?;
    let rs = l.split(',').find(|p| p.contains("req/s"))?;
    rs.split_whitespace().next()?.parse().ok()
}

/// The whole host's busy CPU time (user, nice, system, irq, softirq of every CPU, from
/// /proc/stat; idle, iowait and steal are not busy), in clock ticks.
pub fn host_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq (guest time is already in user and nice).
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?)
}

/// Clock ticks per second of the /proc CPU times.
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Online CPUs (for a busy time's share of the host).
pub fn cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_listed_until_reaped_and_cpu_is_read() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(cpu_ticks_reaped(me) >= cpu_ticks(me));
        assert_eq!(cpu_ticks(u32::MAX), None);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        assert!(children(me).contains(&child.id()));
        assert!(!childless(me));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!children(me).contains(&child.id()));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn tables() {
        let mut t = Table::new(&["setup", "Mbit/s"]);
        t.row(vec!["raw veth".into(), "12".into()]);
        assert_eq!(t.plain(), "setup     Mbit/s\nraw veth      12\n");
        assert_eq!(
            t.markdown(),
            "| setup | Mbit/s |\n| --- | ---: |\n| raw veth | 12 |\n"
        );
    }
}
