//! A shard's slice of the RTC port range: binds a UDP socket on a free port of the slice.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use crate::api::ApiError;

/// Socket buffer sizes for RTC sockets: room for bursts of a few hundred packets.
const SOCKET_BUFFER: usize = 1 << 20;

pub struct Ports {
    listen_ip: IpAddr,
    first: u16,
    last: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl Ports {
    pub fn new(listen_ip: IpAddr, (first, last): (u16, u16)) -> Self {
        Ports {
            listen_ip,
            first,
            last,
            next: first,
            in_use: HashSet::new(),
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// Binds a non-blocking UDP socket on the next free port of the slice (round robin, so a
    /// just-released port is reused last). A port taken by another process is skipped.
    pub fn bind(&mut self) -> Result<(u16, Socket), ApiError> {
        let size = u32::from(self.last - self.first) + 1;
        for _ in 0..size {
            let port = self.next;
            self.next = if port == self.last {
                self.first
            } else {
                port + 1
            };
            if self.in_use.contains(&port) {
                continue;
            }
            match bind_udp(SocketAddr::new(self.listen_ip, port)) {
                Ok(socket) => {
                    self.in_use.insert(port);
                    return Ok((port, socket));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    return Err(ApiError::unavailable(format!(
                        "cannot bind an RTC socket on port {port}: {e}"
                    )))
                }
            }
        }
        Err(ApiError::unavailable(format!(
            "no free RTC port: all {size} ports of this shard's slice {}-{} are in use",
            self.first, self.last
        )))
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // "::" also receives IPv4 (dual stack).
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_within_the_slice_and_reports_exhaustion() {
        // Find 3 consecutive free ports by binding in a high range.
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let base = 47_000 + (std::process::id() % 1000) as u16 * 3;
        let mut ports = Ports::new(ip, (base, base + 2));
        let mut held = Vec::new();
        while let Ok((port, socket)) = ports.bind() {
            assert!((base..=base + 2).contains(&port));
            held.push((port, socket));
        }
        assert!(held.len() <= 3);
        let err = ports.bind().unwrap_err();
        assert_eq!(err.status, 503);
        assert!(err.message.contains("no free RTC port"), "{}", err.message);
        let (port, socket) = held.pop().unwrap();
        drop(socket);
        ports.release(port);
        assert_eq!(ports.bind().unwrap().0, port);
    }
}
