//! What one API connection needs beside hyper: a [`hyper::rt::Timer`] over glommio's timers
//! (hyper's header read timeout needs one), and a lingering close.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use futures_lite::io::AsyncReadExt;

/// How long, and how much, a closing connection reads (and discards) of what its client still
/// sends, so that the client reads our last reply (a 413, say) instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// hyper's timer on the control executor: each sleep is a glommio timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioTimer;

impl hyper::rt::Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::new(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

/// A glommio timer, usable where hyper asks for `Send + Sync`.
///
/// glommio's timer belongs to the executor thread that made it. hyper's bounds are generic: its
/// connection future (and so each sleep inside it) stays on our thread, since the service it
/// drives holds `Rc`s. This type makes sure of it at run time: the timer is only touched on the
/// thread that made it (polled elsewhere it panics before touching it; dropped elsewhere it is
/// leaked rather than dropped).
struct Sleep {
    timer: ManuallyDrop<glommio::timer::Timer>,
    thread: ThreadId,
}

impl Sleep {
    fn new(duration: Duration) -> Sleep {
        Sleep {
            timer: ManuallyDrop::new(glommio::timer::Timer::new(duration)),
            thread: std::thread::current().id(),
        }
    }
}

// SAFETY: the inner timer is used (polled, dropped) only on the thread that created it, which
// `poll` and `drop` check; `Sleep` has no `&self` method that reaches it.
unsafe impl Send for Sleep {}
// SAFETY: as above; shared references give no access to the timer.
unsafe impl Sync for Sleep {}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        assert_eq!(
            self.thread,
            std::thread::current().id(),
            "a glommio sleep polled on another thread"
        );
        Pin::new(&mut *self.timer).poll(cx).map(|_| ())
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if self.thread == std::thread::current().id() {
            // SAFETY: dropped once, here; the field is not used again.
            unsafe { ManuallyDrop::drop(&mut self.timer) };
        }
    }
}

impl hyper::rt::Sleep for Sleep {}

/// Closes a connection hyper is done with: our side's FIN first, then whatever the client still
/// sends is read and discarded for at most [`LINGER`] / [`LINGER_BYTES`] (closing a socket with
/// unread input sends a reset, which can destroy the reply the client has not read yet).
pub async fn linger(stream: glommio::net::TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let mut stream = stream;
    let discard = async {
        let mut buf = [0u8; 4096];
        let mut seen = 0;
        while seen < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    futures_lite::future::or(discard, glommio::timer::sleep(LINGER)).await;
}
