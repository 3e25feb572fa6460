//! Fuzz entry points, shared by the `fuzz/` cargo-fuzz targets and `tests/fuzz_corpus.rs`
//! (which replays the saved corpora as regular tests). Not part of choir's API.
//!
//! Each function takes arbitrary bytes and drives one input surface the way the daemon does;
//! none may panic. Where random bytes cannot get past a cryptographic check (STUN
//! `MESSAGE-INTEGRITY`, SRTP tags, the DTLS handshake), a mode byte lets the fuzzer ask for the
//! input to be made valid first (signed, protected, or a real handshake whose datagrams it then
//! tampers with), so that the code behind the check is reached too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::control::parse_json;
use crate::sfu::api::{
    ConnectTransportRequest, ConsumeRequest, CreateTransportRequest, ParticipantRequest,
    ProduceRequest, ProducerRequest,
};
use crate::sfu::ortc::{self, RtpCapabilities};
use crate::wire::demux::{classify, PacketKind};
use crate::wire::dtls::{DtlsEvent, DtlsIdentity, DtlsRole, DtlsTransport, Fingerprint};
use crate::wire::ice::{IceLite, StunOutcome};
use crate::wire::relay::payload::Payload;
use crate::wire::relay::{self, Header, LinkKey, Receiver, HEADER_LEN};
use crate::wire::rtcp::{self, RtcpPacket};
use crate::wire::rtp::{self, ExtensionMap};
use crate::wire::srtp::{SrtpProfile, SrtpSession};
use crate::wire::stun::{IntegrityKey, MessageWriter};

/// The ICE credentials of the fuzzed agent (seed inputs use them).
pub const ICE_UFRAG: &str = "fuzzfuzzfuzzfuzz";
pub const ICE_PWD: &str = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

/// Demux + ICE-lite STUN handling. `data[0]` bit 0: sign the rest (header and whole
/// attributes) with the agent's `MESSAGE-INTEGRITY` and a `FINGERPRINT` before handling it;
/// bit 1: feed it twice (consent refresh, role checks on a known address).
pub fn stun(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let mut ice = IceLite::new(ICE_UFRAG, ICE_PWD, Duration::from_secs(30), t0);
    let from = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 5000));
    let mut packet = [0u8; 2048];
    let len = if mode & 1 == 1 {
        sign(rest, &mut packet)
    } else {
        None
    };
    let packet: &[u8] = match len {
        Some(n) => packet.get(..n).unwrap_or_default(),
        None => rest,
    };
    let mut out = [0u8; 1500];
    let rounds = if mode & 2 == 2 { 2 } else { 1 };
    for i in 0..rounds {
        if classify(packet) != PacketKind::Stun && mode & 4 == 0 {
            continue;
        }
        let now = t0 + Duration::from_millis(10 * i);
        if let StunOutcome::Reply { len, .. } = ice.handle_stun(packet, from, now, &mut out) {
            assert!(len <= out.len());
        }
    }
    let _ = ice.handle_timeout(t0 + Duration::from_secs(31));
}

/// Appends MESSAGE-INTEGRITY (the agent's password) and FINGERPRINT to `msg`.
fn sign(msg: &[u8], buf: &mut [u8]) -> Option<usize> {
    let len = msg.len().min(1400) & !3;
    buf.get_mut(..len)?.copy_from_slice(msg.get(..len)?);
    let mut w = MessageWriter::resume(buf, len).ok()?;
    w.message_integrity(&IntegrityKey::new(ICE_PWD.as_bytes()))
        .ok()?;
    w.fingerprint().ok()?;
    Some(w.finish())
}

