//! An impairing UDP relay between test peers and choir (this kernel has no `netem` qdisc):
//! loss, delay with jitter, reordering and duplication in both directions, seeded so that a run
//! can be reproduced, and a tap that records the RTP sequence numbers going in and out.
//!
//! One relay socket per choir transport ("leg"): the peer sends to it (the test routes the
//! peer's remote candidate there), the relay forwards from the same socket to choir's
//! candidate, so choir sees the relay's address as the peer's and answers there; datagrams
//! from choir go back to the address the peer last sent from.
//!
//! The fate of an RTP packet is a function of (seed, leg, direction, the SSRC's order of
//! appearance, sequence number, how many times that number was seen before) alone, so it does
//! not depend on how the packet interleaves with others, and a retransmission (RFC 4585 NACK,
//! same sequence number) draws its own fate; every other datagram (STUN, DTLS, RTCP) draws from a seeded stream per leg and
//! direction. Reordering works like netem's: a reordered datagram skips the delay and so
//! overtakes the ones queued before it; a duplicate is a second copy with its own delay.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the relay does to each datagram, in each direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Probability of dropping a datagram.
    pub loss: f64,
    /// One-way delay, ± `jitter` (uniform).
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability that a datagram skips the delay (and overtakes those before it).
    pub reorder: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Also drop the first DTLS datagram of every leg in each direction, so that every
    /// handshake completes only through retransmissions.
    pub drop_first_dtls: bool,
}

impl Impairment {
    /// Issue 12's network: 5 % loss, 40 ms ± 10 ms, 1 % reordering, 0.5 % duplicates.
    pub fn lossy() -> Impairment {
        Impairment {
            loss: 0.05,
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(10),
            reorder: 0.01,
            duplicate: 0.005,
            drop_first_dtls: true,
        }
    }

    /// Only random loss.
    pub fn loss(loss: f64) -> Impairment {
        Impairment {
            loss,
            ..Default::default()
        }
    }
}

/// Peer → choir, or choir → peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Up = 0,
    Down = 1,
}

/// What one leg saw in one direction.
#[derive(Clone, Debug, Default)]
pub struct Tap {
    /// Datagrams that entered the relay.
    pub datagrams: u64,
    pub dropped: u64,
    pub reordered: u64,
    /// Extra copies sent, by kind.
    pub rtp_duplicated: u64,
    pub rtcp_duplicated: u64,
    pub other_duplicated: u64,
    /// Datagrams sent on (duplicates included).
    pub delivered: u64,
    pub dtls_dropped: u64,
    /// RTP sequence numbers by SSRC as they entered the relay (before impairment).
    pub rtp_in: HashMap<u32, Vec<u16>>,
    /// RTP sequence numbers by SSRC as delivered (duplicates included, in delivery order).
    pub rtp_out: HashMap<u32, Vec<u16>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp { ssrc: u32, seq: u16 },
    Rtcp,
    Dtls,
    Other,
}

fn classify(d: &[u8]) -> Kind {
    match d.first() {
        Some(20..=63) => Kind::Dtls,
        Some(128..=191) if d.len() >= 12 => {
            if (192..=223).contains(&d[1]) {
                Kind::Rtcp
            } else {
                Kind::Rtp {
                    seq: u16::from_be_bytes([d[2], d[3]]),
                    ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
                }
            }
        }
        _ => Kind::Other,
    }
}

/// SplitMix64: small, seedable, good enough for test decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Leg {
    socket: UdpSocket,
    choir: SocketAddr,
    /// Up, down.
    imp: [Impairment; 2],
    peer: Option<SocketAddr>,
    /// Per direction: the stream for non-RTP datagrams, whether a DTLS datagram was seen, the
    /// order in which SSRCs appeared.
    streams: [Rng; 2],
    dtls_seen: [bool; 2],
    ssrcs: [HashMap<u32, u64>; 2],
    /// Per direction and SSRC: how often each sequence number was seen.
    seen: [HashMap<(u32, u16), u64>; 2],
}

