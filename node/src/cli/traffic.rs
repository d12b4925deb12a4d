//! `overlay traffic`, `overlay inspect`, `overlay capture`.

use crate::daemon::api;
use crate::paths;
use clap::Args;
use overlay_core::api::daemon::{Inspect, Record, Traffic};
use overlay_sys::local_api::to_json_pretty;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often `overlay traffic -f` asks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(300);

/// Flags of `overlay traffic`.
#[derive(Args, Debug)]
pub struct TrafficArgs {
    /// Only this local service.
    pub service: Option<String>,
    /// Keep printing new exchanges and flows.
    #[arg(short, long)]
    pub follow: bool,
    /// JSON: an array, or one object per line with -f.
    #[arg(long)]
    pub json: bool,
    /// Filters as in the inspector, e.g. `status=5xx&method=POST`.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// At most this many of the newest records (before following).
    #[arg(short = 'n', long, default_value_t = 100)]
    pub lines: usize,
    /// Show credentials in request targets (`?token=...`) instead of masking them.
    #[arg(long)]
    pub reveal: bool,
    /// Stop recording new connections (open ones are recorded to their end); records stay.
    #[arg(long, conflicts_with_all = ["resume", "follow", "service"])]
    pub pause: bool,
    /// Record again after `--pause` (or a daemon started with OVERLAY_CAPTURE_OFF=1).
    #[arg(long, conflicts_with_all = ["follow", "service"])]
    pub resume: bool,
}

/// Flags of `overlay inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Print `{"url": ..., "token": ...}`.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `overlay capture`.
#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// The pcap file to write ("-" for stdout).
    #[arg(short = 'w', long = "write")]
    pub file: String,
    /// Only packets from or to this service's addresses.
    #[arg(long)]
    pub service: Option<String>,
    /// Stop after this long (`30s`, `5m`); default: until Ctrl-C.
    #[arg(long)]
    pub duration: Option<String>,
}

fn query(args: &TrafficArgs, after: u64, limit: usize) -> String {
    let mut q = format!("after={after}&limit={limit}");
    if let Some(s) = &args.service {
        q.push_str(&format!("&service={s}"));
    }
    if !args.filter.is_empty() {
        q.push('&');
        q.push_str(&args.filter);
    }
    if args.reveal {
        q.push_str("&reveal=1");
    }
    q
}

/// `overlay traffic`.
pub async fn traffic(args: TrafficArgs) -> anyhow::Result<()> {
    if args.pause || args.resume {
        let r = api::call(Record { on: args.resume }).await?;
        if args.json {
            println!("{}", serde_json::to_value(&r)?);
        } else {
            println!(
                "{}",
                match (r.was, r.on) {
                    (true, false) => "capture paused: new connections are not recorded (overlay traffic --resume records again)",
                    (false, false) => "capture was already paused (overlay traffic --resume records again)",
                    (false, true) => "capture resumed: new connections are recorded",
                    (true, true) => "capture was already recording",
                }
            );
        }
        return Ok(());
    }
    let mut after = 0;
    let mut first = true;
    loop {
        let limit = if first { args.lines } else { 1000 };
        let page = api::call(Traffic {
            query: query(&args, after, limit),
        })
        .await?;
        after = page.latest.max(after);
        let mut out = std::io::stdout().lock();
        if args.json && !args.follow {
            writeln!(out, "{}", to_json_pretty(&page.records)?)?;
        } else {
            for r in &page.records {
                if args.json {
                    // One compact object per line, keys sorted as in the other outputs.
                    writeln!(out, "{}", serde_json::to_value(r)?)?;
                } else {
                    writeln!(out, "{}", r.line())?;
                }
            }
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        first = false;
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// `overlay inspect`.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let reply = api::call(Inspect {}).await?;
    let Some(url) = &reply.url else {
        anyhow::bail!("the inspector is not running (OVERLAY_INSPECT_LISTEN=off, or its address was taken; see the daemon's log)");
    };
    if args.json {
        println!("{}", serde_json::to_value(&reply)?);
    } else {
        println!("{url}");
    }
    Ok(())
}

/// `overlay capture`.
pub async fn capture(args: CaptureArgs) -> anyhow::Result<()> {
    let duration_ms = match &args.duration {
        Some(d) => Some(overlay_core::duration::parse_secs(d)? * 1000),
        None => None,
    };
    let path = paths::capture_socket();
    let mut s = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        anyhow::anyhow!(
            "the overlay daemon is not running ({}: {e}); start it with `sudo overlay up`",
            path.display()
        )
    })?;
    let req = serde_json::json!({"service": args.service, "duration_ms": duration_ms});
    s.write_all(format!("{req}\n").as_bytes()).await?;
    let mut first = vec![0u8; 24];
    s.read_exact(&mut first)
        .await
        .map_err(|_| anyhow::anyhow!("the daemon closed the capture without data"))?;
    if first.starts_with(b"ERROR ") {
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest).await;
        let msg = String::from_utf8_lossy(&first).into_owned() + &rest;
        anyhow::bail!("{}", msg.trim_start_matches("ERROR ").trim());
    }
    let mut out: Box<dyn Write> = if args.file == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::File::create(&args.file)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.file))?,
        )
    };
    out.write_all(&first)?;
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut r, _w) = s.into_split();
    loop {
        tokio::select! {
            n = r.read(&mut buf) => {
                let n = n?;
                if n == 0 { break; }
                out.write_all(buf.get(..n).unwrap_or(&[]))?;
                out.flush()?;
                total += n as u64;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    out.flush()?;
    if args.file != "-" {
        eprintln!("wrote {} bytes of pcap to {}", total + 24, args.file);
    }
    Ok(())
}
