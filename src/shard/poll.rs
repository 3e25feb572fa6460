//! The shard's one wait per loop turn.
//!
//! Every UDP socket of the shard (one per transport in per-transport mode, one per listen
//! address in single-port mode) is in one level-triggered epoll set, [`Readiness`]. A loop turn
//! asks it, without blocking, which sockets are readable and drains them. When a turn finds
//! nothing, the shard parks on the [`Doorbell`]: a one-shot poll of the epoll fd on a small
//! io_uring of the shard's own, whose completion signals an eventfd that glommio awaits. So the
//! shard wakes once when any of its sockets becomes readable, however many sockets it has.
//!
//! Why not glommio's own readiness: glommio 0.9 polls an fd only inside its stream types, and
//! its UDP receive arms one io_uring receive (with a buffer it allocates) per datagram per
//! socket. Its public API cannot await an epoll fd (a `UdpSocket` made from one fails with
//! ENOTSOCK, a `BufferedFile` read with EINVAL); it can await a blocking read of an eventfd.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;

use io_uring::{opcode, types, IoUring};

use crate::sfu::SocketId;

/// Sockets reported ready per turn (more stay ready for the next turn: level-triggered).
pub const MAX_READY: usize = 256;

/// The epoll set of the shard's UDP sockets; each registered with its [`SocketId`].
pub struct Readiness {
    epfd: OwnedFd,
    events: Box<[libc::epoll_event; MAX_READY]>,
}

impl Readiness {
    pub fn new() -> io::Result<Readiness> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Readiness {
            // SAFETY: `fd` is a fresh epoll fd nobody else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: Box::new([libc::epoll_event { events: 0, u64: 0 }; MAX_READY]),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    pub fn add(&self, fd: RawFd, id: SocketId) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(id),
        };
        // SAFETY: valid fds and a live event struct.
        let r = unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes a socket (before it is closed, so that its id cannot be reported after reuse).
    pub fn remove(&self, fd: RawFd) {
        // SAFETY: as above; a null event is allowed for DEL.
        unsafe { libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// The sockets readable now (never blocks). Fills `ready` and returns how many.
    pub fn ready(&mut self, ready: &mut [SocketId; MAX_READY]) -> usize {
        // SAFETY: `events` has room for MAX_READY entries.
        let n =
            unsafe { libc::epoll_wait(self.fd(), self.events.as_mut_ptr(), MAX_READY as i32, 0) };
        let n = n.max(0) as usize;
        for (slot, event) in ready.iter_mut().zip(&self.events[..n]) {
            *slot = event.u64 as SocketId;
        }
        n
    }
}

const POLL: u64 = 1;

/// The eventfd read glommio is waiting on: kept in flight across waits, so that a wait that
/// ends on its bound never cancels it (a cancelled read can still take the eventfd's count
/// before the cancellation lands, and the ring that count stood for would go unheard).
type Read = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// Wakes the shard when the epoll set becomes readable: a one-shot `POLL_ADD` of the epoll fd
/// on a private io_uring that signals a (blocking) eventfd, read through glommio.
pub struct Doorbell {
    ring: IoUring,
    eventfd: Rc<glommio::io::BufferedFile>,
    /// A `POLL_ADD` is in the ring and has not completed.
    armed: bool,
    read: Option<Read>,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // Blocking on purpose: io_uring answers a read of a non-blocking eventfd with EAGAIN
        // instead of waiting.
        // SAFETY: plain syscall; ownership passes to glommio's file below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh eventfd owned by nobody else.
        let eventfd = Rc::new(unsafe { glommio::io::BufferedFile::from_raw_fd(efd) });
        let ring = IoUring::new(4)?;
        ring.submitter().register_eventfd(efd)?;
        Ok(Doorbell {
            ring,
            eventfd,
            armed: false,
            read: None,
        })
    }

    /// Returns `Rung` once `epfd` is readable (at once if it is already), or `Unrung` after
    /// `at_most`: a safety net, so that a shard whose ring went unheard still looks at its
    /// sockets now and then (the loop counts the unrung waits that then found datagrams).
    pub async fn wait(&mut self, epfd: RawFd, at_most: std::time::Duration) -> io::Result<Wake> {
        if !self.armed {
            let poll = opcode::PollAdd::new(types::Fd(epfd), libc::POLLIN as u32)
                .build()
                .user_data(POLL);
            // SAFETY: the entry refers to no memory of ours.
            unsafe { self.ring.submission().push(&poll) }
                .map_err(|_| io::Error::other("doorbell ring full"))?;
            self.ring.submit()?;
            self.armed = true;
        }
        let eventfd = &self.eventfd;
        let read = self.read.get_or_insert_with(|| {
            let file = eventfd.clone();
            Box::pin(async move {
                file.read_at(0, 8)
                    .await
                    .map(|_| ())
                    .map_err(|e| io::Error::other(e.to_string()))
            })
        });
        // The read completes once the ring posted the poll's completion (the eventfd's count
        // > 0); if the timer wins, the read stays in flight for the next wait.
        let rung = async { Some(read.as_mut().await) };
        let timer = async {
            glommio::timer::sleep(at_most).await;
            None
        };
        let wake = match futures_lite::future::or(rung, timer).await {
            Some(result) => {
                self.read = None;
                result?;
                Wake::Rung
            }
            None => Wake::Unrung,
        };
        for cqe in self.ring.completion() {
            if cqe.user_data() == POLL {
                self.armed = false;
            }
        }
        Ok(wake)
    }
}

/// How a [`Doorbell::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Rung,
    Unrung,
}
