//! TLS for an `https://` relay URL (rustls with the system's trusted roots; `SSL_CERT_FILE`
//! adds a file of its own, as for other programs).

use rustls::pki_types::ServerName;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("system certificates: {e}");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        anyhow::bail!(
            "no trusted certificate authorities were found (install ca-certificates or set SSL_CERT_FILE)"
        );
    }
    let c = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    Ok(CONFIG.get_or_init(|| c).clone())
}

/// Opens TLS to `host` over `tcp`, checking the relay's certificate against the trusted roots.
pub async fn connect(host: &str, tcp: TcpStream) -> anyhow::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| anyhow::anyhow!("{host:?} is not a name TLS can check"))?;
    let s = tokio_rustls::TlsConnector::from(config()?)
        .connect(name, tcp)
        .await
        .map_err(|e| anyhow::anyhow!("TLS to {host}: {e}"))?;
    Ok(s)
}
