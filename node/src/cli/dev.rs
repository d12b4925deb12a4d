//! The clients of a running `overlay dev` session: `overlay logs`, `overlay ps` and `overlay
//! restart|stop|start SERVICE` (the session's side is `crate::dev`).

use crate::dev::logview::{self, View};
use crate::dev::output::Style;
use crate::dev::session;
use crate::dev::supervisor;
use crate::dev::user::Identity;
use clap::Args;
use overlay_core::api::session::{Restart, Start, Stop};
use std::time::Duration;

/// How long a restart, stop or start may take (a build included) before the client gives up.
const ACTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// Flags of `overlay logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// One service (its key in the config); all services, merged by time, when omitted.
    service: Option<String>,
    /// Keep printing new lines.
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many of the last lines to print (0: all).
    #[arg(short = 'n', long = "lines", default_value_t = 100)]
    lines: usize,
}

/// Flags of `overlay ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Print a JSON list of the services (the fields of the table, and `name`, `tag`).
    #[arg(long)]
    json: bool,
}

/// The service of `overlay restart|stop|start`.
#[derive(Args, Debug)]
pub struct ServiceArg {
    /// The service: its key in the config, its name, or TAG.NAME.
    service: String,
}

/// What `overlay restart|stop|start` asks for.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// Build, then replace the process.
    Restart,
    /// Stop it.
    Stop,
    /// Start it.
    Start,
}

/// `overlay logs`.
pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let me = Identity::invoking();
    logview::show(View {
        dir: me.logs_dir(),
        service: args.service,
        lines: args.lines,
        follow: args.follow,
    })
    .await
}

/// `overlay restart|stop|start SERVICE`.
pub async fn control(action: Action, args: ServiceArg) -> anyhow::Result<()> {
    let me = Identity::invoking();
    let mut found = Vec::new();
    for dir in me.session_dirs() {
        found.extend(session::sessions(&dir).await);
    }
    if found.is_empty() {
        anyhow::bail!(
            "no overlay dev session is running for this user; start one with `overlay dev`"
        );
    }
    let wanted = args.service.as_str();
    let matches = |s: &supervisor::ServiceState| {
        s.key == wanted
            || s.name == wanted && s.tag.is_none()
            || s.tag
                .as_ref()
                .is_some_and(|t| format!("{t}.{}", s.name) == wanted)
    };
    let Some((path, _)) = found.iter().find(|(_, list)| list.iter().any(matches)) else {
        let all: Vec<String> = found
            .iter()
            .flat_map(|(_, l)| l.iter().map(|s| s.key.clone()))
            .collect();
        anyhow::bail!(
            "no running overlay dev session has a service {wanted}; it runs: {}",
            all.join(", ")
        );
    };
    let service = args.service.clone();
    let session = session::endpoint(path);
    let done = match action {
        Action::Restart => {
            session
                .call_within(Restart { service }, ACTION_TIMEOUT)
                .await
        }
        Action::Stop => session.call_within(Stop { service }, ACTION_TIMEOUT).await,
        Action::Start => session.call_within(Start { service }, ACTION_TIMEOUT).await,
    }?;
    println!("{}", done.message);
    Ok(())
}

/// `overlay ps`.
pub async fn ps(args: PsArgs) -> anyhow::Result<()> {
    let me = Identity::invoking();
    let mut all = Vec::new();
    for dir in me.session_dirs() {
        for (_, list) in session::sessions(&dir).await {
            all.extend(list);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        anyhow::bail!(
            "no overlay dev session is running for this user; start one with `overlay dev`"
        );
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    print!("{}", super::ps::render(&all, now_ms, Style::detect().color));
    Ok(())
}
