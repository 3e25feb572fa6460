//! An independent WebRTC peer for the media tests: str0m (full ICE agent, its own DTLS and
//! SRTP), driven through choir's voice API exactly as a mediasoup-client browser would: one
//! send transport producing Opus-sized RTP at 50 packets/s, one recv transport consuming.
//!
//! Each payload says who sent it and which of its packets it was, so a receiver can check
//! **whose** audio it got and that the bytes arrived unchanged.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use str0m::change::DirectApi;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpWrite, SeqNo, Ssrc};
use str0m::stats::MediaEgressStats;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::net::Net;
pub use super::net::Via;
use super::Daemon;

/// Payload bytes per packet (a 20 ms Opus frame at ~40 kbit/s).
pub const PAYLOAD_LEN: usize = 100;
/// The peer's own payload type and extension ids, as Chrome signals them: choir must map them.
const SEND_PT: u8 = 111;
const SEND_EXT_AUDIO_LEVEL: u8 = 1;
const SEND_EXT_MID: u8 = 4;
/// What choir's consumers use (router ids).
const RECV_PT: u8 = 100;

/// The payload of `sender`'s packet number `n`.
pub fn payload(sender: u8, n: u16) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD_LEN];
    p[0] = sender;
    p[1..3].copy_from_slice(&n.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(3) {
        *b = (u32::from(sender) * 31 + u32::from(n) * 7 + i as u32) as u8;
    }
    p
}

/// One received packet, as the consumer saw it.
#[derive(Debug, Clone)]
pub struct Got {
    pub ssrc: u32,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    /// Who sent it and its packet number, read from the payload.
    pub sender: u8,
    pub n: u16,
    /// The payload is exactly what the sender wrote.
    pub intact: bool,
    pub audio_level: Option<i8>,
    pub at: Instant,
}

/// One transport: a str0m `Rtc` on its own loopback socket or TCP connection.
pub struct Leg {
    pub rtc: Rtc,
    net: Net,
    pub via: Via,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub transport_id: String,
    /// Every datagram this leg sent (for replay tests), newest last; capped.
    pub sent: Vec<Vec<u8>>,
    pub connected: bool,
    pub disconnected: bool,
    wake: Instant,
}

