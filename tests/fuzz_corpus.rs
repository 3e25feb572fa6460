//! Replays the fuzzers' saved corpora (`fuzz/corpus/<target>/`) and the inputs of fixed
//! crashes (`fuzz/regressions/<target>/`) through the same entry points as the cargo-fuzz
//! targets, so that every `cargo test` re-checks them in seconds. See `fuzz/README.md`.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (re)writes the hand-made seed
//! inputs the fuzzers started from (`fuzz/seeds/<target>/`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use choir::fuzzing;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("stun", fuzzing::stun),
    ("rtp", fuzzing::rtp),
    ("rtcp", fuzzing::rtcp),
    ("dtls", fuzzing::dtls),
    ("srtp", fuzzing::srtp),
    ("relay", fuzzing::relay),
    ("api_json", fuzzing::api_json),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file()),
        );
    }
    files.sort();
    files
}

fn replay(target: &str, run: Target) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no saved inputs for fuzz target {target}"
    );
    for file in &files {
        let data = std::fs::read(file).unwrap();
        run(&data);
    }
    eprintln!("fuzz target {target}: {} inputs replayed", files.len());
}

#[test]
fn stun_corpus() {
    replay("stun", fuzzing::stun);
}

#[test]
fn rtp_corpus() {
    replay("rtp", fuzzing::rtp);
}

#[test]
fn rtcp_corpus() {
    replay("rtcp", fuzzing::rtcp);
}

#[test]
fn dtls_corpus() {
    replay("dtls", fuzzing::dtls);
}

#[test]
fn srtp_corpus() {
    replay("srtp", fuzzing::srtp);
}

#[test]
fn relay_corpus() {
    replay("relay", fuzzing::relay);
}

#[test]
fn api_json_corpus() {
    replay("api_json", fuzzing::api_json);
}

#[test]
fn every_target_is_replayed() {
    for (name, _) in TARGETS {
        assert!(fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{name}.rs"))
            .exists());
    }
}

