//! The byte stream under a session: TCP (connect with a timeout, read/write timeouts),
//! optionally wrapped in TLS (rustls with the ring provider ureq already uses; trust from
//! the system store through rustls-native-certs, or from a PEM CA file).
//!
//! Invariant: [`tls_wrap`] completes the handshake before returning, so certificate
//! problems surface as [`ImapError::Tls`] at connect time, never mid-command.

use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::ImapError;
use super::types::Endpoint;

/// A plain or TLS connection.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The socket (for timeouts).
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// "localhost" or a loopback address (127.0.0.0/8, ::1): a clear-text password may go there.
pub(super) fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn tls_config(ep: &Endpoint) -> Result<Arc<rustls::ClientConfig>, ImapError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match &ep.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ImapError::Tls(format!("reading {}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| ImapError::Tls(format!("reading {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ImapError::Tls(format!("a CA in {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ImapError::Tls(format!(
                    "no certificate in {}",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ImapError::Tls(format!(
                    "no system CA certificates found ({} errors)",
                    found.errors.len()
                )));
            }
        }
    }
    // ring, the provider ureq already uses: one crypto provider in the binary. rustls
    // 0.23.48 deprecates it only for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImapError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Wraps `tcp` in TLS and completes the handshake (so certificate errors surface here).
pub(super) fn tls_wrap(ep: &Endpoint, mut tcp: TcpStream) -> Result<Stream, ImapError> {
    let name = rustls::pki_types::ServerName::try_from(
        ep.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
    .map_err(|e| ImapError::Tls(format!("server name {:?}: {e}", ep.host)))?;
    let mut conn = rustls::ClientConnection::new(tls_config(ep)?, name)
        .map_err(|e| ImapError::Tls(e.to_string()))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(match e.kind() {
                io::ErrorKind::InvalidData => ImapError::Tls(format!("handshake: {e}")),
                _ => ImapError::io("TLS handshake", e),
            });
        }
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

/// Connects to the first address of `ep` that answers within `timeout`; sets read and
/// write timeouts of `timeout` and TCP_NODELAY.
pub(super) fn connect_tcp(ep: &Endpoint, timeout: Duration) -> Result<TcpStream, ImapError> {
    let host = ep.host.trim_start_matches('[').trim_end_matches(']');
    let addrs = (host, ep.port)
        .to_socket_addrs()
        .map_err(|e| ImapError::io(&format!("resolving {}", ep.host), e))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let set = s
                    .set_read_timeout(Some(timeout))
                    .and_then(|()| s.set_write_timeout(Some(timeout)))
                    .and_then(|()| s.set_nodelay(true));
                set.map_err(|e| ImapError::io("setting socket options", e))?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"));
    Err(ImapError::io(
        &format!("connecting to {}:{}", ep.host, ep.port),
        e,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "example.org", "localhost.example.org", "::2"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
