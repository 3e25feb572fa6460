//! A shard's executor: the command loop, the UDP receive loop, the timer tick, and a task per
//! ICE-TCP listener and connection.
//!
//! The receive loop is one task for all of the shard's UDP sockets, whatever the port mode: in
//! per-transport mode each transport has its own port (mediasoup's WebRtcTransport); in
//! single-port mode the shard has one UDP socket per listen address (mediasoup's WebRtcServer)
//! and the core routes datagrams by ICE ufrag and remote address. Each turn of the loop asks the
//! epoll set which sockets are readable, takes up to [`RX_BATCH`](super::batch::RX_BATCH) datagrams from each with one
//! `recvmmsg` into the shard's buffers, hands every one to the core, and sends all the copies
//! the turn produced in one io_uring submission; it parks (see [`super::poll`]) only when a turn
//! found nothing. A cascade link's datagram (first octet [`relay::KIND`]) goes to the core's
//! link path from any socket, before the transports' demultiplexing (see [`super::cascade`]).

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::Placement;

use super::batch::{RxBatch, TxBatch};
use super::poll::{Doorbell, Wake, MAX_READY};
use super::ports::{Bound, Listen, PortMode, Ports};
use super::sockets::{Kind, SocketEgress, Sockets};
use super::{Command, Envelope, Reply, ShardHandle, ShardStats};
use crate::sfu::api::{ApiError, RoomEvent};
use crate::sfu::{Announced, Path, Settings, Sfu, SocketId, TransportKey};
use crate::wire::dtls::DtlsIdentity;
use crate::wire::relay;

/// Timer resolution: consent, DTLS retransmissions and RTCP run from this tick.
const TICK: Duration = Duration::from_millis(20);
/// Longest a parked receive loop waits without its doorbell ringing (see [`Doorbell::wait`]):
/// a safety net, not a poll interval (an idle shard wakes this often, so it stays long).
const UNRUNG: Duration = Duration::from_millis(50);

thread_local! {
    static IN_TURN: Cell<bool> = const { Cell::new(false) };
}

/// True on a shard's thread while it runs a receive-loop turn (receive, core, sends): the
/// allocation test's probe (tests/shard_loop_alloc.rs).
#[doc(hidden)]
pub fn in_loop_turn() -> bool {
    IN_TURN.try_with(Cell::get).unwrap_or(false)
}

/// Longest a busy receive loop runs before it lets the rest of the shard (commands, timers,
/// ICE-TCP) have the core: see [`Shard::receive_loop`].
const BUSY: Duration = Duration::from_micros(500);

