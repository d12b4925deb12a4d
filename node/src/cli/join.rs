//! `overlay join <token>`: register with the relay, save the settings, start the daemon.

use crate::cli::lifecycle;
use crate::paths;
use crate::settings::{NodeFiles, Settings};
use clap::Args;
use overlay_core::identity::join::cookie::Notice;
use overlay_core::identity::join::{JoinInitiator, JoinRequest, JoinResponse, Reply};
use overlay_core::identity::token::Token;
use overlay_core::transport::stream::transport::{Mode as TransportMode, FALLBACK_AFTER};
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
    /// Which way to the relay: `auto` (UDP; the relay's URL from the token when UDP gets no
    /// answer within 3 s; back to UDP when it answers again), `udp` or `tcp`. Saved for the daemon.
    #[arg(
        long,
        env = "OVERLAY_TRANSPORT",
        default_value = "auto",
        value_name = "MODE"
    )]
    transport: TransportMode,
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
    let (initiator, datagram) =
        JoinInitiator::new(&secret, token.relay_key, &request, &mut rand::rngs::OsRng)?;
    if args.transport == TransportMode::Tcp && token.url.is_none() {
        anyhow::bail!(
            "--transport tcp needs a relay URL, and this token has none; start the relay with --tcp-listen (and --public-url) and create a new token"
        );
    }
    let step = Step::start(&format!(
        "registering with the relay at {}{}",
        token.endpoints.join(", "),
        token
            .url
            .as_deref()
            .map(|u| format!(" (or {u})"))
            .unwrap_or_default()
    ));
    let (response, endpoint) = match choose(&token, args.transport, &initiator, &datagram).await {
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
                relay_key: overlay_core::identity::key::encode(&token.relay_key),
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
                url: token.url.clone(),
                transport: args.transport,
            }
        }
        JoinResponse::Rejected { reason } => {
            step.done("refused");
            anyhow::bail!("the relay answered and refused to register this node: {reason}");
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

/// Registers over UDP, or over the relay's URL as `mode` allows: in `auto` the URL is tried
/// when UDP gets no answer within [`FALLBACK_AFTER`].
async fn choose(
    token: &Token,
    mode: TransportMode,
    initiator: &JoinInitiator,
    datagram: &[u8],
) -> anyhow::Result<(JoinResponse, String)> {
    let first = token.endpoints.first().cloned().unwrap_or_default();
    let url = match (mode, &token.url) {
        (TransportMode::Udp, _) | (_, None) => {
            return exchange(&token.endpoints, initiator, datagram, JOIN_TIMEOUT).await
        }
        (_, Some(u)) => u.as_str(),
    };
    let started = Instant::now();
    let udp_error = if mode == TransportMode::Auto {
        match exchange(&token.endpoints, initiator, datagram, FALLBACK_AFTER).await {
            Ok(r) => return Ok(r),
            Err(e) => Some(e),
        }
    } else {
        None
    };
    let left = JOIN_TIMEOUT.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, exchange_stream(url, initiator, datagram)).await {
        Ok(Ok(r)) => Ok((r, first)),
        Ok(Err(e)) => Err(match udp_error {
            Some(u) => anyhow::anyhow!("{u}; the relay's URL did not work either: {e}"),
            None => e,
        }),
        Err(_) => Err(anyhow::anyhow!(
            "the relay did not answer over UDP nor over its URL {url} within {} s; check that it runs with --tcp-listen and that the URL (or HTTPS_PROXY) leads to it",
            JOIN_TIMEOUT.as_secs()
        )),
    }
}

