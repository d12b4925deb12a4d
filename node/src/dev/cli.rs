//! `overlay dev` and `overlay run`: read the config, become the invoking user, run the session.
//! The clients of a running session (`logs`, `ps`, `restart`, `stop`, `start`) are in
//! `crate::cli::dev`.

use super::output::{Output, Style};
use super::process::Groups;
use super::registrar::Registrar;
use super::session;
use super::supervisor::{self, Cmd, Handle, Shared};
use super::user::Identity;
use crate::paths;
use anyhow::Context;
use clap::Args;
use overlay_core::devconfig::env::{KnownService, Where};
use overlay_core::devconfig::{dotenv, valid_label, DevConfig, Health, ServiceSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Flags of `overlay dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// The config: an overlay.toml or a Procfile (default: ./overlay.toml, else ./Procfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Run without the overlay daemon: no overlay addresses or names, services on 127.0.0.1.
    #[arg(long)]
    local: bool,
}

/// Flags of `overlay run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The service name (a DNS label).
    name: String,
    /// The port callers use.
    #[arg(long, default_value_t = overlay_core::devconfig::DEFAULT_PORT)]
    port: u16,
    /// A variant tag: the service is reachable as TAG.NAME.
    #[arg(long)]
    tag: Option<String>,
    /// Ready when GET PATH on $PORT answers below 500 (default: when $PORT accepts connections).
    #[arg(long, value_name = "PATH")]
    health_http: Option<String>,
    /// Run without the overlay daemon (see `overlay dev --local`).
    #[arg(long)]
    local: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `overlay dev`.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let me = enter_user()?;
    let path = match args.file {
        Some(f) => f,
        None => default_config()?,
    };
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
    let config = DevConfig::parse(&shown, &text)?;
    let dir = std::fs::canonicalize(&path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let env_path = dir.join(".env");
    let dotenv = match std::fs::read_to_string(&env_path) {
        Ok(t) => dotenv::parse(&env_path.display().to_string(), &t)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => anyhow::bail!("cannot read {}: {e}", env_path.display()),
    };
    session(config, dir, dotenv, args.local, me).await
}

/// `overlay run NAME -- CMD ARGS...`.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let me = enter_user()?;
    for (what, v) in [
        ("service name", Some(&args.name)),
        ("tag", args.tag.as_ref()),
    ] {
        if let Some(v) = v {
            if !valid_label(v) {
                anyhow::bail!(
                    "'{v}' is not a valid {what}: use 1-63 characters of a-z, 0-9 and '-', not \
                     starting or ending with '-'"
                );
            }
        }
    }
    if args.port == 0 {
        anyhow::bail!("--port must be between 1 and 65535");
    }
    let key = match &args.tag {
        Some(t) => format!("{}-{t}", args.name),
        None => args.name.clone(),
    };
    let command: Vec<String> = args.command.iter().map(|a| shell_quote(a)).collect();
    let mut spec = ServiceSpec::new(&key, &command.join(" "));
    spec.name = args.name.clone();
    spec.tag = args.tag.clone();
    spec.port = args.port;
    if let Some(p) = args.health_http {
        if !p.starts_with('/') {
            anyhow::bail!("--health-http must be a path like /healthz");
        }
        spec.health = Health::Http(p);
        spec.health_explicit = true;
    }
    let config = DevConfig::from_services("overlay run", vec![spec])?;
    let dir = std::env::current_dir().context("cannot read the current directory")?;
    session(config, dir, Vec::new(), args.local, me).await
}

/// Becomes the user who invoked overlay (from sudo) for good.
fn enter_user() -> anyhow::Result<Identity> {
    let me = Identity::invoking();
    me.become_user()?;
    Ok(me)
}

fn default_config() -> anyhow::Result<PathBuf> {
    for name in ["overlay.toml", "Procfile"] {
        let p = PathBuf::from(name);
        if p.exists() {
            return Ok(p);
        }
    }
    let here = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".into());
    anyhow::bail!(
        "there is no overlay.toml or Procfile in {here}; create one (see docs/dev.md) or pass -f FILE"
    )
}

