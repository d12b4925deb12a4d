//! Opening the way to a destination: a TCP connection into the remote environment, or an
//! overlay connection to a node service through the gateway (the relay keeps one end of a
//! socket pair, the gateway splices the other into its userspace stack, exactly as it does a
//! callback, with the node's flow limits and buffer budget).

use super::Dest;
pub use crate::gateway::CallerInfo;
use crate::gateway::{Accepted, Control, GatewayHandle};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

/// How long a connect into the remote environment may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffer per direction of a splice.
const SPLICE_BUFFER: usize = 32 * 1024;

/// A connection to a destination.
pub enum Conn {
    /// Into the remote environment.
    Tcp(TcpStream),
    /// The relay's end of a socket pair whose other end the gateway splices to a node service.
    Node(UnixStream),
}

impl Conn {
    /// Both directions at once, borrowed: a response can be read while a request body is
    /// written, without the lock `tokio::io::split` puts between its halves.
    pub fn halves(&mut self) -> (ConnRead<'_>, ConnWrite<'_>) {
        match self {
            Conn::Tcp(s) => {
                let (r, w) = s.split();
                (ConnRead::Tcp(r), ConnWrite::Tcp(w))
            }
            Conn::Node(s) => {
                let (r, w) = s.split();
                (ConnRead::Node(r), ConnWrite::Node(w))
            }
        }
    }
}

/// The reading half of a [`Conn`] (see [`Conn::halves`]).
pub enum ConnRead<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Node(unix::ReadHalf<'a>),
}

/// The writing half of a [`Conn`] (see [`Conn::halves`]).
pub enum ConnWrite<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Node(unix::WriteHalf<'a>),
}

impl AsyncRead for ConnRead<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnRead::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ConnRead::Node(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnWrite<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ConnWrite::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ConnWrite::Node(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnWrite::Tcp(s) => Pin::new(s).poll_flush(cx),
            ConnWrite::Node(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ConnWrite::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ConnWrite::Node(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens a connection to `d`, announcing `caller` to the node for a node service.
pub async fn open(d: &Dest, caller: CallerInfo, gw: &GatewayHandle) -> io::Result<Conn> {
    match d {
        Dest::Remote(addr) => {
            let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&**addr))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {addr} timed out"),
                    )
                })??;
            let _ = s.set_nodelay(true);
            Ok(Conn::Tcp(s))
        }
        Dest::Node(t) => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            ours.set_nonblocking(true)?;
            let handed = gw.control(Control::Callback {
                stream: Accepted::Unix(theirs),
                to: t.addr,
                node: t.node.clone(),
                prefix: Vec::new(),
                caller: Some(caller),
            });
            if !handed {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the relay's gateway is busy",
                ));
            }
            Ok(Conn::Node(UnixStream::from_std(ours)?))
        }
    }
}

/// Sends a whole client connection to `d`: to a node service the connection itself goes to the
/// gateway (with `first`, bytes already read from it); to the remote environment it is
/// spliced here.
pub async fn splice_to(
    client: TcpStream,
    first: Vec<u8>,
    peer: SocketAddr,
    d: &Dest,
    via: &'static str,
    gw: &GatewayHandle,
) {
    match d {
        Dest::Node(t) => hand_over(client, first, peer, t, via, gw),
        Dest::Remote(_) => {
            let caller = CallerInfo {
                address: peer,
                forwarded_for: None,
                via,
            };
            let Ok(mut up) = open(d, caller, gw).await else {
                // Refused or unreachable: so is the caller's connection.
                crate::gateway::stream::reset_close(&client);
                return;
            };
            let mut client = client;
            if up.write_all(&first).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut client,
                &mut up,
                SPLICE_BUFFER,
                SPLICE_BUFFER,
            )
            .await;
        }
    }
}

/// Splices `client` to an open connection `up`: `first_up` (bytes the client already sent) goes
/// up first, `first_down` (bytes `up` already sent) down first.
pub async fn splice_conn(
    mut client: TcpStream,
    first_up: Vec<u8>,
    first_down: Vec<u8>,
    mut up: Conn,
) {
    if up.write_all(&first_up).await.is_err() || client.write_all(&first_down).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut up,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await;
}

/// Hands a client connection to the gateway for node service `t` (`first` goes first).
pub fn hand_over(
    client: TcpStream,
    first: Vec<u8>,
    peer: SocketAddr,
    t: &overlay_core::intercept::Target,
    via: &'static str,
    gw: &GatewayHandle,
) {
    match client.into_std() {
        Ok(stream) => {
            let handed = gw.control(Control::Callback {
                stream: Accepted::Tcp(stream),
                to: t.addr,
                node: t.node.clone(),
                prefix: first,
                caller: Some(CallerInfo {
                    address: peer,
                    forwarded_for: None,
                    via,
                }),
            });
            if !handed {
                tracing::debug!("gateway busy: connection dropped");
            }
        }
        Err(e) => tracing::debug!("connection: {e}"),
    }
}

// The whole connection reads and writes through its borrowed halves: one delegation to the
// two kinds of stream, in `ConnRead` and `ConnWrite`.
impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (mut r, _) = self.get_mut().halves();
        Pin::new(&mut r).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (_, mut w) = self.get_mut().halves();
        Pin::new(&mut w).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (_, mut w) = self.get_mut().halves();
        Pin::new(&mut w).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (_, mut w) = self.get_mut().halves();
        Pin::new(&mut w).poll_shutdown(cx)
    }
}