/// Registers over the stream to the relay's URL (through `HTTPS_PROXY` if set).
async fn exchange_stream(
    url: &str,
    initiator: &JoinInitiator,
    datagram: &[u8],
) -> anyhow::Result<JoinResponse> {
    let target = crate::daemon::relaystream::Target::from_env(url)?;
    let (mut r, mut w) = crate::daemon::relaystream::connect(&target).await?.split();
    w.send(datagram).await?;
    let mut heard = Heard::Nothing;
    // The stream is reliable: one request, and one more with a cookie if the relay asks.
    loop {
        let d = match r.recv().await {
            Ok(Some(d)) => d,
            Ok(None) => anyhow::bail!(
                "the relay at {} closed the stream without an answer{}",
                target.describe(),
                match heard {
                    Heard::Notice(Notice::WrongKey) => " (this token was made for another relay)",
                    Heard::Notice(Notice::LockedOut) =>
                        " (joins from this address are locked out for a minute)",
                    _ => "",
                }
            ),
            Err(e) => anyhow::bail!("the stream to {} failed: {e}", target.describe()),
        };
        match initiator.open_reply(&d) {
            Ok(Reply::Response(resp)) => return Ok(resp),
            Ok(Reply::Cookie(c)) => w.send(&initiator.with_cookie(datagram, &c)).await?,
            Ok(Reply::Notice(notice)) => heard = heard.max(Heard::Notice(notice)),
            Err(_) => {}
        }
    }
}

/// Sends the request to each endpoint in turn, retrying, until one answers or time runs out.
/// A cookie reply makes it send the request again at once with the cookie; notices (not
/// authenticated) only choose the message when no real answer comes.
async fn exchange(
    endpoints: &[String],
    initiator: &JoinInitiator,
    datagram: &[u8],
    timeout: Duration,
) -> anyhow::Result<(JoinResponse, String)> {
    let deadline = Instant::now() + timeout;
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
    // One request per endpoint: the cookie, and so mac2, is per relay address.
    let mut requests: Vec<Vec<u8>> = resolved.iter().map(|_| datagram.to_vec()).collect();
    let mut heard = Heard::Nothing;
    while Instant::now() < deadline {
        for ((_, addr), req) in resolved.iter().zip(&requests) {
            let _ = sock.send_to(req, addr).await;
        }
        let until = (Instant::now() + wait).min(deadline);
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(until.into(), sock.recv_from(&mut buf)).await
        {
            let Some(i) = resolved.iter().position(|(_, a)| *a == from) else {
                continue;
            };
            // Anything that does not open with our keys is ignored: an impostor cannot answer.
            match initiator.open_reply(&buf[..n]) {
                Ok(Reply::Response(r)) => return Ok((r, resolved[i].0.clone())),
                Ok(Reply::Cookie(c)) => {
                    requests[i] = initiator.with_cookie(datagram, &c);
                    let _ = sock.send_to(&requests[i], from).await;
                    heard = heard.max(Heard::Cookie);
                }
                Ok(Reply::Notice(notice)) => heard = heard.max(Heard::Notice(notice)),
                Err(_) => {}
            }
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
    let at = endpoints.join(", ");
    let secs = timeout.as_secs();
    Err(match heard {
        Heard::Nothing => anyhow::anyhow!(
            "the relay at {at} did not answer within {secs} s; check that it is running and that UDP to that port is not blocked"
        ),
        Heard::Notice(Notice::WrongKey) => anyhow::anyhow!(
            "the relay at {at} answered, but this token was made for another relay (its key does not match); create a token on this relay with `overlay-relay token create`"
        ),
        Heard::Notice(Notice::LockedOut) => anyhow::anyhow!(
            "the relay at {at} refuses joins from this address for a minute after repeated bad tokens; wait a minute, then join with a valid token"
        ),
        Heard::Cookie | Heard::Notice(Notice::Busy) => anyhow::anyhow!(
            "the relay at {at} answered but was too busy to finish the join within {secs} s (many join requests at once); try again in a minute"
        ),
    })
}

/// The most telling thing the relay said before the join timed out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Heard {
    Nothing,
    Cookie,
    Notice(Notice),
}

impl Heard {
    fn rank(self) -> u8 {
        match self {
            Heard::Nothing => 0,
            Heard::Cookie => 1,
            Heard::Notice(Notice::Busy) => 2,
            Heard::Notice(_) => 3,
        }
    }

    fn max(self, other: Heard) -> Heard {
        if other.rank() >= self.rank() {
            other
        } else {
            self
        }
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
