//! The session's output: every service's lines, interleaved on the terminal with a coloured
//! name and a clock, and appended to one file per service (rotated by size) for `overlay logs`.
//!
//! One thread does all the writing, fed by a bounded queue: a service that floods its stdout
//! waits for the terminal instead of growing memory.

use overlay_core::devconfig::logline;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Lines that may wait for the writer thread.
const QUEUE: usize = 4096;

/// A log file is rotated to `NAME.log.1` when it would grow past this.
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;

const PALETTE: [&str; 10] = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// One line of output.
#[derive(Debug)]
pub struct Line {
    /// Index of the service (in the order given to [`Output::start`]).
    pub service: usize,
    /// When it was read, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The text, without newline.
    pub text: String,
}

/// Sends lines to the writer thread; cheap to clone.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::Sender<Line>,
}

impl Sink {
    /// Queues a line of `service`, waiting while the queue is full.
    pub async fn line(&self, service: usize, text: String) {
        let _ = self
            .tx
            .send(Line {
                service,
                at_ms: now_ms(),
                text,
            })
            .await;
    }

    /// A message from overlay itself about `service` (start, crash, restart), marked as such.
    pub async fn note(&self, service: usize, text: impl std::fmt::Display) {
        self.line(service, format!("[overlay] {text}")).await;
    }
}

/// The writer thread.
pub struct Output {
    thread: std::thread::JoinHandle<()>,
}

/// How the terminal shows lines.
#[derive(Clone, Debug)]
pub struct Style {
    /// ANSI colours on.
    pub color: bool,
    /// The local time's offset from UTC, in seconds.
    pub utc_offset: i64,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is not set; the local UTC offset.
    pub fn detect() -> Style {
        // SAFETY: isatty has no preconditions.
        let tty = unsafe { libc::isatty(1) } == 1;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: tty && !no_color,
            utc_offset: utc_offset(),
        }
    }

    /// `HH:MM:SS.mmm name | text`, the name padded to `width` and coloured by `index`.
    pub fn format(&self, at_ms: u64, index: usize, name: &str, width: usize, text: &str) -> String {
        let clock = logline::clock(at_ms, self.utc_offset);
        if self.color {
            let c = PALETTE[index % PALETTE.len()];
            format!("\x1b[2m{clock}\x1b[0m \x1b[{c}m{name:<width$} |\x1b[0m {text}")
        } else {
            format!("{clock} {name:<width$} | {text}")
        }
    }
}

impl Output {
    /// Starts the writer for services named `names` (their keys), with files in `dir`.
    pub fn start(names: Vec<String>, dir: PathBuf, style: Style) -> anyhow::Result<(Output, Sink)> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the log directory {}: {e}", dir.display())
        })?;
        let (tx, mut rx) = mpsc::channel::<Line>(QUEUE);
        let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut files: Vec<LogFile> = names.iter().map(|n| LogFile::new(&dir, n)).collect();
        let thread = std::thread::Builder::new()
            .name("overlay-dev-output".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = BufWriter::new(stdout.lock());
                while let Some(first) = rx.blocking_recv() {
                    let mut next = Some(first);
                    while let Some(l) = next.take() {
                        let name = names.get(l.service).map(String::as_str).unwrap_or("?");
                        let _ = writeln!(
                            out,
                            "{}",
                            style.format(l.at_ms, l.service, name, width, &l.text)
                        );
                        if let Some(f) = files.get_mut(l.service) {
                            f.write(&logline::file_line(l.at_ms, &l.text));
                        }
                        next = rx.try_recv().ok();
                    }
                    let _ = out.flush();
                    for f in &mut files {
                        f.flush();
                    }
                }
                let _ = out.flush();
            })
            .map_err(|e| anyhow::anyhow!("cannot start the output thread: {e}"))?;
        Ok((Output { thread }, Sink { tx }))
    }

    /// Waits until every line queued before the last [`Sink`] was dropped is written.
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

/// One service's log file, rotated by size.
struct LogFile {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    size: u64,
    failed: bool,
}

impl LogFile {
    fn new(dir: &Path, name: &str) -> LogFile {
        LogFile {
            path: dir.join(format!("{name}.log")),
            file: None,
            size: 0,
            failed: false,
        }
    }

    fn write(&mut self, line: &str) {
        if self.failed {
            return;
        }
        let len = line.len() as u64 + 1;
        if self.file.is_some() && self.size + len > ROTATE_BYTES {
            self.flush();
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(&self.path, old);
        }
        if self.file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => {
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(BufWriter::new(f));
                }
                Err(e) => {
                    tracing::warn!("cannot write the log file {}: {e}", self.path.display());
                    self.failed = true;
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            if writeln!(f, "{line}").is_ok() {
                self.size += len;
            }
        }
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The local time zone's current offset from UTC, in seconds.
pub fn utc_offset() -> i64 {
    let now = (now_ms() / 1000) as libc::time_t;
    // SAFETY: an all-zero tm is a valid out-parameter; localtime_r only writes to it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if ok {
        tm.tm_gmtoff
    } else {
        0
    }
}
