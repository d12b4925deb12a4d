//! One task per service: it owns the service's process and registration and does everything
//! to it (start, stop, restart, crash backoff), one command at a time.
//!
//! A restart of a listening service is: build (on failure the old process keeps serving) ->
//! start the new process on a fresh local port while the old one serves -> wait for health ->
//! point the listener at the new port (new connections go there) -> drain: the old process's
//! connections stay until they close or `drain` passes, then they are closed (WebSocket ones
//! with close code 1012) -> SIGTERM the old group, SIGKILL after the grace period. No caller is
//! refused and no other service is touched. Workers (processes that listen nowhere, told within
//! about a second of their first start) have no listener and restart one after the other; so
//! does a service whose new process cannot run beside the old one.

pub use super::service::{Cmd, Handle, Reply, ServiceState, Shared, COMMAND_QUEUE};

use super::process::{self, Launch, Proc, Ready};
use super::registrar::Registration;
use overlay_core::devconfig::env::{service_env, strip_for_worker, Instance};
use overlay_core::devconfig::{restart_backoff, Health, ServiceSpec, STABLE_AFTER};
use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Starts the task of service number `index`; it does nothing until told to start.
pub fn spawn(index: usize, spec: ServiceSpec, shared: Arc<Shared>) -> Handle {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let state = Arc::new(Mutex::new(ServiceState {
        key: spec.key.clone(),
        name: spec.name.clone(),
        tag: spec.tag.clone(),
        state: "stopped".into(),
        ..Default::default()
    }));
    let handle = Handle {
        key: spec.key.clone(),
        tx,
        state: state.clone(),
    };
    let role = if spec.health_explicit {
        Role::Server
    } else {
        Role::Unknown
    };
    let runner = Runner {
        index,
        spec,
        stop: shared.stop.clone(),
        shared,
        state,
        registration: None,
        proc: None,
        old: None,
        role,
        port: 0,
        wanted: false,
        crashes: 0,
        starts: 0,
        backoff_until: None,
    };
    tokio::spawn(runner.run(rx));
    handle
}

/// What is known about whether a service listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Not yet seen: the first start tells (implicit health check).
    Unknown,
    /// It listens on `$PORT` (or has an explicit health check).
    Server,
    /// It listens nowhere: no listener, no overlay address, no health check.
    Worker,
}

/// How one start went.
enum Attempt {
    /// Finished, with the answer for `overlay restart`.
    Done(Result<String, String>),
    /// The new process could not run beside the old one: start again one after the other.
    Sequential,
}

/// How often a worker is checked for a listener on `$PORT` (a slow start taken for a worker).
const PROMOTE_LOOK: Duration = Duration::from_millis(500);

struct Runner {
    index: usize,
    spec: ServiceSpec,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    state: Arc<Mutex<ServiceState>>,
    registration: Option<Registration>,
    proc: Option<Proc>,
    /// The replaced process while a restart runs side by side.
    old: Option<Proc>,
    /// Whether it listens.
    role: Role,
    port: u16,
    /// Whether it should be running (false after `stop` or a clean exit).
    wanted: bool,
    crashes: u32,
    starts: u32,
    backoff_until: Option<tokio::time::Instant>,
}

async fn exited(p: &mut Option<Proc>) -> Option<ExitStatus> {
    match p {
        Some(p) => (&mut p.exit).await.ok(),
        None => std::future::pending().await,
    }
}

