//! The shard's datagram batches, made once when the shard starts: `recvmmsg` into buffers the
//! shard owns, and the copies a loop turn produces, sent together at the end of the turn.
//!
//! Sending: each queued datagram keeps its socket and destination; [`TxBatch::flush`] writes
//! them all with one `io_uring_enter` (a `SENDMSG` per datagram, `MSG_DONTWAIT`, on a private
//! ring), whichever sockets they leave from. A full socket buffer fails that one send (EAGAIN),
//! counted as a drop; nothing waits.

use std::io;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};
use socket2::SockAddr;

use crate::sfu::{BUFFER_SIZE, MAX_DATAGRAM};

/// Datagrams taken from one socket per `recvmmsg`: a short batch means the socket is empty.
pub const RX_BATCH: usize = 32;

/// `recvmmsg` buffers: [`RX_BATCH`] datagram buffers of [`BUFFER_SIZE`] bytes, their source
/// addresses and headers.
pub struct RxBatch {
    bufs: Box<[[u8; BUFFER_SIZE]; RX_BATCH]>,
    names: Box<[libc::sockaddr_storage; RX_BATCH]>,
    iovs: Box<[libc::iovec; RX_BATCH]>,
    hdrs: Box<[libc::mmsghdr; RX_BATCH]>,
}

/// One received datagram: its buffer (room for [`BUFFER_SIZE`] bytes), length and sender.
pub struct Received<'a> {
    pub buf: &'a mut [u8],
    pub len: usize,
    pub remote: Option<SocketAddr>,
    /// Longer than [`MAX_DATAGRAM`] (cut short by the kernel or the buffer).
    pub too_long: bool,
}

impl Default for RxBatch {
    fn default() -> Self {
        // SAFETY: all-zero sockaddr_storage, iovec and mmsghdr are valid values.
        unsafe {
            RxBatch {
                bufs: Box::new([[0; BUFFER_SIZE]; RX_BATCH]),
                names: Box::new(zeroed()),
                iovs: Box::new(zeroed()),
                hdrs: Box::new(zeroed()),
            }
        }
    }
}

impl RxBatch {
    /// Receives up to [`RX_BATCH`] datagrams from `fd` without blocking; returns how many.
    pub fn recv(&mut self, fd: RawFd) -> usize {
        for i in 0..RX_BATCH {
            // One byte more than the largest datagram, to tell a too-long one apart.
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM + 1,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        // SAFETY: every header points at live buffers of the sizes given, owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                RX_BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// The `i`th datagram of the last [`RxBatch::recv`].
    pub fn get(&mut self, i: usize) -> Received<'_> {
        let hdr = &self.hdrs[i];
        let len = hdr.msg_len as usize;
        let too_long = len > MAX_DATAGRAM || hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        // SAFETY: the kernel wrote `msg_namelen` bytes of a socket address into `names[i]`.
        let remote =
            unsafe { SockAddr::new(self.names[i], hdr.msg_hdr.msg_namelen as libc::socklen_t) }
                .as_socket();
        Received {
            buf: &mut self.bufs[i][..],
            len: len.min(MAX_DATAGRAM),
            remote,
            too_long,
        }
    }
}

/// Datagrams queued per turn before a flush is forced.
pub const TX_BATCH: usize = 256;
/// Bytes of queued datagrams before a flush is forced (SRTP audio is ~150 bytes a copy).
const TX_ARENA: usize = 128 * 1024;

/// What a flush did.
#[derive(Default, Clone, Copy, Debug)]
pub struct Flushed {
    pub sent: u64,
    pub bytes: u64,
    pub failed: u64,
}

/// The copies of one loop turn, waiting to be sent.
pub struct TxBatch {
    ring: IoUring,
    /// Measurement only (`CHOIR_TX=per-copy`): one `sendmsg` per datagram instead.
    per_copy: bool,
    arena: Box<[u8; TX_ARENA]>,
    used: usize,
    len: usize,
    fds: Box<[RawFd; TX_BATCH]>,
    names: Box<[libc::sockaddr_storage; TX_BATCH]>,
    iovs: Box<[libc::iovec; TX_BATCH]>,
    hdrs: Box<[libc::msghdr; TX_BATCH]>,
}

impl TxBatch {
    pub fn new() -> io::Result<TxBatch> {
        // SAFETY: all-zero sockaddr_storage, iovec and msghdr are valid values.
        unsafe {
            Ok(TxBatch {
                ring: IoUring::new(TX_BATCH as u32)?,
                per_copy: std::env::var("CHOIR_TX").is_ok_and(|v| v == "per-copy"),
                arena: Box::new([0; TX_ARENA]),
                used: 0,
                len: 0,
                fds: Box::new([-1; TX_BATCH]),
                names: Box::new(zeroed()),
                iovs: Box::new(zeroed()),
                hdrs: Box::new(zeroed()),
            })
        }
    }

