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

/// The kernel's ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`), where port-0
/// binds and outgoing connections of every process on the machine (Chromium's, other tests')
/// land; Linux's default when the file cannot be read.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// The lowest port test ranges use: above the well-known and common service ports.
const LOWEST: u16 = 10_000;

/// Whether `port` is free now for UDP and TCP on 127.0.0.1, and on ::1 when this host has IPv6
/// loopback (choir binds both, same number; `--listen-ips 127.0.0.1,::1` tests bind ::1 too).
pub fn port_free(port: u16) -> bool {
    let free_on = |ip: std::net::IpAddr| {
        UdpSocket::bind((ip, port)).is_ok() && std::net::TcpListener::bind((ip, port)).is_ok()
    };
    let v6 = std::net::Ipv6Addr::LOCALHOST.into();
    free_on(std::net::Ipv4Addr::LOCALHOST.into())
        && (UdpSocket::bind((v6, 0)).is_err() || free_on(v6))
}

/// `n` consecutive ports outside the kernel's ephemeral range, every one of them free for UDP
/// and TCP when this returns. The start is pseudo-random per process and call, so that
/// concurrent test processes rarely probe the same ports; a port taken later (a race this
/// cannot close) is skipped by choir in per-transport mode, and single-port mode's start
/// failure is retried by the harness with another range.
pub fn free_port_range(n: u16) -> (u16, u16) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (lo, hi) = ephemeral_range();
    // Candidate starts: [LOWEST, lo - n] below the ephemeral range, [hi + 1, 65535 - n] above.
    let below = u32::from(lo.saturating_sub(n).saturating_sub(LOWEST));
    let above = u32::from(u16::MAX.saturating_sub(n).saturating_sub(hi));
    assert!(
        below + above > 0,
        "no room outside the ephemeral range {lo}-{hi}"
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..500 {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        let seed = std::process::id()
            .wrapping_mul(2_654_435_761)
            .wrapping_add(nanos)
            .wrapping_add(slot.wrapping_mul(40_503))
            .wrapping_mul(2_246_822_519)
            >> 7;
        let k = seed % (below + above);
        let base = if k < below {
            LOWEST + k as u16
        } else {
            hi + 1 + (k - below) as u16
        };
        if (base..base + n).all(port_free) {
            return (base, base + n - 1);
        }
    }
    panic!("no {n} free consecutive ports outside the ephemeral range {lo}-{hi}");
}

/// Whether choir's log says it could not bind a port at start (another process took one of
/// the ports between the probe and choir's bind).
pub fn is_bind_failure(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("cannot bind")
}

/// Datagrams the kernel dropped at the UDP sockets of process `pid` (receive buffer full): the
/// `drops` column of /proc/net/udp{,6} for the sockets among its fds.
pub fn udp_drops(pid: u32) -> u64 {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    (cols.len() > 12 && inodes.contains(cols[9]))
                        .then(|| cols[12].parse::<u64>().unwrap_or(0))
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Open file descriptors of process `pid`, not counting TCP connections (HTTP keep-alive
/// connections come and go with the clients' pools) but counting TCP listeners (choir's passive
/// ICE-TCP candidates).
pub fn open_fds_but_connections(pid: u32) -> usize {
    // Column 3 of /proc/net/tcp: the state, 0A = LISTEN.
    open_fds_except_tcp(pid, |state| state != "0A")
}

/// Open file descriptors of process `pid`, not counting its TCP sockets whose state (column 3
/// of /proc/net/tcp{,6}, hex) `skip` selects.
pub fn open_fds_except_tcp(pid: u32, skip: impl Fn(&str) -> bool) -> usize {
    let skipped: std::collections::HashSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    // Column 9: the inode.
                    (cols.len() > 9 && skip(cols[3])).then(|| cols[9].to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| {
                    let l = l.to_string_lossy();
                    let inode = l.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'));
                    !inode.is_some_and(|i| skipped.contains(i))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
