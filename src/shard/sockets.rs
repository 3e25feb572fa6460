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
use std::net::{IpAddr, SocketAddr};
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
    /// The local port (UDP sockets; 0 for TCP ones).
    port: u16,
    /// A cascade link socket of per-transport mode: only link datagrams are taken.
    link_only: bool,
}

/// A UDP socket, as the receive loop sees it.
#[derive(Clone, Copy, Debug)]
pub struct Udp {
    pub fd: RawFd,
    /// Its transport (per-transport mode), or none (a shared or link socket).
    pub owner: Option<TransportKey>,
    pub port: u16,
    pub link_only: bool,
}

pub struct Sockets {
    slab: Slab<Entry>,
    owned: HashMap<TransportKey, Vec<SocketId>>,
    readiness: Readiness,
    /// The shard's cascade link port (0: none yet) and its UDP sockets (one per listen
    /// address): fd and whether it is an IPv6 one. Set once, never removed while the shard runs.
    link_port: u16,
    link_fds: Vec<(RawFd, bool)>,
}

impl Sockets {
    pub fn new() -> io::Result<Sockets> {
        Ok(Sockets {
            slab: Slab::new(),
            owned: HashMap::new(),
            readiness: Readiness::new()?,
            link_port: 0,
            link_fds: Vec::new(),
        })
    }

    /// Registers a TCP listener or connection (its task is detached: see the module's note).
    pub fn insert(&mut self, kind: Kind, owner: Option<TransportKey>) -> SocketId {
        let id = self.slab.insert(Entry {
            kind,
            owner,
            port: 0,
            link_only: false,
        }) as SocketId;
        if let Some(key) = owner {
            self.owned.entry(key).or_default().push(id);
        }
        id
    }

    /// Registers a UDP socket and adds it to the shard's epoll set.
    /// `port` is the port it is bound on; `link_only`: see [`Udp::link_only`].
    pub fn insert_udp(
        &mut self,
        socket: socket2::Socket,
        owner: Option<TransportKey>,
        port: u16,
        link_only: bool,
    ) -> io::Result<SocketId> {
        let id = self.slab.vacant_key() as SocketId;
        self.readiness.add(socket.as_raw_fd(), id)?;
        let id = self.insert(Kind::Udp(socket), owner);
        if let Some(e) = self.slab.get_mut(id as usize) {
            e.port = port;
            e.link_only = link_only;
        }
        Ok(id)
    }

    /// A UDP socket's fd, owning transport and port.
    pub fn udp(&self, id: SocketId) -> Option<Udp> {
        match self.slab.get(id as usize) {
            Some(Entry {
                kind: Kind::Udp(socket),
                owner,
                port,
                link_only,
            }) => Some(Udp {
                fd: socket.as_raw_fd(),
                owner: *owner,
                port: *port,
                link_only: *link_only,
            }),
            _ => None,
        }
    }

    /// Makes the UDP sockets `ids` (bound on `port`) the shard's cascade link sockets:
    /// [`Egress::send_to`] from `port` leaves through them.
    pub fn set_link(&mut self, port: u16, ids: &[SocketId]) {
        self.link_port = port;
        self.link_fds = ids
            .iter()
            .filter_map(|&id| match self.slab.get(id as usize) {
                Some(Entry {
                    kind: Kind::Udp(socket),
                    ..
                }) => {
                    let v6 = socket
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .is_some_and(|a| a.is_ipv6());
                    Some((socket.as_raw_fd(), v6))
                }
                _ => None,
            })
            .collect();
    }

    pub fn link_port(&self) -> u16 {
        self.link_port
    }

    /// The link socket that sends to `to`: one of its address family, else (`to` is IPv4) a
    /// dual-stack IPv6 one, to `to`'s IPv4-mapped address.
    fn link_socket(&self, to: SocketAddr) -> Option<(RawFd, SocketAddr)> {
        let v6 = to.is_ipv6();
        if let Some(&(fd, _)) = self.link_fds.iter().find(|&&(_, s)| s == v6) {
            return Some((fd, to));
        }
        match to.ip() {
            IpAddr::V4(ip) if !v6 => {
                let &(fd, _) = self.link_fds.first()?;
                Some((
                    fd,
                    SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), to.port()),
                ))
            }
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
    /// A cascade link's datagram: queued in the turn's batch like a transport's, from the
    /// shard's link socket of `to`'s address family. A port that is not the shard's link port
    /// (or no link socket for the family) is a `no_socket` drop.
    fn send_to(&mut self, local_port: u16, to: SocketAddr, datagram: &[u8]) {
        let found = (local_port != 0 && local_port == self.sockets.link_port)
            .then(|| self.sockets.link_socket(to))
            .flatten();
        let Some((fd, to)) = found else {
            self.no_socket += 1;
            return;
        };
        if self.tx.is_full_for(datagram.len()) {
            let f = self.tx.flush();
            self.count(f);
        }
        self.tx.push(fd, to, datagram);
    }

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

    /// A link datagram leaves from the link socket (batched, sent at `finish`) to its peer; one
    /// from another port, or before the link port is set, is a `no_socket` drop.
    #[test]
    fn send_to_leaves_from_the_link_socket() {
        let mut sockets = Sockets::new().unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let local = socket.local_addr().unwrap().as_socket().unwrap();
        let id = sockets
            .insert_udp(socket, None, local.port(), true)
            .unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let to = peer.local_addr().unwrap();
        let mut tx = TxBatch::new().unwrap();
        {
            let mut egress = SocketEgress::new(&sockets, &mut tx);
            egress.send_to(local.port(), to, b"\x08 early");
            egress.finish();
            assert_eq!((egress.sent, egress.no_socket), (0, 1), "no link port yet");
        }
        sockets.set_link(local.port(), &[id]);
        assert_eq!(sockets.link_port(), local.port());
        let mut egress = SocketEgress::new(&sockets, &mut tx);
        egress.send_to(local.port() ^ 1, to, b"\x08 wrong port");
        egress.send_to(local.port(), to, b"\x08 link");
        assert_eq!(egress.sent, 0, "batched until the turn ends");
        egress.finish();
        assert_eq!((egress.sent, egress.no_socket, egress.bytes), (1, 1, 6));
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"\x08 link"[..], local));
    }

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