impl Leg {
    /// Creates the str0m side of a choir transport. `dtls_client`: whether this peer is the
    /// DTLS client (then it signals role "client" and choir is the server).
    /// `route` maps choir's UDP candidate to the address this leg sends to (a relay in
    /// between); `stats`: str0m reports its media statistics (egress: what choir's Receiver
    /// Reports said).
    fn new(
        options: &Value,
        ext: ExtensionMap,
        pt: u8,
        opts: JoinOptions,
        now: Instant,
        route: &mut dyn FnMut(SocketAddr) -> SocketAddr,
        stats: bool,
    ) -> Leg {
        let dtls_client = opts.dtls_client;
        let mut builder = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .set_extension_map(ext)
            .set_rtcp_report_interval_audio(Duration::from_millis(500));
        if stats {
            builder = builder.set_stats_interval(Some(Duration::from_millis(500)));
        }
        builder.codec_config().add_config(
            Pt::new_with_value(pt),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            Default::default(),
        );
        let mut rtc = builder.build(now);
        let protocol = match opts.via {
            Via::Udp => "udp",
            Via::Tcp => "tcp",
        };
        let remote: SocketAddr = options["iceCandidates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["protocol"] == protocol)
            .map(|c| {
                SocketAddr::new(
                    c["address"].as_str().unwrap().parse().unwrap(),
                    c["port"].as_u64().unwrap() as u16,
                )
            })
            .find(|a| a.is_ipv6() == opts.ipv6)
            .unwrap_or_else(|| {
                panic!("no {protocol} candidate (ipv6: {}) in {options}", opts.ipv6)
            });
        let remote = match opts.via {
            Via::Udp => route(remote),
            Via::Tcp => remote,
        };
        let loopback = if opts.ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
        let (net, local) = match opts.via {
            Via::Udp => {
                let socket = UdpSocket::bind(loopback).unwrap();
                socket.set_nonblocking(true).unwrap();
                let local = socket.local_addr().unwrap();
                rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
                rtc.add_remote_candidate(Candidate::host(remote, "udp").unwrap());
                (Net::Udp(socket), local)
            }
            Via::Tcp => {
                let stream = TcpStream::connect_timeout(&remote, Duration::from_secs(5)).unwrap();
                stream.set_nonblocking(true).unwrap();
                let local = stream.local_addr().unwrap();
                let tcp = |addr, tcptype| {
                    Candidate::builder()
                        .tcp()
                        .host(addr)
                        .tcptype(tcptype)
                        .build()
                        .unwrap()
                };
                rtc.add_local_candidate(tcp(local, TcpType::Active));
                rtc.add_remote_candidate(tcp(remote, TcpType::Passive));
                (
                    Net::Tcp {
                        stream,
                        rx: Vec::new(),
                        tx: Vec::new(),
                        remote,
                    },
                    local,
                )
            }
        };
        let ice = &options["iceParameters"];
        let fp = options["dtlsParameters"]["fingerprints"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let fingerprint = format!(
            "{} {}",
            fp["algorithm"].as_str().unwrap(),
            fp["value"].as_str().unwrap()
        );
        {
            let mut api = rtc.direct_api();
            api.set_remote_ice_credentials(str0m::IceCreds {
                ufrag: ice["usernameFragment"].as_str().unwrap().into(),
                pass: ice["password"].as_str().unwrap().into(),
            });
            api.set_remote_fingerprint(fingerprint.parse().unwrap());
            api.set_ice_controlling(true);
            api.start_dtls(dtls_client).unwrap();
        }
        Leg {
            rtc,
            net,
            via: opts.via,
            local,
            remote,
            transport_id: options["id"].as_str().unwrap().to_string(),
            sent: Vec::new(),
            connected: false,
            disconnected: false,
            wake: now,
        }
    }

    /// The dtlsParameters this leg signals in connect-transport.
    fn dtls_parameters(&mut self, dtls_client: bool) -> Value {
        let fp = self.rtc.direct_api().local_dtls_fingerprint().to_string();
        let (algorithm, value) = fp.split_once(' ').unwrap();
        json!({"role": if dtls_client { "client" } else { "server" },
               "fingerprints": [{"algorithm": algorithm, "value": value}]})
    }

    /// Sends raw bytes to choir from this leg's socket (garbage and replay tests).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let remote = self.remote;
        self.net.send(bytes, remote);
    }

    /// Runs str0m: inputs from the socket, timeouts, outputs to the socket. Returns the events.
    /// Outputs are drained after every input: in RTP mode str0m holds one received packet at a
    /// time until it is polled.
    fn pump(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let mut buf = [0u8; 2000];
        if now >= self.wake {
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.disconnected = true;
            }
            self.drain(&mut events);
        }
        self.net.flush();
        let proto = match self.via {
            Via::Udp => Protocol::Udp,
            Via::Tcp => Protocol::Tcp,
        };
        while let Some((n, source)) = self.net.recv(&mut buf) {
            if let Ok(r) = Receive::new(proto, source, self.local, &buf[..n]) {
                if self.rtc.handle_input(Input::Receive(now, r)).is_err() {
                    self.disconnected = true;
                }
            }
            self.drain(&mut events);
        }
        events
    }

    fn drain(&mut self, events: &mut Vec<Event>) {
        while self.rtc.is_alive() {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    self.net.send(&t.contents, t.destination);
                    if self.sent.len() < 4096 {
                        self.sent.push(t.contents.to_vec());
                    }
                }
                Ok(Output::Timeout(t)) => {
                    self.wake = t;
                    return;
                }
                Ok(Output::Event(e)) => {
                    match &e {
                        Event::Connected => self.connected = true,
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            self.disconnected = true
                        }
                        _ => {}
                    }
                    events.push(e);
                }
                Err(_) => {
                    self.disconnected = true;
                    return;
                }
            }
        }
    }
}

