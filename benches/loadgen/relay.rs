//! The bare UDP relay: the limit beside choir. No ICE, DTLS, SRTP, header rewrite or copy; a
//! packet from a participant's send leg goes to every other participant's recv leg. One thread.
//!
//! - `sockets` (the limit for choir's design): one UDP socket per transport, like choir's
//!   shard, with the same syscall pattern — receive until the socket is empty, one
//!   non-blocking `sendto` per copy from the recv transport's own socket. epoll for readiness.
//! - `shared` (what batching would allow): one UDP socket for every transport, like mediasoup's
//!   WebRtcServer; legs are told apart by source address, datagrams come in with `recvmmsg` and
//!   every copy of a batch goes out in one `sendmmsg`.
//!
//! Driven over stdin, one command a line: `room <P>` makes 2·P legs and answers
//! `ports <first leg token> <port of each leg>...`; `stats` answers `<forwarded> <send_failed>`.
//! A leg learns its client's address from `helo` + its 4-byte token, and echoes `helo`.

use std::collections::HashMap;
use std::io::BufRead;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{SockAddr, Socket};

use crate::sys::{self, Epoll};
use crate::worker::HELLO;

struct Leg {
    /// Its own socket (`sockets` mode).
    socket: Option<Socket>,
    room: usize,
    participant: usize,
    send: bool,
    peer: Option<SockAddr>,
}

/// Token of stdin in the epoll set.
const STDIN: u64 = u64::MAX;

/// Leg token in a hello datagram.
fn hello_token(datagram: &[u8]) -> Option<usize> {
    let token = datagram.strip_prefix(HELLO)?;
    Some(u32::from_be_bytes(token.try_into().ok()?) as usize)
}

struct Relay {
    shared: Option<Socket>,
    legs: Vec<Leg>,
    /// Per room: the recv legs.
    rooms: Vec<Vec<usize>>,
    /// `shared` mode: leg by client address.
    by_addr: HashMap<SocketAddr, usize>,
    forwarded: u64,
    failed: u64,
}

pub fn serve(shared: bool) -> std::io::Result<()> {
    let mut epoll = Epoll::new(1024)?;
    epoll.add(0, STDIN)?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut relay = Relay {
        shared: None,
        legs: Vec::new(),
        rooms: Vec::new(),
        by_addr: HashMap::new(),
        forwarded: 0,
        failed: 0,
    };
    if shared {
        let socket = sys::udp_socket(any, None, sys::RECV_BUFFER, false)?;
        epoll.add(socket.as_raw_fd(), 0)?;
        relay.shared = Some(socket);
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut buf = [0u8; 2048];
    let mut batch = MmsgRelay::new();
    let mut tokens = [0u64; 1024];
    loop {
        let mut count = 0;
        for t in epoll.wait(Duration::from_secs(1)) {
            tokens[count] = t;
            count += 1;
        }
        for &token in &tokens[..count] {
            if token == STDIN {
                let Some(Ok(line)) = lines.next() else {
                    return Ok(());
                };
                relay.command(&line, &epoll)?;
            } else if relay.shared.is_some() {
                batch.run(&mut relay);
            } else {
                relay.receive(token as usize, &mut buf);
            }
        }
    }
}

impl Relay {
    fn command(&mut self, line: &str, epoll: &Epoll) -> std::io::Result<()> {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|p| p.parse::<usize>().ok()),
        ) {
            (Some("room"), Some(p)) => {
                let room = self.rooms.len();
                let mut recv = Vec::new();
                let mut answer = format!("ports {}", self.legs.len());
                for participant in 0..p {
                    for send in [true, false] {
                        let index = self.legs.len();
                        let (socket, port) = match &self.shared {
                            Some(s) => (None, s.local_addr()?.as_socket().map_or(0, |a| a.port())),
                            None => {
                                let any = SocketAddr::from(([127, 0, 0, 1], 0));
                                // Choir's socket buffer size (shard/ports.rs).
                                let s = sys::udp_socket(any, None, 1 << 20, false)?;
                                let port = s.local_addr()?.as_socket().map_or(0, |a| a.port());
                                epoll.add(s.as_raw_fd(), index as u64)?;
                                (Some(s), port)
                            }
                        };
                        answer.push_str(&format!(" {port}"));
                        if !send {
                            recv.push(index);
                        }
                        self.legs.push(Leg {
                            socket,
                            room,
                            participant,
                            send,
                            peer: None,
                        });
                    }
                }
                self.rooms.push(recv);
                println!("{answer}");
            }
            (Some("stats"), _) => println!("{} {}", self.forwarded, self.failed),
            _ => println!("error"),
        }
        Ok(())
    }

    /// `sockets` mode: receives on leg `index`'s socket until it is empty.
    fn receive(&mut self, index: usize, buf: &mut [u8]) {
        let Some(fd) = self.legs[index].socket.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        while let Some((len, from)) = sys::recv_from(fd, buf) {
            let datagram = &buf[..len];
            if hello_token(datagram).is_some() {
                sys::send_to(fd, HELLO, &from);
                self.legs[index].peer = Some(from);
                continue;
            }
            let leg = &self.legs[index];
            if !leg.send {
                continue;
            }
            for &r in &self.rooms[leg.room] {
                let to = &self.legs[r];
                if to.participant == leg.participant {
                    continue;
                }
                let (Some(peer), Some(socket)) = (&to.peer, &to.socket) else {
                    continue;
                };
                if sys::send_to(socket.as_raw_fd(), datagram, peer) {
                    self.forwarded += 1;
                } else {
                    self.failed += 1;
                }
            }
        }
    }
}

