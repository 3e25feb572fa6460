//! A shard's sockets (UDP sockets, TCP listeners, accepted TCP connections) and the egress that
//! writes the core's output on them.
//!
//! UDP sockets are owned here and registered in the shard's epoll set ([`Readiness`]) for as long
//! as they are open. UDP sends are queued in the shard's [`TxBatch`] and leave together when the
//! loop turn (or command, or timer tick) ends; a full socket buffer is a counted drop. TCP: each
//! connection has a bounded send queue drained by its writer task; a frame that does not fit (a
//! slow or stalled reader) is dropped and counted, so no reader can stall the shard.
//!
//! No task is ever cancelled: glommio 0.9 never frees a task cancelled by dropping its handle
//! (about 350 bytes per ICE-TCP listener, i.e. per closed transport). Closing a TCP socket here
//! shuts it down instead, so that its (detached) task sees the end and returns.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::Waker;

use slab::Slab;

use super::batch::{Flushed, TxBatch};
use super::poll::Readiness;
use crate::sfu::{Egress, Path, SocketId, TransportKey};

/// Bytes queued per TCP connection before frames are dropped (≈ 1.5 s of 20 consumers).
pub const TCP_QUEUE: usize = 256 * 1024;

/// The send side of a TCP connection.
pub struct TcpOut {
    pub queue: VecDeque<u8>,
    pub waker: Option<Waker>,
    /// No more frames are written (the connection failed or is being closed).
    pub closed: bool,
    /// The shard closed the connection (its entry is gone): its task must just return.
    pub removed: bool,
    /// The connection's socket, shut down when the shard closes it.
    fd: RawFd,
}

impl TcpOut {
    pub fn new(fd: RawFd) -> TcpOut {
        TcpOut {
            queue: VecDeque::new(),
            waker: None,
            closed: false,
            removed: false,
            fd,
        }
    }
}

pub enum Kind {
    /// Received by the shard's loop (see [`super::poll`]).
    Udp(socket2::Socket),
    Tcp(Rc<RefCell<TcpOut>>),
    /// A TCP listener (owned by its accept task) and the flag that tells the task to return.
    Listener {
        fd: RawFd,
        closed: Rc<Cell<bool>>,
    },
}

struct Entry {
    kind: Kind,
    owner: Option<TransportKey>,
}

pub struct Sockets {
    slab: Slab<Entry>,
    owned: HashMap<TransportKey, Vec<SocketId>>,
    readiness: Readiness,
}

impl Sockets {
    pub fn new() -> io::Result<Sockets> {
        Ok(Sockets {
            slab: Slab::new(),
            owned: HashMap::new(),
            readiness: Readiness::new()?,
        })
    }

    /// Registers a TCP listener or connection (its task is detached: see the module's note).
    pub fn insert(&mut self, kind: Kind, owner: Option<TransportKey>) -> SocketId {
        let id = self.slab.insert(Entry { kind, owner }) as SocketId;
        if let Some(key) = owner {
            self.owned.entry(key).or_default().push(id);
        }
        id
    }

    /// Registers a UDP socket and adds it to the shard's epoll set.
    pub fn insert_udp(
        &mut self,
        socket: socket2::Socket,
        owner: Option<TransportKey>,
    ) -> io::Result<SocketId> {
        let id = self.slab.vacant_key() as SocketId;
        self.readiness.add(socket.as_raw_fd(), id)?;
        Ok(self.insert(Kind::Udp(socket), owner))
    }

    /// A UDP socket's fd and owning transport.
    pub fn udp(&self, id: SocketId) -> Option<(RawFd, Option<TransportKey>)> {
        match self.slab.get(id as usize) {
            Some(Entry {
                kind: Kind::Udp(socket),
                owner,
                ..
            }) => Some((socket.as_raw_fd(), *owner)),
            _ => None,
        }
    }

    pub fn readiness(&mut self) -> &mut Readiness {
        &mut self.readiness
    }

    /// Closes a socket (a TCP one is shut down: its task returns).
    pub fn remove(&mut self, id: SocketId) {
        if let Some(e) = self.slab.try_remove(id as usize) {
            if let Some(key) = e.owner {
                if let Some(ids) = self.owned.get_mut(&key) {
                    ids.retain(|&i| i != id);
                }
            }
            self.close(e);
        }
    }

    /// Closes every socket of a transport (per-transport mode).
    pub fn remove_owned(&mut self, key: TransportKey) {
        for id in self.owned.remove(&key).unwrap_or_default() {
            if let Some(e) = self.slab.try_remove(id as usize) {
                self.close(e);
            }
        }
    }

