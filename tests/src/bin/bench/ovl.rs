//! The overlay in a bench world: a relay in the hub and nodes joined with a token, driven
//! through the real CLIs with deadlines, their output in `target/bench/logs/PART-*.log`.

use crate::ctx::{append, run, wait, Ctx, SHIELD};
use overlay_tests::world::shell_quote;
use overlay_tests::{Host, World};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

/// The relay's UDP port.
pub const RELAY_PORT: u16 = 51820;
/// The relay's overlay address (network 100.64.0.0/10, the default).
pub const RELAY_OVL: &str = "100.64.0.1";
/// A node's DNS server.
pub const NODE_DNS: &str = "100.100.100.100";

/// A part's relay and joined nodes.
pub struct Ovl<'c> {
    pub ctx: &'c Ctx,
    pub part: String,
    /// The CLI's stderr.
    pub cli_log: PathBuf,
    pub relay_state: PathBuf,
    pub relay_pid: Option<u32>,
    pub token: String,
    /// Nodes by short name.
    pub hosts: BTreeMap<String, Host>,
    /// Overlay addresses of the joined nodes.
    pub addr: BTreeMap<String, String>,
    /// Each joined namespace's resolv.conf before the join (`overlay down` must restore it).
    resolv: BTreeMap<String, String>,
    joined: Vec<String>,
}

impl<'c> Ovl<'c> {
    pub fn new(ctx: &'c Ctx, w: &World, part: &str) -> Ovl<'c> {
        Ovl {
            ctx,
            part: part.to_string(),
            cli_log: ctx.log(&format!("{part}-cli.log")),
            relay_state: w.hub.dir.join("relay"),
            relay_pid: None,
            token: String::new(),
            hosts: BTreeMap::new(),
            addr: BTreeMap::new(),
            resolv: BTreeMap::new(),
            joined: Vec::new(),
        }
    }

    /// A host `name` on the bridge with underlay address `.octet`, with node directories.
    pub fn host(&mut self, w: &mut World, name: &str, octet: u8) -> Host {
        let h = w.add_host(name, octet);
        for d in ["state", "run"] {
            std::fs::create_dir_all(h.dir.join(d)).expect("node directories");
        }
        self.hosts.insert(name.to_string(), h.clone());
        h
    }

    pub fn h(&self, name: &str) -> &Host {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name} in this world"))
    }

    /// `overlay-relay serve` in the hub with `extra` flags; waits for its admin socket.
    pub fn relay_start(&mut self, w: &World, extra: &[&str]) -> Result<u32, String> {
        let log = self.ctx.log(&format!("{}-relay.log", self.part));
        let sock = self.relay_state.join("admin.sock");
        let _ = std::fs::remove_file(&sock);
        let state = self.relay_state.to_string_lossy().into_owned();
        let listen = format!("{}:{RELAY_PORT}", w.hub.ip);
        let relay = self.ctx.relay.to_string_lossy().into_owned();
        let mut cmd = vec![
            relay.as_str(),
            "--state",
            &state,
            "serve",
            "--listen",
            &listen,
        ];
        cmd.extend_from_slice(extra);
        let pid = w.spawn_to(&w.hub, &log, &[("RUST_LOG", &self.ctx.rust_log)], &cmd);
        let up = wait(10, "the relay's admin socket", || {
            sock.exists() || !w.alive(pid)
        });
        if !up || !w.alive(pid) {
            self.ctx.tail(&log);
            return Err("the relay did not start".into());
        }
        self.relay_pid = Some(pid);
        Ok(pid)
    }