async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Runner {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            let backoff = self.backoff_until;
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => {
                        self.shutdown().await;
                        return;
                    }
                    Some(Cmd::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd).await,
                },
                status = exited(&mut self.proc) => self.on_exit(status).await,
                _ = until(backoff) => {
                    self.backoff_until = None;
                    if self.wanted && !*self.stop.borrow() {
                        let _ = self.launch().await;
                    }
                }
                _ = tokio::time::sleep(PROMOTE_LOOK), if self.role == Role::Worker && self.proc.is_some() => {
                    self.promote_if_listening().await;
                }
            }
        }
    }

    async fn note(&self, text: impl std::fmt::Display) {
        self.shared.sink.note(self.index, text).await;
    }

    fn set_state(&self, state: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.state = state.to_string();
        s.pid = self.proc.as_ref().map(|p| p.pgid);
        s.local_port = self.proc.as_ref().map(|_| self.port);
        s.address = self
            .registration
            .as_ref()
            .map(|r| r.address.clone())
            .filter(|a| !a.is_empty());
        s.restarts = self.starts.saturating_sub(1);
        s.worker = self.role == Role::Worker;
    }

    /// Remembers how a process of this service ended, for `overlay ps`.
    fn record_exit(&self, how: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.last_exit = Some(how.to_string());
        s.last_exit_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok());
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start(reply) => {
                if self.proc.is_some() {
                    let _ = reply.send(Ok(format!("{} is already running", self.spec.key)));
                    return;
                }
                self.wanted = true;
                self.crashes = 0;
                self.backoff_until = None;
                let r = self.launch().await;
                let _ = reply.send(r);
            }
            Cmd::Restart(reply) => {
                self.wanted = true;
                self.crashes = 0;
                self.backoff_until = None;
                let r = self.launch().await;
                let _ = reply.send(r);
            }
            Cmd::Stop(reply) => {
                self.wanted = false;
                self.backoff_until = None;
                let was = self.proc.is_some();
                self.halt().await;
                self.set_state("stopped");
                let msg = if was {
                    format!("{} stopped", self.spec.key)
                } else {
                    format!("{} was not running", self.spec.key)
                };
                self.note("stopped (overlay stop)").await;
                let _ = reply.send(Ok(msg));
            }
            Cmd::Changed(file) => {
                if !self.wanted {
                    return;
                }
                self.note(format!("{file} changed; restarting")).await;
                let _ = self.launch().await;
            }
            Cmd::Shutdown(done) => {
                self.shutdown().await;
                let _ = done.send(());
            }
        }
    }

    /// Stops the process and removes the registration.
    async fn halt(&mut self) {
        if let Some(p) = self.proc.take() {
            let pid = p.pgid;
            let status = p.stop(self.spec.stop_timeout).await;
            let how = status
                .map(|s| process::describe(&s))
                .unwrap_or_else(|| "SIGKILL".into());
            self.record_exit(&how);
            self.note(format!("process {pid} ended ({how})")).await;
        }
        if self.registration.take().is_some() {
            if let Err(e) = self.shared.registrar.unregister(&self.spec).await {
                self.note(format!("could not unregister: {e}")).await;
            }
        }
    }

    async fn shutdown(&mut self) {
        self.wanted = false;
        self.backoff_until = None;
        self.halt().await;
        self.set_state("stopped");
    }

    fn env(&self, port: Option<u16>) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self.shared.user_env.iter().cloned().collect();
        match port {
            Some(p) => {
                let inst = Instance {
                    local_port: p,
                    address: self
                        .registration
                        .as_ref()
                        .map(|r| r.address.clone())
                        .filter(|a| !a.is_empty()),
                    callback_url: self
                        .registration
                        .as_ref()
                        .and_then(|r| r.callback_url.clone()),
                };
                env.extend(service_env(
                    &self.spec,
                    &inst,
                    &self.shared.domain,
                    &self.shared.known,
                    &self.shared.dotenv,
                ));
            }
            None => {
                // Builds get the service's own variables, not overlay's.
                for (k, v) in self.shared.dotenv.iter().chain(self.spec.env.iter()) {
                    env.insert(k.clone(), v.clone());
                }
            }
        }
        env
    }

    /// Builds and (re)starts the service; on success the listener points at the new process.
    async fn launch(&mut self) -> Result<String, String> {
        let running = self.proc.is_some();
        if let Some(build) = self.spec.build.clone() {
            self.set_state(if running { "restarting" } else { "starting" });
            self.note(format!("building: {build}")).await;
            let started = Instant::now();
            let env = self.env(None);
            let launch = Launch {
                dir: &self.shared.dir,
                env: &env,
                sink: &self.shared.sink,
                service: self.index,
                prefix: "[build] ",
                groups: &self.shared.groups,
            };
            let mut stop = self.stop.clone();
            if let Err(f) = process::build(&build, &launch, &mut stop).await {
                let keeps = if running {
                    "the running version keeps serving"
                } else {
                    "it is not started"
                };
                let msg = format!("the build of {} failed ({}); {keeps}", self.spec.key, f.why);
                self.note(&msg).await;
                self.set_state(if running { "running" } else { "failed" });
                if !running && self.wanted {
                    self.schedule_retry().await;
                }
                let mut full = msg;
                for l in f.tail {
                    full.push('\n');
                    full.push_str(&l);
                }
                return Err(full);
            }
            self.note(format!("built in {:.1} s", started.elapsed().as_secs_f64()))
                .await;
        }
        self.set_state(if running { "restarting" } else { "starting" });
        let t0 = Instant::now();
        // A listening service restarts side by side: the new process starts while the old one
        // serves, new connections go to it once healthy, the old one keeps its connections for
        // the drain. A worker, or a new process that cannot run beside the old one (a lock,
        // a fixed port), restarts one after the other.
        let mut overlap = running && self.role == Role::Server && self.listener_up();
        loop {
            if overlap {
                self.old = self.proc.take();
            }
            let attempt = self.start_one(running, overlap, t0).await;
            if self.proc.is_none() {
                // The new process did not take over: the old one keeps serving.
                self.proc = self.old.take();
            }
            match attempt {
                Attempt::Done(r) => return r,
                Attempt::Sequential => {
                    self.note(
                        "the new process exited while the old one still ran (a lock or a fixed \
                         port?); restarting one after the other",
                    )
                    .await;
                    overlap = false;
                }
            }
        }
    }

    /// Whether the daemon forwards to this service (not a worker, not `--local`).
    fn listener_up(&self) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| !r.address.is_empty())
    }

    /// One start of the process; with `overlap` the old process keeps running until the new
    /// one is ready, and then drains.
    async fn start_one(&mut self, running: bool, overlap: bool, t0: Instant) -> Attempt {
        let port = match process::free_port() {
            Ok(p) => p,
            Err(e) => {
                return Attempt::Done(Err(self.fail(format!("no free local port: {e}")).await))
            }
        };
        if self.registration.is_none() && self.role != Role::Worker {
            match self.shared.registrar.register(&self.spec, port).await {
                Ok(r) => self.registration = Some(r),
                Err(e) => return Attempt::Done(Err(self.fail(format!("{e:#}")).await)),
            }
        }
        if !overlap {
            // Hold new connections until the new process is ready.
            if self.registration.is_some() {
                if let Err(e) = self.shared.registrar.target(&self.spec, None).await {
                    self.note(format!(
                        "could not hold connections during the restart: {e}"
                    ))
                    .await;
                }
            }
            if let Some(old) = self.old.take().or_else(|| self.proc.take()) {
                self.end_old(old).await;
            }
        }
        let mut env = self.env(Some(port));
        if self.role == Role::Worker {
            strip_for_worker(&mut env);
        }
        let launch = Launch {
            dir: &self.shared.dir,
            env: &env,
            sink: &self.shared.sink,
            service: self.index,
            prefix: "",
            groups: &self.shared.groups,
        };
        let mut proc = match process::spawn(&self.spec.command, &launch) {
            Ok(p) => p,
            Err(e) => {
                return Attempt::Done(Err(self.fail(format!("cannot start `sh -c`: {e}")).await))
            }
        };
        self.starts += 1;
        let pid = proc.pgid;
        let mut stop = self.stop.clone();
        let health = match self.role {
            Role::Worker => Health::None,
            _ => self.spec.health.clone(),
        };
        let ready = process::wait_ready(
            &health,
            port,
            self.spec.health_timeout,
            self.role == Role::Unknown,
            &mut proc,
            &mut stop,
        )
        .await;
        let address = match self.registration.as_ref().map(|r| r.address.as_str()) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => format!("127.0.0.1:{port} (--local)"),
        };
        let verb = if running { "restarted" } else { "started" };
        match ready {
            Ready::Worker => {
                self.role = Role::Worker;
                if self.registration.take().is_some() {
                    if let Err(e) = self.shared.registrar.unregister(&self.spec).await {
                        self.note(format!("could not unregister: {e}")).await;
                    }
                }
                self.became_worker(proc, port, t0, verb).await
            }
            Ready::Healthy | Ready::TimedOut if self.role == Role::Worker => {
                self.became_worker(proc, port, t0, verb).await
            }
            Ready::Healthy | Ready::TimedOut => {
                if matches!(ready, Ready::Healthy) {
                    self.role = Role::Server;
                }
                let old_port = self.port;
                self.proc = Some(proc);
                self.port = port;
                if self.registration.is_some() {
                    if let Err(e) = self.shared.registrar.target(&self.spec, Some(port)).await {
                        self.note(format!("could not point the listener at port {port}: {e}"))
                            .await;
                    }
                }
                self.set_state("running");
                let took = t0.elapsed().as_millis();
                if matches!(ready, Ready::TimedOut) {
                    let secs = self.spec.health_timeout.as_secs();
                    if self.spec.health_explicit {
                        let msg = format!(
                            "{} is running (pid {pid}) but its health check did not pass \
                             within {secs} s; check its output",
                            self.spec.key
                        );
                        self.note(&msg).await;
                        return Attempt::Done(Err(msg));
                    }
                    self.note(format!(
                        "nothing listens on $PORT ({port}) after {secs} s, but the process \
                         listens elsewhere; forwarding to $PORT anyway"
                    ))
                    .await;
                }
                self.note(format!(
                    "ready in {took} ms: pid {pid}, local port {port}, at {address} ({})",
                    self.spec.hostname(&self.shared.domain)
                ))
                .await;
                let mut drained = String::new();
                if overlap {
                    // New connections reach the new process now; the old one keeps its own
                    // until they end or the drain timeout passes.
                    // The session stopping ends the wait: everything is stopped anyway.
                    let mut stop = self.stop.clone();
                    let drain = tokio::select! {
                        d = self.shared.registrar.drain(&self.spec, old_port) => d,
                        _ = stop.wait_for(|s| *s) => Ok(None),
                    };
                    match drain {
                        Ok(Some(d)) => {
                            self.note(format!("old process: {d}")).await;
                            drained = format!("; {d}");
                        }
                        Ok(None) => {}
                        Err(e) => self.note(format!("drain: {e:#}")).await,
                    }
                    if let Some(old) = self.old.take() {
                        self.end_old(old).await;
                    }
                }
                Attempt::Done(Ok(format!(
                    "{} {verb} in {took} ms: pid {pid}, local port {port}, {address}{drained}",
                    self.spec.key,
                )))
            }
            Ready::Exited(status) => {
                let lived = proc.started.elapsed();
                proc.exited();
                if overlap && self.old.is_some() {
                    self.starts = self.starts.saturating_sub(1);
                    return Attempt::Sequential;
                }
                self.set_state("crashed");
                let msg = format!(
                    "{} exited with {} before it was ready; see `overlay logs {}`",
                    self.spec.key,
                    process::describe(&status),
                    self.spec.key
                );
                self.crashed(Some(status), lived).await;
                Attempt::Done(Err(msg))
            }
            Ready::Stopping => {
                if let Some(old) = self.old.take() {
                    self.end_old(old).await;
                }
                self.proc = Some(proc);
                Attempt::Done(Err("the session is stopping".into()))
            }
        }
    }

    /// A worker is up: it listens nowhere, so it has no listener and no overlay address.
    async fn became_worker(&mut self, proc: Proc, port: u16, t0: Instant, verb: &str) -> Attempt {
        let pid = proc.pgid;
        self.proc = Some(proc);
        self.port = port;
        self.set_state("running");
        let took = t0.elapsed().as_millis();
        self.note(format!(
            "ready in {took} ms: pid {pid}, a worker (it listens nowhere: no overlay address)"
        ))
        .await;
        Attempt::Done(Ok(format!(
            "{} {verb} in {took} ms: pid {pid}, a worker (no overlay address)",
            self.spec.key
        )))
    }

    /// A worker that turns out to listen on `$PORT` (it only started slowly) is registered.
    async fn promote_if_listening(&mut self) {
        let Some(pgid) = self.proc.as_ref().map(|p| p.pgid) else {
            return;
        };
        let port = self.port;
        let listens =
            tokio::task::spawn_blocking(move || process::listening_ports(pgid).contains(&port))
                .await
                .unwrap_or(false);
        if !listens {
            return;
        }
        self.role = Role::Server;
        match self.shared.registrar.register(&self.spec, port).await {
            Ok(r) => self.registration = Some(r),
            Err(e) => {
                self.note(format!("{e:#}")).await;
                return;
            }
        }
        if let Err(e) = self.shared.registrar.target(&self.spec, Some(port)).await {
            self.note(format!("could not point the listener at port {port}: {e}"))
                .await;
        }
        self.set_state("running");
        let address = self
            .registration
            .as_ref()
            .map(|r| r.address.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| format!("127.0.0.1:{port} (--local)"));
        self.note(format!(
            "listens on $PORT ({port}) now: at {address} ({})",
            self.spec.hostname(&self.shared.domain)
        ))
        .await;
    }

    /// Stops a replaced process and says how it ended.
    async fn end_old(&self, old: Proc) {
        let pid = old.pgid;
        let status = old.stop(self.spec.stop_timeout).await;
        let how = status
            .map(|s| process::describe(&s))
            .unwrap_or_else(|| "SIGKILL".into());
        self.record_exit(&how);
        self.note(format!("old process {pid} ended ({how})")).await;
    }

    /// Reports a failed start, retrying later when the service should run.
    async fn fail(&mut self, msg: String) -> String {
        self.note(&msg).await;
        self.set_state("failed");
        if self.wanted {
            self.schedule_retry().await;
        }
        msg
    }

    async fn schedule_retry(&mut self) {
        if *self.stop.borrow() {
            return;
        }
        self.crashes += 1;
        let wait = restart_backoff(self.crashes);
        self.note(format!("trying again in {} s", wait.as_secs()))
            .await;
        self.backoff_until = Some(tokio::time::Instant::now() + wait);
    }

    async fn on_exit(&mut self, status: Option<ExitStatus>) {
        let Some(proc) = self.proc.take() else { return };
        let lived = proc.started.elapsed();
        proc.exited();
        if *self.stop.borrow() {
            return;
        }
        match status {
            Some(s) if s.success() => {
                self.wanted = false;
                self.record_exit(&process::describe(&s));
                self.set_state("stopped");
                self.note(format!(
                    "exited (exit status 0); not restarting it: `overlay start {}` runs it again",
                    self.spec.key
                ))
                .await;
            }
            _ => {
                self.set_state("crashed");
                self.crashed(status, lived).await;
            }
        }
    }

    /// A process died: hold connections, restart after the backoff.
    async fn crashed(&mut self, status: Option<ExitStatus>, lived: Duration) {
        let how = status
            .map(|s| process::describe(&s))
            .unwrap_or_else(|| "an unknown status".into());
        self.record_exit(&how);
        if lived >= STABLE_AFTER {
            self.crashes = 0;
        }
        if !self.wanted || *self.stop.borrow() {
            return;
        }
        self.crashes += 1;
        let wait = restart_backoff(self.crashes);
        self.note(format!(
            "CRASHED with {how} after {:.1} s (crash {} in a row); restarting in {} s",
            lived.as_secs_f64(),
            self.crashes,
            wait.as_secs()
        ))
        .await;
        if self.registration.is_some() {
            let _ = self.shared.registrar.target(&self.spec, None).await;
        }
        self.backoff_until = Some(tokio::time::Instant::now() + wait);
    }
}
