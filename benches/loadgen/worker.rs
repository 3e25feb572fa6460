//! A generator worker: one thread, pinned, owning the client sockets of its rooms. It completes
//! ICE/DTLS with [`ClientTransport`] (or the relay's hello), keeps consent fresh, publishes
//! Opus-sized packets at 50/s per publisher with evenly spread phases and a send timestamp in the
//! payload, and counts everything forwarded back to it (decrypting a sample for latency).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use choir::client::{ClientReceived, ClientTransport};
use hdrhistogram::Histogram;
use socket2::Socket;

use crate::sys::{self, Epoll, RecvBatch};

/// Opus at 20 ms frames.
pub const PERIOD: Duration = Duration::from_millis(20);
/// Plaintext RTP size: 12-byte header, 8-byte extension block (audio level), 100-byte payload.
pub const PACKET: usize = 120;
/// What a leg sends the bare relay until it answers (followed by the leg's 4-byte token), and
/// what the relay echoes.
pub const HELLO: &[u8] = b"helo";
/// How often connected legs are polled for consent checks, DTLS retransmissions, hellos.
const SERVICE: Duration = Duration::from_millis(50);

/// How a leg speaks to the server.
pub enum Peer {
    /// The real protocol: ICE, DTLS, SRTP.
    Srtp(Box<ClientTransport>),
    /// The bare relay: plaintext RTP after a hello carrying this token.
    Plain(u32),
}

/// One client transport to set up.
pub struct LegSpec {
    pub server: SocketAddr,
    pub peer: Peer,
    /// `Some` for a publisher's send leg: its SSRC and how many consumers each packet reaches.
    pub publish: Option<(u32, u32)>,
    /// A socket already bound (its address went into an SDP); connected to `server` here.
    pub socket: Option<Socket>,
    /// What this leg receives is timed into [`StepStats::latency_remote`] (`--target
    /// cascade`: a listener on the node that receives the speakers' packets over a link).
    pub remote: bool,
}

pub struct RunSpec {
    pub warmup: Duration,
    pub measure: Duration,
    pub drain: Duration,
    /// Decrypt (and time) one received packet in `sample`.
    pub sample: u64,
    /// Poll sockets without sleeping while publishing: the server's sends then never have to
    /// wake a sleeping generator, a cost loopback charges to the server's core (over a network
    /// it falls on the client's host).
    pub busy_poll: bool,
}

pub enum Cmd {
    Add(Vec<LegSpec>),
    Connect(Duration),
    Run(RunSpec),
}

pub enum Reply {
    /// The local ports of the added legs.
    Added(Vec<u16>),
    /// Legs still not connected when the deadline passed.
    Connected(usize),
    Step(Box<StepStats>),
    Failed(String),
}

/// What one worker measured in one step.
pub struct StepStats {
    /// Datagrams published (whole step) and refused by our own socket.
    pub sent: u64,
    pub send_failed: u64,
    /// Copies the server should deliver for what was sent, and what arrived (whole step).
    pub expected: u64,
    pub received: u64,
    /// The same within the measurement window (received: by kernel receive time).
    pub expected_window: u64,
    pub received_window: u64,
    pub decrypt_failed: u64,
    /// Send → kernel receive timestamp on our socket, ns (packets sent in the window).
    pub latency: Histogram<u64>,
    /// The same for legs marked `remote`.
    pub latency_remote: Histogram<u64>,
    /// Send → our `recvmmsg` returning, ns (includes the generator's own wake-up).
    pub app_latency: Histogram<u64>,
    /// How late publishers sent against their schedule, ns.
    pub send_lag: Histogram<u64>,
    /// This thread's CPU time within the window, ns.
    pub cpu_ns: u64,
    pub window_ns: u64,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

impl StepStats {
    fn new() -> StepStats {
        StepStats {
            sent: 0,
            send_failed: 0,
            expected: 0,
            received: 0,
            expected_window: 0,
            received_window: 0,
            decrypt_failed: 0,
            latency: histogram(),
            latency_remote: histogram(),
            app_latency: histogram(),
            send_lag: histogram(),
            cpu_ns: 0,
            window_ns: 0,
        }
    }