/// Options for [`Peer::join`].
#[derive(Clone, Copy)]
pub struct JoinOptions {
    /// This peer is the DTLS client on both transports (else the server: choir is the client).
    pub dtls_client: bool,
    /// Signal a wrong certificate fingerprint in connect-transport for the send transport.
    pub wrong_fingerprint: bool,
    /// Produce (else listen only).
    pub produce: bool,
    /// Signal the producer's SSRC (else only its mid: choir learns the SSRC from the MID
    /// header extension).
    pub signal_ssrc: bool,
    /// UDP or ICE-TCP for both transports.
    pub via: Via,
    /// Use choir's IPv6 candidates (the peer binds ::1).
    pub ipv6: bool,
    /// Negotiate generic NACK for the streams this peer consumes (str0m NACKs what it lost).
    pub nack: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            dtls_client: true,
            wrong_fingerprint: false,
            produce: true,
            signal_ssrc: true,
            via: Via::Udp,
            ipv6: false,
            nack: false,
        }
    }
}

/// A participant: send + recv transports, one producer, consumers of others.
pub struct Peer {
    pub channel: String,
    pub user: String,
    pub index: u8,
    pub send: Leg,
    pub recv: Leg,
    pub producer_id: Option<String>,
    pub ssrc: u32,
    /// Packets written so far (the next packet's number).
    pub written: u16,
    /// Writing is paused (the peer keeps its transports alive).
    pub muted: bool,
    /// The peer stopped everything (no STUN, no media): a vanished browser.
    pub silent: bool,
    /// While silent, do not even read the sockets (a stalled reader).
    pub stop_reading: bool,
    next_write: Instant,
    /// Consumer SSRC → producer id.
    pub consumers: HashMap<u32, String>,
    /// Consumer SSRC → packets received.
    pub got: BTreeMap<u32, Vec<Got>>,
    /// The latest egress statistics with a Receiver Report from choir in them (only for peers
    /// joined with [`Peer::join_through`]).
    pub egress: Option<MediaEgressStats>,
    /// The loss str0m last derived from choir's Receiver Reports (their fraction lost), for
    /// peers joined with [`Peer::join_through`].
    pub egress_loss: Option<f32>,
    /// Consumes with generic NACK ([`JoinOptions::nack`]).
    nack: bool,
}

impl Peer {
    /// Joins `channel` through the API: capabilities, both transports, connect, produce.
    pub fn join(d: &Daemon, channel: &str, user: &str, index: u8, opts: JoinOptions) -> Peer {
        Self::join_through(d, channel, user, index, opts, &mut |a| a, false)
    }

    /// [`Peer::join`], sending to `route(choir's UDP candidate)` instead of the candidate
    /// itself (a relay that forwards to choir and back); with `stats`, str0m's statistics are
    /// on and [`Peer::egress`] keeps choir's latest Receiver Report.
    pub fn join_through(
        d: &Daemon,
        channel: &str,
        user: &str,
        index: u8,
        opts: JoinOptions,
        route: &mut dyn FnMut(SocketAddr) -> SocketAddr,
        stats: bool,
    ) -> Peer {
        let now = Instant::now();
        let (status, caps) = d.get(&format!("rtp-capabilities/{channel}"));
        assert_eq!(status, 200, "{caps}");
        let send_opts = d.ok(
            "create-transport",
            &json!({"channelId":channel,"userId":user,"direction":"send"}),
        );
        let mut send_ext = ExtensionMap::empty();
        send_ext.set(SEND_EXT_AUDIO_LEVEL, Extension::AudioLevel);
        send_ext.set(SEND_EXT_MID, Extension::RtpMid);
        let mut send = Leg::new(&send_opts, send_ext, SEND_PT, opts, now, route, stats);
        let mut dtls = send.dtls_parameters(opts.dtls_client);
        if opts.wrong_fingerprint {
            dtls["fingerprints"][0]["value"] = json!(vec!["AB"; 32].join(":"));
        }
        d.ok(
            "connect-transport",
            &json!({"channelId":channel,"userId":user,"transportId":send.transport_id,"dtlsParameters":dtls}),
        );
        let ssrc = 0x1000_0000 + u32::from(index) * 0x101 + (std::process::id() & 0xff);
        let mid: Mid = "0".into();
        send.rtc.direct_api().declare_media(mid, MediaKind::Audio);
        send.rtc
            .direct_api()
            .declare_stream_tx(Ssrc::from(ssrc), None, mid, None);
        let producer_id = opts.produce.then(|| {
            let rtp = json!({"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":SEND_PT,"clockRate":48000,"channels":2,
                  "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[]}],
                "headerExtensions":[
                  {"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":SEND_EXT_AUDIO_LEVEL,"encrypt":false,"parameters":{}},
                  {"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":SEND_EXT_MID,"encrypt":false,"parameters":{}}],
                "encodings":[if opts.signal_ssrc { json!({"ssrc":ssrc}) } else { json!({}) }],
                "rtcp":{"cname":format!("cname-{user}"),"reducedSize":true}});
            let v = d.ok("produce", &json!({"channelId":channel,"userId":user,"kind":"audio","rtpParameters":rtp}));
            v["producerId"].as_str().unwrap().to_string()
        });
        let recv_opts = d.ok(
            "create-transport",
            &json!({"channelId":channel,"userId":user,"direction":"recv"}),
        );
        let mut recv_ext = ExtensionMap::empty();
        // The consumer side uses the router's ids (what choir's consume reply announces).
        recv_ext.set(10, Extension::AudioLevel);
        recv_ext.set(4, Extension::AbsoluteSendTime);
        let mut recv = Leg::new(&recv_opts, recv_ext, RECV_PT, opts, now, route, stats);
        let dtls = recv.dtls_parameters(opts.dtls_client);
        d.ok(
            "connect-transport",
            &json!({"channelId":channel,"userId":user,"transportId":recv.transport_id,"dtlsParameters":dtls}),
        );
        Peer {
            channel: channel.into(),
            user: user.into(),
            index,
            send,
            recv,
            producer_id,
            ssrc,
            written: 0,
            muted: false,
            silent: false,
            stop_reading: false,
            next_write: now,
            consumers: HashMap::new(),
            got: BTreeMap::new(),
            egress: None,
            egress_loss: None,
            nack: opts.nack,
        }
    }

