//! Part `join`: fresh `overlay join`s, each timed by the ICMP probe from the start of the
//! command to the first echo reply from the relay's overlay address through the new tunnel,
//! and to the command's return; `overlay leave` in between.

use crate::ctx::{append, run as run_in, wait, Ctx, SHIELD};
use crate::ovl::{no_route, Ovl, RELAY_OVL};
use crate::probe::read_result;
use crate::report::{host_desc, now_utc, write_json, Table};
use crate::stats::{fmt, median, Summary};
use overlay_tests::world::shell_quote;
use serde::Serialize;

#[derive(Serialize)]
struct Figures {
    median: Option<f64>,
    p90: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    runs: Vec<f64>,
}

impl Figures {
    fn of(v: &[f64]) -> Figures {
        let s = Summary::of(v);
        Figures {
            median: s.map(|s| s.median),
            p90: s.map(|s| s.p90),
            min: s.map(|s| s.min),
            max: s.map(|s| s.max),
            runs: v.to_vec(),
        }
    }
}

#[derive(Serialize)]
struct Steps {
    register: Option<f64>,
    daemon_connected: Option<f64>,
}

#[derive(Serialize)]
struct Params {
    runs: u32,
    probe_interval_ms: u32,
    probe_target: &'static str,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    params: Params,
    first_ping_ms: Figures,
    join_command_ms: Figures,
    steps_median_ms: Steps,
    target_ms: u32,
}

/// The N of `overlay join`'s step line "... STEP ... (N ms)".
fn step_ms(err: &str, step: &str) -> Option<f64> {
    let l = err
        .lines()
        .find(|l| l.contains(step) && l.trim_end().ends_with(" ms)"))?;
    let inner = l.trim_end().strip_suffix(" ms)")?;
    inner.rsplit('(').next()?.trim().parse().ok()
}

#[derive(Default)]
struct Runs {
    reach: Vec<f64>,
    cmd: Vec<f64>,
    reg: Vec<f64>,
    start: Vec<f64>,
}

