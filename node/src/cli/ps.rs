//! `overlay ps`: the services of the running `overlay dev` sessions at a glance: state, pid,
//! local port, overlay address (or `worker`), restarts and how the last process ended. In a
//! terminal the states are coloured; piped, the same table is plain text.

use crate::dev::supervisor::ServiceState;

/// The table's header.
const HEADER: [&str; 7] = [
    "SERVICE",
    "STATE",
    "PID",
    "PORT",
    "ADDRESS",
    "RESTARTS",
    "LAST EXIT",
];

/// How long ago `then_ms` was, as `12s`, `3m`, `2h` or `4d`.
pub fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// ANSI colour of a state: green running, yellow on its way, red failed, dim stopped.
fn colour(state: &str) -> &'static str {
    match state {
        "running" => "\x1b[32m",
        "starting" | "restarting" => "\x1b[33m",
        "crashed" | "failed" => "\x1b[31m",
        _ => "\x1b[2m",
    }
}

/// The rows of the table, one per service.
fn rows(services: &[ServiceState], now_ms: u64) -> Vec<[String; 7]> {
    services
        .iter()
        .map(|s| {
            let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            let address = if s.worker {
                "worker".to_string()
            } else {
                opt(s.address.clone())
            };
            let last = match (&s.last_exit, s.last_exit_ms) {
                (Some(how), Some(at)) => format!("{how}, {} ago", ago(now_ms, at)),
                (Some(how), None) => how.clone(),
                _ => "-".into(),
            };
            [
                s.key.clone(),
                s.state.clone(),
                opt(s.pid.map(|p| p.to_string())),
                opt(s.local_port.map(|p| p.to_string())),
                address,
                s.restarts.to_string(),
                last,
            ]
        })
        .collect()
}

/// The table as text; with `color`, the state column is coloured (padding stays aligned).
pub fn render(services: &[ServiceState], now_ms: u64, color: bool) -> String {
    let rows = rows(services, now_ms);
    let mut width = HEADER.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 7], state: Option<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            let last = i == cells.len() - 1;
            match state.filter(|_| i == 1 && color) {
                Some(st) => out.push_str(&format!("{}{cell}\x1b[0m{pad}", colour(st))),
                None if last => out.push_str(cell),
                None => out.push_str(&format!("{cell}{pad}")),
            }
            if !last {
                out.push_str("  ");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&HEADER.map(String::from), None);
    for r in &rows {
        out.push_str(&line(r, Some(r[1].as_str())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(key: &str, state: &str) -> ServiceState {
        ServiceState {
            key: key.into(),
            name: key.into(),
            state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_table_when_not_a_terminal() {
        let mut api = svc("api", "running");
        api.pid = Some(812);
        api.local_port = Some(40113);
        api.address = Some("100.64.0.71:8080".into());
        api.restarts = 2;
        api.last_exit = Some("exit status 1".into());
        api.last_exit_ms = Some(1_000);
        let mut clock = svc("clock_worker", "running");
        clock.worker = true;
        clock.pid = Some(9);
        let t = render(&[api, clock, svc("db", "stopped")], 181_000, false);
        assert_eq!(
            t,
            "SERVICE       STATE    PID  PORT   ADDRESS           RESTARTS  LAST EXIT\n\
             api           running  812  40113  100.64.0.71:8080  2         exit status 1, 3m ago\n\
             clock_worker  running  9    -      worker            0         -\n\
             db            stopped  -    -      -                 0         -\n"
        );
        assert!(!t.contains('\x1b'));
        let c = render(&[svc("api", "crashed")], 0, true);
        assert!(c.contains("\x1b[31mcrashed\x1b[0m"), "{c:?}");
    }

    #[test]
    fn ages() {
        assert_eq!(ago(5_000, 0), "5s");
        assert_eq!(ago(7_200_000, 0), "2h");
        assert_eq!(ago(0, 5_000), "0s");
        assert_eq!(ago(4 * 86_400_000, 0), "4d");
    }
}
