//! The TUN device and the routes through it.

use overlay_core::net::prefix::Ipv4Prefix;
use std::net::Ipv4Addr;
use tun_rs::{DeviceBuilder, SyncDevice};

/// Creates the TUN device `name` with `addr` inside `network` and the network's route on it.
///
/// The address gets the network's prefix length, so the kernel adds the network route itself
/// and removes it with the device: nothing is left behind if the daemon dies.
pub fn create(
    name: &str,
    addr: Ipv4Addr,
    network: Ipv4Prefix,
    mtu: u16,
) -> anyhow::Result<SyncDevice> {
    let build = |offload: bool| {
        DeviceBuilder::new()
            .name(name)
            .ipv4(addr, network.len(), None)
            .mtu(mtu)
            // TSO/GRO super-packets between the kernel and the tunnel: far fewer reads and
            // writes per megabyte (see tunnel.rs).
            .offload(offload)
            .build_sync()
            // Polled by the data thread (tunnel.rs), not by tokio: no runtime wake-ups per packet.
            .and_then(|d| d.set_nonblocking(true).map(|()| d))
    };
    build(true)
        .or_else(|e| {
            tracing::info!("TUN offload unavailable ({e}); packets go one by one");
            build(false)
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the TUN device {name} ({e}); overlay needs root (or CAP_NET_ADMIN) and /dev/net/tun"
            )
        })
}

/// Adds a route for an extra prefix through the device (for AllowedIPs beyond the network).
pub fn add_route(dev: &str, prefix: Ipv4Prefix) -> anyhow::Result<()> {
    run_ip(&["route", "replace", &prefix.to_string(), "dev", dev])
}

/// Adds `ip/32` to the device (the DNS address, service addresses), through rtnetlink: a
/// registration costs no process start.
pub fn add_address(dev: &str, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
    overlay_sys::netlink::add_address(dev, ip).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Removes `ip/32` from the device; a missing address is not an error.
pub fn remove_address(dev: &str, ip: std::net::Ipv4Addr) {
    if let Err(e) = overlay_sys::netlink::remove_address(dev, ip) {
        tracing::warn!("cannot remove {ip} from {dev}: {e}");
    }
}

/// Routes of other interfaces (another VPN) for `network` or the DNS address, as sentences;
/// empty when there are none or the routing table cannot be read.
pub fn route_conflicts(ours: &str, network: Ipv4Prefix) -> Vec<String> {
    current_conflicts(ours, network)
        .iter()
        .filter(|c| !c.route.is_vanishing())
        .map(ToString::to_string)
        .collect()
}

fn current_conflicts(ours: &str, network: Ipv4Prefix) -> Vec<overlay_core::net::routes::Conflict> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-4", "-o", "route", "show", "table", "all"])
        .output()
    else {
        return Vec::new();
    };
    let routes = overlay_core::net::routes::parse_ip_route(&String::from_utf8_lossy(&out.stdout));
    overlay_core::net::routes::conflicts(
        &routes,
        network,
        overlay_core::net::addressing::DNS_ADDR,
        ours,
    )
}

/// How long a start waits for the routes of a device being removed (a daemon that just died)
/// to go before it calls them a conflict.
const VANISHING_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Refuses to start beside another interface's routes for the overlay: packets would go to
/// whichever route the kernel picks, and names to the other VPN's DNS. Routes of a device the
/// kernel is still removing (the previous daemon's TUN after a crash) are waited out.
pub async fn refuse_route_conflicts(ours: &str, network: Ipv4Prefix) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + VANISHING_WAIT;
    loop {
        let found = current_conflicts(ours, network);
        let Some(first) = found.first() else {
            return Ok(());
        };
        let waiting = found.iter().all(|c| c.route.is_vanishing());
        if !waiting || std::time::Instant::now() >= deadline {
            return Err(anyhow::anyhow!("{first}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
