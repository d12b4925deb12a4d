//! The node's stream to the relay's URL, for where UDP cannot pass: TCP (through an HTTP
//! proxy's CONNECT when `HTTPS_PROXY` says so), then the WebSocket upgrade; WireGuard datagrams
//! go one per binary message (see `overlay_core::transport::stream`).

use overlay_core::transport::stream::proxy::{self, Proxy};
use overlay_core::transport::stream::upgrade::{self, MAX_HEAD};
use overlay_core::transport::stream::url::RelayUrl;
use overlay_core::transport::stream::ws::{self, FrameBuffer, Opcode, Role};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting, the proxy's answer and the upgrade may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);

/// Where the stream goes and through which proxy.
#[derive(Clone, Debug)]
pub struct Target {
    /// The relay's URL.
    pub url: RelayUrl,
    /// The proxy, from the environment.
    pub proxy: Option<Proxy>,
}

impl Target {
    /// The target for `url`, with the proxy the environment names for it.
    pub fn from_env(url: &str) -> anyhow::Result<Target> {
        let url = RelayUrl::parse(url)?;
        let proxy = proxy::for_relay(&url.host, url.tls, |n| std::env::var(n).ok())
            .map_err(|e| anyhow::anyhow!("{e}; fix or unset HTTPS_PROXY"))?;
        Ok(Target { url, proxy })
    }

    /// How it is reached, for messages.
    pub fn describe(&self) -> String {
        match &self.proxy {
            Some(p) => format!("{} through the proxy {}", self.url, p.authority),
            None => self.url.to_string(),
        }
    }
}

/// Something bytes go both ways on (plain TCP, or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An upgraded stream: frames in both directions.
pub struct Stream {
    io: Box<dyn Io>,
    frames: FrameBuffer,
}

/// The receiving half of a [`Stream`].
pub struct Reader {
    r: tokio::io::ReadHalf<Box<dyn Io>>,
    frames: FrameBuffer,
}

/// The sending half of a [`Stream`].
pub struct Writer {
    w: tokio::io::WriteHalf<Box<dyn Io>>,
    buf: Vec<u8>,
}

/// Reads an HTTP head (through its blank line); returns it and what followed.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut got = 0;
    loop {
        if got == buf.len() {
            anyhow::bail!("the answer's head is longer than {MAX_HEAD} bytes");
        }
        let n = io.read(&mut buf[got..]).await?;
        if n == 0 {
            anyhow::bail!("the connection closed before an answer");
        }
        got += n;
        if let Some(end) = upgrade::head_end(&buf[..got]) {
            return Ok((buf[..end].to_vec(), buf[end..got].to_vec()));
        }
    }
}

/// Connects, through the proxy if any, and upgrades; errors are one sentence.
pub async fn connect(target: &Target) -> anyhow::Result<Stream> {
    let what = target.describe();
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(target))
        .await
        .map_err(|_| anyhow::anyhow!("no stream to {what} within {} s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| anyhow::anyhow!("cannot open the stream to {what}: {e}"))
}

async fn connect_inner(target: &Target) -> anyhow::Result<Stream> {
    let url = &target.url;
    let tcp = match &target.proxy {
        Some(p) => {
            let mut s = TcpStream::connect(p.authority.as_str()).await?;
            s.write_all(
                upgrade::connect_request(&url.authority(), p.credentials.as_deref()).as_bytes(),
            )
            .await?;
            let (head, _) = read_head(&mut s).await?;
            upgrade::check_connect_response(&head)
                .map_err(|e| anyhow::anyhow!("the proxy refused CONNECT: {e}"))?;
            s
        }
        None => TcpStream::connect(url.authority()).await?,
    };
    let _ = tcp.set_nodelay(true);
    let mut io: Box<dyn Io> = if url.tls {
        Box::new(crate::daemon::tls::connect(&url.host, tcp).await?)
    } else {
        Box::new(tcp)
    };
    let (req, key) = upgrade::request(&url.host_header(), &url.path, rand::random());
    io.write_all(req.as_bytes()).await?;
    let (head, rest) = read_head(&mut io).await?;
    upgrade::check_response(&head, &key)
        .map_err(|e| anyhow::anyhow!("the relay did not upgrade: {e}"))?;
    let mut frames = FrameBuffer::new(Role::Client);
    frames.push(&rest);
    Ok(Stream { io, frames })
}

impl Stream {
    /// Splits into halves that can be used from two tasks.
    pub fn split(self) -> (Reader, Writer) {
        let (r, w) = tokio::io::split(self.io);
        (
            Reader {
                r,
                frames: self.frames,
            },
            Writer {
                w,
                buf: Vec::with_capacity(64 << 10),
            },
        )
    }
}

impl Reader {
    /// The next datagram; `Ok(None)` when the relay closed the stream.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            match self.frames.next_frame()? {
                Some(f) if f.opcode == Opcode::Binary => return Ok(Some(f.payload.to_vec())),
                Some(f) if f.opcode == Opcode::Close => return Ok(None),
                Some(_) => continue,
                None => {}
            }
            let n = self.r.read(self.frames.spare()).await?;
            if n == 0 {
                return Ok(None);
            }
            self.frames.filled(n);
        }
    }

    /// Calls `each` on every datagram that is complete after one read; `Ok(false)` when the
    /// relay closed the stream.
    pub async fn recv_batch(&mut self, mut each: impl FnMut(&[u8])) -> anyhow::Result<bool> {
        let n = self.r.read(self.frames.spare()).await?;
        if n == 0 {
            return Ok(false);
        }
        self.frames.filled(n);
        while let Some(f) = self.frames.next_frame()? {
            match f.opcode {
                Opcode::Binary => each(f.payload),
                Opcode::Close => return Ok(false),
                Opcode::Ping | Opcode::Pong => {}
            }
        }
        Ok(true)
    }
}

impl Writer {
    /// Sends datagrams as frames in one write.
    pub async fn send_all<'a>(
        &mut self,
        datagrams: impl Iterator<Item = &'a [u8]>,
    ) -> anyhow::Result<()> {
        self.buf.clear();
        for d in datagrams {
            // The client masks every frame (RFC 6455 5.3).
            ws::encode(Opcode::Binary, d, Some(rand::random()), &mut self.buf);
        }
        self.w.write_all(&self.buf).await?;
        Ok(())
    }

    /// Sends one datagram.
    pub async fn send(&mut self, d: &[u8]) -> anyhow::Result<()> {
        self.send_all(std::iter::once(d)).await
    }
}