    /// Consumes `producer_id` (as mediasoup-client's recvTransport.consume would).
    pub fn consume(&mut self, d: &Daemon, producer_id: &str) -> Value {
        match self.try_consume(d, producer_id) {
            Ok(c) => c,
            Err((status, v)) => panic!("consume {producer_id} → {status} {v}"),
        }
    }

    /// Consumes `producer_id`; the server's status and body when it refuses.
    pub fn try_consume(&mut self, d: &Daemon, producer_id: &str) -> Result<Value, (u16, Value)> {
        let feedback = if self.nack {
            json!([{"type": "nack", "parameter": ""}])
        } else {
            json!([])
        };
        let caps = json!({"codecs":[{"mimeType":"audio/opus","kind":"audio","preferredPayloadType":100,"clockRate":48000,"channels":2,"parameters":{},"rtcpFeedback":feedback}],
            "headerExtensions":[
              {"kind":"audio","uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","preferredId":4,"preferredEncrypt":false,"direction":"sendrecv"},
              {"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":10,"preferredEncrypt":false,"direction":"sendrecv"}]});
        let (status, c) = d.post(
            "consume",
            &json!({"channelId":self.channel,"userId":self.user,"producerId":producer_id,"rtpCapabilities":caps}),
        );
        if status != 200 {
            return Err((status, c));
        }
        let rtp = &c["rtpParameters"];
        assert_eq!(rtp["codecs"][0]["payloadType"], RECV_PT);
        let ssrc = rtp["encodings"][0]["ssrc"].as_u64().unwrap() as u32;
        let mid: Mid = rtp["mid"].as_str().unwrap().into();
        let mut api: DirectApi = self.recv.rtc.direct_api();
        api.declare_media(mid, MediaKind::Audio);
        api.expect_stream_rx(Ssrc::from(ssrc), None, mid, None);
        self.consumers.insert(ssrc, producer_id.to_string());
        Ok(c)
    }

    /// Consumes every producer `GET /producers` lists for this peer; returns how many it
    /// consumed. A producer closed between the list and its consume (its owner left or timed
    /// out meanwhile) answers 404 and is skipped, as the frontend skips it; any other refusal
    /// fails the test.
    pub fn consume_existing(&mut self, d: &Daemon) -> usize {
        let (status, v) = d.get(&format!("producers/{}/{}", self.channel, self.user));
        assert_eq!(status, 200, "{v}");
        let list = v["producers"].as_array().unwrap().clone();
        let mut consumed = 0;
        for p in &list {
            match self.try_consume(d, p["producerId"].as_str().unwrap()) {
                Ok(_) => consumed += 1,
                Err((404, v)) if v["error"].as_str().is_some_and(|e| e.contains("not found")) => {}
                Err((status, v)) => panic!("consume {p} → {status} {v}"),
            }
        }
        consumed
    }

