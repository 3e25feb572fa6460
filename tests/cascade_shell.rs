//! Cascading through real shards (issue 22, the glommio shell): two shards in this process
//! play two nodes, each on its own glommio thread with real UDP sockets on 127.0.0.1. Node A
//! (per-transport mode: its link port is one more port of its slice) has a speaker, node B
//! (single-port mode: its link port is its shared port) a listener. The test plays the control
//! plane with `choir::control::cascade`'s calls only: the link on both ends (ids and keys from
//! fixed bytes, crossed), the speaker's producer announced on B, which the listener consumes by
//! id. The listener hears every packet with the speaker's payload byte for byte; forged,
//! replayed, unknown-link and non-link datagrams sent from a test socket to the link ports are
//! counted drops.

mod common;
#[path = "common/shard_leg.rs"]
mod shard_leg;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use choir::client::ClientReceived;
use choir::control::cascade;
use choir::process::config::PortMode;
use choir::sfu::api::{ConsumeRequest, Direction, ProduceRequest};
use choir::sfu::cascade::LinkParams;
use choir::shard::{Command, Reply, ShardHandle, ShardSetup};
use choir::wire::dtls;
use choir::wire::relay::{self, payload::Payload, LinkKey, HEADER_LEN};
use futures_lite::future::block_on;
use serde_json::json;
use shard_leg::{call, leg, Leg};

const ROOM: &str = "room";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Link ids (chosen by the receiver of each direction) and keys.
const A_RECEIVES: u32 = 0x0000_a001;
const B_RECEIVES: u32 = 0x0000_b001;
const KEY_B_TO_A: [u8; 32] = [0xa5; 32];
const KEY_A_TO_B: [u8; 32] = [0x5b; 32];
const PACKETS: u16 = 200;
const SSRC: u32 = 0x5000_0001;

fn spawn(
    index: usize,
    mode: PortMode,
    ports: (u16, u16),
) -> (ShardHandle, std::thread::JoinHandle<()>) {
    let (events, events_rx) = flume::unbounded();
    // Events are not looked at here; keep the receiver alive with the shard.
    std::mem::forget(events_rx);
    choir::shard::spawn(ShardSetup {
        index,
        cpu: None,
        ports,
        mode,
        listen: vec![(LOCALHOST, LOCALHOST)],
        udp: true,
        tcp: false,
        consent_timeout: Duration::from_secs(60),
        dtls_timeout: Duration::from_secs(60),
        consumer_hold: Duration::ZERO,
        dtls_config: dtls::dtls_config(),
        events,
        limits: Default::default(),
        link_port: None,
    })
    .expect("the shard starts")
}

/// Lets the clients send what they have and handle what arrived; returns the payloads (the
/// last [`PAYLOAD`] octets) of the RTP packets received.
fn pump(legs: &mut [&mut Leg], buf: &mut [u8]) -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut got = Vec::new();
    for leg in legs.iter_mut() {
        while let Some(n) = leg.client.poll_transmit(now, buf) {
            let _ = leg.socket.send_to(&buf[..n], leg.client.server());
        }
        while let Ok(n) = leg.socket.recv(buf) {
            if let ClientReceived::Rtp(len) = leg.client.handle_datagram(&mut buf[..n], now) {
                got.push(buf[len - PAYLOAD..len].to_vec());
            }
        }
    }
    got
}

const PAYLOAD: usize = 100;

fn payload(seq: u16) -> [u8; PAYLOAD] {
    let mut p = [0u8; PAYLOAD];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (usize::from(seq) * 7 + i * 13) as u8;
    }
    p
}

fn drops(shard: &ShardHandle, reason: &str) -> u64 {
    let Reply::Stats(s) = call(shard, Command::Stats) else {
        panic!("stats");
    };
    s.counters
        .drops
        .iter()
        .filter(|((layer, r), _)| *layer == "relay" && *r == reason)
        .map(|(_, n)| *n)
        .sum()
}

fn until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    check()
}