    pub fn merge(&mut self, o: &StepStats) {
        self.sent += o.sent;
        self.send_failed += o.send_failed;
        self.expected += o.expected;
        self.received += o.received;
        self.expected_window += o.expected_window;
        self.received_window += o.received_window;
        self.decrypt_failed += o.decrypt_failed;
        let _ = self.latency.add(&o.latency);
        let _ = self.latency_remote.add(&o.latency_remote);
        let _ = self.app_latency.add(&o.app_latency);
        let _ = self.send_lag.add(&o.send_lag);
        self.cpu_ns += o.cpu_ns;
        self.window_ns = self.window_ns.max(o.window_ns);
    }

    pub fn empty() -> StepStats {
        StepStats::new()
    }

    /// Copies the server should have delivered in the whole step but did not, in %.
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            100.0 * self.expected.saturating_sub(self.received) as f64 / self.expected as f64
        }
    }
}

struct Leg {
    socket: Socket,
    peer: Peer,
    publish: Option<(u32, u32)>,
    seq: u16,
    connected: bool,
    remote: bool,
}

/// The measurement state of a running step.
struct Measure {
    stats: StepStats,
    window: (u64, u64),
    sample: u64,
    seen: u64,
}

pub struct Worker {
    legs: Vec<Leg>,
    publishers: Vec<usize>,
    epoll: Epoll,
    batch: RecvBatch,
    out: Box<[u8; 2048]>,
    next_service: Instant,
}

