//! Micro benches of choir's per-packet work (criterion), in memory:
//!
//! - `stun/binding_request`: ICE-lite handling of a Binding request (parse, FINGERPRINT and
//!   MESSAGE-INTEGRITY checks, success response with XOR-MAPPED-ADDRESS, integrity, fingerprint).
//! - `srtp/{protect,unprotect}/<profile>`: SRTP of a 120-byte Opus-sized RTP packet for the three
//!   profiles choir negotiates.
//! - `rtp/{parse,rewrite}`: header parse, and the per-consumer copy + header rewrite.
//! - `fanout/<n>`: one SRTP packet through `Sfu::handle_datagram` (decrypt once; per consumer:
//!   rewrite, encrypt, hand to the egress) to 1, 10 and 100 consumers, with a counting egress.
//!
//! `cargo bench --bench micro` (add `-- srtp` to filter).

#[path = "../tests/common/loopback.rs"]
mod loopback;

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use choir::wire::ice::{IceLite, StunOutcome};
use choir::wire::rtp::{self, ExtensionMap};
use choir::wire::srtp::{SrtpProfile, SrtpSession};
use choir::wire::stun::write_binding_request;
use loopback::{Counter, Loopback};

/// An Opus-sized RTP packet: 12-byte header, a one-byte-form extension block with the audio
/// level (id 1), 100 bytes of payload: 120 bytes.
fn opus_packet(ssrc: u32, seq: u16, buf: &mut [u8]) -> usize {
    buf[..4].copy_from_slice(&[0x90, 111, (seq >> 8) as u8, seq as u8]);
    buf[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..20].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x85, 0x00, 0x00]);
    for (i, b) in buf[20..120].iter_mut().enumerate() {
        *b = i as u8;
    }
    120
}

fn stun(c: &mut Criterion) {
    const UFRAG: &str = "choirlocalufrag1";
    const PWD: &str = "choirlocalpassword0123456789abcd";
    let t0 = Instant::now();
    let mut ice = IceLite::new(UFRAG, PWD, Duration::from_secs(30), t0);
    let mut request = [0u8; 256];
    let len = write_binding_request(
        &mut request,
        [7; 12],
        "choirlocalufrag1:remoteufrag",
        PWD,
        0x6e00_01ff,
        true,
        0x0102_0304_0506_0708,
    );
    let from: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let mut out = [0u8; 1500];
    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));
    g.bench_function("binding_request", |b| {
        b.iter(|| {
            match ice.handle_stun(black_box(&request[..len]), from, t0, &mut out) {
                StunOutcome::Reply { len, .. } => black_box(len),
                StunOutcome::Drop(d) => panic!("dropped: {}", d.as_str()),
            };
        })
    });
    g.finish();
}

fn srtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));
    for (name, profile) in [
        ("aead_aes_128_gcm", SrtpProfile::AeadAes128Gcm),
        ("aead_aes_256_gcm", SrtpProfile::AeadAes256Gcm),
        ("aes128_cm_hmac_sha1_80", SrtpProfile::Aes128CmHmacSha1_80),
    ] {
        let key = vec![0x2b; profile.master_key_len()];
        let salt = vec![0x5a; profile.master_salt_len()];
        let mut plain = [0u8; 256];
        let len = opus_packet(0x1234_5678, 0, &mut plain);

        // An index is never protected twice: every iteration protects the next sequence number.
        let mut tx = SrtpSession::new(profile, &key, &salt).unwrap();
        let mut seq = 0u16;
        let mut buf = [0u8; 256];
        g.bench_function(format!("protect/{name}"), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                buf[..len].copy_from_slice(&plain[..len]);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(tx.protect_rtp(&mut buf, len).unwrap());
            })
        });

        // Packets are protected in the (unmeasured) set-up, in order, so none is a replay.
        let mut tx = SrtpSession::new(profile, &key, &salt).unwrap();
        let mut rx = SrtpSession::new(profile, &key, &salt).unwrap();
        let mut seq = 0u16;
        g.bench_function(format!("unprotect/{name}"), |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = [0u8; 256];
                    p[..len].copy_from_slice(&plain[..len]);
                    p[2..4].copy_from_slice(&seq.to_be_bytes());
                    let n = tx.protect_rtp(&mut p, len).unwrap();
                    (p, n)
                },
                |(p, n)| black_box(rx.unprotect_rtp(&mut p[..*n]).unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn rtp_rewrite(c: &mut Criterion) {
    let mut packet = [0u8; 256];
    let len = opus_packet(0x1234_5678, 4242, &mut packet);
    let header = rtp::parse(&packet[..len]).unwrap();
    let mut extensions = ExtensionMap::new();
    extensions.set(1, 10);
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| black_box(rtp::parse(black_box(&packet[..len])).unwrap()))
    });
    let mut copy = [0u8; 256];
    let mut seq = 0u16;
    g.bench_function("copy_and_rewrite", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            copy[..len].copy_from_slice(&packet[..len]);
            rtp::rewrite(
                &mut copy[..len],
                &header,
                0xcafe_f00d,
                100,
                seq,
                u32::from(seq) * 960,
                &extensions,
            )
            .unwrap();
            black_box(&copy);
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for consumers in [1usize, 10, 100] {
        let mut lb = Loopback::new();
        let speaker = lb.speaker_with_listeners("room", consumers);
        let key = lb.members[speaker].send.key;
        let path = lb.members[speaker].send.path;
        let ssrc = lb.members[speaker].ssrc;
        let now = lb.now;
        let sfu = &mut lb.sfu;
        let client = &mut lb.members[speaker].send.client;
        let mut out = Counter { sent: 0, bytes: 0 };
        let mut seq = 0u16;
        g.throughput(Throughput::Elements(consumers as u64));
        g.bench_function(format!("{consumers}"), |b| {
            b.iter_batched_ref(
                || {
                    // The publisher's encryption is set-up, not measured.
                    seq = seq.wrapping_add(1);
                    let mut d = [0u8; 2048];
                    let len = opus_packet(ssrc, seq, &mut d);
                    let n = client.protect_rtp(&mut d, len).unwrap();
                    (d, n)
                },
                |(d, n)| sfu.handle_datagram(Some(key), path, d, *n, now, &mut out),
                BatchSize::SmallInput,
            )
        });
        assert!(out.sent > 0);
        assert_eq!(
            sfu.counters().rtp_forwarded,
            out.sent,
            "every datagram sent is a forwarded RTP packet"
        );
    }
    g.finish();
}

criterion_group!(benches, stun, srtp, rtp_rewrite, fanout);
criterion_main!(benches);