    /// An `overlay-relay` admin command in the hub; its stdout.
    pub fn admin(&self, w: &World, args: &str) -> Result<String, String> {
        let o = run(
            w,
            &w.hub,
            15,
            &format!(
                "{} --state {} {args} 2>>{}",
                self.ctx.relay.display(),
                self.relay_state.display(),
                self.cli_log.display()
            ),
        );
        if !o.status.success() {
            self.ctx.tail(&self.cli_log);
            return Err(format!("overlay-relay {args} failed"));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// A join token for `uses` joins.
    pub fn token(&mut self, w: &World, uses: u32) -> Result<(), String> {
        let t = self.admin(w, &format!("token create --uses {uses} --ttl 2h"))?;
        self.token = t.split_whitespace().collect();
        if self.token.is_empty() {
            return Err("overlay-relay token create printed nothing".into());
        }
        Ok(())
    }

    /// The environment of `overlay` against node `name`.
    pub fn env(&self, name: &str) -> String {
        let d = self.h(name).dir.display().to_string();
        format!(
            "RUST_LOG={} OVERLAY_STATE_DIR={d}/state OVERLAY_RUN_DIR={d}/run",
            self.ctx.rust_log
        )
    }

    /// The command line of `overlay ARGS` against node `name` (to run in its namespace).
    pub fn cmd(&self, name: &str, args: &str) -> String {
        format!(
            "env {} {} {args}",
            self.env(name),
            self.ctx.overlay.display()
        )
    }

    /// `overlay ARGS` against node `name`, at most 20 s; stderr to the part's CLI log.
    pub fn ovl(&self, w: &World, name: &str, args: &str) -> Output {
        run(
            w,
            self.h(name),
            20,
            &format!("{} 2>>{}", self.cmd(name, args), self.cli_log.display()),
        )
    }

    /// [`Ovl::ovl`], stdout when it succeeded.
    pub fn ovl_out(&self, w: &World, name: &str, args: &str) -> Option<String> {
        let o = self.ovl(w, name, args);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `overlay join` as node `name` (the daemon it starts is shielded from D-Bus, see
    /// [`SHIELD`]), with extra environment `env` (`VAR=VALUE ...`). Returns its address.
    pub fn join_with(&mut self, w: &World, name: &str, env: &str) -> Result<String, String> {
        let h = self.h(name).clone();
        let resolv =
            std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", h.ns)).unwrap_or_default();
        let cmd = format!(
            "sh -c {} sh env {env} {} {} join {} --name {name} 2>>{}",
            shell_quote(SHIELD),
            self.env(name),
            self.ctx.overlay.display(),
            self.token,
            self.cli_log.display()
        );
        let o = run(w, &h, 30, &cmd);
        if !o.status.success() {
            self.ctx.tail(&self.cli_log);
            return Err(format!("overlay join failed for node {name}"));
        }
        let text = String::from_utf8_lossy(&o.stdout);
        let addr = text
            .lines()
            .find_map(|l| l.strip_prefix("address:"))
            .map(|a| a.trim().to_string())
            .ok_or_else(|| format!("overlay join printed no address for {name}"))?;
        self.resolv.insert(name.to_string(), resolv);
        self.joined.push(name.to_string());
        self.addr.insert(name.to_string(), addr.clone());
        Ok(addr)
    }

    /// `overlay ARGS` against node `name` for commands that start the daemon (`up`): shielded
    /// from D-Bus like [`Ovl::join_with`], at most 30 s.
    pub fn shielded(&self, w: &World, name: &str, args: &str) -> Output {
        run(
            w,
            self.h(name),
            30,
            &format!(
                "sh -c {} sh {} 2>>{}",
                shell_quote(SHIELD),
                self.cmd(name, args),
                self.cli_log.display()
            ),
        )
    }

    pub fn join(&mut self, w: &World, name: &str) -> Result<String, String> {
        self.join_with(w, name, "")
    }

    /// The node daemon's pid, from `overlay status --json`.
    pub fn pid(&self, w: &World, name: &str) -> Option<u32> {
        let s = self.ovl_out(w, name, "status --json")?;
        let v: serde_json::Value = serde_json::from_str(&s).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }

    /// `overlay down` on every joined node, then checks that each namespace's resolv.conf is
    /// back to what it was before the join. Problems are reported (exit status 1), not fatal.
    pub fn down_all(&mut self, w: &World) {
        for name in std::mem::take(&mut self.joined) {
            if !self.ovl(w, &name, "down").status.success() {
                self.ctx
                    .fail(&self.part, &format!("'overlay down' failed on node {name}"));
                continue;
            }
            let ns = &self.h(&name).ns;
            let now =
                std::fs::read_to_string(format!("/etc/netns/{ns}/resolv.conf")).unwrap_or_default();
            if self.resolv.get(&name) != Some(&now) {
                self.ctx.fail(
                    &self.part,
                    &format!(
                        "node {name}: 'overlay down' did not restore the namespace's resolv.conf"
                    ),
                );
            }
        }
    }

    /// Forgets a node that left (so `down_all` skips it).
    pub fn forget(&mut self, name: &str) {
        self.joined.retain(|n| n != name);
    }

    /// Appends a line to the part's CLI log.
    pub fn note(&self, text: &str) {
        append(&self.cli_log, &format!("{text}\n"));
    }
}

/// `ip -n NS route get ADDR` fails: the namespace has no route to it.
pub fn no_route(ns: &str, addr: &str) -> bool {
    !overlay_tests::world::sh_output(&format!("ip -n {ns} route get {addr} >/dev/null 2>&1"))
        .status
        .success()
}

/// `dig` in `host` asking `server` for `name` gets exactly `addr`.
pub fn dig_answers(w: &World, host: &Host, server: &str, name: &str, addr: &str) -> bool {
    let o = run(
        w,
        host,
        5,
        &format!("dig +short +tries=1 +time=1 @{server} {name}"),
    );
    String::from_utf8_lossy(&o.stdout).trim() == addr
}