/// The worker thread's body: serves commands until the channel closes.
pub fn run(cpu: Option<usize>, rx: Receiver<Cmd>, tx: Sender<Reply>) {
    if let Some(cpu) = cpu {
        if let Err(e) = sys::pin_to(cpu) {
            eprintln!("loadgen: cannot pin a worker to CPU {cpu}: {e}");
        }
    }
    let mut w = match Worker::new() {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(Reply::Failed(format!("epoll: {e}")));
            return;
        }
    };
    loop {
        let cmd = match rx.try_recv() {
            Ok(cmd) => cmd,
            Err(TryRecvError::Empty) => {
                w.poll(Duration::from_millis(5), None);
                w.service(Instant::now(), false);
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
        };
        let reply = match cmd {
            Cmd::Add(legs) => match w.add(legs) {
                Ok(ports) => Reply::Added(ports),
                Err(e) => Reply::Failed(format!("socket: {e}")),
            },
            Cmd::Connect(limit) => Reply::Connected(w.connect(limit)),
            Cmd::Run(spec) => Reply::Step(Box::new(w.run_step(spec))),
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}

impl Worker {
    fn new() -> std::io::Result<Worker> {
        Ok(Worker {
            legs: Vec::new(),
            publishers: Vec::new(),
            epoll: Epoll::new(1024)?,
            batch: RecvBatch::new(),
            out: Box::new([0; 2048]),
            next_service: Instant::now(),
        })
    }

    fn add(&mut self, specs: Vec<LegSpec>) -> std::io::Result<Vec<u16>> {
        let mut ports = Vec::new();
        for spec in specs {
            let socket = match spec.socket {
                Some(socket) => {
                    socket.connect(&spec.server.into())?;
                    socket
                }
                None => {
                    let bind = SocketAddr::new(spec.server.ip(), 0);
                    sys::udp_socket(bind, Some(spec.server), sys::RECV_BUFFER, true)?
                }
            };
            let port = socket
                .local_addr()?
                .as_socket()
                .map_or(0, |a: SocketAddr| a.port());
            ports.push(port);
            let index = self.legs.len();
            self.epoll.add(socket.as_raw_fd(), index as u64)?;
            if spec.publish.is_some() {
                self.publishers.push(index);
            }
            self.legs.push(Leg {
                socket,
                peer: spec.peer,
                publish: spec.publish,
                seq: 0,
                connected: false,
                remote: spec.remote,
            });
        }
        Ok(ports)
    }

    /// Drives handshakes until every leg is connected or `limit` passes; returns the laggards.
    fn connect(&mut self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let now = Instant::now();
            self.service(now, true);
            let pending = self.legs.iter().filter(|l| !l.connected).count();
            if pending == 0 || now >= deadline {
                return pending;
            }
            self.poll(Duration::from_millis(2), None);
        }
    }

    /// Sends what legs have due (checks, DTLS flights, hellos); `all` ignores the sweep interval.
    fn service(&mut self, now: Instant, all: bool) {
        if !all && now < self.next_service {
            return;
        }
        self.next_service = now + SERVICE;
        for i in 0..self.legs.len() {
            self.flush(i, now);
        }
    }

    fn flush(&mut self, i: usize, now: Instant) {
        let leg = &mut self.legs[i];
        let fd = leg.socket.as_raw_fd();
        match &mut leg.peer {
            Peer::Srtp(client) => {
                while let Some(n) = client.poll_transmit(now, &mut self.out[..]) {
                    sys::send(fd, &self.out[..n]);
                }
                leg.connected = client.is_connected();
            }
            Peer::Plain(token) => {
                if !leg.connected {
                    let mut hello = [0u8; 8];
                    hello[..4].copy_from_slice(HELLO);
                    hello[4..].copy_from_slice(&token.to_be_bytes());
                    sys::send(fd, &hello);
                }
            }
        }
    }

    /// Waits up to `timeout` for input and handles it; `m` counts media when measuring.
    fn poll(&mut self, timeout: Duration, mut m: Option<&mut Measure>) {
        // Tokens are copied out first: handling a leg needs `&mut self`.
        let mut tokens = [0u64; 1024];
        let mut count = 0;
        for t in self.epoll.wait(timeout) {
            tokens[count] = t;
            count += 1;
        }
        for &token in &tokens[..count] {
            self.receive(token as usize, m.as_deref_mut());
        }
    }

    /// One `recvmmsg` on leg `i`, each datagram handled in place.
    fn receive(&mut self, i: usize, mut m: Option<&mut Measure>) {
        let Some(leg) = self.legs.get_mut(i) else {
            return;
        };
        let n = self.batch.recv(leg.socket.as_raw_fd());
        if n == 0 {
            return;
        }
        let now = Instant::now();
        let app_ns = sys::realtime_ns();
        let mut flush = false;
        for k in 0..n {
            let (buf, stamp) = self.batch.get(k);
            let is_rtp = buf.len() >= 12 && buf[0] >> 6 == 2 && !(192..=223).contains(&buf[1]);
            if !is_rtp {
                match &mut leg.peer {
                    Peer::Srtp(client) => {
                        client.handle_datagram(buf, now);
                        flush = true;
                    }
                    Peer::Plain(_) => {
                        if buf == HELLO {
                            leg.connected = true;
                        }
                    }
                }
                continue;
            }
            let Some(m) = m.as_deref_mut() else {
                continue;
            };
            m.stats.received += 1;
            if (m.window.0..m.window.1).contains(&stamp) {
                m.stats.received_window += 1;
            }
            m.seen += 1;
            if m.seen % m.sample != 0 {
                continue;
            }
            let plain_len = match &mut leg.peer {
                Peer::Srtp(client) => match client.handle_datagram(buf, now) {
                    ClientReceived::Rtp(n) => n,
                    _ => {
                        m.stats.decrypt_failed += 1;
                        continue;
                    }
                },
                Peer::Plain(_) => buf.len(),
            };
            let Some(sent) = send_time(&buf[..plain_len]) else {
                m.stats.decrypt_failed += 1;
                continue;
            };
            if (m.window.0..m.window.1).contains(&sent) {
                let latency = if leg.remote {
                    &mut m.stats.latency_remote
                } else {
                    &mut m.stats.latency
                };
                let _ = latency.record(stamp.saturating_sub(sent).max(1));
                let _ = m
                    .stats
                    .app_latency
                    .record(app_ns.saturating_sub(sent).max(1));
            }
        }
        if flush {
            self.flush(i, now);
        }
    }

    /// Publishes for warm-up + measurement, drains, returns the counts.
    fn run_step(&mut self, spec: RunSpec) -> StepStats {
        let start = Instant::now();
        let start_rt = sys::realtime_ns();
        let window = (
            start_rt + spec.warmup.as_nanos() as u64,
            start_rt + (spec.warmup + spec.measure).as_nanos() as u64,
        );
        let mut m = Measure {
            stats: StepStats::new(),
            window,
            sample: spec.sample.max(1),
            seen: 0,
        };
        let send_end = start + spec.warmup + spec.measure;
        let mut cpu_start = None;
        let n = self.publishers.len() as u32;
        let (mut cycle, mut next) = (start, 0u32);
        let mut drain_end = None;
        loop {
            let now = Instant::now();
            if cpu_start.is_none() && now >= start + spec.warmup {
                cpu_start = Some(sys::thread_cpu_ns());
            }
            let mut timeout = Duration::from_millis(1);
            if drain_end.is_none() && n > 0 {
                loop {
                    if next == n {
                        next = 0;
                        cycle += PERIOD;
                    }
                    let due = cycle + PERIOD * next / n;
                    if due > now {
                        timeout = due - now;
                        break;
                    }
                    let _ = m.stats.send_lag.record((now - due).as_nanos() as u64 + 1);
                    self.publish(self.publishers[next as usize], &mut m);
                    next += 1;
                }
            }
            if drain_end.is_none() && now >= send_end {
                m.stats.cpu_ns = sys::thread_cpu_ns() - cpu_start.unwrap_or(0);
                m.stats.window_ns = window.1 - window.0;
                drain_end = Some(now + spec.drain);
            }
            if drain_end.is_some_and(|end| now >= end) {
                return m.stats;
            }
            let timeout = if spec.busy_poll && drain_end.is_none() {
                Duration::ZERO
            } else {
                timeout.min(SERVICE)
            };
            self.poll(timeout, Some(&mut m));
            self.service(Instant::now(), false);
        }
    }

    /// Sends leg `i`'s next packet, stamped with the send time.
    fn publish(&mut self, i: usize, m: &mut Measure) {
        let leg = &mut self.legs[i];
        let Some((ssrc, fanout)) = leg.publish else {
            return;
        };
        leg.seq = leg.seq.wrapping_add(1);
        let buf = &mut self.out[..];
        let seq = leg.seq;
        buf[..4].copy_from_slice(&[0x90, 111, (seq >> 8) as u8, seq as u8]);
        buf[4..8].copy_from_slice(&(u32::from(seq).wrapping_mul(960)).to_be_bytes());
        buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        buf[12..20].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x85, 0x00, 0x00]);
        buf[28..PACKET].fill(0x55);
        let sent = sys::realtime_ns();
        buf[20..28].copy_from_slice(&sent.to_be_bytes());
        let len = match &mut leg.peer {
            Peer::Srtp(client) => match client.protect_rtp(buf, PACKET) {
                Some(n) => n,
                None => {
                    m.stats.send_failed += 1;
                    return;
                }
            },
            Peer::Plain(_) => PACKET,
        };
        if sys::send(leg.socket.as_raw_fd(), &buf[..len]) {
            m.stats.sent += 1;
            m.stats.expected += u64::from(fanout);
            if (m.window.0..m.window.1).contains(&sent) {
                m.stats.expected_window += u64::from(fanout);
            }
        } else {
            m.stats.send_failed += 1;
        }
    }
}

/// The send timestamp in a plaintext RTP packet's payload.
fn send_time(packet: &[u8]) -> Option<u64> {
    let header = choir::wire::rtp::parse(packet).ok()?;
    let stamp = packet.get(header.header_len..header.header_len + 8)?;
    Some(u64::from_be_bytes(stamp.try_into().ok()?))
}