/// Writes the seed inputs (valid messages of each kind) the fuzzers start from.
#[test]
#[ignore]
fn write_seeds() {
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();

    // STUN: a signed request as is (mode 0), the same unsigned for the fuzzer to sign (mode 1,
    // and mode 3: twice), and a request with an unknown comprehension-required attribute.
    let mut buf = [0u8; 512];
    let username = format!("{}:remote", fuzzing::ICE_UFRAG);
    let n = choir::wire::stun::write_binding_request(
        &mut buf,
        [7; 12],
        &username,
        fuzzing::ICE_PWD,
        0x6e00_1eff,
        true,
        42,
    );
    seeds.push(("stun", "signed", [&[0u8][..], &buf[..n]].concat()));
    // Header + USERNAME + PRIORITY + ICE-CONTROLLING + USE-CANDIDATE (no integrity yet).
    let mut unsigned = Vec::new();
    let mut w = choir::wire::stun::MessageWriter::new(
        &mut buf,
        choir::wire::stun::METHOD_BINDING,
        choir::wire::stun::Class::Request,
        &[9; 12],
    )
    .unwrap();
    w.attribute(choir::wire::stun::attr::USERNAME, username.as_bytes())
        .unwrap();
    w.attribute_u32(choir::wire::stun::attr::PRIORITY, 1)
        .unwrap();
    w.attribute_u64(choir::wire::stun::attr::ICE_CONTROLLING, 5)
        .unwrap();
    w.attribute(choir::wire::stun::attr::USE_CANDIDATE, &[])
        .unwrap();
    let n = w.finish();
    unsigned.extend_from_slice(&buf[..n]);
    seeds.push(("stun", "to_sign", [&[1u8][..], &unsigned].concat()));
    seeds.push(("stun", "to_sign_twice", [&[3u8][..], &unsigned].concat()));
    let mut unknown = unsigned.clone();
    unknown.extend_from_slice(&[0x00, 0x31, 0x00, 0x04, 1, 2, 3, 4]);
    seeds.push(("stun", "unknown_attr", [&[1u8][..], &unknown].concat()));

    // RTP: one-byte extensions (audio level, MID), two-byte extensions, CSRC + padding.
    let one_byte = [
        0x90, 111, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef, 0xbe, 0xde, 0, 2, 0x10, 0x85,
        0x40, b'0', 0, 0, 1, 2, 3, 4, 5,
    ];
    seeds.push(("rtp", "one_byte_ext", [&[3u8, 9][..], &one_byte].concat()));
    let two_byte = [
        0x90, 111, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1, 0x10, 0x00, 0, 2, 1, 1, 0x7f, 20, 2, b'a', b'b',
        0, 9, 9,
    ];
    seeds.push(("rtp", "two_byte_ext", [&[5u8, 1][..], &two_byte].concat()));
    let csrc_padding = [
        0xa1, 0xe4, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 2, 3, 0, 0, 3,
    ];
    seeds.push((
        "rtp",
        "csrc_padding",
        [&[0u8, 0][..], &csrc_padding].concat(),
    ));

    // RTCP: SR + SDES compound, RR, NACK, PLI, BYE, APP.
    let mut sr = [0u8; 256];
    let n =
        choir::wire::rtcp::write_sender_report(&mut sr, 1, 0x1234_5678_9abc_def0, 960, 10, 1000)
            .unwrap();
    let m = choir::wire::rtcp::write_sdes_cname(&mut sr[n..], 1, "cname").unwrap();
    seeds.push(("rtcp", "sr_sdes", sr[..n + m].to_vec()));
    let block = choir::wire::rtcp::ReportBlock {
        ssrc: 2,
        fraction_lost: 3,
        cumulative_lost: 4,
        highest_sequence: 5,
        jitter: 6,
        last_sr: 7,
        delay_since_last_sr: 8,
    };
    let n = choir::wire::rtcp::write_receiver_report(&mut sr, 1, &[block]).unwrap();
    seeds.push(("rtcp", "rr", sr[..n].to_vec()));
    seeds.push((
        "rtcp",
        "nack_pli_bye",
        vec![
            0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 5, // NACK
            0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, // PLI
            0x81, 203, 0, 2, 0, 0, 0, 1, 3, b'b', b'y', b'e', // BYE with reason
            0x80, 204, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e', // APP
        ],
    ));

    // DTLS: a real handshake in both roles (tamper nothing), a tampered one, and a captured
    // ClientHello fed raw to a server.
    seeds.push(("dtls", "handshake_server", vec![2]));
    seeds.push(("dtls", "handshake_client", vec![3]));
    seeds.push(("dtls", "handshake_tampered", vec![2, 0, 0, 13, 1, 40, 4]));
    seeds.push((
        "dtls",
        "client_hello",
        [&[0u8][..], &client_hello()].concat(),
    ));

    // SRTP: valid RTP and RTCP (protected first) for each profile, a replay, a tampered one.
    let rtp_packet = [0x80, 111, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1, 1, 2, 3, 4];
    let rtcp_packet = [0x80, 201, 0, 1, 0, 0, 0, 1];
    for profile in 0..3u8 {
        let mut s = vec![profile];
        for flags in [2u8, 2 | 8, 2 | 4 | 0x30] {
            s.extend_from_slice(&[flags, rtp_packet.len() as u8]);
            s.extend_from_slice(&rtp_packet);
        }
        s.extend_from_slice(&[3, rtcp_packet.len() as u8]);
        s.extend_from_slice(&rtcp_packet);
        s.extend_from_slice(&[0, 20]);
        s.extend_from_slice(&[0x80; 20]);
        seeds.push(("srtp", ["cm", "gcm128", "gcm256"][usize::from(profile)], s));
    }

    // Relay link: a datagram sealed under the fuzzed link's key (opened whole), a media
    // payload alone, and records sealing keepalives and media in order, reordered, replayed,
    // tampered with and jumping past the window and to the end of the sequence space.
    let relay_key = choir::wire::relay::LinkKey::new(&fuzzing::RELAY_KEY).unwrap();
    let mut media = [0u8; 64];
    let media_len = choir::wire::relay::payload::Payload::Media {
        stream: 3,
        rtp: &rtp_packet,
    }
    .write(&mut media)
    .unwrap();
    let media = &media[..media_len];
    let mut keepalive = [0u8; 16];
    let keepalive_len = choir::wire::relay::payload::Payload::Keepalive {
        sent_at_micros: 20_000,
    }
    .write(&mut keepalive)
    .unwrap();
    let keepalive = &keepalive[..keepalive_len];
    let mut sealed = [0u8; 128];
    let header = choir::wire::relay::Header {
        link_id: fuzzing::RELAY_LINK,
        seq: 5,
    };
    let n = choir::wire::relay::seal(&relay_key, header, media, &mut sealed).unwrap();
    seeds.push(("relay", "sealed_datagram", sealed[..n].to_vec()));
    seeds.push(("relay", "media_payload", media.to_vec()));
    let mut records = Vec::new();
    let mut record = |flags: u8, delta: i8, plaintext: &[u8]| {
        records.extend_from_slice(&[flags, delta as u8, plaintext.len() as u8]);
        records.extend_from_slice(plaintext);
    };
    record(1, 0, keepalive); // seq 0
    record(1, 2, media); // 2
    record(1, -1, media); // 1: reordered
    record(1 | 4, 1, media); // 2 again, twice: replayed
    record(1 | 2 | 0x20, 1, media); // 3, tampered
    record(1, 0, media); // 3, genuine
    record(1 | 8, 20, keepalive); // + 1280: past the window
    record(1, -100, media); // inside the window
    record(1 | 8, -40, media); // too old
    record(0, 0, &sealed[..n]); // as is: seq 5, too old by now
    record(1 | 0x18, 127, keepalive); // 2^63 - 1 (saturated)
    record(1 | 0x18, 127, keepalive); // u64::MAX, the end of the sequence space
    record(1, 0, media); // u64::MAX again: replayed
    seeds.push(("relay", "records", records));

    // API bodies, as mediasoup-client sends them.
    seeds.push((
        "api_json",
        "create_transport",
        br#"{"channelId":"c","userId":"u","direction":"send"}"#.to_vec(),
    ));
    seeds.push(("api_json", "connect", br#"{"channelId":"c","userId":"u","transportId":"t","dtlsParameters":{"role":"client","fingerprints":[{"algorithm":"sha-256","value":"82:5A:68:3D"}]}}"#.to_vec()));
    seeds.push(("api_json", "produce", br#"{"channelId":"c","userId":"u","kind":"audio","rtpParameters":{"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,"parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"transport-cc","parameter":""}]}],"headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}},{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1,"encrypt":false,"parameters":{}}],"encodings":[{"ssrc":1234,"dtx":false}],"rtcp":{"cname":"x","reducedSize":true},"msid":"- t"}}"#.to_vec()));
    seeds.push(("api_json", "consume", br#"{"channelId":"c","userId":"u","producerId":"p","rtpCapabilities":{"codecs":[{"mimeType":"audio/opus","kind":"audio","preferredPayloadType":100,"clockRate":48000,"channels":2,"parameters":{},"rtcpFeedback":[]}],"headerExtensions":[{"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":10,"preferredEncrypt":false,"direction":"sendrecv"}]}}"#.to_vec()));
    seeds.push((
        "api_json",
        "pause",
        br#"{"channelId":"c","userId":"u","producerId":"p"}"#.to_vec(),
    ));

    for (target, name, data) in seeds {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), &data).unwrap();
    }
}

/// A client's first flight (ClientHello), from a fresh DTLS client transport.
fn client_hello() -> Vec<u8> {
    let identity = choir::wire::dtls::DtlsIdentity::generate().unwrap();
    let mut client = choir::wire::dtls::DtlsTransport::new(
        choir::wire::dtls::dtls_config(),
        &identity,
        choir::wire::dtls::DtlsRole::Client,
        Duration::from_secs(30),
        Instant::now(),
    );
    let mut buf = vec![0u8; 4096];
    match client.poll(&mut buf) {
        choir::wire::dtls::DtlsEvent::Transmit(d) => d.to_vec(),
        other => panic!("no ClientHello: {other:?}"),
    }
}
