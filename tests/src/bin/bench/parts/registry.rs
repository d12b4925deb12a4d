//! Part `registry`: propagation time of `overlay register` on one node (a and c alternating)
//! until another node's (b's) DNS answers the name, probed every 1 ms; once with no other
//! services, once with `--fill` services registered on filler nodes.

use crate::ctx::{run as run_in, wait, Ctx};
use crate::ovl::{Ovl, NODE_DNS};
use crate::probe::read_result;
use crate::report::{host_desc, now_utc, rss_kb, write_json, Table};
use crate::stats::{fmt, fmt_unit, median, Summary};
use overlay_tests::World;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
struct Round {
    id: &'static str,
    title: String,
    other_services: u32,
    n: usize,
    propagation_ms: Option<Summary>,
    values: Vec<f64>,
    register_command_median_ms: Option<f64>,
    address_mismatches: usize,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    params: serde_json::Value,
    rounds: Vec<Round>,
    fill_register_ms: Option<f64>,
    daemon_rss_kb: serde_json::Value,
    target_p99_ms: u32,
}

#[derive(Default)]
struct State {
    rounds: Vec<Round>,
    fill_ms: Option<f64>,
    rss_b: Option<u64>,
    rss_fill: Option<u64>,
    b_knows: Option<usize>,
}

/// One `overlay register NAME` on `node`, timed from b until b's DNS answers: (reached ms,
/// command ms, whether the address answered is the one register printed).
fn once(ctx: &Ctx, w: &World, o: &Ovl, node: &str, name: &str) -> Result<(f64, f64, bool), String> {
    let b = o.h("b");
    let (res, out) = (b.dir.join("probe.json"), b.dir.join("register.out"));
    let _ = std::fs::remove_file(&res);
    let cmd = format!(
        "{} probe dns {NODE_DNS} {name}.ovl.internal --timeout 10 --result {} --cmd-out {} -- \
         ip netns exec {} {} 2>>{}",
        ctx.me.display(),
        res.display(),
        out.display(),
        o.h(node).ns,
        o.cmd(node, &format!("register {name} --port 80 --json")),
        o.cli_log.display()
    );
    let _ = run_in(w, b, 30, &cmd);
    let p = read_result(&res).ok_or("the probe did not report")?;
    if p.cmd_rc != Some(0) {
        ctx.tail(&o.cli_log);
        return Err(format!(
            "overlay register {name} on node {node} failed (status {:?})",
            p.cmd_rc
        ));
    }
    let reached = p
        .reached_ms
        .ok_or_else(|| format!("{name}.ovl.internal did not resolve in b within 10 s"))?;
    let printed = std::fs::read_to_string(&out)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["address"].as_str().map(str::to_string));
    let same = printed.is_some() && printed == p.detail;
    if !same {
        crate::ctx::append(
            &ctx.log("registry-mismatch.log"),
            &format!(
                "{name}: register printed {printed:?}, DNS answered {:?}\n",
                p.detail
            ),
        );
    }
    Ok((reached, p.cmd_ms.unwrap_or(f64::NAN), same))
}

fn round(
    ctx: &Ctx,
    w: &World,
    o: &Ovl,
    id: &'static str,
    title: String,
    prefix: &str,
    filled: u32,
) -> Result<Round, String> {
    let n = ctx.o.registrations;
    let (mut vals, mut cmds, mut mism) = (Vec::new(), Vec::new(), 0);
    for i in 1..=n {
        let node = if i % 2 == 1 { "a" } else { "c" };
        let (r, c, same) = once(ctx, w, o, node, &format!("{prefix}-{i}"))?;
        vals.push(r);
        cmds.push(c);
        mism += usize::from(!same);
        if i % 25 == 0 {
            tracing::info!("  {title}: {i}/{n} registrations");
        }
    }
    let s = Summary::of(&vals);
    tracing::info!(
        "  {title}: propagation median {} ms, p99 {} ms",
        fmt(s.map(|s| s.median), 1),
        fmt(s.map(|s| s.p99), 1)
    );
    if mism > 0 {
        ctx.fail(
            "registry",
            &format!(
                "{title}: {mism} names answered another address than overlay register printed"
            ),
        );
    }
    Ok(Round {
        id,
        title,
        other_services: filled,
        n: vals.len(),
        propagation_ms: s,
        values: vals,
        register_command_median_ms: median(&cmds),
        address_mismatches: mism,
    })
}

/// Service instances `overlay services --json` lists on `node`.
fn count(w: &World, o: &Ovl, node: &str) -> usize {
    o.ovl_out(w, node, "services --json")
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0)
}

/// FILL services on filler nodes f1, f2, ... (60 each), until b lists them all.
fn fill(ctx: &Ctx, w: &mut World, o: &mut Ovl, st: &mut State) -> Result<(), String> {
    let total = ctx.o.fill;
    let nodes = total.div_ceil(60);
    for i in 1..=nodes {
        let n = format!("f{i}");
        o.host(w, &n, (9 + i) as u8);
        o.join(w, &n)?;
    }
    tracing::info!("  {nodes} filler nodes joined; registering {total} services on them");
    let t0 = Instant::now();
    for i in 1..=total {
        let n = format!("f{}", (i - 1) / 60 + 1);
        if !o
            .ovl(w, &n, &format!("register fill-{i} --port 80"))
            .status
            .success()
        {
            ctx.tail(&o.cli_log);
            ctx.tail(&o.h(&n).dir.join("state").join("daemon.log"));
            return Err(format!("overlay register fill-{i} failed on {n}"));
        }
        if i % 200 == 0 {
            tracing::info!("  {i}/{total}");
        }
    }
    st.fill_ms = Some(crate::ctx::ms_since(t0).round());
    if !wait(60, &format!("b to list the {total} services"), || {
        count(w, o, "b") >= total as usize
    }) {
        return Err(format!(
            "node b lists {} services, not the {total} registered",
            count(w, o, "b")
        ));
    }
    Ok(())
}