struct Pending {
    due: Instant,
    order: u64,
    leg: usize,
    dir: Dir,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.order) == (o.due, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(o.due, o.order))
    }
}

/// The relay: a thread serving every leg; stopped when dropped.
pub struct Relay {
    pub seed: u64,
    imp: Impairment,
    stop: Arc<AtomicBool>,
    /// While set, every datagram is dropped (a cut path; see [`Relay::cut`]).
    cut: Arc<AtomicBool>,
    /// Datagrams waiting for their delivery time.
    queued: Arc<AtomicUsize>,
    add: mpsc::Sender<(UdpSocket, SocketAddr, [Impairment; 2])>,
    addrs: Mutex<Vec<SocketAddr>>,
    taps: Arc<Mutex<Vec<[Tap; 2]>>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay whose legs ([`Relay::leg`]) impair both directions with `imp`.
    pub fn start(seed: u64, imp: Impairment) -> Relay {
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicUsize::new(0));
        let taps = Arc::new(Mutex::new(Vec::new()));
        let (add, rx) = mpsc::channel();
        let thread = {
            let (stop, cut, queued, taps) =
                (stop.clone(), cut.clone(), queued.clone(), taps.clone());
            std::thread::spawn(move || serve(seed, &rx, &stop, &cut, &queued, &taps))
        };
        Relay {
            seed,
            imp,
            stop,
            cut,
            queued,
            add,
            addrs: Mutex::new(Vec::new()),
            taps,
            thread: Some(thread),
        }
    }

    /// A new leg to choir's candidate `choir`; returns the address the peer sends to.
    pub fn leg(&self, choir: SocketAddr) -> SocketAddr {
        self.leg_with(choir, [self.imp; 2])
    }

    /// [`Relay::leg`] with its own impairments: `[up, down]`.
    pub fn leg_with(&self, choir: SocketAddr, imp: [Impairment; 2]) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        // The relay thread adds legs in this order: index = position in `addrs`.
        let mut addrs = self.addrs.lock().unwrap();
        addrs.push(addr);
        self.add.send((socket, choir, imp)).expect("relay running");
        addr
    }

    /// Cuts every leg (`true`: each datagram is dropped and counted so) or heals them.
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }

    /// What the leg at `addr` (as returned by [`Relay::leg`]) saw so far, per direction.
    pub fn tap(&self, addr: SocketAddr) -> [Tap; 2] {
        let index = self.addrs.lock().unwrap().iter().position(|a| *a == addr);
        let index = index.expect("a leg of this relay");
        let taps = self.taps.lock().unwrap();
        taps.get(index).cloned().unwrap_or_default()
    }

    /// Waits (at most `timeout`) until nothing is queued in the relay; whether it emptied.
    pub fn drain(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while self.queued.load(Ordering::Relaxed) > 0 {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Every leg's taps.
    pub fn taps(&self) -> Vec<[Tap; 2]> {
        self.taps.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    seed: u64,
    rx: &mpsc::Receiver<(UdpSocket, SocketAddr, [Impairment; 2])>,
    stop: &AtomicBool,
    cut: &AtomicBool,
    queued: &AtomicUsize,
    taps: &Mutex<Vec<[Tap; 2]>>,
) {
    let mut legs: Vec<Leg> = Vec::new();
    let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        while let Ok((socket, choir, imp)) = rx.try_recv() {
            let i = legs.len() as u64;
            let stream = |dir: u64| Rng(seed ^ Rng(i * 2 + dir).next());
            legs.push(Leg {
                socket,
                choir,
                imp,
                peer: None,
                streams: [stream(0), stream(1)],
                dtls_seen: [false; 2],
                ssrcs: [HashMap::new(), HashMap::new()],
                seen: [HashMap::new(), HashMap::new()],
            });
            taps.lock().unwrap().push(Default::default());
        }
        let now = Instant::now();
        for (i, leg) in legs.iter_mut().enumerate() {
            while let Ok((n, from)) = leg.socket.recv_from(&mut buf) {
                let (dir, to) = if from == leg.choir {
                    match leg.peer {
                        Some(peer) => (Dir::Down, peer),
                        None => continue,
                    }
                } else {
                    leg.peer = Some(from);
                    (Dir::Up, leg.choir)
                };
                let d = dir as usize;
                let imp = leg.imp[d];
                let bytes = &buf[..n];
                let kind = classify(bytes);
                let mut taps = taps.lock().unwrap();
                let tap = &mut taps[i][d];
                tap.datagrams += 1;
                if let Kind::Rtp { ssrc, seq } = kind {
                    tap.rtp_in.entry(ssrc).or_default().push(seq);
                }
                // The decisions for this datagram.
                let mut rng = match kind {
                    Kind::Rtp { ssrc, seq } => {
                        let count = leg.ssrcs[d].len() as u64;
                        let ordinal = *leg.ssrcs[d].entry(ssrc).or_insert(count);
                        let key = (i as u64) << 48 | (d as u64) << 40 | ordinal << 16;
                        let seen = leg.seen[d].entry((ssrc, seq)).or_insert(0);
                        // The first copy's fate is that of the number alone.
                        let again = seen.wrapping_mul(0x9E37_79B9_0000_0000);
                        *seen += 1;
                        Rng(seed ^ Rng(key | u64::from(seq)).next() ^ again)
                    }
                    _ => Rng(leg.streams[d].next()),
                };
                let first_dtls =
                    kind == Kind::Dtls && !std::mem::replace(&mut leg.dtls_seen[d], true);
                let lost = rng.unit() < imp.loss || (first_dtls && imp.drop_first_dtls);
                if lost || cut.load(Ordering::Relaxed) {
                    tap.dropped += 1;
                    if kind == Kind::Dtls {
                        tap.dtls_dropped += 1;
                    }
                    continue;
                }
                let delay = |rng: &mut Rng| {
                    let j = imp.jitter.as_secs_f64() * (2.0 * rng.unit() - 1.0);
                    Duration::from_secs_f64((imp.delay.as_secs_f64() + j).max(0.0))
                };
                let first = if rng.unit() < imp.reorder {
                    tap.reordered += 1;
                    Duration::ZERO
                } else {
                    delay(&mut rng)
                };
                let mut copies = vec![first];
                if rng.unit() < imp.duplicate {
                    copies.push(delay(&mut rng));
                    match kind {
                        Kind::Rtp { .. } => tap.rtp_duplicated += 1,
                        Kind::Rtcp => tap.rtcp_duplicated += 1,
                        _ => tap.other_duplicated += 1,
                    }
                }
                for after in copies {
                    order += 1;
                    queue.push(Reverse(Pending {
                        due: now + after,
                        order,
                        leg: i,
                        dir,
                        to,
                        bytes: bytes.to_vec(),
                    }));
                }
            }
        }
        queued.store(queue.len(), Ordering::Relaxed);
        let now = Instant::now();
        while queue.peek().is_some_and(|p| p.0.due <= now) {
            let Reverse(p) = queue.pop().unwrap();
            let _ = legs[p.leg].socket.send_to(&p.bytes, p.to);
            let mut taps = taps.lock().unwrap();
            let tap = &mut taps[p.leg][p.dir as usize];
            tap.delivered += 1;
            if let Kind::Rtp { ssrc, seq } = classify(&p.bytes) {
                tap.rtp_out.entry(ssrc).or_default().push(seq);
            }
        }
        queued.store(queue.len(), Ordering::Relaxed);
        let idle = queue.peek().map_or(Duration::from_millis(1), |p| {
            p.0.due.saturating_duration_since(now)
        });
        std::thread::sleep(idle.min(Duration::from_millis(1)));
    }
}
