//! ICE-TCP, passive side (RFC 6544): accepted connections carry STUN, DTLS, RTP and RTCP framed
//! with a 16-bit length each (RFC 4571). Every frame goes through the core exactly like a UDP
//! datagram; replies go back through the connection's bounded send queue
//! ([`super::sockets::TcpOut`]), drained by a writer task.
//!
//! Connections cost a socket and a task each, and anyone can open them, so they are bounded:
//! - a connection is **validated** once ICE has accepted a STUN request on it (the right ufrag
//!   and password: its transport is known); one not validated within [`STUN_DEADLINE`], or
//!   after [`MAX_UNVALIDATED_FRAMES`] frames, is closed (`tcp.stun_timeout`,
//!   `tcp.unrouted_connection`);
//! - a listener holds at most [`MAX_PENDING_OWN`] (a transport's own port) or
//!   [`MAX_PENDING_SHARED`] (a shard's single port) connections not validated yet; more are
//!   closed at once (`tcp.too_many_pending`);
//! - a transport has at most [`MAX_PER_TRANSPORT`] validated connections; a further one is
//!   closed when it validates (`tcp.too_many_connections`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::run::Shard;
use super::sockets::{Kind, TcpOut};
use crate::sfu::{Path, SocketId, TransportKey, BUFFER_SIZE, MAX_DATAGRAM};

/// A connection not validated after this many frames is closed.
pub const MAX_UNVALIDATED_FRAMES: u32 = 8;
/// How long a new connection may take to send a valid STUN request.
pub const STUN_DEADLINE: Duration = Duration::from_secs(5);
/// Connections not validated yet, per listener: a transport's own, a shard's shared one.
pub const MAX_PENDING_OWN: u32 = 16;
pub const MAX_PENDING_SHARED: u32 = 1024;
/// Validated connections per transport (a browser uses one per candidate pair it checks).
pub const MAX_PER_TRANSPORT: u32 = 8;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// This shard's validated connections per transport id (ids are never reused, unlike
    /// transport keys). The shard's thread is its only user.
    static PER_TRANSPORT: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

/// A connection's place in its listener's count of connections not validated yet.
struct Pending(Option<Rc<Cell<u32>>>);

impl Pending {
    fn release(&mut self) {
        if let Some(count) = self.0.take() {
            count.set(count.get() - 1);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.release();
    }
}

/// A validated connection's place among its transport's.
struct Slot(String);

impl Slot {
    /// A place for one more connection of transport `id`, unless it holds its cap.
    fn take(id: &str) -> Option<Slot> {
        PER_TRANSPORT.with(|m| {
            let mut m = m.borrow_mut();
            let n = m.entry(id.to_string()).or_insert(0);
            (*n < MAX_PER_TRANSPORT).then(|| {
                *n += 1;
                Slot(id.to_string())
            })
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // `try_with`: a task dropped while the thread ends finds the map gone.
        let _ = PER_TRANSPORT.try_with(|m| {
            let mut m = m.borrow_mut();
            if let Some(n) = m.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.0);
                }
            }
        });
    }
}

impl Shard {
    /// Accepts connections on a passive TCP candidate's listener.
    pub(super) async fn accept_tcp(
        self: Rc<Self>,
        owner: Option<TransportKey>,
        listener: TcpListener,
        closed: Rc<Cell<bool>>,
    ) {
        let pending = Rc::new(Cell::new(0u32));
        let max_pending = match owner {
            Some(_) => MAX_PENDING_OWN,
            None => MAX_PENDING_SHARED,
        };
        loop {
            let accepted = listener.accept().await;
            if closed.get() {
                // The shard closed the listener (shut it down): dropping it closes the fd.
                return;
            }
            match accepted {
                Ok(stream) => {
                    let Ok(remote) = stream.peer_addr() else {
                        continue;
                    };
                    if pending.get() >= max_pending {
                        self.sfu
                            .borrow_mut()
                            .counters_mut()
                            .drop("tcp", "too_many_pending");
                        continue;
                    }
                    pending.set(pending.get() + 1);
                    let place = Pending(Some(pending.clone()));
                    let _ = stream.set_nodelay(true);
                    let out = Rc::new(RefCell::new(TcpOut::new(stream.as_raw_fd())));
                    let id = self
                        .sockets
                        .borrow_mut()
                        .insert(Kind::Tcp(out.clone()), owner);
                    // Detached: it returns when the connection ends or the shard shuts it
                    // down (see `super::sockets`).
                    glommio::spawn_local(
                        self.clone()
                            .serve_tcp(id, owner, remote, stream, out, place),
                    )
                    .detach();
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
        mut pending: Pending,
    ) {
        let fd = stream.as_raw_fd();
        let stream = Shared(Rc::new(RefCell::new(stream)));
        // Detached: it returns once `out` is closed (below, or by the shard).
        glommio::spawn_local(write_queue(Shared(stream.0.clone()), out.clone())).detach();
        let path = Path { socket: id, remote };
        let mut input = vec![0u8; READ_CHUNK + MAX_DATAGRAM + 2];
        let mut frame = vec![0u8; BUFFER_SIZE].into_boxed_slice();
        let (mut filled, mut unvalidated) = (0usize, 0u32);
        // Held while the connection lives, once validated.
        let mut slot: Option<Slot> = None;
        let opened = Instant::now();
        let mut reader = Shared(stream.0.clone());
        loop {
            let read = reader.read(&mut input[filled..]);
            let n = if slot.is_some() {
                read.await
            } else {
                let left = STUN_DEADLINE.saturating_sub(opened.elapsed());
                futures_lite::future::or(read, async {
                    glommio::timer::sleep(left).await;
                    Err(std::io::ErrorKind::TimedOut.into())
                })
                .await
            };
            let n = match n {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    self.sfu
                        .borrow_mut()
                        .counters_mut()
                        .drop("tcp", "stun_timeout");
                    break;
                }
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
                    if slot.is_none() {
                        unvalidated += 1;
                        let transport = self.sfu.borrow().validated_by(owner, path);
                        if let Some(transport) = transport {
                            pending.release();
                            match Slot::take(&transport) {
                                Some(s) => slot = Some(s),
                                None => {
                                    self.sfu
                                        .borrow_mut()
                                        .counters_mut()
                                        .drop("tcp", "too_many_connections");
                                    break;
                                }
                            }
                        }
                    }
                }
                at += 2 + len;
            }
            input.copy_within(at..filled, 0);
            filled -= at;
            if slot.is_none() && unvalidated >= MAX_UNVALIDATED_FRAMES {
                self.sfu
                    .borrow_mut()
                    .counters_mut()
                    .drop("tcp", "unrouted_connection");
                break;
            }
        }
        let removed = {
            let mut o = out.borrow_mut();
            o.closed = true;
            if let Some(w) = o.waker.take() {
                w.wake();
            }
            o.removed
        };
        // A writer stuck on a stalled peer gives up at once (the fd is open: `stream` is ours).
        // SAFETY: plain syscall on an open socket.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        // Closed by the shard (its transport closed): the entry, and maybe the id, are gone.
        if !removed {
            self.sfu.borrow_mut().path_closed(path);
            self.sockets.borrow_mut().remove(id);
        }
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
