//! The test peers' network: UDP, or ICE-TCP with RFC 4571 framing.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

/// A leg's network: a UDP socket, or a TCP connection to choir's passive candidate with
/// RFC 4571 framing (a 16-bit length before each datagram).
pub enum Net {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        rx: Vec<u8>,
        tx: Vec<u8>,
        remote: SocketAddr,
    },
}

impl Net {
    pub fn send(&mut self, bytes: &[u8], to: SocketAddr) {
        match self {
            Net::Udp(s) => {
                let _ = s.send_to(bytes, to);
            }
            Net::Tcp { tx, .. } => {
                tx.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                tx.extend_from_slice(bytes);
                self.flush();
            }
        }
    }

    pub fn flush(&mut self) {
        if let Net::Tcp { stream, tx, .. } = self {
            while !tx.is_empty() {
                match stream.write(tx) {
                    Ok(n) if n > 0 => {
                        tx.drain(..n);
                    }
                    _ => break,
                }
            }
        }
    }

    /// The next datagram (or frame) received, with its source.
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            Net::Udp(s) => s.recv_from(buf).ok(),
            Net::Tcp {
                stream, rx, remote, ..
            } => {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stream.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    rx.extend_from_slice(&chunk[..n]);
                }
                if rx.len() < 2 {
                    return None;
                }
                let len = usize::from(u16::from_be_bytes([rx[0], rx[1]]));
                if rx.len() < 2 + len {
                    return None;
                }
                buf[..len].copy_from_slice(&rx[2..2 + len]);
                rx.drain(..2 + len);
                Some((len, *remote))
            }
        }
    }
}

/// How a leg reaches choir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Udp,
    /// ICE-TCP: only choir's passive TCP candidate is used.
    Tcp,
}
