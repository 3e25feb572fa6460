//! ICE-TCP, passive side (RFC 6544): accepted connections carry STUN, DTLS, RTP and RTCP framed
//! with a 16-bit length each (RFC 4571). Every frame goes through the core exactly like a UDP
//! datagram; replies go back through the connection's bounded send queue
//! ([`super::sockets::TcpOut`]), drained by a writer task.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::run::Shard;
use super::sockets::{Kind, TcpOut};
use crate::sfu::{Path, SocketId, TransportKey, BUFFER_SIZE, MAX_DATAGRAM};

/// A connection that has not been routed to a transport after this many frames is closed
/// (single-port mode: nobody's ICE ufrag).
const MAX_UNROUTED_FRAMES: u32 = 4;
/// How long a new connection may take to send a frame that routes.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

impl Shard {
    /// Accepts connections on a passive TCP candidate's listener.
    pub(super) async fn accept_tcp(
        self: Rc<Self>,
        owner: Option<TransportKey>,
        listener: TcpListener,
    ) {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let Ok(remote) = stream.peer_addr() else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let out = Rc::new(RefCell::new(TcpOut::default()));
                    let id = self
                        .sockets
                        .borrow_mut()
                        .insert(Kind::Tcp(out.clone()), owner);
                    let task = glommio::spawn_local(
                        self.clone().serve_tcp(id, owner, remote, stream, out),
                    );
                    self.sockets.borrow_mut().set_task(id, task);
                }
                Err(e) => {
                    tracing::warn!(shard = self.index, "TCP accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Reads frames from one connection until it closes; a writer task sends its queue.
    async fn serve_tcp(
        self: Rc<Self>,
        id: SocketId,
        owner: Option<TransportKey>,
        remote: std::net::SocketAddr,
        stream: TcpStream,
        out: Rc<RefCell<TcpOut>>,
    ) {
        let stream = Shared(Rc::new(RefCell::new(stream)));
        // Dropped (cancelled) when this task ends or is cancelled.
        let _writer = glommio::spawn_local(write_queue(Shared(stream.0.clone()), out.clone()));
        let path = Path { socket: id, remote };
        let mut input = vec![0u8; READ_CHUNK + MAX_DATAGRAM + 2];
        let mut frame = vec![0u8; BUFFER_SIZE].into_boxed_slice();
        let (mut filled, mut unrouted) = (0usize, 0u32);
        let mut routed = owner.is_some();
        let opened = Instant::now();
        let mut reader = Shared(stream.0.clone());
        loop {
            let read = reader.read(&mut input[filled..]);
            let n = if routed {
                read.await
            } else {
                let left = FIRST_FRAME_TIMEOUT.saturating_sub(opened.elapsed());
                futures_lite::future::or(read, async {
                    glommio::timer::sleep(left).await;
                    Err(std::io::ErrorKind::TimedOut.into())
                })
                .await
            };
            let n = match n {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            filled += n;
            let mut at = 0;
            while filled - at >= 2 {
                let len = usize::from(u16::from_be_bytes([input[at], input[at + 1]]));
                if filled - at < 2 + len {
                    break;
                }
                if len > MAX_DATAGRAM {
                    self.sfu
                        .borrow_mut()
                        .counters_mut()
                        .drop("tcp", "frame_too_long");
                } else {
                    frame[..len].copy_from_slice(&input[at + 2..at + 2 + len]);
                    self.with_core(|sfu, out| {
                        sfu.handle_datagram(owner, path, &mut frame, len, Instant::now(), out)
                    });
                    if !routed {
                        routed = self.sfu.borrow().routes_to(path);
                        unrouted += 1;
                    }
                }
                at += 2 + len;
            }
            input.copy_within(at..filled, 0);
            filled -= at;
            if !routed && unrouted >= MAX_UNROUTED_FRAMES {
                self.sfu
                    .borrow_mut()
                    .counters_mut()
                    .drop("tcp", "unrouted_connection");
                break;
            }
        }
        self.sfu.borrow_mut().path_closed(path);
        self.sockets.borrow_mut().remove(id);
    }
}

/// Sends a connection's queued frames as they come.
async fn write_queue(mut stream: Shared, out: Rc<RefCell<TcpOut>>) {
    let mut chunk = Vec::with_capacity(READ_CHUNK);
    loop {
        let ready = poll_fn(|cx| {
            let mut o = out.borrow_mut();
            if o.closed {
                return Poll::Ready(false);
            }
            if o.queue.is_empty() {
                o.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            chunk.clear();
            let n = o.queue.len().min(READ_CHUNK);
            chunk.extend(o.queue.drain(..n));
            Poll::Ready(true)
        })
        .await;
        if !ready || stream.write_all(&chunk).await.is_err() {
            out.borrow_mut().closed = true;
            return;
        }
    }
}

/// A TCP stream shared by the reader and the writer task (single thread: the borrow lasts only
/// for one poll).
struct Shared(Rc<RefCell<TcpStream>>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}