/// Quotes an argument for `sh -c`, leaving `$VARIABLES` to expand (so `'$PORT'` works).
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        a.to_string()
    } else if a.contains('$') {
        let mut out = String::from("\"");
        for c in a.chars() {
            if matches!(c, '"' | '\\' | '`') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Runs the services of `config` until Ctrl-C, SIGTERM or SIGHUP.
async fn session(
    config: DevConfig,
    dir: PathBuf,
    dotenv: Vec<(String, String)>,
    local: bool,
    me: Identity,
) -> anyhow::Result<()> {
    if me.uid == 0 {
        tracing::warn!(
            "running services as root; start overlay dev as your user (or through sudo) so they \
             run as you"
        );
    }
    let registrar = if local {
        Registrar::Local
    } else {
        Registrar::Daemon(paths::control_socket())
    };
    let domain = registrar.domain().await.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}; or run `overlay dev --local` to run the services without the overlay"
        )
    })?;
    let mut known = match registrar.services().await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("cannot list the overlay's services ({e:#}); SERVICE_*_ADDRESS covers only this session's services");
            Vec::new()
        }
    };
    known.extend(config.services.iter().map(|s| KnownService {
        name: s.name.clone(),
        tag: s.tag.clone(),
        port: s.port,
        place: Where::Local,
    }));
    let sessions_dir = me.session_dir();
    for (path, list) in session::sessions(&sessions_dir).await {
        if let Some(s) = config.services.iter().find(|s| {
            list.iter()
                .any(|o| o.name == s.name && o.tag == s.tag && o.state != "stopped")
        }) {
            anyhow::bail!(
                "{} already runs in another overlay dev session ({}); stop that session first",
                s.label(),
                path.display()
            );
        }
    }
    let server = session::bind(&sessions_dir)?;
    let keys: Vec<String> = config.services.iter().map(|s| s.key.clone()).collect();
    let logs_dir = me.logs_dir();
    let (output, sink) = Output::start(keys, logs_dir, Style::detect())?;
    // Said once: the name callers use differs from the process type written in the file.
    for s in config.mapped_names() {
        if let Some(i) = config.services.iter().position(|x| x.key == s.key) {
            sink.note(
                i,
                format!(
                    "{} is {} on the overlay (names are lower case, with '-' for '_')",
                    s.key,
                    s.hostname(&domain)
                ),
            )
            .await;
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let groups = Groups::default();
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        dotenv,
        domain,
        known,
        registrar,
        sink,
        user_env: if me.needs_drop() || me.uid != 0 {
            me.env()
        } else {
            Vec::new()
        },
        groups: groups.clone(),
        stop: stop_rx,
    });
    let config = Arc::new(config);
    let handles: Vec<Handle> = config
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| supervisor::spawn(i, s.clone(), shared.clone()))
        .collect();
    drop(shared);
    let find = {
        let c = config.clone();
        move |w: &str| c.find(w).map(|s| s.key.clone())
    };
    let server_task = {
        let h = handles.clone();
        tokio::spawn(server.serve(Arc::new(session::Session::new(h, find))))
    };
    let watch_task = tokio::spawn(super::watch::run(
        dir,
        handles
            .iter()
            .zip(&config.services)
            .map(|(h, s)| (h.clone(), s.watch.clone()))
            .collect(),
    ));
    let mut start_task = tokio::spawn(start_all(config.clone(), handles.clone()));
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut starting = true;
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
            _ = hup.recv() => break Ok(()),
            r = &mut start_task, if starting => {
                starting = false;
                if let Ok(Err(e)) = r {
                    break Err(e);
                }
            }
        }
    };
    // Stop everything: services in parallel, each TERM then KILL; registrations removed.
    let _ = stop_tx.send(true);
    start_task.abort();
    watch_task.abort();
    server_task.abort();
    eprintln!("overlay: stopping {} service(s)", handles.len());
    let grace = config
        .services
        .iter()
        .map(|s| s.stop_timeout)
        .max()
        .unwrap_or_default();
    let stops: Vec<_> = handles
        .iter()
        .map(|h| {
            let h = h.clone();
            tokio::spawn(async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if h.tx.send(Cmd::Shutdown(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            })
        })
        .collect();
    let all = async {
        for s in stops {
            let _ = s.await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(grace + Duration::from_secs(10), all) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("overlay: killing the services now"),
    }
    groups.kill_all();
    drop(handles);
    // Lines still queued are written before the session ends.
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::task::spawn_blocking(move || output.finish()),
    )
    .await;
    result
}

/// Starts every service after its dependencies finished starting; fails only when nothing
/// started at all.
async fn start_all(config: Arc<DevConfig>, handles: Vec<Handle>) -> anyhow::Result<()> {
    let mut done: Vec<watch::Receiver<bool>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, spec) in config.services.iter().enumerate() {
        let (tx, rx) = watch::channel(false);
        let deps: Vec<watch::Receiver<bool>> = spec
            .depends_on
            .iter()
            .filter_map(|d| config.services.iter().position(|s| s.key == d.key))
            .filter_map(|j| done.get(j).cloned())
            .collect();
        done.push(rx);
        let h = handles[i].clone();
        tasks.push(tokio::spawn(async move {
            for mut d in deps {
                let _ = d.wait_for(|v| *v).await;
            }
            let r = h.ask(Cmd::Start).await;
            let _ = tx.send(true);
            r
        }));
    }
    let mut first_err = None;
    let mut ok = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    match (ok, first_err) {
        (0, Some(e)) => Err(anyhow::anyhow!("no service could start: {e}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_for_sh() {
        assert_eq!(shell_quote("python3"), "python3");
        assert_eq!(shell_quote("--bind=127.0.0.1"), "--bind=127.0.0.1");
        assert_eq!(shell_quote("$PORT"), "\"$PORT\"");
        assert_eq!(shell_quote("a \"$B\" `c`"), "\"a \\\"$B\\\" \\`c\\`\"");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
