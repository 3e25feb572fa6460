//! The shard's sans-IO core: rooms, participants, transports, producers and consumers.
//!
//! [`Sfu`] is a plain struct. The glommio shell (`crate::shard`) feeds it commands from the
//! control server, datagrams from its sockets and timer ticks, each with an explicit `now`;
//! what must be sent goes out through an [`Egress`], what the control server must hear comes out
//! of [`Sfu::take_events`], and the transports it closed (whose sockets the shell must release)
//! come out of [`Sfu::take_closed`].

pub mod api;
pub mod cascade;
mod commands;
pub mod counters;
mod deadline;
mod dominant;
mod forward;
mod history;
mod limits;
mod nack;
pub mod ortc;
mod red;
mod rtcp_reports;
mod speaking;
pub mod transport;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use slab::Slab;

use crate::sfu::api::{Audience, Event, RoomEvent};
use crate::sfu::ortc::ProducerRtp;
use crate::wire::dtls::DtlsIdentity;
use crate::wire::rtcp::ReceiveStats;
use crate::wire::rtp::{ExtensionMap, SequenceMapper};

pub use counters::Counters;
pub use limits::{Limit, RoomLimits, TransportStates};
pub use speaking::SpeakingSettings;
pub use transport::Transport;

/// Index of a transport in its shard (stable while the transport lives).
pub type TransportKey = usize;
/// The shell's name for one of its sockets: a UDP socket or an accepted TCP connection.
pub type SocketId = u32;

/// A network path to a browser: the shard's local socket (or TCP connection) and the remote
/// address. ICE selects one per transport; DTLS and media are accepted only on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    pub socket: SocketId,
    pub remote: SocketAddr,
}
type ProducerKey = usize;
type ConsumerKey = usize;
/// Index of a cascade link in its shard (stable while the link lives; see [`cascade`]).
pub type LinkKey = usize;

/// Where the core's datagrams go: the shell sends `datagram` on `path` (a UDP datagram, or a
/// frame on a TCP connection). Implementations must not block; a full socket buffer or TCP send
/// queue is a counted drop.
pub trait Egress {
    fn send(&mut self, path: Path, datagram: &[u8]);

    /// A cascade link's datagram (see [`cascade`]): a UDP datagram to `to`, sent from the
    /// shard's socket bound at `local_port`. The default drops it: a shell that carries links
    /// must implement this (the shards' `SocketEgress` does, see `crate::shard`'s cascade
    /// notes).
    fn send_to(&mut self, local_port: u16, to: SocketAddr, datagram: &[u8]) {
        let _ = (local_port, to, datagram);
    }
}

/// One announced address of the transports' candidates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    pub ip: IpAddr,
    pub udp: bool,
    pub tcp: bool,
}

/// Settings of a shard's core.
#[derive(Clone)]
pub struct Settings {
    /// Candidate addresses, in order of preference.
    pub announced: Vec<Announced>,
    pub consent_timeout: Duration,
    pub dtls_timeout: Duration,
    /// How long a consumer that is not its transport's first waits before its first packet.
    /// mediasoup-client applies the consumer's SDP after the `consume` reply; a packet arriving
    /// before that, without a MID header extension to go by (mediasoup-client 3.24 may not
    /// negotiate it), makes Chromium bind the SSRC to the wrong m-line, and the consumer then
    /// stays silent. The first consumer is in the SDP before DTLS can connect.
    pub consumer_hold: Duration,
    pub dtls_config: Arc<dimpl::Config>,
    pub identity: DtlsIdentity,
}

/// Largest datagram the core handles; buffers handed to it must have this much room.
pub const MAX_DATAGRAM: usize = 1500;
/// Room a buffer needs beyond a datagram for SRTP/SRTCP tags.
pub const BUFFER_SIZE: usize = 2048;

#[derive(Default)]
struct Room {
    participants: HashMap<String, Participant>,
    /// The room's cascade links, one per peer node (see [`cascade`]).
    links: Vec<LinkKey>,
    /// Producers of remote participants, arrived over those links.
    remote: Vec<ProducerKey>,
    /// The last successful API call for the room (see [`deadline`]).
    touched: Option<Instant>,
    dominant: dominant::Dominant,
    /// Its last participant left while links kept it: it closes with its last link.
    vacated: bool,
}

impl Room {
    /// The room's producers: local participants' and remote ones.
    fn producers(&self) -> impl Iterator<Item = ProducerKey> + '_ {
        self.participants
            .values()
            .filter_map(|p| p.producer)
            .chain(self.remote.iter().copied())
    }
}

#[derive(Default)]
struct Participant {
    send: Option<TransportKey>,
    recv: Option<TransportKey>,
    producer: Option<ProducerKey>,
    /// The last successful API call for the participant (see [`deadline`]).
    touched: Option<Instant>,
}

/// Where a producer's packets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A local participant's send transport.
    Local(TransportKey),
    /// A cascade link: the producer of a participant on the link's peer node.
    Remote(LinkKey),
}