/// One fresh join as node `jR` in a (new state directory), then `overlay leave`.
fn once(
    ctx: &Ctx,
    w: &overlay_tests::World,
    o: &mut Ovl,
    r: u32,
    runs: &mut Runs,
) -> Result<(), String> {
    let a = o.h("a").clone();
    let n = format!("j{r}");
    let dir = a.dir.join(&n);
    for d in ["state", "run"] {
        std::fs::create_dir_all(dir.join(d)).expect("node directories");
    }
    // The previous node's route must be gone, or the first ping would not need the new tunnel.
    if !wait(5, "the previous node's route to go", || {
        no_route(&a.ns, RELAY_OVL)
    }) {
        return Err(format!(
            "run {r}: a route to {RELAY_OVL} is left from the previous run"
        ));
    }
    let (res, out, err) = (
        dir.join("probe.json"),
        dir.join("join.out"),
        dir.join("join.err"),
    );
    let env = format!(
        "RUST_LOG={} OVERLAY_STATE_DIR={d}/state OVERLAY_RUN_DIR={d}/run",
        ctx.rust_log,
        d = dir.display()
    );
    let cmd = format!(
        "sh -c {} sh {} probe icmp {RELAY_OVL} --timeout 20 --result {} --cmd-out {} -- \
         env {env} {} join {} --name {n} 2>{}",
        shell_quote(SHIELD),
        ctx.me.display(),
        res.display(),
        out.display(),
        ctx.overlay.display(),
        o.token,
        err.display()
    );
    let _ = run_in(w, &a, 40, &cmd);
    let err_text = std::fs::read_to_string(&err).unwrap_or_default();
    append(
        &ctx.log("join-runs.log"),
        &format!(
            "-- run {r}\n{err_text}{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        ),
    );
    let p = read_result(&res).ok_or_else(|| {
        ctx.tail(&err);
        format!("run {r}: the probe did not report")
    })?;
    if p.cmd_rc != Some(0) {
        ctx.tail(&err);
        return Err(format!(
            "run {r}: overlay join exited with status {:?}",
            p.cmd_rc
        ));
    }
    let (Some(reached), Some(cmd_ms)) = (p.reached_ms, p.cmd_ms) else {
        ctx.tail(&dir.join("state").join("daemon.log"));
        return Err(format!(
            "run {r}: no ping answered through the tunnel within 20 s"
        ));
    };
    runs.reach.push(reached);
    runs.cmd.push(cmd_ms);
    runs.reg
        .extend(step_ms(&err_text, "registering with the relay"));
    runs.start.extend(step_ms(&err_text, "starting the daemon"));
    tracing::info!(
        "  run {r}/{}: first ping through the tunnel after {reached} ms, overlay join took {cmd_ms} ms ({} pings sent)",
        ctx.o.runs.unwrap_or(10),
        p.probes
    );
    let leave = run_in(
        w,
        &a,
        20,
        &format!(
            "env {env} {} leave >>{} 2>&1",
            ctx.overlay.display(),
            ctx.log("join-runs.log").display()
        ),
    );
    if !leave.status.success() {
        ctx.fail("join", &format!("run {r}: overlay leave failed"));
        let _ = overlay_tests::world::sh_output(&format!("ip netns pids {} | xargs -r kill", a.ns));
    } else if dir.join("state").join("node.json").exists() {
        ctx.fail(
            "join",
            &format!("run {r}: overlay leave left the node's state behind"),
        );
    }
    Ok(())
}

pub fn run(ctx: &Ctx) {
    let n_runs = ctx.o.runs.unwrap_or(10);
    tracing::info!(
        "part join: {n_runs} fresh joins, each timed from the start of overlay join to the first ping answered by {RELAY_OVL}"
    );
    let mut w = ctx.world("join");
    let mut o = Ovl::new(ctx, &w, "join");
    o.host(&mut w, "a", 2);
    let mut status = "ok".to_string();
    let mut runs = Runs::default();
    if !ctx.have_binaries() {
        status = "n/a (binaries missing)".into();
    } else if let Err(e) = o.relay_start(&w, &[]).and_then(|_| o.token(&w, n_runs + 1)) {
        ctx.fail("join", &e);
        status = format!("failed ({e})");
    } else {
        for r in 1..=n_runs {
            if let Err(e) = once(ctx, &w, &mut o, r, &mut runs) {
                ctx.fail("join", &e);
                status = format!("failed in run {r}");
                break;
            }
        }
    }
    let (when, host) = (now_utc(), host_desc());
    let (reach, cmd) = (Figures::of(&runs.reach), Figures::of(&runs.cmd));
    let steps = Steps {
        register: median(&runs.reg),
        daemon_connected: median(&runs.start),
    };
    let n = runs.reach.len();
    let mut t = Table::new(&[
        "from the start of `overlay join` to",
        "median (ms)",
        "p90 (ms)",
        "min (ms)",
        "max (ms)",
    ]);
    for (name, f) in [
        ("the first ping answered through the tunnel", &reach),
        ("`overlay join` returning", &cmd),
    ] {
        t.row(vec![
            name.into(),
            fmt(f.median, 1),
            fmt(f.p90, 1),
            fmt(f.min, 1),
            fmt(f.max, 1),
        ]);
    }
    t.row(vec![
        "(step) registering with the relay".into(),
        fmt(steps.register, 0),
        String::new(),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "(step) starting the daemon until connected".into(),
        fmt(steps.daemon_connected, 0),
        String::new(),
        String::new(),
        String::new(),
    ]);
    println!(
        "\njoin: {host}; {n} of {n_runs} fresh joins measured ({status})\n\n{}\ntarget: first packet through the tunnel in under 500 ms",
        t.plain()
    );
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {n} fresh joins (new state directory and node name each, `overlay leave` in between).\n\n{}",
        t.markdown()
    );
    write_json(
        &ctx.out,
        "join",
        &Results {
            part: "join",
            time: when,
            host,
            status,
            params: Params {
                runs: n_runs,
                probe_interval_ms: 1,
                probe_target: RELAY_OVL,
            },
            first_ping_ms: reach,
            join_command_ms: cmd,
            steps_median_ms: steps,
            target_ms: 500,
        },
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn step_lines() {
        let err = "registering with the relay at 10.0.0.1:51820 ... ok (12 ms)\nstarting the daemon ... connected (85 ms)\n";
        assert_eq!(
            super::step_ms(err, "registering with the relay"),
            Some(12.0)
        );
        assert_eq!(super::step_ms(err, "starting the daemon"), Some(85.0));
        assert_eq!(super::step_ms(err, "nothing"), None);
    }
}
