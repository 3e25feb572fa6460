//! A shard's executor: the command loop, one receive task per transport socket, the timer tick.
//!
//! Why one task per socket: each transport has its own UDP port (like mediasoup's
//! WebRtcTransport), and glommio's receive is per socket; a task is a few hundred bytes plus its
//! 2 KiB receive buffer, allocated once when the transport is created. Sends do not need a task:
//! the core's output is written at once with a non-blocking `sendto` on the sending transport's
//! socket, and a full socket buffer is a counted drop (as a router would do).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::UdpSocket;
use glommio::{LocalExecutorBuilder, Placement, Task};

use super::ports::Ports;
use super::{Command, Envelope, Reply, ShardHandle, ShardStats};
use crate::api::{ApiError, RoomEvent};
use crate::dtls::DtlsIdentity;
use crate::sfu::{Egress, Settings, Sfu, TransportKey, BUFFER_SIZE, MAX_DATAGRAM};

/// Timer resolution: consent, DTLS retransmissions and RTCP run from this tick.
const TICK: Duration = Duration::from_millis(20);

/// What a shard needs to start.
pub struct ShardSetup {
    pub index: usize,
    pub cpu: Option<usize>,
    pub ports: (u16, u16),
    pub listen_ip: std::net::IpAddr,
    pub announced_ip: std::net::IpAddr,
    pub consent_timeout: Duration,
    pub dtls_timeout: Duration,
    pub dtls_config: Arc<dimpl::Config>,
    /// Where room events go (the control server's SSE hub).
    pub events: flume::Sender<RoomEvent>,
}