/// RTP parse, extension walk and per-consumer rewrite. `data[0..2]` seed the extension map and
/// the rewrite's fields; the rest is the packet.
pub fn rtp(data: &[u8]) {
    let [a, b, packet @ ..] = data else {
        return;
    };
    let Ok(header) = rtp::parse(packet) else {
        return;
    };
    let _ = header.payload(packet);
    for (id, value) in header.extensions(packet) {
        let _ = (id, value.len());
    }
    let _ = header.extension(packet, a & 0x0f);
    let mut map = ExtensionMap::new();
    for id in 1..=16u8 {
        // A deterministic mix of mapped, dropped and high (two-byte only) ids.
        let to = a.wrapping_mul(id).wrapping_add(*b) % 24;
        map.set(id, to);
    }
    map.set(200, b % 3);
    let mut copy = [0u8; 2048];
    let Some(dst) = copy.get_mut(..packet.len()) else {
        return;
    };
    dst.copy_from_slice(packet);
    let pt = b & 0x7f;
    if rtp::rewrite(dst, &header, 0x1234_5678, pt, 7, 90_000, &map).is_ok() {
        // The rewritten packet keeps its length and still parses, with the new fields.
        let again = rtp::parse(dst).expect("a rewritten packet parses");
        assert_eq!((again.ssrc, again.sequence), (0x1234_5678, 7));
    }
    // A buffer of another length is refused, never written out of bounds.
    let short = packet.len().saturating_sub(1);
    let _ = rtp::rewrite(&mut copy[..short], &header, 1, pt, 1, 1, &map);

    // RED (RFC 2198): the payload read as RED blocks; the packet made a RED packet repeating its
    // own payload as an earlier frame reads back with that payload as its primary.
    let payload = &packet[header.header_len..header.header_len + header.payload_len];
    if let Ok(blocks) = rtp::red::blocks(payload) {
        // Each block unpacked as a speaker's RED is (`crate::sfu::red`): a plain packet that
        // parses, carrying exactly the block's frame.
        let mut plain = [0u8; 2048];
        for block in blocks {
            let _ = rtp::opus::packet_duration(block.data);
            let fields = rtp::red::Unpacked {
                marker: false,
                payload_type: block.payload_type,
                sequence: header.sequence.wrapping_sub(1),
                timestamp: header.timestamp.wrapping_sub(block.timestamp_offset),
            };
            if let Some(n) =
                rtp::red::unpack(packet, header.header_len, block.data, fields, &mut plain)
            {
                let h = rtp::parse(&plain[..n]).expect("an unpacked block parses");
                assert_eq!(h.payload(&plain[..n]), Some(block.data));
            }
        }
    }
    let mut red = [0u8; 4096];
    red[..packet.len()].copy_from_slice(packet);
    let offset = u32::from(*a) * 97;
    if let Some(n) = rtp::red::encode(
        &mut red,
        packet.len(),
        header.header_len,
        pt,
        &[(offset, payload)],
    ) {
        let inserted = n - packet.len();
        let red_payload =
            &red[header.header_len..header.header_len + inserted + header.payload_len];
        let blocks = rtp::red::blocks(red_payload).expect("choir's RED reads back");
        assert_eq!(blocks.last().map(|b| b.data), Some(payload));
    }
}

/// RTCP compound iteration, every item of every packet.
pub fn rtcp(data: &[u8]) {
    for packet in rtcp::packets(data) {
        let Ok(packet) = packet else {
            break;
        };
        match packet {
            RtcpPacket::SenderReport(sr) => {
                let _ = sr.reports.iter().count();
            }
            RtcpPacket::ReceiverReport(rr) => {
                let _ = rr.reports.iter().count();
            }
            RtcpPacket::Sdes(sdes) => {
                for chunk in sdes.chunks() {
                    let _ = chunk.cname();
                    let _ = chunk.items.count();
                }
            }
            RtcpPacket::Bye(bye) => {
                let _ = (bye.sources.iter().count(), bye.reason);
            }
            RtcpPacket::Nack { items, .. } => {
                let _ = items.iter().count();
                // What choir would write for the same numbers reads back as the same set.
                let lost: Vec<u16> = items.lost().take(64).collect();
                let mut buf = [0u8; 512];
                if let Some(n) = rtcp::write_nack(&mut buf, 1, 2, lost.iter().copied()) {
                    let again = rtcp::packets(&buf[..n]).next();
                    let Some(Ok(RtcpPacket::Nack { items: ours, .. })) = again else {
                        panic!("choir's NACK does not parse: {again:?}");
                    };
                    let ours: std::collections::BTreeSet<u16> = ours.lost().collect();
                    assert_eq!(ours, lost.into_iter().collect());
                }
            }
            _ => {}
        }
    }
}

