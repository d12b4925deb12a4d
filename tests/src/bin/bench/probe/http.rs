//! The HTTP probes: time until a (new) process answers a GET, and per-request latency.

use super::{ms, start, stop, write_result, Common, LatencyLine, ProbeResult};
use crate::stats::{mean, median, percentile};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// One GET on `s`; the status and body (Content-Length framed, else until close).
fn http_get(
    s: &mut TcpStream,
    host: &str,
    path: &str,
    close: bool,
    extra: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    let conn = if close { "close" } else { "keep-alive" };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n{extra}\r\n")
            .as_bytes(),
    )?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("closed before the answer's headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(bad("closed in the middle of the body"));
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body)?;
        }
    }
    Ok((status, body))
}

fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

pub(super) fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    not_body: Option<&str>,
    stop_cmd: bool,
    c: &Common,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut child = start(c, stop_cmd)?;
    let interval = Duration::from_secs_f64(c.interval / 1000.0);
    let deadline = t0 + Duration::from_secs_f64(c.timeout);
    let mut r = ProbeResult::default();
    let mut next = t0;
    let check_exit = |r: &mut ProbeResult, child: &mut Child| {
        if r.cmd_rc.is_none() {
            if let Ok(Some(st)) = child.try_wait() {
                r.cmd_rc = Some(st.code().unwrap_or(-1));
                r.cmd_ms = Some(ms(t0, Instant::now()));
            }
        }
    };
    while Instant::now() < deadline {
        check_exit(&mut r, &mut child);
        // A failed command, or a server that exited before it answered.
        if r.cmd_rc.is_some_and(|rc| rc != 0 || stop_cmd) {
            break;
        }
        r.probes += 1;
        let got = connect(host, port, Duration::from_secs(5))
            .and_then(|mut s| http_get(&mut s, &format!("{host}:{port}"), path, true, ""));
        if let Ok((200, body)) = got {
            let text = String::from_utf8_lossy(&body);
            if Some(text.trim()) != not_body.map(str::trim) {
                r.reached_ms = Some(ms(t0, Instant::now()));
                let first = text.lines().next().unwrap_or("-").trim().replace(' ', "_");
                r.detail = Some(first);
                break;
            }
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        std::thread::sleep(next - now);
    }
    if stop_cmd {
        if r.cmd_rc.is_none() {
            stop(&mut child, true);
        }
        r.cmd_ms = None;
    } else if r.reached_ms.is_some() {
        // Success: the command gets the rest of the time to finish.
        while r.cmd_rc.is_none() && Instant::now() < deadline {
            check_exit(&mut r, &mut child);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    check_exit(&mut r, &mut child);
    if r.cmd_rc.is_none() && !stop_cmd {
        stop(&mut child, false);
        r.cmd_rc = child.try_wait().ok().flatten().and_then(|s| s.code());
    }
    write_result(&c.result, &r)
}

/// Whether a header's name or value would break the request's framing.
fn h_has_crlf(k: &str, v: &str) -> bool {
    k.contains(['\r', '\n']) || v.contains(['\r', '\n'])
}

fn split_hostport(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s}: not HOST:PORT"))?;
    Ok((
        h.to_string(),
        p.parse().map_err(|_| format!("{s}: bad port"))?,
    ))
}

/// The latency probe; `via_header` (`NAME: VALUE`) goes with every request to `via` only.
#[allow(clippy::too_many_arguments)]
pub(super) fn latency(
    direct: &str,
    via: &str,
    via_header: Option<&str>,
    n: usize,
    warmup: usize,
    path: &str,
    result: &PathBuf,
    raw: Option<&str>,
) -> i32 {
    let targets = match (split_hostport(direct), split_hostport(via)) {
        (Ok(d), Ok(v)) => [("direct", d), ("via", v)],
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("probe: {e}");
            return 2;
        }
    };
    let extra = match via_header.map(|h| (h, h.split_once(':'))) {
        None => String::new(),
        Some((_, Some((k, v)))) if !k.trim().is_empty() && !h_has_crlf(k, v) => {
            format!("{}: {}\r\n", k.trim(), v.trim())
        }
        Some((h, _)) => {
            eprintln!("probe: --via-header {h}: not NAME: VALUE");
            return 2;
        }
    };
    let extras = ["", extra.as_str()];
    let mut bodies: [Option<Vec<u8>>; 2] = [None, None];
    let mut lines = Vec::new();
    for round in ["fresh", "keepalive"] {
        let mut socks: [Option<TcpStream>; 2] = [None, None];
        let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for i in 0..warmup + n {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let (name, (host, port)) = &targets[k];
                let hp = format!("{host}:{port}");
                let got = if round == "fresh" {
                    let t = Instant::now();
                    connect(host, *port, Duration::from_secs(10))
                        .and_then(|mut s| http_get(&mut s, &hp, path, true, extras[k]))
                        .map(|a| (a, t.elapsed()))
                } else {
                    let s = match socks[k].take() {
                        Some(s) => Ok(s),
                        None => connect(host, *port, Duration::from_secs(10)),
                    };
                    s.and_then(|mut s| {
                        let t = Instant::now();
                        let a = http_get(&mut s, &hp, path, false, extras[k])?;
                        let took = t.elapsed();
                        socks[k] = Some(s);
                        Ok((a, took))
                    })
                };
                match got {
                    Ok(((200, body), took)) => {
                        bodies[k].get_or_insert(body);
                        if i >= warmup {
                            samples[k].push(took.as_secs_f64() * 1e6);
                        }
                    }
                    Ok(((status, _), _)) => {
                        eprintln!("probe: latency ({round}): {name} answered {status}");
                        return 2;
                    }
                    Err(e) => {
                        eprintln!("probe: latency ({round}): {name}: {e}");
                        return 2;
                    }
                }
            }
        }
        for (k, (name, _)) in targets.iter().enumerate() {
            let v = &samples[k];
            let r1 = |x: Option<f64>| (x.unwrap_or(0.0) * 10.0).round() / 10.0;
            lines.push(LatencyLine {
                round: round.to_string(),
                address: name.to_string(),
                n: v.len(),
                median_us: r1(median(v)),
                p99_us: r1(percentile(v, 99)),
                mean_us: r1(mean(v)),
            });
            if let Some(prefix) = raw {
                let text: String = v.iter().map(|x| format!("{x:.1}\n")).collect();
                let _ = std::fs::write(format!("{prefix}-{round}-{name}.txt"), text);
            }
        }
    }
    let text = serde_json::to_string(&lines).unwrap_or_default();
    if let Err(e) = std::fs::write(result, text + "\n") {
        eprintln!("probe: {}: {e}", result.display());
        return 2;
    }
    if bodies[0] != bodies[1] {
        eprintln!("probe: the two addresses answered differently");
        return 3;
    }
    0
}
