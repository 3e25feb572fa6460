//! The whole shard loop makes no heap allocation per forwarded packet: a real shard (its own
//! glommio thread, real UDP sockets on 127.0.0.1, both port modes) forwards one speaker's SRTP
//! to ten listeners, and a global allocator counts every allocation made on the shard's thread
//! meanwhile: the receive loop (epoll, `recvmmsg`), the core, the batched sends, the timer tick,
//! and glommio itself.
//!
//! Inside a loop turn (epoll, `recvmmsg`, the core, the batched sends) nothing may allocate:
//! the shard marks its turns ([`choir::shard::in_loop_turn`]). Between turns, glommio's
//! executor allocates a few times per turn or park (its preemption timers, the doorbell's read
//! and its timer wheel use `Rc`'d sources), never per packet: the test sends in bursts, so that
//! turns are far fewer than datagrams, and bounds those allocations by the turns, parks and yields the
//! shard counted.
//!
//! The room also has a cascade link (issue 22) to a test socket playing the peer node: every
//! packet is sealed once more and sent from the shard's link port, in the same turn.

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/shard_leg.rs"]
mod shard_leg;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use choir::client::ClientReceived;
use choir::process::config::PortMode;
use choir::sfu::api::{ConsumeRequest, Direction, ProduceRequest};
use choir::shard::{Command, Reply, ShardHandle, ShardSetup};
use choir::wire::dtls;
use counting_alloc::{watch_thread, watched_allocations};
use futures_lite::future::block_on;
use serde_json::json;
use shard_leg::{call, leg, Leg};

const LISTENERS: usize = 10;
const BURST: u16 = 16;
const BURSTS: u16 = 200;

/// Lets every client send what it has and handle what arrived; returns RTP packets received.
fn pump(legs: &mut [Leg], buf: &mut [u8]) -> usize {
    let now = Instant::now();
    let mut rtp = 0;
    for leg in legs.iter_mut() {
        while let Some(n) = leg.client.poll_transmit(now, buf) {
            let _ = leg.socket.send_to(&buf[..n], leg.client.server());
        }
        while let Ok(n) = leg.socket.recv(buf) {
            if let ClientReceived::Rtp(_) = leg.client.handle_datagram(&mut buf[..n], now) {
                rtp += 1;
            }
        }
    }
    rtp
}

/// Loop turns, and parks plus yields (glommio polls its reactor at most once per turn, park or
/// yield), copies forwarded, and packets relayed on the link.
fn stats(shard: &ShardHandle) -> (u64, u64, u64, u64) {
    let Reply::Stats(s) = call(shard, Command::Stats) else {
        panic!("stats");
    };
    (
        s.loop_turns,
        s.loop_parks + s.loop_yields,
        s.counters.rtp_forwarded,
        s.counters.relay_packets_out,
    )
}

/// A cascade link of the room to `peer` (a test socket): the shard's link port, fixed keys.
fn link_to(shard: &ShardHandle, peer: SocketAddr) {
    let params = choir::sfu::cascade::LinkParams {
        channel_id: "room".into(),
        peer: "peer".into(),
        peer_region: String::new(),
        receive_id: 1,
        receive_key: [1; 32],
        send_id: 2,
        send_key: [2; 32],
        peer_addr: peer,
        local_port: 0,
    };
    let slice = std::slice::from_ref(shard);
    block_on(choir::control::cascade::add_link(slice, params)).expect("add_link");
}

