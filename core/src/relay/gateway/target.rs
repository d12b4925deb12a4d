//! Which `host:port` in the remote environment an overlay destination stands for.

/// The target for a connection to `dst_port` on a remote service registered with `port` and
/// `target` (`host:port`): the target itself on the service's port, the same host on any other
/// port (on-demand names stand for a host, whatever the port). `None` if `target` is not
/// `host:port`.
pub fn effective_target(dst_port: u16, port: u16, target: &str) -> Option<String> {
    let (host, _) = target.rsplit_once(':')?;
    if host.is_empty() {
        return None;
    }
    if dst_port == port {
        Some(target.to_string())
    } else {
        Some(format!("{host}:{dst_port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ports() {
        assert_eq!(
            effective_target(8080, 8080, "orders.svc:9000").as_deref(),
            Some("orders.svc:9000")
        );
        assert_eq!(
            effective_target(6379, 80, "redis:80").as_deref(),
            Some("redis:6379")
        );
        assert_eq!(
            effective_target(53, 80, "[fd00::1]:80").as_deref(),
            Some("[fd00::1]:53")
        );
        assert_eq!(effective_target(80, 80, "nohost"), None);
        assert_eq!(effective_target(80, 80, ":80"), None);
    }
}
