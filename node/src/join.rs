//! `overlay join <token>`: register with the relay, save the settings, start the daemon.

use crate::lifecycle;
use crate::paths;
use crate::settings::{NodeFiles, Settings};
use clap::Args;
use overlay_core::join::{JoinInitiator, JoinRequest, JoinResponse};
use overlay_core::token::Token;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to keep trying the relay before giving up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags of `overlay join`.
#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The token from `overlay-relay token create`.
    token: String,
    /// The node's name in the overlay (default: this machine's host name).
    #[arg(long)]
    name: Option<String>,
    /// Do not start the daemon (a service manager will run `overlay daemon`).
    #[arg(long)]
    no_start: bool,
}

/// Prints one progress step and its result with the time it took.
pub struct Step {
    started: Instant,
}

impl Step {
    /// Starts a step.
    pub fn start(what: &str) -> Step {
        eprint!("  {what} ... ");
        Step {
            started: Instant::now(),
        }
    }

    /// Ends it with a result.
    pub fn done(self, result: &str) {
        eprintln!("{result} ({} ms)", self.started.elapsed().as_millis());
    }
}

/// Runs `overlay join`.
pub async fn run(args: JoinArgs) -> anyhow::Result<()> {
    lifecycle::require_root("overlay join <token>")?;
    let token = Token::parse(&args.token)?;
    let files = NodeFiles::new(&paths::state_dir());
    if lifecycle::daemon_running().await {
        anyhow::bail!(
            "this machine is already connected to an overlay; run `sudo overlay leave` first"
        );
    }
    let step = Step::start("preparing the node key");
    let key = match files.load_key()? {
        Some(k) => {
            step.done("reusing the existing key");
            k
        }
        None => {
            let k = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng).to_bytes();
            files.save_key(&k)?;
            step.done("new key");
            k
        }
    };
    let secret = x25519_dalek::StaticSecret::from(key);
    let request = JoinRequest {
        token_id: token.id.clone(),
        token_secret: token.secret,
        name: args.name.clone(),
        hint: hostname(),
        timestamp: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let (initiator, datagram) = JoinInitiator::new(&secret, token.relay_key, &request)?;
    let step = Step::start(&format!(
        "registering with the relay at {}",
        token.endpoints.join(", ")
    ));
    let (response, endpoint) = match exchange(&token.endpoints, &initiator, &datagram).await {
        Ok(r) => r,
        Err(e) => {
            step.done("failed");
            return Err(e);
        }
    };
    let settings = match response {
        JoinResponse::Accepted {
            node_name,
            address,
            prefix,
            network,
            domain,
            relay_address,
            mtu,
        } => {
            step.done(&format!("registered as {node_name}"));
            Settings {
                name: node_name,
                address: address.parse()?,
                prefix: prefix.parse()?,
                network: network.parse()?,
                domain,
                relay_address: relay_address.parse()?,
                relay_key: overlay_core::key::encode(&token.relay_key),
                endpoints: std::iter::once(endpoint)
                    .chain(token.endpoints.iter().cloned())
                    .fold(Vec::new(), |mut v, e| {
                        if !v.contains(&e) {
                            v.push(e);
                        }
                        v
                    }),
                mtu,
                owner_uid: std::env::var("SUDO_UID").ok().and_then(|v| v.parse().ok()),
            }
        }
        JoinResponse::Rejected { reason } => {
            step.done("refused");
            anyhow::bail!("the relay refused to register this node: {reason}");
        }
    };
    files.save(&settings)?;
    if args.no_start {
        println!(
            "joined as {} ({}); start the node with `overlay daemon`",
            settings.name, settings.address
        );
        return Ok(());
    }
    let step = Step::start("starting the daemon and bringing the tunnel up");
    match lifecycle::start_daemon_and_wait().await {
        Ok(()) => step.done("connected"),
        Err(e) => {
            step.done("failed");
            return Err(e);
        }
    }
    println!("node:    {}", settings.name);
    println!("address: {}", settings.address);
    println!("domain:  {}", settings.domain);
    Ok(())
}

/// Sends the request to each endpoint in turn, retrying, until one answers or time runs out.
async fn exchange(
    endpoints: &[String],
    initiator: &JoinInitiator,
    datagram: &[u8],
) -> anyhow::Result<(JoinResponse, String)> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut resolved: Vec<(String, SocketAddr)> = Vec::new();
    for e in endpoints {
        if let Ok(mut addrs) = tokio::net::lookup_host(e.as_str()).await {
            if let Some(a) = addrs.next() {
                resolved.push((e.clone(), a));
            }
        }
    }
    if resolved.is_empty() {
        anyhow::bail!(
            "cannot resolve the relay endpoint(s) {}; check DNS and the token",
            endpoints.join(", ")
        );
    }
    let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    let mut buf = vec![0u8; 2048];
    let mut wait = Duration::from_millis(250);
    while Instant::now() < deadline {
        for (_, addr) in &resolved {
            let _ = sock.send_to(datagram, addr).await;
        }
        let until = (Instant::now() + wait).min(deadline);
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(until.into(), sock.recv_from(&mut buf)).await
        {
            let Some((name, _)) = resolved.iter().find(|(_, a)| *a == from) else {
                continue;
            };
            // Anything that does not open with our keys is ignored: an impostor cannot answer.
            if let Ok(r) = initiator.open_response(&buf[..n]) {
                return Ok((r, name.clone()));
            }
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
    anyhow::bail!(
        "the relay at {} did not answer within {} s; check that it is running and that UDP to that port is not blocked",
        endpoints.join(", "),
        JOIN_TIMEOUT.as_secs()
    )
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