const RX: usize = 64;
const TX: usize = 1024;

/// `shared` mode's buffers: a `recvmmsg` batch in, the copies out in `sendmmsg` batches.
struct MmsgRelay {
    bufs: Vec<[u8; 2048]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    out_iovs: Vec<libc::iovec>,
    out_names: Vec<libc::sockaddr_storage>,
    out_hdrs: Vec<libc::mmsghdr>,
}

impl MmsgRelay {
    fn new() -> MmsgRelay {
        // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr are valid values.
        unsafe {
            MmsgRelay {
                bufs: vec![[0; 2048]; RX],
                names: vec![zeroed(); RX],
                iovs: vec![zeroed(); RX],
                hdrs: vec![zeroed(); RX],
                out_iovs: vec![zeroed(); TX],
                out_names: vec![zeroed(); TX],
                out_hdrs: vec![zeroed(); TX],
            }
        }
    }

    /// Receives batches from the shared socket until it is empty, relaying each.
    fn run(&mut self, relay: &mut Relay) {
        let Some(fd) = relay.shared.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        loop {
            for i in 0..RX {
                self.iovs[i] = libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: 2048,
                };
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            // SAFETY: every header points at live buffers owned by `self`.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    RX as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                return;
            }
            let (mut out, mut copies, mut sent) = (0, 0u64, 0u64);
            for i in 0..n as usize {
                let len = self.hdrs[i].msg_len as usize;
                // SAFETY: the kernel wrote a sockaddr of msg_namelen bytes.
                let from =
                    unsafe { SockAddr::new(self.names[i], self.hdrs[i].msg_hdr.msg_namelen) };
                let Some(from_addr) = from.as_socket() else {
                    continue;
                };
                let datagram = &self.bufs[i][..len];
                if let Some(token) = hello_token(datagram) {
                    if let Some(leg) = relay.legs.get_mut(token) {
                        leg.peer = Some(from.clone());
                        relay.by_addr.insert(from_addr, token);
                        sys::send_to(fd, HELLO, &from);
                    }
                    continue;
                }
                let Some(&index) = relay.by_addr.get(&from_addr) else {
                    continue;
                };
                let leg = &relay.legs[index];
                if !leg.send {
                    continue;
                }
                for &r in &relay.rooms[leg.room] {
                    let to = &relay.legs[r];
                    if to.participant == leg.participant {
                        continue;
                    }
                    let Some(peer) = &to.peer else { continue };
                    if out == TX {
                        sent += self.flush(fd, out);
                        out = 0;
                    }
                    // SAFETY: `peer` holds `peer.len()` valid bytes of a sockaddr.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            peer.as_ptr().cast::<u8>(),
                            (&mut self.out_names[out] as *mut libc::sockaddr_storage).cast::<u8>(),
                            peer.len() as usize,
                        );
                    }
                    self.out_iovs[out] = libc::iovec {
                        iov_base: self.bufs[i].as_mut_ptr().cast(),
                        iov_len: len,
                    };
                    let h = &mut self.out_hdrs[out].msg_hdr;
                    h.msg_name = (&mut self.out_names[out] as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = peer.len();
                    h.msg_iov = &mut self.out_iovs[out];
                    h.msg_iovlen = 1;
                    out += 1;
                    copies += 1;
                }
            }
            sent += self.flush(fd, out);
            relay.forwarded += sent;
            relay.failed += copies - sent;
            if (n as usize) < RX {
                return;
            }
        }
    }

    /// Sends copies `[0, count)`; returns how many the kernel took.
    fn flush(&mut self, fd: RawFd, count: usize) -> u64 {
        let mut done = 0;
        while done < count {
            // SAFETY: headers [done, count) point at live buffers owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.out_hdrs[done..].as_mut_ptr(),
                    (count - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
        done as u64
    }
}
