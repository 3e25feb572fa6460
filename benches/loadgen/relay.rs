//! The bare UDP relay: the limit beside choir. Same shape as choir's media plane — one UDP
//! socket per transport, a packet arriving on a participant's send socket is sent from every
//! other participant's recv socket — and the same syscall pattern as choir's shard (one
//! non-blocking receive per datagram until the socket is empty, one non-blocking `sendto` per
//! copy), but no ICE, DTLS, SRTP, header rewrite or copy. One thread, epoll.
//!
//! Driven over stdin, one command a line: `room <P>` binds 2·P sockets on 127.0.0.1 and answers
//! `ports <send0> <recv0> <send1> <recv1> ...`; `stats` answers `<forwarded> <send_failed>`.
//! A socket learns its client's address from a `helo` datagram, which it echoes.

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use socket2::{SockAddr, Socket};

use crate::sys::{self, Epoll};
use crate::worker::HELLO;

struct Transport {
    socket: Socket,
    room: usize,
    participant: usize,
    send: bool,
    peer: Option<SockAddr>,
}

/// Token of stdin in the epoll set.
const STDIN: u64 = u64::MAX;

pub fn serve() -> std::io::Result<()> {
    let mut epoll = Epoll::new(1024)?;
    epoll.add(0, STDIN)?;
    let mut transports: Vec<Transport> = Vec::new();
    // Per room: the recv transport of each participant.
    let mut rooms: Vec<Vec<usize>> = Vec::new();
    let (mut forwarded, mut failed) = (0u64, 0u64);
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut buf = [0u8; 2048];
    let mut tokens = [0u64; 1024];
    loop {
        let mut count = 0;
        for t in epoll.wait(std::time::Duration::from_secs(1)) {
            tokens[count] = t;
            count += 1;
        }
        for &token in &tokens[..count] {
            if token == STDIN {
                let Some(Ok(line)) = lines.next() else {
                    return Ok(());
                };
                let mut words = line.split_whitespace();
                match (
                    words.next(),
                    words.next().and_then(|p| p.parse::<usize>().ok()),
                ) {
                    (Some("room"), Some(p)) => {
                        let room = rooms.len();
                        let mut recv = Vec::new();
                        let mut ports = String::from("ports");
                        for participant in 0..p {
                            for send in [true, false] {
                                let bind = SocketAddr::from(([127, 0, 0, 1], 0));
                                // Choir's socket buffer size (shard/ports.rs).
                                let socket = sys::udp_socket(bind, None, 1 << 20, false)?;
                                let port = socket.local_addr()?.as_socket().map_or(0, |a| a.port());
                                ports.push_str(&format!(" {port}"));
                                let index = transports.len();
                                epoll.add(socket.as_raw_fd(), index as u64)?;
                                if !send {
                                    recv.push(index);
                                }
                                transports.push(Transport {
                                    socket,
                                    room,
                                    participant,
                                    send,
                                    peer: None,
                                });
                            }
                        }
                        rooms.push(recv);
                        println!("{ports}");
                    }
                    (Some("stats"), _) => println!("{forwarded} {failed}"),
                    _ => println!("error"),
                }
                continue;
            }
            let index = token as usize;
            let fd: RawFd = transports[index].socket.as_raw_fd();
            // Like a glommio receive loop: receive until the socket is empty.
            while let Some((len, from)) = sys::recv_from(fd, &mut buf) {
                let datagram = &buf[..len];
                if datagram == HELLO {
                    sys::send_to(fd, HELLO, &from);
                    transports[index].peer = Some(from);
                    continue;
                }
                let t = &transports[index];
                if !t.send {
                    continue;
                }
                for &r in &rooms[t.room] {
                    let to = &transports[r];
                    if to.participant == t.participant {
                        continue;
                    }
                    let Some(peer) = &to.peer else { continue };
                    if sys::send_to(to.socket.as_raw_fd(), datagram, peer) {
                        forwarded += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
        }
    }
}