/// What a shard needs to start.
pub struct ShardSetup {
    pub index: usize,
    pub cpu: Option<usize>,
    /// Per-transport mode: the shard's slice of the range. Single-port mode: (port, port).
    pub ports: (u16, u16),
    pub mode: PortMode,
    /// (bind address, announced address) pairs.
    pub listen: Vec<(IpAddr, IpAddr)>,
    pub udp: bool,
    pub tcp: bool,
    pub consent_timeout: Duration,
    pub dtls_timeout: Duration,
    pub consumer_hold: Duration,
    pub dtls_config: Arc<dimpl::Config>,
    /// Where room events go (the control server's SSE hub).
    pub events: flume::Sender<RoomEvent>,
    pub limits: crate::sfu::RoomLimits,
    /// The cascade link's port when configured (else one of `ports`, see [`super::cascade`]).
    pub link_port: Option<u16>,
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
    let builder = super::executor(placement, &format!("choir-shard-{index}"));
    let handle = builder
        .spawn(move || async move {
            // Every event of this thread (one shard) carries `shard{index}`.
            let _span = tracing::info_span!("shard", index).entered();
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
    // Dropped once the executor's thread has ended, however it ended: see `ShardHandle::dead`.
    let (dead_tx, dead) = flume::bounded::<()>(1);
    let thread = std::thread::Builder::new()
        .name(format!("choir-shard-{index}-join"))
        .spawn(move || {
            if let Err(e) = handle.join() {
                tracing::error!(shard = index, "shard executor failed: {e}");
            }
            drop(dead_tx);
        })?;
    Ok((
        ShardHandle {
            index,
            ports,
            tx,
            dead,
        },
        thread,
    ))
}

pub(super) struct Shard {
    pub(super) index: usize,
    pub(super) setup: ShardSetup,
    pub(super) sfu: RefCell<Sfu>,
    pub(super) sockets: RefCell<Sockets>,
    /// UDP datagrams the core sent during the current turn, command or tick.
    tx: RefCell<TxBatch>,
    /// Loop turns that found datagrams, parks (turns that found none), yields, and parks that
    /// ended unrung with datagrams waiting (a late or missed ring; rare: 12 in 20 M parks in
    /// the hour soak, SOAK.md): `stats`.
    turns: Cell<u64>,
    parks: Cell<u64>,
    yields: Cell<u64>,
    unheard: Cell<u64>,
    /// Per-transport mode: the port slice. Unused in single-port mode.
    pub(super) ports: RefCell<Ports>,
    /// Single-port mode: the shard's sockets between `start` and `run`.
    single: RefCell<Option<Bound>>,
    loop_lag_us: Cell<u64>,
}

impl Shard {
    fn start(setup: ShardSetup) -> Result<Rc<Shard>, String> {
        let identity = DtlsIdentity::generate()
            .map_err(|e| format!("cannot make the DTLS certificate: {e:?}"))?;
        let single = match setup.mode {
            PortMode::Single => Some(
                listen_of(&setup)
                    .bind(setup.ports.0)
                    .map_err(|e| format!("cannot bind the shard's port {}: {e}", setup.ports.0))?,
            ),
            PortMode::PerTransport => None,
        };
        let announced = setup
            .listen
            .iter()
            .map(|&(_, ip)| Announced {
                ip,
                udp: setup.udp,
                tcp: setup.tcp,
            })
            .collect();
        let settings = Settings {
            announced,
            consent_timeout: setup.consent_timeout,
            dtls_timeout: setup.dtls_timeout,
            consumer_hold: setup.consumer_hold,
            dtls_config: setup.dtls_config.clone(),
            identity,
        };
        let mut sfu = Sfu::new(settings, Instant::now());
        sfu.set_limits(setup.limits);
        Ok(Rc::new(Shard {
            index: setup.index,
            sfu: RefCell::new(sfu),
            sockets: RefCell::new(
                Sockets::new().map_err(|e| format!("cannot make the epoll set: {e}"))?,
            ),
            tx: RefCell::new(
                TxBatch::new().map_err(|e| format!("cannot make the send ring: {e}"))?,
            ),
            turns: Cell::new(0),
            parks: Cell::new(0),
            yields: Cell::new(0),
            unheard: Cell::new(0),
            ports: RefCell::new(Ports::new(listen_of(&setup), setup.ports)),
            single: RefCell::new(single),
            loop_lag_us: Cell::new(0),
            setup,
        }))
    }

    async fn run(self: Rc<Self>, commands: flume::Receiver<Envelope>) {
        let ticker = glommio::spawn_local(self.clone().tick());
        let receiver = glommio::spawn_local(self.clone().receive_loop());
        if self.setup.mode == PortMode::Single {
            // Bound before "ready" was reported (see `start`); attach the tasks now.
            let bound = self.take_single();
            let port = bound.port;
            let udp = self.attach(bound, None, false);
            if !udp.is_empty() {
                // The shard's shared UDP sockets carry its cascade links too.
                self.sockets.borrow_mut().set_link(port, &udp);
            }
        }
        tracing::info!(shard = self.index, ports = ?self.setup.ports, "shard ready");
        while let Ok(envelope) = commands.recv_async().await {
            let stop = matches!(envelope.command, Command::Shutdown);
            let scope = envelope.command.scope();
            let reply = self.handle_command(envelope.command);
            self.answer(envelope.reply, reply, scope);
            if stop {
                break;
            }
        }
        drop(ticker);
        drop(receiver);
        tracing::info!(shard = self.index, "shard stopped");
    }

    /// Runs the core with an egress on the shard's sockets, then applies what the core decided
    /// (events to the control server, transports to release).
    pub(super) fn with_core<R>(&self, f: impl FnOnce(&mut Sfu, &mut SocketEgress<'_>) -> R) -> R {
        let result = {
            let sockets = self.sockets.borrow();
            let mut tx = self.tx.borrow_mut();
            let mut egress = SocketEgress::new(&sockets, &mut tx);
            let mut sfu = self.sfu.borrow_mut();
            let result = f(&mut sfu, &mut egress);
            egress.finish();
            let c = sfu.counters_mut();
            c.datagrams_out += egress.sent;
            c.bytes_out += egress.bytes;
            c.drop_n("egress", "udp_send_failed", egress.udp_failed);
            c.drop_n("egress", "tcp_queue_full", egress.tcp_full);
            c.drop_n("egress", "no_socket", egress.no_socket);
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
                if self.setup.mode == PortMode::PerTransport {
                    // Closes the sockets (and cancels the TCP tasks).
                    sockets.remove_owned(key);
                    ports.release(port);
                }
            }
        }
    }

    fn handle_command(self: &Rc<Self>, command: Command) -> Result<Reply, ApiError> {
        let now = Instant::now();
        match command {
            Command::OpenRoom { channel_id } => {
                self.sfu.borrow_mut().try_open_room(&channel_id)?;
                Ok(Reply::Done)
            }
            Command::CreateTransport(req) => {
                self.sfu.borrow().check_create_transport(&req)?;
                let bound = match self.setup.mode {
                    PortMode::PerTransport => Some(self.ports.borrow_mut().bind()?),
                    PortMode::Single => None,
                };
                let port = bound.as_ref().map_or(self.setup.ports.0, |b| b.port);
                let created = self.sfu.borrow_mut().create_transport(&req, port, now);
                match (created, bound) {
                    (Ok((key, options)), Some(bound)) => {
                        self.attach(bound, Some(key), false);
                        Ok(Reply::Transport(options))
                    }
                    (Ok((_, options)), None) => Ok(Reply::Transport(options)),
                    (Err(e), bound) => {
                        if bound.is_some() {
                            self.ports.borrow_mut().release(port);
                        }
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
                .with_core(|sfu, _| sfu.consume(&req, now))
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
                loop_turns: self.turns.get(),
                loop_parks: self.parks.get(),
                loop_yields: self.yields.get(),
                loop_unheard: self.unheard.get(),
                transport_states: self.sfu.borrow().transport_states(),
                link_port: self.sockets.borrow().link_port(),
                peers: self.sfu.borrow().peer_stats(),
            }))),
            Command::Rooms => Ok(Reply::Rooms(self.sfu.borrow().room_list())),
            Command::Shutdown => {
                self.with_core(|sfu, _| sfu.close_all());
                Ok(Reply::Done)
            }
            Command::Cascade(c) => self.cascade_command(c, now),
            Command::TestPanic => panic!("test fault: shard {} panics on request", self.index),
        }
    }

    /// Single-port mode: the shard's sockets, bound in `start` (so a busy port fails the start).
    fn take_single(&self) -> Bound {
        self.single.borrow_mut().take().unwrap_or(Bound {
            port: self.setup.ports.0,
            udp: Vec::new(),
            tcp: Vec::new(),
        })
    }

    fn counts(&self) -> crate::sfu::api::Counts {
        let mut counts = self.sfu.borrow().counts();
        counts.bound_ports = self.ports.borrow().in_use() as u64;
        counts
    }

    /// Registers bound sockets (owned by `owner` in per-transport mode): UDP sockets join the
    /// receive loop's epoll set, each TCP listener gets its accept task. Returns the UDP
    /// sockets' ids. `link_only`: the cascade link socket of per-transport mode.
    pub(super) fn attach(
        self: &Rc<Self>,
        bound: Bound,
        owner: Option<TransportKey>,
        link_only: bool,
    ) -> Vec<SocketId> {
        let mut udp = Vec::new();
        for socket in bound.udp {
            match self
                .sockets
                .borrow_mut()
                .insert_udp(socket, owner, bound.port, link_only)
            {
                Ok(id) => udp.push(id),
                Err(e) => tracing::error!(shard = self.index, "cannot poll a UDP socket: {e}"),
            }
        }
        for socket in bound.tcp {
            let fd = socket.into_raw_fd();
            // SAFETY: the fd comes from a listening TCP socket we own and hand over to glommio.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            let closed = Rc::new(Cell::new(false));
            let kind = Kind::Listener {
                fd,
                closed: closed.clone(),
            };
            self.sockets.borrow_mut().insert(kind, owner);
            // Detached: it returns once the listener is closed (see `super::sockets`).
            glommio::spawn_local(self.clone().accept_tcp(owner, listener, closed)).detach();
        }
        udp
    }

    /// The shard's UDP receive loop (all sockets, both port modes): a turn, then a park only if
    /// the turn found nothing. The park goes through glommio's reactor, so commands, the timer
    /// and the TCP tasks run between turns.
    async fn receive_loop(self: Rc<Self>) {
        let mut rx = RxBatch::default();
        let mut ready = [0 as SocketId; MAX_READY];
        let mut doorbell = match Doorbell::new() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(shard = self.index, "cannot make the receive doorbell: {e}");
                return;
            }
        };
        // The yield below: a timer a microsecond away, reused (so no allocation per yield).
        let mut pause = glommio::timer::Timer::new(Duration::ZERO);
        let mut busy_since = Instant::now();
        let mut woke = Wake::Rung;
        loop {
            if self.turn(&mut rx, &mut ready) > 0 {
                self.turns.set(self.turns.get() + 1);
                if woke == Wake::Unrung {
                    self.unheard.set(self.unheard.get() + 1);
                    woke = Wake::Rung;
                }
                // Busy turns run back to back, but no longer than BUSY at a stretch. The shards'
                // executors have no preempt timer to do this (see `super::executor`), and a
                // plain `yield_now` would not do: glommio polls its reactor (I/O completions,
                // timers, wakes from other threads: commands, the tick, ICE-TCP) only once the
                // task queue has run dry, so the loop must really wait, if only for a moment.
                if busy_since.elapsed() >= BUSY {
                    self.yields.set(self.yields.get() + 1);
                    pause.reset(Duration::from_micros(1));
                    (&mut pause).await;
                    busy_since = Instant::now();
                }
                continue;
            }
            self.parks.set(self.parks.get() + 1);
            let epfd = self.sockets.borrow_mut().readiness().fd();
            woke = match doorbell.wait(epfd, UNRUNG).await {
                Ok(wake) => wake,
                Err(e) => {
                    tracing::warn!(shard = self.index, "receive doorbell: {e}");
                    glommio::timer::sleep(TICK).await;
                    Wake::Rung
                }
            };
            busy_since = Instant::now();
        }
    }

    /// One loop turn: every readable UDP socket gives up to [`RX_BATCH`](super::batch::RX_BATCH) datagrams, each goes
    /// through the core, and the copies leave together when the turn ends. Returns the number
    /// of datagrams received.
    fn turn(&self, rx: &mut RxBatch, ready: &mut [SocketId; MAX_READY]) -> usize {
        IN_TURN.set(true);
        let n = self.sockets.borrow_mut().readiness().ready(ready);
        if n == 0 {
            IN_TURN.set(false);
            return 0;
        }
        let received = self.with_core(|sfu, out| {
            let mut received = 0;
            for &id in &ready[..n] {
                let Some(udp) = out.sockets.udp(id) else {
                    continue;
                };
                let got = rx.recv(udp.fd);
                received += got;
                let now = Instant::now();
                for i in 0..got {
                    let d = rx.get(i);
                    let (Some(remote), false) = (d.remote, d.too_long) else {
                        sfu.counters_mut().drop("datagram", "too_long");
                        continue;
                    };
                    // A cascade link's datagram (first octet 8, which no WebRTC protocol uses:
                    // RFC 7983 §7), on whichever socket it came: the core finds the link.
                    if d.len > 0 && d.buf[0] == relay::KIND {
                        sfu.on_link_datagram(udp.port, remote, &mut d.buf[..d.len], now, out);
                        continue;
                    }
                    if udp.link_only {
                        let c = sfu.counters_mut();
                        c.datagrams_in += 1;
                        c.bytes_in += d.len as u64;
                        c.drop("relay", "not_relay");
                        continue;
                    }
                    let path = Path { socket: id, remote };
                    sfu.handle_datagram(udp.owner, path, d.buf, d.len, now, out);
                }
            }
            received
        });
        IN_TURN.set(false);
        received
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

pub(super) fn listen_of(setup: &ShardSetup) -> Listen {
    Listen {
        ips: setup.listen.iter().map(|&(ip, _)| ip).collect(),
        udp: setup.udp,
        tcp: setup.tcp,
    }
}