fn identity() -> &'static (DtlsIdentity, Arc<dimpl::Config>) {
    static IDENTITY: OnceLock<(DtlsIdentity, Arc<dimpl::Config>)> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        (
            DtlsIdentity::generate().expect("certificate"),
            crate::wire::dtls::dtls_config(),
        )
    })
}

/// Drains a transport's output; returns the datagrams it sent.
fn drain(t: &mut DtlsTransport, buf: &mut [u8]) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    for _ in 0..64 {
        match t.poll(buf) {
            DtlsEvent::Transmit(d) => sent.push(d.to_vec()),
            DtlsEvent::Idle => break,
            DtlsEvent::Connected(_) | DtlsEvent::Failed(_) => {}
        }
    }
    sent
}

/// DTLS record input. `data[0]` bit 0: role (client/server); bit 1: run a real handshake
/// against a second transport and let the rest of `data` tamper with its datagrams (byte pairs
/// `offset, xor` per datagram; an `xor` of 0 drops it); otherwise the rest is records fed
/// straight to the transport, split at each 0xff 0xff pair.
pub fn dtls(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (identity, config) = identity();
    let t0 = Instant::now();
    let role = if mode & 1 == 0 {
        DtlsRole::Server
    } else {
        DtlsRole::Client
    };
    let peer_role = match role {
        DtlsRole::Server => DtlsRole::Client,
        DtlsRole::Client => DtlsRole::Server,
    };
    let timeout = Duration::from_secs(30);
    let mut a = DtlsTransport::new(config.clone(), identity, role, timeout, t0);
    let fingerprint = Fingerprint::new("sha-256", identity.fingerprint_sha256());
    a.set_remote_fingerprints(vec![fingerprint.clone()]);
    let mut buf = vec![0u8; 4096];
    if mode & 2 == 0 {
        for (i, record) in rest.split(|&b| b == 0xff).enumerate() {
            a.handle_packet(record, t0 + Duration::from_millis(i as u64));
            drain(&mut a, &mut buf);
        }
        a.handle_timeout(t0 + Duration::from_secs(31));
        drain(&mut a, &mut buf);
        return;
    }
    let mut b = DtlsTransport::new(config.clone(), identity, peer_role, timeout, t0);
    b.set_remote_fingerprints(vec![fingerprint]);
    let mut tamper = rest.chunks_exact(2);
    let mut now = t0;
    for _ in 0..12 {
        now += Duration::from_millis(5);
        relay_flight(&mut a, &mut b, &mut tamper, &mut buf, now);
        relay_flight(&mut b, &mut a, &mut tamper, &mut buf, now);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
}

/// Hands `from`'s datagrams to `to`, each altered as the next tamper pair says.
fn relay_flight(
    from: &mut DtlsTransport,
    to: &mut DtlsTransport,
    tamper: &mut std::slice::ChunksExact<'_, u8>,
    buf: &mut [u8],
    now: Instant,
) {
    for mut datagram in drain(from, buf) {
        if let Some(&[offset, xor]) = tamper.next() {
            if xor == 0 {
                continue;
            }
            let at = usize::from(offset) % datagram.len().max(1);
            if let Some(byte) = datagram.get_mut(at) {
                *byte ^= xor;
            }
        }
        to.handle_packet(&datagram, now);
    }
}

/// SRTP/SRTCP unprotect. `data[0]`: profile (bits 0-1), then packets prefixed by a flags byte
/// and a length byte. Flags bit 0: RTCP; bit 1: protect with the sender first (a valid packet);
/// bit 2: then flip one bit of it (tampered); bit 3: unprotect it twice (replay).
pub fn srtp(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let profile = match mode % 3 {
        0 => SrtpProfile::Aes128CmHmacSha1_80,
        1 => SrtpProfile::AeadAes128Gcm,
        _ => SrtpProfile::AeadAes256Gcm,
    };
    let key = [0x5au8; 32];
    let salt = [0xa5u8; 14];
    let key = key.get(..profile.master_key_len()).unwrap_or_default();
    let salt = salt.get(..profile.master_salt_len()).unwrap_or_default();
    let (Ok(mut tx), Ok(mut rx)) = (
        SrtpSession::new(profile, key, salt),
        SrtpSession::new(profile, key, salt),
    ) else {
        panic!("session with valid key lengths");
    };
    let mut buf = [0u8; 2048];
    while let [flags, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        rest = next;
        let rtcp = flags & 1 == 1;
        let mut len = packet.len();
        buf[..len].copy_from_slice(packet);
        if flags & 2 == 2 {
            let protected = if rtcp {
                tx.protect_rtcp(&mut buf, len)
            } else {
                tx.protect_rtp(&mut buf, len)
            };
            match protected {
                Ok(n) => len = n,
                Err(_) => continue,
            }
            if flags & 4 == 4 && len > 0 {
                let at = usize::from(flags >> 4) * 7 % len;
                buf[at] ^= 1 << (flags >> 5);
            }
        }
        let copy = buf;
        for _ in 0..if flags & 8 == 8 { 2 } else { 1 } {
            buf = copy;
            let _ = if rtcp {
                rx.unprotect_rtcp(&mut buf[..len])
            } else {
                rx.unprotect_rtp(&mut buf[..len])
            };
        }
    }
}

/// The link id of the fuzzed relay receiver (seed inputs use it).
pub const RELAY_LINK: u32 = 0x0a0b_0c0d;
/// The key of the fuzzed relay link.
pub const RELAY_KEY: [u8; 32] = [0x3c; 32];

/// Relay link datagrams ([`relay`]) and their payloads. The whole input is first parsed as a
/// payload and opened as a datagram, as is. Then it is read as records `flags, delta, len,
/// bytes`: the sequence number moves by `delta` (signed) times a scale (flags bits 3-4: 1, 64,
/// 2^20, 2^57); flags bit 0: seal the bytes as a plaintext under that sequence number first (a
/// valid datagram, else they are the datagram); bit 1: then flip one of its bits (bits 5-7 and
/// `delta` pick which); bit 2: open it twice (a replay). Each goes to the link's [`Receiver`];
/// what opens is parsed as a payload, and a media payload's RTP packet with `rtp::parse`. Each
/// also goes to a shard core's [`Sfu::on_link_datagram`](crate::sfu::Sfu::on_link_datagram)
/// (the same link, remote producers on streams 0 to 3, the last consumed by a local participant).
pub fn relay(data: &[u8]) {
    let _ = Payload::parse(data);
    let (Some(tx_key), Some(rx_key)) = (LinkKey::new(&RELAY_KEY), LinkKey::new(&RELAY_KEY)) else {
        panic!("a 32-octet key is a key");
    };
    let mut buf = [0u8; 2048];
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    let _ = relay::header(&buf[..n]);
    let _ = relay::open(&rx_key, &mut buf[..n]);
    let mut rx = Receiver::new(rx_key, RELAY_LINK);
    let (mut sfu, now) = cascade_core();

    let mut seq = 0u64;
    let mut rest = data;
    while let [flags, delta, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let scale = [1i64, 64, 1 << 20, 1 << 57][usize::from((flags >> 3) & 3)];
        seq = seq.saturating_add_signed(i64::from(*delta as i8).saturating_mul(scale));
        let mut len = bytes.len();
        if flags & 1 == 1 {
            buf[HEADER_LEN..HEADER_LEN + len].copy_from_slice(bytes);
            let header = Header {
                link_id: RELAY_LINK,
                seq,
            };
            match relay::seal_in_place(&tx_key, header, &mut buf, len) {
                Some(sealed) => len = sealed,
                None => continue,
            }
            if flags & 2 == 2 {
                let at = (usize::from(flags >> 5) * 5 + usize::from(*delta)) % len;
                buf[at] ^= 1 << (delta % 8);
            }
        } else {
            buf[..len].copy_from_slice(bytes);
        }
        let copy = buf;
        for _ in 0..if flags & 4 == 4 { 2 } else { 1 } {
            buf = copy;
            if let Ok((_, plaintext)) = rx.open(&mut buf[..len]) {
                if let Ok(Payload::Media { rtp, .. }) = Payload::parse(plaintext) {
                    let _ = rtp::parse(rtp);
                }
            }
            buf = copy;
            let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000));
            sfu.on_link_datagram(7000, from, &mut buf[..len], now, &mut Nowhere);
        }
    }
}