    fn close(&self, e: Entry) {
        match &e.kind {
            Kind::Tcp(out) => {
                let mut out = out.borrow_mut();
                out.closed = true;
                out.removed = true;
                if let Some(w) = out.waker.take() {
                    w.wake();
                }
                // The fd stays open until the connection's tasks have returned (they own it);
                // its reads and writes now end at once.
                // SAFETY: plain syscall on a socket that is still open (see above).
                unsafe { libc::shutdown(out.fd, libc::SHUT_RDWR) };
            }
            // Out of the epoll set before the fd is closed (when `e` drops).
            Kind::Udp(socket) => self.readiness.remove(socket.as_raw_fd()),
            Kind::Listener { fd, closed } => {
                closed.set(true);
                // Ends the pending accept with an error; the task then returns and closes it.
                // SAFETY: as above (the accept task owns the fd and has not returned).
                unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
            }
        }
    }
}

/// Writes the core's output on the shard's sockets: UDP into the turn's [`TxBatch`] (sent by
/// [`SocketEgress::finish`], or earlier when the batch is full), TCP into the connection's queue.
pub struct SocketEgress<'a> {
    pub sockets: &'a Sockets,
    tx: &'a mut TxBatch,
    pub sent: u64,
    pub bytes: u64,
    pub udp_failed: u64,
    pub tcp_full: u64,
    pub no_socket: u64,
}

impl<'a> SocketEgress<'a> {
    pub fn new(sockets: &'a Sockets, tx: &'a mut TxBatch) -> Self {
        SocketEgress {
            sockets,
            tx,
            sent: 0,
            bytes: 0,
            udp_failed: 0,
            tcp_full: 0,
            no_socket: 0,
        }
    }

    fn count(&mut self, f: Flushed) {
        self.sent += f.sent;
        self.bytes += f.bytes;
        self.udp_failed += f.failed;
    }

    /// Sends what is queued (the end of a loop turn, command or timer tick).
    pub fn finish(&mut self) {
        let f = self.tx.flush();
        self.count(f);
    }
}

impl Egress for SocketEgress<'_> {
    fn send(&mut self, path: Path, datagram: &[u8]) {
        let Some(entry) = self.sockets.slab.get(path.socket as usize) else {
            self.no_socket += 1;
            return;
        };
        match &entry.kind {
            Kind::Udp(socket) => {
                if self.tx.is_full_for(datagram.len()) {
                    let f = self.tx.flush();
                    self.count(f);
                }
                // Counted as sent (or failed) when the batch is flushed.
                self.tx.push(socket.as_raw_fd(), path.remote, datagram);
            }
            Kind::Tcp(out) => {
                // RFC 4571: a 16-bit length, then the datagram.
                let mut out = out.borrow_mut();
                let Ok(len) = u16::try_from(datagram.len()) else {
                    return;
                };
                if out.closed || out.queue.len() + 2 + datagram.len() > TCP_QUEUE {
                    self.tcp_full += 1;
                    return;
                }
                out.queue.extend(len.to_be_bytes());
                out.queue.extend(datagram);
                if let Some(w) = out.waker.take() {
                    w.wake();
                }
                self.sent += 1;
                self.bytes += datagram.len() as u64;
            }
            Kind::Listener { .. } => self.no_socket += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP connection whose reader stalls: frames queue up to [`TCP_QUEUE`], then each one
    /// that does not fit is dropped and counted; UDP sockets are unaffected.
    #[test]
    fn a_full_tcp_queue_drops_and_counts() {
        let mut sockets = Sockets::new().unwrap();
        let out = Rc::new(RefCell::new(TcpOut::new(-1)));
        let tcp = sockets.insert(Kind::Tcp(out.clone()), Some(7));
        let remote = "127.0.0.1:9".parse().unwrap();
        let datagram = [0x80u8; 1000];
        let mut tx = TxBatch::new().unwrap();
        let mut egress = SocketEgress::new(&sockets, &mut tx);
        for _ in 0..1000 {
            egress.send(
                Path {
                    socket: tcp,
                    remote,
                },
                &datagram,
            );
        }
        let queued = out.borrow().queue.len();
        assert!(queued <= TCP_QUEUE && queued > TCP_QUEUE - 1002, "{queued}");
        assert_eq!(egress.sent as usize, queued / 1002);
        assert_eq!(egress.tcp_full, 1000 - egress.sent);
        // RFC 4571 framing: length, then the datagram.
        {
            let q = &out.borrow().queue;
            assert_eq!((q[0], q[1], q[2]), (0x03, 0xe8, 0x80));
        }
        sockets.remove_owned(7);
        assert!(
            out.borrow().closed,
            "closing the transport closes its connections"
        );
    }
}
