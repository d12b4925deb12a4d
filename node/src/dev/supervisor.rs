//! One task per service: it owns the service's process and registration and does everything
//! to it (start, stop, restart, crash backoff), one command at a time.
//!
//! A restart is: build (on failure the old process keeps serving) -> hold new connections on
//! the overlay listener -> SIGTERM the old group, SIGKILL after the grace period -> start on a
//! fresh local port -> wait for health -> point the listener at the new port. Callers see a
//! slow request, never a refused one, and no other service is touched.

use super::output::Sink;
use super::process::{self, Groups, Launch, Proc, Ready};
use super::registrar::{Registrar, Registration};
use overlay_core::devconfig::env::{service_env, Instance, KnownService};
use overlay_core::devconfig::{restart_backoff, ServiceSpec, STABLE_AFTER};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Commands a service task queues at most (more wait for room).
pub const COMMAND_QUEUE: usize = 16;

/// The answer to start, stop and restart: what happened, or why it did not.
pub type Reply = oneshot::Sender<Result<String, String>>;

/// What a service task is asked to do.
#[derive(Debug)]
pub enum Cmd {
    /// Start it if it is not running.
    Start(Reply),
    /// Stop it and remove its registration.
    Stop(Reply),
    /// Build, then replace the running process.
    Restart(Reply),
    /// A watched file changed.
    Changed(String),
    /// Stop everything and end the task.
    Shutdown(oneshot::Sender<()>),
}

/// What the session knows about a service, for `overlay restart` and friends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Its key in the config.
    pub key: String,
    /// Its name.
    pub name: String,
    /// Its tag.
    pub tag: Option<String>,
    /// `starting`, `running`, `restarting`, `crashed`, `stopped` or `failed`.
    pub state: String,
    /// The pid of its process group.
    pub pid: Option<i32>,
    /// The local port its process listens on.
    pub local_port: Option<u16>,
    /// Its overlay address, `ip:port`.
    pub address: Option<String>,
    /// How many times it was started after the first.
    pub restarts: u32,
}

/// What every service task shares.
pub struct Shared {
    /// The config's directory: working directory of every command.
    pub dir: PathBuf,
    /// `.env` beside the config.
    pub dotenv: Vec<(String, String)>,
    /// The overlay domain.
    pub domain: String,
    /// Services known when the session started.
    pub known: Vec<KnownService>,
    /// Where registrations go.
    pub registrar: Registrar,
    /// Where output goes.
    pub sink: Sink,
    /// `HOME`, `USER`, `LOGNAME` of the user the services run as.
    pub user_env: Vec<(String, String)>,
    /// The session's process groups.
    pub groups: Groups,
    /// Turns true when the session stops.
    pub stop: watch::Receiver<bool>,
}

/// A handle on a service task.
#[derive(Clone, Debug)]
pub struct Handle {
    /// The service's key.
    pub key: String,
    /// Queue of commands.
    pub tx: mpsc::Sender<Cmd>,
    /// Its current state.
    pub state: Arc<Mutex<ServiceState>>,
}

impl Handle {
    /// Sends a start/stop/restart and waits for the answer.
    pub async fn ask(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(make(tx)).await.is_err() {
            return Err(format!("{} is shutting down", self.key));
        }
        rx.await
            .unwrap_or_else(|_| Err(format!("{} is shutting down", self.key)))
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> ServiceState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

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
    let runner = Runner {
        index,
        spec,
        stop: shared.stop.clone(),
        shared,
        state,
        registration: None,
        proc: None,
        port: 0,
        wanted: false,
        crashes: 0,
        starts: 0,
        backoff_until: None,
    };
    tokio::spawn(runner.run(rx));
    handle
}

struct Runner {
    index: usize,
    spec: ServiceSpec,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    state: Arc<Mutex<ServiceState>>,
    registration: Option<Registration>,
    proc: Option<Proc>,
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
        let port = match process::free_port() {
            Ok(p) => p,
            Err(e) => return Err(self.fail(format!("no free local port: {e}")).await),
        };
        if self.registration.is_none() {
            match self.shared.registrar.register(&self.spec, port).await {
                Ok(r) => self.registration = Some(r),
                Err(e) => return Err(self.fail(format!("{e:#}")).await),
            }
        }
        // Hold new connections until the new process is ready.
        if let Err(e) = self.shared.registrar.target(&self.spec, None).await {
            self.note(format!(
                "could not hold connections during the restart: {e}"
            ))
            .await;
        }
        if let Some(old) = self.proc.take() {
            let pid = old.pgid;
            let status = old.stop(self.spec.stop_timeout).await;
            let how = status
                .map(|s| process::describe(&s))
                .unwrap_or_else(|| "SIGKILL".into());
            self.note(format!("old process {pid} ended ({how})")).await;
        }
        let env = self.env(Some(port));
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
            Err(e) => return Err(self.fail(format!("cannot start `sh -c`: {e}")).await),
        };
        self.starts += 1;
        let pid = proc.pgid;
        let mut stop = self.stop.clone();
        let ready = process::wait_ready(
            &self.spec.health,
            port,
            self.spec.health_timeout,
            &mut proc,
            &mut stop,
        )
        .await;
        let address = match self.registration.as_ref().map(|r| r.address.as_str()) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => format!("127.0.0.1:{port} (--local)"),
        };
        match ready {
            Ready::Healthy | Ready::TimedOut => {
                self.proc = Some(proc);
                self.port = port;
                if let Err(e) = self.shared.registrar.target(&self.spec, Some(port)).await {
                    self.note(format!("could not point the listener at port {port}: {e}"))
                        .await;
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
                        return Err(msg);
                    }
                    self.note(format!(
                        "nothing listens on $PORT ({port}) after {secs} s; forwarding anyway \
                         (set health = {{ tcp = false }} for services that do not listen)"
                    ))
                    .await;
                }
                let msg = format!(
                    "{} {} in {took} ms: pid {pid}, local port {port}, {address}",
                    self.spec.key,
                    if running { "restarted" } else { "started" },
                );
                self.note(format!(
                    "ready in {took} ms: pid {pid}, local port {port}, at {address} ({})",
                    self.spec.hostname(&self.shared.domain)
                ))
                .await;
                Ok(msg)
            }
            Ready::Exited(status) => {
                let lived = proc.started.elapsed();
                proc.exited();
                self.set_state("crashed");
                let msg = format!(
                    "{} exited with {} before it was ready; see `overlay logs {}`",
                    self.spec.key,
                    process::describe(&status),
                    self.spec.key
                );
                self.crashed(Some(status), lived).await;
                Err(msg)
            }
            Ready::Stopping => {
                self.proc = Some(proc);
                Err("the session is stopping".into())
            }
        }
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
        if lived >= STABLE_AFTER {
            self.crashes = 0;
        }
        if !self.wanted || *self.stop.borrow() {
            return;
        }
        self.crashes += 1;
        let wait = restart_backoff(self.crashes);
        let how = status
            .map(|s| process::describe(&s))
            .unwrap_or_else(|| "an unknown status".into());
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
