//! A shard's sans-IO core ([`choir::sfu::Sfu`]) wired to in-memory clients
//! ([`choir::client::ClientTransport`]): no sockets, no threads, an explicit clock. The real
//! protocols run (ICE checks, DTLS handshakes, SRTP), only the network is a queue.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use choir::client::{ClientReceived, ClientTransport, ServerParams};
use choir::sfu::api::{
    ConnectTransportRequest, CreateTransportRequest, Direction, DtlsParameters, DtlsRole,
    Fingerprint, ProduceRequest,
};
use choir::sfu::{Announced, Egress, Path, Settings, Sfu, TransportKey};
use choir::wire::dtls::{self, DtlsIdentity};
use serde_json::json;

/// Collects what the core sends (allocates: for set-up, not for measured loops): datagrams to
/// clients, and cascade link datagrams as (local port, destination, datagram).
#[derive(Default)]
pub struct Queue(
    pub Vec<(Path, Vec<u8>)>,
    pub Vec<(u16, SocketAddr, Vec<u8>)>,
);

impl Egress for Queue {
    fn send(&mut self, path: Path, datagram: &[u8]) {
        self.0.push((path, datagram.to_vec()));
    }

    fn send_to(&mut self, local_port: u16, to: SocketAddr, datagram: &[u8]) {
        self.1.push((local_port, to, datagram.to_vec()));
    }
}

/// Counts what the core sends and keeps the last datagram per destination transport slot.
pub struct Counter {
    pub sent: u64,
    pub bytes: u64,
}

impl Egress for Counter {
    fn send(&mut self, _path: Path, datagram: &[u8]) {
        self.sent += 1;
        self.bytes += datagram.len() as u64;
    }

    /// Cascade link datagrams count too.
    fn send_to(&mut self, _local_port: u16, _to: SocketAddr, datagram: &[u8]) {
        self.sent += 1;
        self.bytes += datagram.len() as u64;
    }
}

/// One client transport. Each has its own "socket" (the per-transport port) and address.
pub struct Leg {
    pub client: ClientTransport,
    pub key: TransportKey,
    pub path: Path,
}

pub struct Member {
    pub user: String,
    pub send: Leg,
    pub recv: Leg,
    pub producer_id: Option<String>,
    pub ssrc: u32,
}

/// A packet a client received and decrypted.
pub struct Delivered {
    pub member: usize,
    /// On its send transport (else its recv transport).
    pub send: bool,
    /// RTP (else compound RTCP).
    pub rtp: bool,
    pub bytes: Vec<u8>,
}

/// The `rtcpFeedback` of a codec: generic NACK or nothing.
fn nack_feedback(nack: bool) -> serde_json::Value {
    if nack {
        json!([{"type":"nack","parameter":""}])
    } else {
        json!([])
    }
}

pub struct Loopback {
    pub sfu: Sfu,
    pub now: Instant,
    pub members: Vec<Member>,
    config: std::sync::Arc<dimpl::Config>,
    next_addr: u16,
}

impl Loopback {
    pub fn new() -> Loopback {
        Self::with_consumer_hold(Duration::ZERO)
    }

    pub fn with_consumer_hold(consumer_hold: Duration) -> Loopback {
        let now = Instant::now();
        let config = dtls::dtls_config();
        let settings = Settings {
            announced: vec![Announced {
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                udp: true,
                tcp: false,
            }],
            consent_timeout: Duration::from_secs(30),
            dtls_timeout: Duration::from_secs(30),
            consumer_hold,
            dtls_config: config.clone(),
            identity: DtlsIdentity::generate().unwrap(),
        };
        Loopback {
            sfu: Sfu::new(settings, now),
            now,
            members: Vec::new(),
            config,
            next_addr: 1,
        }
    }