    /// Drives both legs; writes a packet every 20 ms unless muted or silent.
    pub fn tick(&mut self, now: Instant) {
        if self.silent && self.stop_reading {
            return;
        }
        if self.silent {
            // Drain the sockets without answering anything.
            let mut buf = [0u8; 2000];
            while self.send.net.recv(&mut buf).is_some() || self.recv.net.recv(&mut buf).is_some() {
            }
            return;
        }
        if self.producer_id.is_some() && self.send.connected && !self.muted {
            while self.next_write <= now {
                self.write_packet(now);
                self.next_write += Duration::from_millis(20);
            }
        } else {
            self.next_write = now;
        }
        for e in self.send.pump(now) {
            if let Event::MediaEgressStats(s) = e {
                self.egress_loss = s.loss.or(self.egress_loss);
                if s.remote.is_some() {
                    self.egress = Some(s);
                }
            }
        }
        for e in self.recv.pump(now) {
            if let Event::RtpPacket(p) = e {
                let payload = &p.payload;
                let (sender, n) = if payload.len() >= 3 {
                    (payload[0], u16::from_be_bytes([payload[1], payload[2]]))
                } else {
                    (0xff, 0)
                };
                let got = Got {
                    ssrc: *p.header.ssrc,
                    pt: *p.header.payload_type,
                    seq: p.header.sequence_number,
                    ts: p.header.timestamp,
                    sender,
                    n,
                    intact: payload[..] == payload_bytes(sender, n)[..],
                    audio_level: p.header.ext_vals.audio_level,
                    at: now,
                };
                self.got.entry(got.ssrc).or_default().push(got);
            }
        }
    }

    fn write_packet(&mut self, now: Instant) {
        let n = self.written;
        self.written = self.written.wrapping_add(1);
        let mut api = self.send.rtc.direct_api();
        let Some(stream) = api.stream_tx(&Ssrc::from(self.ssrc)) else {
            return;
        };
        let seq: SeqNo = (1000 + u64::from(n)).into();
        let ts = 960u32.wrapping_mul(u32::from(n)).wrapping_add(12345);
        let exts = ExtensionValues {
            audio_level: Some(-(self.index as i8 % 100)),
            voice_activity: Some(true),
            ..Default::default()
        };
        stream.write_rtp(
            RtpWrite::new(
                Pt::new_with_value(SEND_PT),
                seq,
                ts,
                now,
                payload(self.index, n),
            )
            .ext_vals(exts),
        );
    }

    /// Makes the next [`Peer::tick`] poll str0m on both legs even before its timeout: a packet
    /// written since the last poll goes out then (str0m keeps written packets until polled).
    pub fn poll_soon(&mut self) {
        let now = Instant::now();
        self.send.wake = now;
        self.recv.wake = now;
    }

    /// Packets received from `sender` (over all consumers).
    pub fn received_from(&self, sender: u8) -> Vec<&Got> {
        self.got
            .values()
            .flatten()
            .filter(|g| g.sender == sender)
            .collect()
    }

    pub fn is_connected(&self) -> bool {
        self.send.connected && self.recv.connected
    }
}

fn payload_bytes(sender: u8, n: u16) -> Vec<u8> {
    payload(sender, n)
}

/// Drives `peers` for `duration` (1 ms steps).
pub fn run(peers: &mut [Peer], duration: Duration) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let now = Instant::now();
        for p in peers.iter_mut() {
            p.tick(now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Drives `peers` until `check` holds or `timeout` passes; returns whether it held.
pub fn run_until(
    peers: &mut [Peer],
    timeout: Duration,
    mut check: impl FnMut(&[Peer]) -> bool,
) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let now = Instant::now();
        for p in peers.iter_mut() {
            p.tick(now);
        }
        if check(peers) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