#[test]
fn a_speaker_on_one_shard_is_heard_through_a_link_on_another() {
    let (a_min, a_max) = common::port_range(20);
    let b_port = common::port_range(1).0;
    let (a, a_thread) = spawn(0, PortMode::PerTransport, (a_min, a_max));
    let (b, b_thread) = spawn(1, PortMode::Single, (b_port, b_port));
    for shard in [&a, &b] {
        call(
            shard,
            Command::OpenRoom {
                channel_id: ROOM.into(),
            },
        );
    }

    // Node A: a speaker.
    let mut speaker = leg(&a, "speaker", Direction::Send, &dtls::dtls_config());
    let rtp = serde_json::from_value(json!({"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2}],
        "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1}],
        "encodings":[{"ssrc":SSRC}],"rtcp":{"cname":"speaker"}}))
    .unwrap();
    let Reply::Producer(producer_id) = call(
        &a,
        Command::Produce(ProduceRequest {
            channel_id: ROOM.into(),
            user_id: "speaker".into(),
            kind: "audio".into(),
            rtp_parameters: rtp,
            paused: false,
        }),
    ) else {
        panic!("produce");
    };

    // The link ports: A binds one more port of its slice, B's is its shared port.
    let a_link = block_on(cascade::link_port(std::slice::from_ref(&a), ROOM)).unwrap();
    let b_link = block_on(cascade::link_port(std::slice::from_ref(&b), ROOM)).unwrap();
    assert!((a_min..=a_max).contains(&a_link), "{a_link}");
    assert_eq!(b_link, b_port);
    let stats_port = |shard: &ShardHandle| match call(shard, Command::Stats) {
        Reply::Stats(s) => (s.link_port, s.counts.bound_ports),
        _ => panic!("stats"),
    };
    assert_eq!(
        stats_port(&a),
        (a_link, 1),
        "the link port is no transport's"
    );

    // The control plane's half: the link on both ends, ids and keys crossed.
    let a_params = LinkParams {
        channel_id: ROOM.into(),
        peer: "nodeB".into(),
        peer_region: String::new(),
        receive_id: A_RECEIVES,
        receive_key: KEY_B_TO_A,
        send_id: B_RECEIVES,
        send_key: KEY_A_TO_B,
        peer_addr: SocketAddr::new(LOCALHOST, b_link),
        local_port: 0,
    };
    let b_params = LinkParams {
        channel_id: ROOM.into(),
        peer: "nodeA".into(),
        peer_region: String::new(),
        receive_id: B_RECEIVES,
        receive_key: KEY_A_TO_B,
        send_id: A_RECEIVES,
        send_key: KEY_B_TO_A,
        peer_addr: SocketAddr::new(LOCALHOST, a_link),
        local_port: 0,
    };
    let a_info = block_on(cascade::add_link(
        std::slice::from_ref(&a),
        a_params.clone(),
    ))
    .unwrap();
    assert_eq!(a_info.local_port, a_link, "local_port 0 is the link port");
    block_on(cascade::add_link(std::slice::from_ref(&b), b_params)).unwrap();
    let err = block_on(cascade::add_link(std::slice::from_ref(&a), a_params)).unwrap_err();
    assert_eq!(err.status, 409, "{}", err.message);

    let announced = block_on(cascade::relayed_producers(std::slice::from_ref(&a), ROOM)).unwrap();
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].producer_id, producer_id);
    block_on(cascade::add_remote_producer(
        std::slice::from_ref(&b),
        ROOM,
        "nodeA",
        announced[0].clone(),
    ))
    .unwrap();

    // Node B: a listener consumes the remote producer by id.
    let mut listener = leg(&b, "listener", Direction::Recv, &dtls::dtls_config());
    let caps = serde_json::from_value(json!({"codecs":[{"kind":"audio","mimeType":"audio/opus","preferredPayloadType":100,"clockRate":48000,"channels":2}],
        "headerExtensions":[{"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":10}]}))
    .unwrap();
    let Reply::Consumer(_) = call(
        &b,
        Command::Consume(ConsumeRequest {
            channel_id: ROOM.into(),
            user_id: "listener".into(),
            producer_id: producer_id.clone(),
            rtp_capabilities: caps,
        }),
    ) else {
        panic!("consume");
    };

    let mut buf = vec![0u8; 2048];
    assert!(
        until(Duration::from_secs(20), || {
            pump(&mut [&mut speaker, &mut listener], &mut buf);
            speaker.client.is_connected() && listener.client.is_connected()
        }),
        "clients did not connect"
    );
    // Keepalives both ways: each end measured a round trip.
    assert!(
        until(Duration::from_secs(10), || {
            [&a, &b].iter().all(|s| {
                let links = block_on(cascade::links(std::slice::from_ref(s))).unwrap();
                links.len() == 1 && links[0].rtt.is_some()
            })
        }),
        "the link's keepalives were not answered"
    );

    // The speaker talks: every packet reaches B's listener, its payload unchanged.
    let mut heard = Vec::new();
    let mut packet = [0u8; 2048];
    for seq in 0..PACKETS {
        packet[..4].copy_from_slice(&[0x90, 111, (seq >> 8) as u8, seq as u8]);
        packet[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
        packet[8..12].copy_from_slice(&SSRC.to_be_bytes());
        packet[12..20].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x85, 0x00, 0x00]);
        packet[20..20 + PAYLOAD].copy_from_slice(&payload(seq));
        let n = speaker
            .client
            .protect_rtp(&mut packet, 20 + PAYLOAD)
            .unwrap();
        speaker
            .socket
            .send_to(&packet[..n], speaker.client.server())
            .unwrap();
        if seq % 16 == 15 {
            heard.extend(pump(&mut [&mut speaker, &mut listener], &mut buf));
        }
    }
    assert!(
        until(Duration::from_secs(10), || {
            heard.extend(pump(&mut [&mut speaker, &mut listener], &mut buf));
            heard.len() >= usize::from(PACKETS)
        }),
        "heard {} of {PACKETS}",
        heard.len()
    );
    let want: Vec<Vec<u8>> = (0..PACKETS).map(|s| payload(s).to_vec()).collect();
    assert_eq!(heard, want, "every packet, in order, byte for byte");
    let links = block_on(cascade::links(std::slice::from_ref(&a))).unwrap();
    assert_eq!(links[0].packets_out, u64::from(PACKETS));
    let links = block_on(cascade::links(std::slice::from_ref(&b))).unwrap();
    assert_eq!(links[0].packets_in, u64::from(PACKETS));
    assert_eq!(links[0].peer_addr, SocketAddr::new(LOCALHOST, a_link));

    // Bad datagrams from a test socket, to both link ports: counted drops, the link unharmed.
    let rogue = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seal = |id: u32, key: &[u8; 32], stream: u32| {
        let mut sender = relay::Sender::new(LinkKey::new(key).unwrap(), id);
        let mut d = [0u8; 256];
        let rtp = [0x80, 111, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42, 0xde, 0xad];
        let n = Payload::Media { stream, rtp: &rtp }
            .write(&mut d[HEADER_LEN..])
            .unwrap();
        let len = sender.seal_in_place(&mut d, n).unwrap();
        d[..len].to_vec()
    };
    // Authentic but replayed: sequence number 0 of A → B was used long ago.
    let replayed = seal(B_RECEIVES, &KEY_A_TO_B, announced[0].stream);
    let mut forged = replayed.clone();
    forged[6..14].copy_from_slice(&5_000u64.to_be_bytes()); // a fresh sequence number
    let mut wrong_key = seal(B_RECEIVES, &[0x11; 32], 0);
    wrong_key[6..14].copy_from_slice(&6_000u64.to_be_bytes()); // past the replay check
    let unknown = seal(0xdead, &KEY_A_TO_B, 0);
    let b_addr = SocketAddr::new(LOCALHOST, b_link);
    let a_addr = SocketAddr::new(LOCALHOST, a_link);
    let before = (
        drops(&b, "replayed") + drops(&b, "too_old"),
        drops(&b, "forged"),
        drops(&b, "unknown_link"),
    );
    for d in [&replayed, &forged, &wrong_key, &unknown] {
        rogue.send_to(d, b_addr).unwrap();
    }
    rogue.send_to(&forged, a_addr).unwrap();
    rogue
        .send_to(b"\x00\x01 not a link datagram", a_addr)
        .unwrap();
    assert!(
        until(Duration::from_secs(5), || {
            (
                drops(&b, "replayed") + drops(&b, "too_old"),
                drops(&b, "forged"),
                drops(&b, "unknown_link"),
            ) == (before.0 + 1, before.1 + 2, before.2 + 1)
                && drops(&a, "unknown_link") == 1
                && drops(&a, "not_relay") == 1
        }),
        "drops: B replayed/too_old {} forged {} unknown {}; A unknown {} not_relay {}",
        drops(&b, "replayed") + drops(&b, "too_old"),
        drops(&b, "forged"),
        drops(&b, "unknown_link"),
        drops(&a, "unknown_link"),
        drops(&a, "not_relay"),
    );
    let links = block_on(cascade::links(std::slice::from_ref(&b))).unwrap();
    assert_eq!(
        links[0].peer_addr,
        SocketAddr::new(LOCALHOST, a_link),
        "no bad datagram moved the peer's address"
    );

    // Removing the link closes the remote producer on B.
    block_on(cascade::remove_link(
        std::slice::from_ref(&b),
        ROOM,
        "nodeA",
        Some("node_lost"),
    ))
    .unwrap();
    assert!(block_on(cascade::links(std::slice::from_ref(&b)))
        .unwrap()
        .is_empty());
    let err = block_on(cascade::remove_remote_producer(
        std::slice::from_ref(&b),
        ROOM,
        "nodeA",
        &producer_id,
        None,
    ))
    .unwrap_err();
    assert_eq!(err.status, 404, "{}", err.message);

    for (shard, thread) in [(a, a_thread), (b, b_thread)] {
        call(&shard, Command::Shutdown);
        drop(shard);
        thread.join().unwrap();
    }
}