    fn leg(&mut self, channel: &str, user: &str, direction: Direction) -> Leg {
        let port = 40_000 + self.next_addr;
        let req = CreateTransportRequest {
            channel_id: channel.into(),
            user_id: user.into(),
            direction,
        };
        let (key, options) = self.sfu.create_transport(&req, port, self.now).unwrap();
        let server = ServerParams {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            ufrag: options.ice_parameters.username_fragment.clone(),
            password: options.ice_parameters.password.clone(),
            fingerprint: options.dtls_parameters.fingerprints[0].value.clone(),
        };
        let client = ClientTransport::new(
            server,
            dtls::DtlsRole::Client,
            self.config.clone(),
            DtlsIdentity::generate().unwrap(),
            self.now,
        );
        let connect = ConnectTransportRequest {
            channel_id: channel.into(),
            user_id: user.into(),
            transport_id: options.id.clone(),
            dtls_parameters: DtlsParameters {
                role: Some(DtlsRole::Client),
                fingerprints: vec![Fingerprint {
                    algorithm: "sha-256".into(),
                    value: client.fingerprint().into(),
                }],
            },
        };
        let mut q = Queue::default();
        self.sfu
            .connect_transport(&connect, self.now, &mut q)
            .unwrap();
        let [hi, lo] = self.next_addr.to_be_bytes();
        let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, hi, lo)), 5000);
        // Each client transport has its own "socket" (a per-transport port).
        let path = Path {
            socket: u32::from(self.next_addr),
            remote,
        };
        self.next_addr += 1;
        Leg { client, key, path }
    }

    /// Joins a participant (send + recv transports; a producer if `produce`).
    pub fn join(&mut self, channel: &str, user: &str, produce: bool) -> usize {
        self.join_with(channel, user, produce, false)
    }

    /// [`Loopback::join`]; with `nack`, the producer negotiates generic NACK.
    pub fn join_with(&mut self, channel: &str, user: &str, produce: bool, nack: bool) -> usize {
        self.join_codecs(channel, user, produce, nack, false)
    }

    /// [`Loopback::join_with`]; with `red`, the producer sends RED (payload type 63) over its
    /// Opus (111), as Chromium does when the answer puts RED first.
    pub fn join_codecs(
        &mut self,
        channel: &str,
        user: &str,
        produce: bool,
        nack: bool,
        red: bool,
    ) -> usize {
        self.sfu.open_room(channel);
        let send = self.leg(channel, user, Direction::Send);
        let ssrc = 0x5000_0000 + self.members.len() as u32;
        let feedback = nack_feedback(nack);
        let mut codecs = vec![
            json!({"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,"rtcpFeedback":feedback}),
        ];
        if red {
            codecs.insert(
                0,
                json!({"mimeType":"audio/red","payloadType":63,"clockRate":48000,"channels":2}),
            );
        }
        let producer_id = produce.then(|| {
            let rtp = serde_json::from_value(json!({"mid":"0","codecs":codecs,
                "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1}],
                "encodings":[{"ssrc":ssrc}],"rtcp":{"cname":user}}))
            .unwrap();
            let req = ProduceRequest {
                channel_id: channel.into(),
                user_id: user.into(),
                kind: "audio".into(),
                rtp_parameters: rtp,
                paused: false,
            };
            self.sfu.produce(&req).unwrap()
        });
        let recv = self.leg(channel, user, Direction::Recv);
        self.members.push(Member {
            user: user.into(),
            send,
            recv,
            producer_id,
            ssrc,
        });
        self.members.len() - 1
    }

    /// `member` consumes `producer`'s producer.
    pub fn consume(&mut self, channel: &str, member: usize, producer: usize) -> u32 {
        self.consume_with(channel, member, producer, false)
    }

    /// [`Loopback::consume`]; with `nack`, the consumer negotiates generic NACK.
    pub fn consume_with(
        &mut self,
        channel: &str,
        member: usize,
        producer: usize,
        nack: bool,
    ) -> u32 {
        self.consume_caps(channel, member, producer, nack, false)
    }

    /// [`Loopback::consume`] with NACK and/or RED in the consumer's capabilities.
    pub fn consume_caps(
        &mut self,
        channel: &str,
        member: usize,
        producer: usize,
        nack: bool,
        red: bool,
    ) -> u32 {
        let producer_id = self.members[producer].producer_id.clone().unwrap();
        self.consume_id(channel, member, &producer_id, nack, red)
    }

    /// `member` consumes the producer `producer_id` (local or remote), with NACK and/or RED in
    /// its capabilities.
    pub fn consume_id(
        &mut self,
        channel: &str,
        member: usize,
        producer_id: &str,
        nack: bool,
        red: bool,
    ) -> u32 {
        let feedback = nack_feedback(nack);
        let mut codecs = vec![
            json!({"kind":"audio","mimeType":"audio/opus","preferredPayloadType":100,"clockRate":48000,"channels":2,"rtcpFeedback":feedback}),
        ];
        if red {
            codecs.push(json!({"kind":"audio","mimeType":"audio/red","preferredPayloadType":101,"clockRate":48000,"channels":2}));
        }
        let caps = serde_json::from_value(json!({"codecs":codecs,
            "headerExtensions":[{"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":10}]}))
        .unwrap();
        let req = choir::sfu::api::ConsumeRequest {
            channel_id: channel.into(),
            user_id: self.members[member].user.clone(),
            producer_id: producer_id.into(),
            rtp_capabilities: caps,
        };
        let c = self.sfu.consume(&req, self.now).unwrap();
        c.rtp_parameters.encodings[0].ssrc.unwrap()
    }

    fn legs_mut(&mut self) -> impl Iterator<Item = &mut Leg> {
        self.members
            .iter_mut()
            .flat_map(|m| [&mut m.send, &mut m.recv])
    }

    /// One speaker and `listeners` members consuming it in `channel`, settled: returns the
    /// speaker's member index (the benches' fan-out set-up).
    pub fn speaker_with_listeners(&mut self, channel: &str, listeners: usize) -> usize {
        let speaker = self.join(channel, "speaker", true);
        let members: Vec<usize> = (0..listeners)
            .map(|i| self.join(channel, &format!("l{i}"), false))
            .collect();
        for l in members {
            self.consume(channel, l, speaker);
        }
        self.settle();
        speaker
    }

    /// Exchanges datagrams (10 ms steps) until every client is connected.
    pub fn settle(&mut self) {
        for _ in 0..500 {
            if self
                .members
                .iter()
                .all(|m| m.send.client.is_connected() && m.recv.client.is_connected())
            {
                return;
            }
            self.step(Duration::from_millis(10));
        }
        panic!("clients did not connect");
    }

    /// Advances the clock, lets clients send, delivers the core's replies.
    pub fn step(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        let mut q = Queue::default();
        let mut buf = vec![0u8; 2048];
        let mut outgoing = Vec::new();
        for leg in self.legs_mut() {
            while let Some(n) = leg.client.poll_transmit(now, &mut buf) {
                outgoing.push((leg.key, leg.path, buf[..n].to_vec()));
            }
        }
        for (key, path, mut d) in outgoing {
            let len = d.len();
            d.resize(2048, 0);
            self.sfu
                .handle_datagram(Some(key), path, &mut d, len, now, &mut q);
        }
        self.sfu.handle_timeout(now, &mut q);
        self.deliver(q);
    }

    /// Delivers queued datagrams to the clients they are addressed to; returns decrypted RTP
    /// packets as (receiving member, bytes).
    pub fn deliver(&mut self, q: Queue) -> Vec<(usize, Vec<u8>)> {
        self.deliver_all(q)
            .into_iter()
            .filter(|d| d.rtp)
            .map(|d| (d.member, d.bytes))
            .collect()
    }

    /// Delivers queued datagrams; returns every decrypted RTP and RTCP packet.
    pub fn deliver_all(&mut self, q: Queue) -> Vec<Delivered> {
        let now = self.now;
        let mut got = Vec::new();
        for (path, mut d) in q.0 {
            for (i, m) in self.members.iter_mut().enumerate() {
                for (send, leg) in [(true, &mut m.send), (false, &mut m.recv)] {
                    if leg.path != path {
                        continue;
                    }
                    let (rtp, n) = match leg.client.handle_datagram(&mut d, now) {
                        ClientReceived::Rtp(n) => (true, n),
                        ClientReceived::Rtcp(n) => (false, n),
                        _ => continue,
                    };
                    got.push(Delivered {
                        member: i,
                        send,
                        rtp,
                        bytes: d[..n].to_vec(),
                    });
                }
            }
        }
        got
    }

    /// Sends `member`'s plaintext RTCP `packet` on its send (else recv) transport; returns what
    /// the core sent in reply.
    pub fn send_rtcp(&mut self, member: usize, send: bool, packet: &[u8]) -> Queue {
        let m = &mut self.members[member];
        let leg = if send { &mut m.send } else { &mut m.recv };
        let mut d = packet.to_vec();
        d.resize(2048, 0);
        let n = leg
            .client
            .protect_rtcp(&mut d, packet.len())
            .expect("connected");
        let mut q = Queue::default();
        self.sfu
            .handle_datagram(Some(leg.key), leg.path, &mut d, n, self.now, &mut q);
        q
    }

    /// Sends `member`'s plaintext RTP `packet` on its send transport; returns what the core
    /// sent.
    pub fn send_rtp(&mut self, member: usize, packet: &[u8]) -> Queue {
        let leg = &mut self.members[member].send;
        let mut d = packet.to_vec();
        d.resize(2048, 0);
        let n = leg
            .client
            .protect_rtp(&mut d, packet.len())
            .expect("connected");
        let mut q = Queue::default();
        self.sfu
            .handle_datagram(Some(leg.key), leg.path, &mut d, n, self.now, &mut q);
        q
    }

    /// An Opus-sized RTP packet from `member` (plaintext, in `buf`), returns its length.
    pub fn rtp_packet(&self, member: usize, seq: u16, buf: &mut [u8]) -> usize {
        let m = &self.members[member];
        let header = [0x90, 111, (seq >> 8) as u8, seq as u8];
        buf[..4].copy_from_slice(&header);
        buf[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
        buf[8..12].copy_from_slice(&m.ssrc.to_be_bytes());
        // One-byte extension block: audio level (id 1) + padding.
        buf[12..16].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01]);
        buf[16..20].copy_from_slice(&[0x10, 0x85, 0x00, 0x00]);
        for (i, b) in buf[20..120].iter_mut().enumerate() {
            *b = (i as u16 ^ seq) as u8;
        }
        120
    }
}