/// Starts a shard on its own thread. Returns once the shard is ready (its certificate made),
/// with its handle and the thread's join handle.
pub fn spawn(setup: ShardSetup) -> std::io::Result<(ShardHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = flume::unbounded::<Envelope>();
    let (ready_tx, ready_rx) = flume::bounded::<Result<(), String>>(1);
    let index = setup.index;
    let ports = setup.ports;
    let placement = match setup.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let builder = LocalExecutorBuilder::new(placement).name(&format!("choir-shard-{index}"));
    let handle = builder
        .spawn(move || async move {
            match Shard::start(setup) {
                Ok(shard) => {
                    let _ = ready_tx.send(Ok(()));
                    shard.run(rx).await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| std::io::Error::other(format!("cannot start shard {index}: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(std::io::Error::other(format!("shard {index}: {e}"))),
        Err(_) => {
            return Err(std::io::Error::other(format!(
                "shard {index} died while starting"
            )))
        }
    }
    let thread = std::thread::Builder::new()
        .name(format!("choir-shard-{index}-join"))
        .spawn(move || {
            if let Err(e) = handle.join() {
                tracing::error!(shard = index, "shard executor failed: {e}");
            }
        })?;
    Ok((ShardHandle { index, ports, tx }, thread))
}

struct Socket {
    fd: RawFd,
    port: u16,
    /// The receive task; dropping it cancels it (and closes the socket it holds).
    _task: Task<()>,
}

/// Sends the core's output with non-blocking `sendto` on the sending transport's socket.
struct SocketEgress<'a> {
    sockets: &'a HashMap<TransportKey, Socket>,
    sent: u64,
    bytes: u64,
    dropped: u64,
}

impl Egress for SocketEgress<'_> {
    fn send(&mut self, from: TransportKey, to: SocketAddr, datagram: &[u8]) {
        let Some(socket) = self.sockets.get(&from) else {
            self.dropped += 1;
            return;
        };
        let addr = socket2::SockAddr::from(to);
        // SAFETY: `fd` is an open UDP socket owned by this shard; the pointers and lengths
        // describe live buffers for the duration of the call.
        let n = unsafe {
            libc::sendto(
                socket.fd,
                datagram.as_ptr().cast(),
                datagram.len(),
                libc::MSG_DONTWAIT,
                addr.as_ptr().cast(),
                addr.len(),
            )
        };
        if n < 0 {
            self.dropped += 1;
        } else {
            self.sent += 1;
            self.bytes += datagram.len() as u64;
        }
    }
}

struct Shard {
    index: usize,
    setup: ShardSetup,
    sfu: RefCell<Sfu>,
    sockets: RefCell<HashMap<TransportKey, Socket>>,
    ports: RefCell<Ports>,
    loop_lag_us: Cell<u64>,
}

impl Shard {
    fn start(setup: ShardSetup) -> Result<Rc<Shard>, String> {
        let identity = DtlsIdentity::generate()
            .map_err(|e| format!("cannot make the DTLS certificate: {e:?}"))?;
        let settings = Settings {
            announced_ip: setup.announced_ip,
            consent_timeout: setup.consent_timeout,
            dtls_timeout: setup.dtls_timeout,
            dtls_config: setup.dtls_config.clone(),
            identity,
        };
        Ok(Rc::new(Shard {
            index: setup.index,
            sfu: RefCell::new(Sfu::new(settings, Instant::now())),
            sockets: RefCell::new(HashMap::new()),
            ports: RefCell::new(Ports::new(setup.listen_ip, setup.ports)),
            loop_lag_us: Cell::new(0),
            setup,
        }))
    }

    async fn run(self: Rc<Self>, commands: flume::Receiver<Envelope>) {
        let ticker = glommio::spawn_local(self.clone().tick());
        tracing::info!(shard = self.index, ports = ?self.setup.ports, "shard ready");
        while let Ok(envelope) = commands.recv_async().await {
            let stop = matches!(envelope.command, Command::Shutdown);
            let reply = self.handle_command(envelope.command);
            let _ = envelope.reply.send(reply);
            if stop {
                break;
            }
        }
        drop(ticker);
        tracing::info!(shard = self.index, "shard stopped");
    }

    /// Runs the core with an egress on the shard's sockets, then applies what the core decided
    /// (events to the control server, transports to release).
    fn with_core<R>(&self, f: impl FnOnce(&mut Sfu, &mut SocketEgress<'_>) -> R) -> R {
        let result = {
            let sockets = self.sockets.borrow();
            let mut egress = SocketEgress {
                sockets: &sockets,
                sent: 0,
                bytes: 0,
                dropped: 0,
            };
            let mut sfu = self.sfu.borrow_mut();
            let result = f(&mut sfu, &mut egress);
            let c = sfu.counters_mut();
            c.datagrams_out += egress.sent;
            c.bytes_out += egress.bytes;
            if egress.dropped > 0 {
                c.drop_n("egress", "send_failed", egress.dropped);
            }
            result
        };
        self.apply_core_output();
        result
    }

    fn apply_core_output(&self) {
        let mut sfu = self.sfu.borrow_mut();
        for event in sfu.take_events() {
            let _ = self.setup.events.send(event);
        }
        if sfu.has_closed() {
            let mut sockets = self.sockets.borrow_mut();
            let mut ports = self.ports.borrow_mut();
            for (key, port) in sfu.take_closed() {
                // Dropping the entry cancels its receive task, which closes the socket.
                if let Some(s) = sockets.remove(&key) {
                    debug_assert_eq!(s.port, port);
                }
                ports.release(port);
            }
        }
    }

    fn handle_command(self: &Rc<Self>, command: Command) -> Result<Reply, ApiError> {
        let now = Instant::now();
        match command {
            Command::OpenRoom { channel_id } => {
                self.sfu.borrow_mut().open_room(&channel_id);
                Ok(Reply::Done)
            }
            Command::CreateTransport(req) => {
                self.sfu.borrow().check_create_transport(&req)?;
                let (port, socket) = self.ports.borrow_mut().bind()?;
                let created = self.sfu.borrow_mut().create_transport(&req, port, now);
                match created {
                    Ok((key, options)) => {
                        // SAFETY: the fd comes from a socket we own and hand over to glommio.
                        let socket = unsafe {
                            <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(socket.into_raw_fd())
                        };
                        let fd = socket.as_raw_fd();
                        let task = glommio::spawn_local(self.clone().receive(key, socket));
                        self.sockets.borrow_mut().insert(
                            key,
                            Socket {
                                fd,
                                port,
                                _task: task,
                            },
                        );
                        Ok(Reply::Transport(options))
                    }
                    Err(e) => {
                        self.ports.borrow_mut().release(port);
                        Err(e)
                    }
                }
            }
            Command::ConnectTransport(req) => self
                .with_core(|sfu, out| sfu.connect_transport(&req, now, out))
                .map(|()| Reply::Done),
            Command::Produce(req) => self
                .with_core(|sfu, _| sfu.produce(&req))
                .map(Reply::Producer),
            Command::Consume(req) => self
                .with_core(|sfu, _| sfu.consume(&req))
                .map(Reply::Consumer),
            Command::Producers {
                channel_id,
                user_id,
            } => self
                .sfu
                .borrow()
                .list_producers(&channel_id, &user_id)
                .map(Reply::Producers),
            Command::PauseProducer(req) => self
                .with_core(|sfu, _| sfu.set_producer_paused(&req, true))
                .map(|()| Reply::Done),
            Command::ResumeProducer(req) => self
                .with_core(|sfu, _| sfu.set_producer_paused(&req, false))
                .map(|()| Reply::Done),
            Command::Leave(req) => self
                .with_core(|sfu, _| sfu.leave(&req))
                .map(|()| Reply::Done),
            Command::Counts => Ok(Reply::Counts(self.counts())),
            Command::Stats => Ok(Reply::Stats(Box::new(ShardStats {
                shard: self.index,
                ports: self.setup.ports,
                counts: self.counts(),
                counters: self.sfu.borrow().counters().clone(),
                loop_lag_us: self.loop_lag_us.get(),
            }))),
            Command::Shutdown => {
                self.with_core(|sfu, _| sfu.close_all());
                Ok(Reply::Done)
            }
        }
    }

    fn counts(&self) -> crate::api::Counts {
        let mut counts = self.sfu.borrow().counts();
        counts.bound_ports = self.ports.borrow().in_use() as u64;
        counts
    }

    /// One transport's receive loop: each datagram goes through the core at once.
    async fn receive(self: Rc<Self>, key: TransportKey, socket: UdpSocket) {
        let mut buf = vec![0u8; BUFFER_SIZE].into_boxed_slice();
        loop {
            let (len, from) = match socket.recv_from(&mut buf[..=MAX_DATAGRAM]).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(shard = self.index, "receive failed: {e}");
                    glommio::timer::sleep(TICK).await;
                    continue;
                }
            };
            if len > MAX_DATAGRAM {
                self.sfu
                    .borrow_mut()
                    .counters_mut()
                    .drop("datagram", "too_long");
                continue;
            }
            self.with_core(|sfu, out| {
                sfu.handle_datagram(key, from, &mut buf, len, Instant::now(), out)
            });
            if !self.sfu.borrow().is_open(key) {
                return;
            }
        }
    }

    /// The shard's timer: consent, DTLS retransmission, handshake deadlines, RTCP reports.
    async fn tick(self: Rc<Self>) {
        let mut due = Instant::now() + TICK;
        loop {
            glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
            let now = Instant::now();
            self.loop_lag_us
                .set(now.saturating_duration_since(due).as_micros() as u64);
            self.with_core(|sfu, out| sfu.handle_timeout(now, out));
            due = now + TICK;
        }
    }
}