/// Drops what a core sends.
struct Nowhere;
impl crate::sfu::Egress for Nowhere {
    fn send(&mut self, _: crate::sfu::Path, _: &[u8]) {}
}

/// A shard core with room "r", a link from node "peer" ([`RELAY_LINK`], [`RELAY_KEY`]),
/// remote producers on streams 0 to 3 (audio level id 1, MID id 4), and a local participant
/// consuming the last (the seeds' stream).
fn cascade_core() -> (crate::sfu::Sfu, Instant) {
    use crate::sfu::api::Direction;
    use crate::sfu::cascade::{LinkParams, RemoteProducer};
    let (identity, config) = identity();
    let settings = crate::sfu::Settings {
        announced: Vec::new(),
        consent_timeout: Duration::from_secs(30),
        dtls_timeout: Duration::from_secs(30),
        consumer_hold: Duration::ZERO,
        dtls_config: config.clone(),
        identity: identity.clone(),
    };
    let now = Instant::now();
    let mut sfu = crate::sfu::Sfu::new(settings, now);
    sfu.open_room("r");
    let link = LinkParams {
        channel_id: "r".into(),
        peer: "peer".into(),
        peer_region: String::new(),
        receive_id: RELAY_LINK,
        receive_key: RELAY_KEY,
        send_id: 1,
        send_key: RELAY_KEY,
        peer_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7000)),
        local_port: 7000,
    };
    let parameters = serde_json::json!({"mid":"0",
        "codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,
            "rtcpFeedback":[{"type":"nack","parameter":""}]}],
        "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1},
            {"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4}],
        "rtcp":{"cname":"fuzz"}});
    let ready = sfu.add_link(link, now).is_ok()
        && (0..4).all(|stream| {
            let remote = RemoteProducer {
                stream,
                producer_id: format!("p{stream}"),
                user_id: format!("u{stream}"),
                rtp_parameters: serde_json::from_value(parameters.clone()).expect("parameters"),
                paused: false,
            };
            sfu.add_remote_producer("r", "peer", remote).is_ok()
        });
    let req = CreateTransportRequest {
        channel_id: "r".into(),
        user_id: "listener".into(),
        direction: Direction::Recv,
    };
    let consume = |sfu: &mut crate::sfu::Sfu| {
        sfu.create_transport(&req, 40_000, now).ok()?;
        let caps = ortc::router_capabilities();
        let req = ConsumeRequest {
            channel_id: "r".into(),
            user_id: "listener".into(),
            producer_id: "p3".into(),
            rtp_capabilities: caps,
        };
        sfu.consume(&req, now).ok()
    };
    assert!(
        ready && consume(&mut sfu).is_some(),
        "the fuzzed core is set up"
    );
    (sfu, now)
}

