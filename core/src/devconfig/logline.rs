//! Log lines of `overlay dev`: splitting process output into bounded lines, and the
//! `RFC3339-timestamp line` format of the per-service log files that `overlay logs` merges.

/// The longest line kept; longer lines are cut and end with [`TRUNCATED`].
pub const MAX_LINE: usize = 16 * 1024;

/// What ends a line that was cut at [`MAX_LINE`] bytes.
pub const TRUNCATED: &str = " [... line truncated]";

/// Splits a byte stream into lines of at most `max` bytes, whatever the producer writes: the
/// memory it holds is bounded by `max`, not by the length of a line.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

impl LineSplitter {
    /// A splitter that cuts lines at `max` bytes.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max: max.max(1),
            discarding: false,
        }
    }

    /// Feeds bytes; complete lines (without `\n` or `\r\n`) are appended to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<String>) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (chunk, ended) = match nl {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            data = match nl {
                Some(i) => &data[i + 1..],
                None => &[],
            };
            if self.discarding {
                if ended {
                    self.discarding = false;
                }
                continue;
            }
            let room = self.max - self.buf.len();
            if chunk.len() > room {
                self.buf.extend_from_slice(&chunk[..room]);
                out.push(self.take(true));
                self.discarding = !ended;
                continue;
            }
            self.buf.extend_from_slice(chunk);
            if ended {
                out.push(self.take(false));
            }
        }
    }

    /// The last line if the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        self.discarding = false;
        if self.buf.is_empty() {
            None
        } else {
            Some(self.take(false))
        }
    }

    fn take(&mut self, truncated: bool) -> String {
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        if truncated {
            s.push_str(TRUNCATED);
        }
        s
    }
}

/// `2024-05-01T12:34:56.789Z` for milliseconds since the Unix epoch.
pub fn format_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let ms = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses what [`format_utc`] writes.
pub fn parse_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    Some(secs * 1000 + ms)
}

/// A line of a per-service log file: the timestamp, a space, the text.
pub fn file_line(unix_ms: u64, text: &str) -> String {
    format!("{} {text}", format_utc(unix_ms))
}

/// Splits a log file line into its timestamp and text.
pub fn split_file_line(line: &str) -> Option<(u64, &str)> {
    let ts = line.get(..24)?;
    let ms = parse_utc(ts)?;
    let rest = line.get(24..)?;
    Some((ms, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// `HH:MM:SS.mmm` of `unix_ms` at `utc_offset_secs` from UTC (the terminal's local time).
pub fn clock(unix_ms: u64, utc_offset_secs: i64) -> String {
    let local = unix_ms as i64 + utc_offset_secs * 1000;
    let day_ms = local.rem_euclid(86_400_000);
    let (s, ms) = (day_ms / 1000, day_ms % 1000);
    format!("{:02}:{:02}:{:02}.{ms:03}", s / 3600, s % 3600 / 60, s % 60)
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Merges per-service lines into time order. Each input is already in time order (one file);
/// equal timestamps keep the order of the inputs. Returns (input index, time, line).
pub fn merge<T: Clone>(inputs: &[Vec<(u64, T)>]) -> Vec<(usize, u64, T)> {
    let mut heads = vec![0usize; inputs.len()];
    let total = inputs.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    loop {
        let mut best: Option<(u64, usize)> = None;
        for (i, input) in inputs.iter().enumerate() {
            if let Some((t, _)) = input.get(heads[i]) {
                if best.is_none_or(|(bt, _)| *t < bt) {
                    best = Some((*t, i));
                }
            }
        }
        let Some((t, i)) = best else { break };
        out.push((i, t, inputs[i][heads[i]].1.clone()));
        heads[i] += 1;
    }
    out
}