fn measure(ctx: &Ctx, w: &mut World, o: &mut Ovl, st: &mut State) -> Result<(), String> {
    o.relay_start(w, &[])?;
    o.token(w, 3 + ctx.o.fill.div_ceil(60))?;
    for n in ["b", "a", "c"] {
        o.join(w, n)?;
    }
    st.rounds.push(round(
        ctx,
        w,
        o,
        "empty",
        "no other services".into(),
        "p0",
        0,
    )?);
    if ctx.o.fill > 0 {
        tracing::info!(
            "  removing round 1's services, then registering {} services on other nodes",
            ctx.o.fill
        );
        for i in 1..=ctx.o.registrations {
            let n = if i % 2 == 1 { "a" } else { "c" };
            if !o.ovl(w, n, &format!("unregister p0-{i}")).status.success() {
                return Err(format!("overlay unregister p0-{i} failed"));
            }
        }
        fill(ctx, w, o, st)?;
        let title = format!("{} services registered on other nodes", ctx.o.fill);
        st.rounds
            .push(round(ctx, w, o, "filled", title, "p1", ctx.o.fill)?);
    }
    st.b_knows = Some(count(w, o, "b"));
    st.rss_b = o.pid(w, "b").and_then(rss_kb);
    if ctx.o.fill > 0 {
        st.rss_fill = o.pid(w, "f1").and_then(rss_kb);
    }
    Ok(())
}

pub fn run(ctx: &Ctx) {
    let again = if ctx.o.fill > 0 {
        format!(
            "; then again with {} services registered on other nodes",
            ctx.o.fill
        )
    } else {
        String::new()
    };
    tracing::info!(
        "part registry: {} registrations, each timed until another node's DNS answers{again}",
        ctx.o.registrations
    );
    let mut w = ctx.world("registry");
    let mut o = Ovl::new(ctx, &w, "registry");
    for (n, oct) in [("a", 2), ("b", 3), ("c", 4)] {
        o.host(&mut w, n, oct);
    }
    let mut st = State::default();
    let mut status = "ok".to_string();
    if !ctx.have_binaries() {
        status = "n/a (binaries missing)".into();
    } else if let Err(e) = measure(ctx, &mut w, &mut o, &mut st) {
        ctx.fail("registry", &e);
        status = "failed".into();
    }
    o.down_all(&w);
    let (when, host) = (now_utc(), host_desc());
    let mut t = Table::new(&[
        "round",
        "median (ms)",
        "p90 (ms)",
        "p99 (ms)",
        "max (ms)",
        "`overlay register` median (ms)",
    ]);
    for r in &st.rounds {
        let s = r.propagation_ms;
        t.row(vec![
            r.title.clone(),
            fmt(s.map(|s| s.median), 1),
            fmt(s.map(|s| s.p90), 1),
            fmt(s.map(|s| s.p99), 1),
            fmt(s.map(|s| s.max), 1),
            fmt(r.register_command_median_ms, 1),
        ]);
    }
    if st.rounds.is_empty() {
        t.row(vec![
            "propagation".into(),
            status.clone(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
        ]);
    }
    let kb = |v: Option<u64>| fmt_unit(v.map(|x| x as f64), 0, "kB");
    let knows = st.b_knows.map_or("?".into(), |k| k.to_string());
    let mut f = Table::new(&["figure (same run)", "value"]);
    f.row(vec![
        format!("node daemon RSS, node knowing {knows} services of other nodes"),
        kb(st.rss_b),
    ]);
    f.row(vec![
        "node daemon RSS, 60 services registered on it".into(),
        kb(st.rss_fill),
    ]);
    if let Some(ms) = st.fill_ms {
        f.row(vec![
            format!("registering the {} filler services one by one", ctx.o.fill),
            fmt_unit(Some(ms), 0, "ms"),
        ]);
    }
    println!(
        "\nregistry: {host} ({status})\n{} registrations per round on nodes a and c (alternating), each timed until node b's DNS answers the name (probed every 1 ms)\n\n{}\n{}target: p99 under 200 ms",
        ctx.o.registrations,
        t.plain(),
        f.plain()
    );
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {} registrations per round, probe every 1 ms.\n\n{}\n{}",
        ctx.o.registrations,
        t.markdown(),
        f.markdown()
    );
    write_json(
        &ctx.out,
        "registry",
        &Results {
            part: "registry",
            time: when,
            host,
            status,
            params: serde_json::json!({"registrations": ctx.o.registrations, "fill": ctx.o.fill, "probe_interval_ms": 1}),
            rounds: st.rounds,
            fill_register_ms: st.fill_ms,
            daemon_rss_kb: serde_json::json!({"observer": st.rss_b, "observer_knows_services": st.b_knows, "filler_60_local": st.rss_fill}),
            target_p99_ms: 200,
        },
    );
}