    /// Whether `push` of `n` bytes needs a flush first.
    pub fn is_full_for(&self, n: usize) -> bool {
        self.len == TX_BATCH || self.used + n > TX_ARENA
    }

    /// Queues `datagram` for `remote` on socket `fd`. The caller flushes first when
    /// [`TxBatch::is_full_for`] says so.
    pub fn push(&mut self, fd: RawFd, remote: SocketAddr, datagram: &[u8]) {
        debug_assert!(!self.is_full_for(datagram.len()));
        let i = self.len;
        let at = self.used;
        self.arena[at..at + datagram.len()].copy_from_slice(datagram);
        self.used += datagram.len();
        self.fds[i] = fd;
        let addr = SockAddr::from(remote);
        // SAFETY: `addr.len()` bytes of a socket address fit a sockaddr_storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr.as_ptr().cast::<u8>(),
                (&mut self.names[i] as *mut libc::sockaddr_storage).cast::<u8>(),
                addr.len() as usize,
            );
        }
        self.iovs[i] = libc::iovec {
            iov_base: self.arena[at..].as_mut_ptr().cast(),
            iov_len: datagram.len(),
        };
        let hdr = &mut self.hdrs[i];
        hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = &mut self.iovs[i];
        hdr.msg_iovlen = 1;
        self.len += 1;
    }

    /// Sends everything queued: one submission, then every completion is collected before the
    /// buffers are reused (a UDP send with `MSG_DONTWAIT` completes inline or fails, so this
    /// does not wait on the network).
    pub fn flush(&mut self) -> Flushed {
        let mut done = Flushed::default();
        let n = self.len;
        if n == 0 {
            return done;
        }
        if self.per_copy {
            for i in 0..n {
                // SAFETY: header and buffers are live and owned by `self`.
                let r = unsafe { libc::sendmsg(self.fds[i], &self.hdrs[i], libc::MSG_DONTWAIT) };
                if r < 0 {
                    done.failed += 1;
                } else {
                    done.sent += 1;
                    done.bytes += self.iovs[i].iov_len as u64;
                }
            }
            self.len = 0;
            self.used = 0;
            return done;
        }
        {
            let mut sq = self.ring.submission();
            for i in 0..n {
                let entry = opcode::SendMsg::new(types::Fd(self.fds[i]), &self.hdrs[i])
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the header, address and data stay put until the completion is
                // reaped below; the ring has TX_BATCH entries and n <= TX_BATCH.
                if unsafe { sq.push(&entry) }.is_err() {
                    done.failed += 1;
                }
            }
        }
        let mut reaped = 0usize;
        let want = n - done.failed as usize;
        while reaped < want {
            match self.ring.submit_and_wait(want - reaped) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("send ring: {e}");
                    done.failed += (want - reaped) as u64;
                    break;
                }
            }
            for cqe in self.ring.completion() {
                reaped += 1;
                let i = cqe.user_data() as usize;
                if cqe.result() >= 0 {
                    done.sent += 1;
                    done.bytes += self.iovs[i].iov_len as u64;
                } else {
                    done.failed += 1;
                }
            }
        }
        self.len = 0;
        self.used = 0;
        done
    }
}
