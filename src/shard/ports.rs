//! Binding RTC sockets: a UDP socket and/or a passive TCP listener per listen address, on one
//! port number. Per-transport mode draws that port from the shard's slice of the range;
//! single-port mode binds the shard's fixed port once.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sfu::api::ApiError;

/// Socket buffer sizes for RTC sockets: room for bursts of a few hundred packets.
const SOCKET_BUFFER: usize = 1 << 20;
const TCP_BACKLOG: i32 = 128;

/// How a shard's RTC ports are used (`--port-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortMode {
    /// One port per transport, from the shard's slice of the range.
    PerTransport,
    /// One UDP and one TCP port per shard: RTC_MIN_PORT + shard index.
    Single,
}

/// What to bind on a port.
#[derive(Clone, Debug)]
pub struct Listen {
    pub ips: Vec<IpAddr>,
    pub udp: bool,
    pub tcp: bool,
}

/// Sockets bound on one port: per listen address, a UDP socket and a TCP listener (as enabled).
#[derive(Debug)]
pub struct Bound {
    pub port: u16,
    pub udp: Vec<Socket>,
    pub tcp: Vec<Socket>,
}

impl Listen {
    /// Binds everything on `port`, or nothing.
    pub fn bind(&self, port: u16) -> io::Result<Bound> {
        let mut bound = Bound {
            port,
            udp: Vec::new(),
            tcp: Vec::new(),
        };
        // "::" alone takes IPv4 too (dual stack); beside an IPv4 address it must not.
        let only_v6 = self.ips.iter().any(IpAddr::is_ipv4);
        for &ip in &self.ips {
            let addr = SocketAddr::new(ip, port);
            if self.udp {
                bound.udp.push(bind_udp(addr, only_v6)?);
            }
            if self.tcp {
                bound.tcp.push(bind_tcp(addr, only_v6)?);
            }
        }
        Ok(bound)
    }
}

/// Per-transport mode: the shard's slice of the port range.
pub struct Ports {
    listen: Listen,
    first: u16,
    last: u16,
    next: u16,
    in_use: HashSet<u16>,
    /// The shard's cascade link port, once bound ([`Ports::bind_link`]): not a transport's, so
    /// not counted in [`Ports::in_use`], and never released while the shard runs.
    link: Option<u16>,
}

impl Ports {
    pub fn new(listen: Listen, (first, last): (u16, u16)) -> Self {
        Ports {
            listen,
            first,
            last,
            next: first,
            in_use: HashSet::new(),
            link: None,
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// Binds the next free port of the slice (round robin, so a just-released port is reused
    /// last). A port taken by another process is skipped.
    pub fn bind(&mut self) -> Result<Bound, ApiError> {
        let listen = self.listen.clone();
        let bound = self.bind_with(&listen)?;
        self.in_use.insert(bound.port);
        Ok(bound)
    }

    /// Binds the shard's cascade link port (per-transport mode): UDP only, the next free port
    /// of the slice, like a transport's, but held until the shard stops.
    pub fn bind_link(&mut self) -> Result<Bound, ApiError> {
        let listen = Listen {
            udp: true,
            tcp: false,
            ..self.listen.clone()
        };
        let bound = self.bind_with(&listen)?;
        self.link = Some(bound.port);
        Ok(bound)
    }

    fn bind_with(&mut self, listen: &Listen) -> Result<Bound, ApiError> {
        let size = u32::from(self.last - self.first) + 1;
        for _ in 0..size {
            let port = self.next;
            self.next = if port == self.last {
                self.first
            } else {
                port + 1
            };
            if self.in_use.contains(&port) || self.link == Some(port) {
                continue;
            }
            match listen.bind(port) {
                Ok(bound) => return Ok(bound),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    return Err(ApiError::unavailable(format!(
                        "cannot bind RTC sockets on port {port}: {e}"
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

fn new_socket(addr: SocketAddr, ty: Type, protocol: Protocol, only_v6: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bind_udp(addr: SocketAddr, only_v6: bool) -> io::Result<Socket> {
    let socket = new_socket(addr, Type::DGRAM, Protocol::UDP, only_v6)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn bind_tcp(addr: SocketAddr, only_v6: bool) -> io::Result<Socket> {
    let socket = new_socket(addr, Type::STREAM, Protocol::TCP, only_v6)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_udp_and_tcp_within_the_slice_and_reports_exhaustion() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let base = 47_000 + (std::process::id() % 1000) as u16 * 3;
        let listen = Listen {
            ips: vec![ip],
            udp: true,
            tcp: true,
        };
        let mut ports = Ports::new(listen, (base, base + 2));
        let mut held = Vec::new();
        while let Ok(bound) = ports.bind() {
            assert!((base..=base + 2).contains(&bound.port));
            assert_eq!((bound.udp.len(), bound.tcp.len()), (1, 1));
            held.push(bound);
        }
        assert!(held.len() <= 3);
        let err = ports.bind().unwrap_err();
        assert_eq!(err.status, 503);
        assert!(err.message.contains("no free RTC port"), "{}", err.message);
        let bound = held.pop().unwrap();
        let port = bound.port;
        drop(bound);
        ports.release(port);
        assert_eq!(ports.bind().unwrap().port, port);
    }

    /// The link port: UDP only, from the slice, skipped by transports, not counted as theirs.
    #[test]
    fn the_link_port_is_taken_from_the_slice_but_is_no_transports() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        // Above the usual ephemeral range (32768-60999).
        let base = 61_500 + (std::process::id() % 1000) as u16 * 2;
        let listen = Listen {
            ips: vec![ip],
            udp: true,
            tcp: true,
        };
        let mut ports = Ports::new(listen, (base, base + 1));
        let link = ports.bind_link().unwrap();
        assert_eq!((link.udp.len(), link.tcp.len()), (1, 0));
        assert_eq!(ports.in_use(), 0);
        let transport = ports.bind().unwrap();
        assert_ne!(transport.port, link.port);
        assert_eq!(ports.in_use(), 1);
        assert_eq!(
            ports.bind().unwrap_err().status,
            503,
            "the link port is held"
        );
    }
}