fn forward_without_allocating(mode: PortMode, index: usize) {
    let ports = common::port_range(41).0;
    let (events, _events_rx) = flume::unbounded();
    let config = dtls::dtls_config();
    let (shard, thread) = choir::shard::spawn(ShardSetup {
        index,
        cpu: None,
        ports: match mode {
            PortMode::Single => (ports, ports),
            PortMode::PerTransport => (ports, ports + 40),
        },
        mode,
        listen: vec![(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        )],
        udp: true,
        tcp: false,
        consent_timeout: Duration::from_secs(60),
        dtls_timeout: Duration::from_secs(60),
        consumer_hold: Duration::ZERO,
        dtls_config: config.clone(),
        events,
        limits: Default::default(),
        link_port: None,
    })
    .expect("the shard starts");
    call(
        &shard,
        Command::OpenRoom {
            channel_id: "room".into(),
        },
    );

    let link_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    link_to(&shard, link_peer.local_addr().unwrap());
    let mut legs = vec![leg(&shard, "speaker", Direction::Send, &config)];
    let rtp = serde_json::from_value(json!({"mid":"0","codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2}],
        "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1}],
        "encodings":[{"ssrc":0x5000_0001u32}],"rtcp":{"cname":"speaker"}}))
    .unwrap();
    let Reply::Producer(producer_id) = call(
        &shard,
        Command::Produce(ProduceRequest {
            channel_id: "room".into(),
            user_id: "speaker".into(),
            kind: "audio".into(),
            rtp_parameters: rtp,
            paused: false,
        }),
    ) else {
        panic!("produce");
    };
    for i in 0..LISTENERS {
        let user = format!("listener-{i}");
        legs.push(leg(&shard, &user, Direction::Recv, &config));
        let caps = serde_json::from_value(json!({"codecs":[{"kind":"audio","mimeType":"audio/opus","preferredPayloadType":100,"clockRate":48000,"channels":2}],
            "headerExtensions":[{"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":10}]}))
        .unwrap();
        call(
            &shard,
            Command::Consume(ConsumeRequest {
                channel_id: "room".into(),
                user_id: user,
                producer_id: producer_id.clone(),
                rtp_capabilities: caps,
            }),
        );
    }
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !legs.iter().all(|l| l.client.is_connected()) {
        assert!(Instant::now() < deadline, "clients did not connect");
        pump(&mut legs, &mut buf);
        std::thread::sleep(Duration::from_millis(2));
    }

    // Sends `BURST` packets at once, then collects every copy (bounded wait).
    let mut seq = 0u16;
    let mut packet = [0u8; 2048];
    let mut burst = |legs: &mut Vec<Leg>, seq: &mut u16| -> usize {
        for _ in 0..BURST {
            let header = [0x90, 111, (*seq >> 8) as u8, *seq as u8];
            packet[..4].copy_from_slice(&header);
            packet[4..8].copy_from_slice(&(u32::from(*seq) * 960).to_be_bytes());
            packet[8..12].copy_from_slice(&0x5000_0001u32.to_be_bytes());
            packet[12..20].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x85, 0x00, 0x00]);
            packet[20..120].fill(*seq as u8);
            let n = legs[0].client.protect_rtp(&mut packet, 120).unwrap();
            legs[0]
                .socket
                .send_to(&packet[..n], legs[0].client.server())
                .unwrap();
            *seq = seq.wrapping_add(1);
        }
        let want = usize::from(BURST) * LISTENERS;
        let (mut got, until) = (0, Instant::now() + Duration::from_secs(5));
        while got < want && Instant::now() < until {
            got += pump(&mut legs[1..], &mut buf);
        }
        got
    };
    // Warm-up: per-stream state (SRTP contexts, statistics, batches) is made on first use.
    let want = usize::from(BURST) * LISTENERS;
    for _ in 0..20 {
        let got = burst(&mut legs, &mut seq);
        assert_eq!(
            got, want,
            "{mode:?}: a warm-up burst was not forwarded whole"
        );
    }

    watch_thread("choir-shard-0-", choir::shard::in_loop_turn);
    let (turns0, parks0, fwd0, relayed0) = stats(&shard);
    let a0 = watched_allocations();
    let mut received = 0;
    for _ in 0..BURSTS {
        received += burst(&mut legs, &mut seq);
    }
    let a1 = watched_allocations();
    let (turns1, parks1, fwd1, relayed1) = stats(&shard);
    // The count is live: answering `stats` allocates on the shard's thread.
    assert!(
        watched_allocations().0 > a1.0,
        "the counter does not see the shard's thread"
    );
    let (allocations, in_turns) = (a1.0 - a0.0, a1.1 - a0.1);
    let (turns, parks) = (turns1 - turns0, parks1 - parks0);
    let forwarded = fwd1 - fwd0;
    let datagrams = u64::from(BURST) * u64::from(BURSTS);
    println!(
        "{mode:?}: {datagrams} datagrams in, {forwarded} copies forwarded, {received} received; \
         {turns} turns, {parks} parks and yields; {allocations} allocations on the shard's thread \
         ({:.4} per forwarded packet), {in_turns} of them inside loop turns",
        allocations as f64 / forwarded.max(1) as f64
    );
    assert_eq!(
        forwarded,
        datagrams * LISTENERS as u64,
        "every copy forwarded"
    );
    assert_eq!(received as u64, forwarded, "every copy arrived");
    assert_eq!(
        relayed1 - relayed0,
        datagrams,
        "every packet relayed on the link"
    );
    // Parks and yields are not bounded by the bursts: on a loaded machine the shard may wake
    // (its doorbell, its 1 ms bound) between any two datagrams of a burst.
    assert!(
        turns < datagrams,
        "bursts are taken in batches: {turns} turns for {datagrams} datagrams"
    );
    // Inside the loop turns (epoll, recvmmsg, the core, the batched sends): none at all.
    assert_eq!(in_turns, 0, "allocations inside the shard's loop turns");
    // Between turns, glommio's executor: a few per turn or park (its preemption timers, the
    // doorbell's read, its timer wheel), not per packet.
    assert!(
        allocations <= 8 * (turns + parks),
        "{allocations} allocations for {turns} turns and {parks} parks and yields"
    );
    call(&shard, Command::Shutdown);
    drop(shard);
    thread.join().unwrap();
}

#[test]
fn the_shard_loop_forwards_without_allocating_per_packet() {
    forward_without_allocating(PortMode::PerTransport, 0);
    forward_without_allocating(PortMode::Single, 0);
}
