//! `overlay logs [SERVICE] [-f] [-n N]`: the per-service log files, one service or all merged
//! in time order, optionally followed.

use super::output::Style;
use overlay_core::devconfig::logline;
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `-f` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Most bytes read from one file per poll while following.
const FOLLOW_CHUNK: u64 = 1024 * 1024;

/// What to show.
pub struct View {
    /// The log directory.
    pub dir: PathBuf,
    /// One service (its key), or all.
    pub service: Option<String>,
    /// The last N lines (0: all).
    pub lines: usize,
    /// Keep printing new lines.
    pub follow: bool,
}

/// The services that have a log file in `dir`, sorted.
pub fn services(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").map(str::to_string)
        })
        .collect();
    out.sort();
    out
}

/// Prints the logs as asked.
pub async fn show(view: View) -> anyhow::Result<()> {
    let all = services(&view.dir);
    let names: Vec<String> = match &view.service {
        Some(s) if all.contains(s) => vec![s.clone()],
        Some(s) if view.follow => vec![s.clone()],
        Some(s) => anyhow::bail!(
            "there are no logs of {s} in {}; services with logs: {}",
            view.dir.display(),
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join(", ")
            }
        ),
        None if all.is_empty() && !view.follow => anyhow::bail!(
            "there are no logs in {} yet; start services with `overlay dev`",
            view.dir.display()
        ),
        None => all,
    };
    let style = Style::detect();
    let mut width = names.iter().map(String::len).max().unwrap_or(0);
    let mut tails: Vec<Tail> = Vec::new();
    let mut per_service: Vec<Vec<(u64, String)>> = Vec::new();
    for name in &names {
        let (lines, tail) = read_service(&view.dir, name, view.lines)?;
        per_service.push(lines);
        tails.push(tail);
    }
    let merged = logline::merge(&per_service);
    let skip = if view.lines == 0 {
        0
    } else {
        merged.len().saturating_sub(view.lines)
    };
    {
        use std::io::Write;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for (i, at, text) in merged.into_iter().skip(skip) {
            writeln!(out, "{}", style.format(at, i, &names[i], width, &text))?;
        }
        out.flush()?;
    }
    if !view.follow {
        return Ok(());
    }
    let mut names = names;
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        if view.service.is_none() {
            for s in services(&view.dir) {
                if !names.contains(&s) {
                    width = width.max(s.len());
                    tails.push(Tail::new(view.dir.join(format!("{s}.log")), 0, None));
                    names.push(s);
                }
            }
        }
        let fresh: Vec<Vec<(u64, String)>> = tails.iter_mut().map(Tail::poll).collect();
        let merged = logline::merge(&fresh);
        if merged.is_empty() {
            continue;
        }
        use std::io::Write;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for (i, at, text) in merged {
            writeln!(out, "{}", style.format(at, i, &names[i], width, &text))?;
        }
        out.flush()?;
    }
}

/// The last `n` (0: all) lines of a service across `NAME.log.1` and `NAME.log`, and where to
/// follow from.
fn read_service(dir: &Path, name: &str, n: usize) -> anyhow::Result<(Vec<(u64, String)>, Tail)> {
    let current = dir.join(format!("{name}.log"));
    let mut old = current.clone().into_os_string();
    old.push(".1");
    let mut keep: VecDeque<(u64, String)> = VecDeque::new();
    let mut last = 0u64;
    let mut end = (0u64, None);
    for (path, is_current) in [(PathBuf::from(old), false), (current.clone(), true)] {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        // Only whole lines: a line being written is picked up by the follower.
        let whole = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        for line in String::from_utf8_lossy(&bytes[..whole]).lines() {
            let (at, text) = parse(line, &mut last);
            keep.push_back((at, text));
            if n > 0 && keep.len() > n {
                keep.pop_front();
            }
        }
        if is_current {
            end = (whole as u64, f.metadata().ok().map(|m| m.ino()));
        }
    }
    Ok((keep.into(), Tail::new(current, end.0, end.1)))
}

/// A line's time and text; lines without a timestamp take the previous line's.
fn parse(line: &str, last: &mut u64) -> (u64, String) {
    match logline::split_file_line(line) {
        Some((at, text)) => {
            *last = at;
            (at, text.to_string())
        }
        None => (*last, line.to_string()),
    }
}

/// Follows one file across rotations.
struct Tail {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    partial: Vec<u8>,
    last: u64,
}

impl Tail {
    fn new(path: PathBuf, offset: u64, inode: Option<u64>) -> Tail {
        Tail {
            path,
            offset,
            inode,
            partial: Vec::new(),
            last: 0,
        }
    }

    fn poll(&mut self) -> Vec<(u64, String)> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let Ok(meta) = f.metadata() else {
            return Vec::new();
        };
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            // Rotated or truncated: the new file from its start.
            self.inode = Some(meta.ino());
            self.offset = 0;
            self.partial.clear();
        }
        if meta.len() == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = f.take(FOLLOW_CHUNK).read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() > 2 * logline::MAX_LINE {
                self.partial.clear();
            }
            return Vec::new();
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&whole)
            .lines()
            .map(|l| parse(l, &mut self.last))
            .collect()
    }
}
