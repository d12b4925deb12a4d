//! The TUN device and the routes through it.

use overlay_core::prefix::Ipv4Prefix;
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

/// Adds `ip/32` to the device (the DNS address, service addresses).
pub fn add_address(dev: &str, ip: std::net::Ipv4Addr) -> anyhow::Result<()> {
    run_ip(&["addr", "replace", &format!("{ip}/32"), "dev", dev])
}

/// Removes `ip/32` from the device; a missing address is not an error.
pub fn remove_address(dev: &str, ip: std::net::Ipv4Addr) {
    let _ = run_ip(&["addr", "del", &format!("{ip}/32"), "dev", dev]);
}

/// Routes of other interfaces (another VPN) for `network` or the DNS address, as sentences;
/// empty when there are none or the routing table cannot be read.
pub fn route_conflicts(ours: &str, network: Ipv4Prefix) -> Vec<String> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-4", "-o", "route", "show", "table", "all"])
        .output()
    else {
        return Vec::new();
    };
    let routes = overlay_core::routes::parse_ip_route(&String::from_utf8_lossy(&out.stdout));
    overlay_core::routes::conflicts(&routes, network, overlay_core::addressing::DNS_ADDR, ours)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Refuses to start beside another interface's routes for the overlay: packets would go to
/// whichever route the kernel picks, and names to the other VPN's DNS.
pub fn refuse_route_conflicts(ours: &str, network: Ipv4Prefix) -> anyhow::Result<()> {
    match route_conflicts(ours, network).into_iter().next() {
        Some(c) => Err(anyhow::anyhow!("{c}")),
        None => Ok(()),
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