struct Producer {
    id: String,
    channel_id: String,
    user_id: String,
    origin: Origin,
    /// The producer's number on cascade links: for a local one, the number this shard relays it
    /// under on every link (unique in the shard, never reused); for a remote one, the peer's.
    stream: u32,
    /// The `rtpParameters` it was produced with (what a peer node needs to add it).
    parameters: crate::sfu::ortc::RtpParameters,
    rtp: ProducerRtp,
    /// The SSRC packets arrive with (signalled, or learnt from the MID extension).
    ssrc: Option<u32>,
    paused: bool,
    stats: Option<ReceiveStats>,
    consumers: Vec<ConsumerKey>,
    speaker: speaking::Speaker,
    /// The last second of packets, once a consumer negotiated NACK or RED.
    history: Option<Box<history::PacketHistory>>,
    /// Missing packets to ask the speaker for, when the producer negotiated NACK.
    gaps: Option<Box<nack::Gaps>>,
    /// What choir passed on of a producer that sends RED (see [`red`]).
    red: red::Received,
}

struct Consumer {
    producer: ProducerKey,
    transport: TransportKey,
    ssrc: u32,
    cname: String,
    extensions: ExtensionMap,
    sequence: SequenceMapper,
    packets: u32,
    octets: u32,
    last_sent_at: Option<Instant>,
    /// Not the transport's first consumer: forwarding starts at this instant, once the browser
    /// has had time to apply the consumer's SDP (see [`Settings::consumer_hold`]).
    hold_until: Option<Instant>,
    /// The consumer negotiated NACK: its requests are answered, within `budget`.
    nack: bool,
    /// The consumer negotiated RED: its packets carry the frames before them (`crate::sfu::red`).
    red: bool,
    budget: nack::Budget,
    /// The loss the listener's Receiver Reports give for this stream.
    reported_loss: crate::wire::rtcp::ReportedLoss,
}

/// One shard's media core.
pub struct Sfu {
    settings: Settings,
    rooms: HashMap<String, Room>,
    transports: Slab<Transport>,
    producers: Slab<Producer>,
    consumers: Slab<Consumer>,
    /// Producer id → key, for the API (ids are unique per shard).
    producer_ids: HashMap<String, ProducerKey>,
    /// Shared sockets (single-port mode): ICE ufrag → transport, for STUN.
    ufrags: HashMap<String, TransportKey>,
    /// Shared sockets: a transport's selected path → transport, for everything else.
    routes: HashMap<Path, TransportKey>,
    events: Vec<RoomEvent>,
    closed: Vec<(TransportKey, u16)>,
    counters: Counters,
    /// Per-consumer copy of the packet being fanned out.
    scratch: Box<[u8; BUFFER_SIZE]>,
    /// A RED packet's blocks as plain packets (see [`red`]); taken while one is forwarded.
    unred: Option<Box<[u8; BUFFER_SIZE]>>,
    next_rtcp: Option<Instant>,
    /// The slice of consumers and transports whose reports are due next (see [`RTCP_SLICES`]).
    rtcp_slice: usize,
    /// A wall-clock reading and the `Instant` it was taken at, for NTP times in reports.
    epoch: (Instant, SystemTime),
    limits: RoomLimits,
    /// When the join deadlines are checked next (see [`deadline`]).
    next_join_check: Option<Instant>,
    speaking_clock: speaking::SpeakingClock,
    /// Cascade links (see [`cascade`]), and their receive link ids.
    links: Slab<cascade::Link>,
    link_ids: HashMap<u32, LinkKey>,
    /// What removed links had counted, per peer node (see [`cascade::PeerStats`]).
    retired_links: HashMap<String, cascade::Retired>,
    /// The next local producer's [`Producer::stream`].
    next_stream: u32,
}

impl Sfu {
    pub fn new(settings: Settings, now: Instant) -> Self {
        Sfu {
            settings,
            rooms: HashMap::new(),
            transports: Slab::new(),
            producers: Slab::new(),
            consumers: Slab::new(),
            producer_ids: HashMap::new(),
            ufrags: HashMap::new(),
            routes: HashMap::new(),
            events: Vec::new(),
            closed: Vec::new(),
            counters: Counters::default(),
            scratch: Box::new([0; BUFFER_SIZE]),
            unred: Some(Box::new([0; BUFFER_SIZE])),
            next_rtcp: None,
            rtcp_slice: 0,
            epoch: (now, SystemTime::now()),
            limits: RoomLimits::default(),
            next_join_check: None,
            speaking_clock: Default::default(),
            links: Slab::new(),
            link_ids: HashMap::new(),
            retired_links: HashMap::new(),
            next_stream: 1,
        }
    }

    /// Forgets a path whose TCP connection closed: its transport keeps its ICE state and times
    /// out by consent unless the browser comes back on another path.
    pub fn path_closed(&mut self, path: Path) {
        self.routes.remove(&path);
    }

    /// Whether a transport owns `path` on a shared socket.
    pub fn routes_to(&self, path: Path) -> bool {
        self.routes.contains_key(&path)
    }