/// The API's JSON bodies: each request type, then ORTC validation of what parsed.
pub fn api_json(data: &[u8]) {
    let _ = parse_json::<CreateTransportRequest>(data);
    let _ = parse_json::<ConnectTransportRequest>(data);
    let _ = parse_json::<ParticipantRequest>(data);
    let _ = parse_json::<ProducerRequest>(data);
    if let Ok(req) = parse_json::<ProduceRequest>(data) {
        if let Ok(producer) = ortc::validate_producer(&req.kind, &req.rtp_parameters) {
            let caps = ortc::router_capabilities();
            let _ = ortc::consumer_parameters(&producer, &caps, 1, "0".into());
        }
    }
    if let Ok(req) = parse_json::<ConsumeRequest>(data) {
        let producer = default_producer();
        let _ = ortc::consumer_parameters(&producer, &req.rtp_capabilities, 1, "0".into());
    }
    if let Ok(caps) = parse_json::<RtpCapabilities>(data) {
        let _ = ortc::consumer_parameters(&default_producer(), &caps, 1, "0".into());
    }
}

fn default_producer() -> ortc::ProducerRtp {
    ortc::ProducerRtp {
        payload_type: 111,
        extensions: vec![(1, 10), (4, 1)],
        mid_extension_id: Some(4),
        ssrc: Some(1),
        mid: Some("0".into()),
        cname: "fuzz".into(),
        codec_parameters: Default::default(),
        nack: false,
        red_payload_type: None,
    }
}
