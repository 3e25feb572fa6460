//! Thin Linux wrappers for the load generator and the relay: UDP sockets, epoll, batched
//! receive (`recvmmsg` with kernel receive timestamps), CPU affinity, clocks and /proc readings.
//!
//! Why epoll on raw fds rather than an async runtime: one thread polls thousands of sockets with
//! one `epoll_wait` per round and one `recvmmsg` per ready socket, with no task, waker or
//! allocation per packet, and nothing between the socket and the measurement.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Socket receive buffer asked for (the kernel caps it at net.core.rmem_max).
pub const RECV_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket on 127.0.0.1 (or `bind`'s address), optionally connected to `peer`,
/// with kernel receive timestamps (`SO_TIMESTAMPNS`) when `timestamps`.
pub fn udp_socket(
    bind: SocketAddr,
    peer: Option<SocketAddr>,
    recv_buffer: usize,
    timestamps: bool,
) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(recv_buffer);
    let _ = s.set_send_buffer_size(1 << 20);
    if timestamps {
        let on: libc::c_int = 1;
        // SAFETY: a valid fd and a pointer to a c_int of the given size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    s.bind(&bind.into())?;
    if let Some(peer) = peer {
        s.connect(&peer.into())?;
    }
    Ok(s)
}

/// Sends on a connected socket without blocking; false when the kernel refused it.
pub fn send(fd: RawFd, datagram: &[u8]) -> bool {
    // SAFETY: `datagram` is a live buffer of the given length.
    let n = unsafe {
        libc::send(
            fd,
            datagram.as_ptr().cast(),
            datagram.len(),
            libc::MSG_DONTWAIT,
        )
    };
    n >= 0
}

/// Sends to `to` without blocking; false when the kernel refused it.
pub fn send_to(fd: RawFd, datagram: &[u8], to: &SockAddr) -> bool {
    // SAFETY: live buffers for the duration of the call.
    let n = unsafe {
        libc::sendto(
            fd,
            datagram.as_ptr().cast(),
            datagram.len(),
            libc::MSG_DONTWAIT,
            to.as_ptr().cast(),
            to.len(),
        )
    };
    n >= 0
}

/// Receives one datagram without blocking: (length, source), or `None` when none is queued.
pub fn recv_from(fd: RawFd, buf: &mut [u8]) -> Option<(usize, SockAddr)> {
    // SAFETY: `storage`/`len` describe a sockaddr_storage; `buf` is live.
    unsafe {
        let mut storage: libc::sockaddr_storage = zeroed();
        let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let n = libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        );
        if n < 0 {
            return None;
        }
        Some((n as usize, SockAddr::new(storage, len)))
    }
}

pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
        })
    }

    /// Watches `fd` for input (level-triggered), tagged with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid fds and event pointer.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` (nanosecond resolution through epoll_pwait2, falling back to
    /// epoll_wait's milliseconds) and returns the ready tokens.
    pub fn wait(&mut self, timeout: Duration) -> impl Iterator<Item = u64> + '_ {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` has room for `len` entries; `ts` lives across the call.
        let mut n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            let ms = timeout.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: as above.
            n = unsafe {
                libc::epoll_wait(
                    self.fd,
                    self.events.as_mut_ptr(),
                    self.events.len() as libc::c_int,
                    ms,
                )
            } as libc::c_long;
        }
        let n = n.max(0) as usize;
        self.events[..n].iter().map(|e| e.u64)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}

/// Buffers for one `recvmmsg` call of up to `BATCH` datagrams with their receive timestamps.
pub struct RecvBatch {
    bufs: Vec<[u8; 2048]>,
    ctrl: Vec<[u64; 8]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

pub const BATCH: usize = 64;

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: vec![[0u8; 2048]; BATCH],
            ctrl: vec![[0u64; 8]; BATCH],
            // SAFETY: all-zero iovec / mmsghdr are valid (null pointers, zero lengths).
            iovs: vec![unsafe { zeroed() }; BATCH],
            hdrs: vec![unsafe { zeroed() }; BATCH],
        }
    }

    /// Receives up to [`BATCH`] queued datagrams from `fd` without blocking; returns how many.
    pub fn recv(&mut self, fd: RawFd) -> usize {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: 2048,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrl[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<[u64; 8]>();
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// Datagram `i` of the last call (mutable, for in-place decryption) and its kernel receive
    /// time (CLOCK_REALTIME nanoseconds; 0 when the socket gave none).
    pub fn get(&mut self, i: usize) -> (&mut [u8], u64) {
        let len = self.hdrs[i].msg_len as usize;
        let mut stamp = 0;
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the control buffer was filled by the kernel for this header; the CMSG macros
        // stay within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    stamp = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        (&mut self.bufs[i][..len.min(2048)], stamp)
    }
}

/// CLOCK_REALTIME in nanoseconds (the clock of kernel receive timestamps).
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: a valid clock id and timespec pointer.
    unsafe {
        let mut ts: libc::timespec = zeroed();
        libc::clock_gettime(clock, &mut ts);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays in bounds for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// utime + stime of process `pid` (all threads), in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of a process (sockets, files, io_uring, timers), from /proc.
pub fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Steal and total ticks of the given CPUs, from /proc/stat: time the hypervisor ran something
/// else while these virtual CPUs wanted to run.
pub fn cpu_steal_ticks(cpus: &[usize]) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (mut steal, mut total) = (0, 0);
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(n) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !cpus.contains(&n) {
            continue;
        }
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        total += v.iter().take(8).sum::<u64>();
        steal += v.get(7).copied().unwrap_or(0);
    }
    (steal, total)
}

/// Clock ticks per second (USER_HZ).
pub fn ticks_per_second() -> u64 {
    // SAFETY: plain libc call.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Sum of the kernel's per-socket receive drops for UDP sockets on 127.0.0.1 whose local port
/// satisfies `mine`, from /proc/net/udp (drops: the last column).
pub fn udp_drops(mine: impl Fn(u16) -> bool) -> u64 {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.split(':').nth(1)?, 16).ok()?;
            mine(port).then(|| f.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// The kernel's ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`), where the
/// generator's own sockets (bound to port 0) land; Linux's default when unreadable.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}
