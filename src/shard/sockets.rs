//! A shard's sockets (UDP sockets, TCP listeners, accepted TCP connections) and the egress that
//! writes the core's output on them.
//!
//! UDP: a non-blocking `sendto`; a full socket buffer is a counted drop. TCP: each connection
//! has a bounded send queue drained by its writer task; a frame that does not fit (a slow or
//! stalled reader) is dropped and counted, so no reader can stall the shard.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;

use glommio::Task;
use slab::Slab;

use crate::sfu::{Egress, Path, SocketId, TransportKey};

/// Bytes queued per TCP connection before frames are dropped (≈ 1.5 s of 20 consumers).
pub const TCP_QUEUE: usize = 256 * 1024;

/// The send side of a TCP connection.
#[derive(Default)]
pub struct TcpOut {
    pub queue: VecDeque<u8>,
    pub waker: Option<Waker>,
    pub closed: bool,
}

pub enum Kind {
    Udp(RawFd),
    Tcp(Rc<RefCell<TcpOut>>),
    Listener,
}

struct Entry {
    kind: Kind,
    owner: Option<TransportKey>,
    /// The socket's task (receive loop, accept loop, connection); dropping cancels it.
    task: Option<Task<()>>,
}

#[derive(Default)]
pub struct Sockets {
    slab: Slab<Entry>,
    owned: HashMap<TransportKey, Vec<SocketId>>,
}

impl Sockets {
    /// Registers a socket; its task is attached with [`Sockets::set_task`] once spawned (the
    /// task needs the id).
    pub fn insert(&mut self, kind: Kind, owner: Option<TransportKey>) -> SocketId {
        let id = self.slab.insert(Entry {
            kind,
            owner,
            task: None,
        }) as SocketId;
        if let Some(key) = owner {
            self.owned.entry(key).or_default().push(id);
        }
        id
    }

    pub fn set_task(&mut self, id: SocketId, task: Task<()>) {
        if let Some(e) = self.slab.get_mut(id as usize) {
            e.task = Some(task);
        }
    }

    /// Closes a socket (cancelling its task).
    pub fn remove(&mut self, id: SocketId) {
        if let Some(e) = self.slab.try_remove(id as usize) {
            if let Some(key) = e.owner {
                if let Some(ids) = self.owned.get_mut(&key) {
                    ids.retain(|&i| i != id);
                }
            }
            close(e);
        }
    }

    /// Closes every socket of a transport (per-transport mode).
    pub fn remove_owned(&mut self, key: TransportKey) {
        for id in self.owned.remove(&key).unwrap_or_default() {
            if let Some(e) = self.slab.try_remove(id as usize) {
                close(e);
            }
        }
    }
}

fn close(e: Entry) {
    if let Kind::Tcp(out) = &e.kind {
        let mut out = out.borrow_mut();
        out.closed = true;
        if let Some(w) = out.waker.take() {
            w.wake();
        }
    }
    drop(e.task);
}

/// Writes the core's output on the shard's sockets.
pub struct SocketEgress<'a> {
    pub sockets: &'a Sockets,
    pub sent: u64,
    pub bytes: u64,
    pub udp_failed: u64,
    pub tcp_full: u64,
    pub no_socket: u64,
}

impl<'a> SocketEgress<'a> {
    pub fn new(sockets: &'a Sockets) -> Self {
        SocketEgress {
            sockets,
            sent: 0,
            bytes: 0,
            udp_failed: 0,
            tcp_full: 0,
            no_socket: 0,
        }
    }
}

impl Egress for SocketEgress<'_> {
    fn send(&mut self, path: Path, datagram: &[u8]) {
        let Some(entry) = self.sockets.slab.get(path.socket as usize) else {
            self.no_socket += 1;
            return;
        };
        match &entry.kind {
            Kind::Udp(fd) => {
                let addr = socket2::SockAddr::from(path.remote);
                // SAFETY: `fd` is an open UDP socket owned by this shard; the pointers and
                // lengths describe live buffers for the duration of the call.
                let n = unsafe {
                    libc::sendto(
                        *fd,
                        datagram.as_ptr().cast(),
                        datagram.len(),
                        libc::MSG_DONTWAIT,
                        addr.as_ptr().cast(),
                        addr.len(),
                    )
                };
                if n < 0 {
                    self.udp_failed += 1;
                    return;
                }
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
            }
            Kind::Listener => {
                self.no_socket += 1;
                return;
            }
        }
        self.sent += 1;
        self.bytes += datagram.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP connection whose reader stalls: frames queue up to [`TCP_QUEUE`], then each one
    /// that does not fit is dropped and counted; UDP sockets are unaffected.
    #[test]
    fn a_full_tcp_queue_drops_and_counts() {
        let mut sockets = Sockets::default();
        let out = Rc::new(RefCell::new(TcpOut::default()));
        let tcp = sockets.insert(Kind::Tcp(out.clone()), Some(7));
        let remote = "127.0.0.1:9".parse().unwrap();
        let datagram = [0x80u8; 1000];
        let mut egress = SocketEgress::new(&sockets);
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