    /// The id of the transport whose ICE accepted a STUN request on `path` (a valid check: the
    /// browser knows its credentials): the socket's `owner`, or on a shared socket the
    /// transport `path` routes to.
    pub fn validated_by(&self, owner: Option<TransportKey>, path: Path) -> Option<String> {
        let key = owner.or_else(|| self.routes.get(&path).copied())?;
        let t = self.transports.get(key)?;
        t.validated().contains(&path).then(|| t.id.clone())
    }

    fn wall_clock(&self, now: Instant) -> SystemTime {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Events for the control server's subscribers since the last call.
    pub fn take_events(&mut self) -> Vec<RoomEvent> {
        std::mem::take(&mut self.events)
    }

    /// Transports closed since the last call, with their local ports: the shell closes their
    /// sockets and releases the ports.
    pub fn take_closed(&mut self) -> Vec<(TransportKey, u16)> {
        std::mem::take(&mut self.closed)
    }

    pub fn has_closed(&self) -> bool {
        !self.closed.is_empty()
    }

    pub fn is_open(&self, key: TransportKey) -> bool {
        self.transports.contains(key)
    }

    /// The earliest instant [`Sfu::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let transports = self.transports.iter().filter_map(|(_, t)| t.poll_timeout());
        transports
            .chain(self.next_rtcp)
            .chain(self.next_join_check())
            .chain(self.speaking_poll_timeout())
            .chain(self.links.iter().map(|(_, l)| l.next_keepalive))
            .min()
    }

    /// Runs timers: ICE consent, DTLS retransmission and handshake deadlines, RTCP reports, join
    /// deadlines, speaking indicators, cascade keepalives.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Egress) {
        let mut failed = Vec::new();
        for (key, t) in self.transports.iter_mut() {
            if t.poll_timeout().is_some_and(|at| at <= now) {
                let mut io = transport::Io {
                    now,
                    settings: &self.settings,
                    scratch: &mut self.scratch[..],
                    out: &mut *out,
                    counters: &mut self.counters,
                };
                if let Some(reason) = t.handle_timeout(&mut io) {
                    failed.push((key, reason));
                }
            }
        }
        for (key, reason) in failed {
            self.transport_failed(key, reason);
        }
        // Reports go out one slice at a time, so a shard with thousands of consumers does not
        // stall its packets behind a burst of thousands of SRTCP sends once a second. A late
        // call catches up on the slices it missed (at most one interval's worth).
        for _ in 0..RTCP_SLICES {
            if self.next_rtcp.is_some_and(|at| at > now) {
                break;
            }
            let step = RTCP_INTERVAL / RTCP_SLICES as u32;
            let floor = now.checked_sub(RTCP_INTERVAL).unwrap_or(now);
            self.next_rtcp = Some(self.next_rtcp.map_or(now, |at| at.max(floor)) + step);
            self.send_reports(now, self.rtcp_slice, out);
            self.rtcp_slice = (self.rtcp_slice + 1) % RTCP_SLICES;
        }
        self.expire_joins(now);
        self.speaking_timeout(now);
        self.send_keepalives(now, out);
    }

    /// A transport failed (DTLS) or lost consent: close it, and on consent loss remove its
    /// participant (the browser is gone).
    fn transport_failed(&mut self, key: TransportKey, reason: transport::CloseReason) {
        let Some(t) = self.transports.get(key) else {
            return;
        };
        let (channel_id, user_id) = (t.channel_id.clone(), t.user_id.clone());
        tracing::info!(channel = %channel_id, user = %user_id, transport = %t.id, reason = reason.as_str(), "transport closed");
        match reason {
            transport::CloseReason::ConsentExpired => {
                self.counters.consent_timeouts += 1;
                self.remove_participant(&channel_id, &user_id, "consent expired");
            }
            transport::CloseReason::Dtls(crate::wire::dtls::DtlsFailure::Closed) => {
                // The browser closed the transport (close_notify), e.g. before `leave`.
                self.counters.dtls_closed += 1;
                self.close_transport(key);
            }
            transport::CloseReason::Dtls(_) => {
                self.counters.dtls_failures += 1;
                let transport_id = t.id.clone();
                self.close_transport(key);
                self.events.push(RoomEvent {
                    channel_id,
                    audience: Audience::Only(user_id),
                    event: Event::TransportClosed {
                        transport_id,
                        reason: reason.as_str().into(),
                    },
                });
            }
        }
    }
}

const RTCP_INTERVAL: Duration = Duration::from_secs(1);
/// Each interval's reports are spread over this many slices (consumer or transport key modulo
/// the count): one slice every 20 ms.
const RTCP_SLICES: usize = 50;

/// Random bytes from the OS RNG (aws-lc).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG does not fail on Linux; a failure would leave zeros, which only weakens
    // uniqueness, so it is logged rather than unwrapped.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        tracing::error!("system RNG failed");
    }
    b
}

fn random_u32() -> u32 {
    u32::from_be_bytes(random_bytes::<4>())
}

/// `len` random characters from [A-Za-z0-9] (ICE ufrag/password alphabet, RFC 8445 §5.3).
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = random_bytes::<64>();
    bytes
        .iter()
        .take(len)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
