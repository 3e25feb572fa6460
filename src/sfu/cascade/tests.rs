//! The cascade core with byte slices and a fake clock: links, relaying out, opening in, drops,
//! keepalives. (tests/cascade_core.rs runs whole rooms over links with real clients.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::super::{Announced, Egress, Path, Settings, Sfu};
use super::{LinkParams, KEEPALIVE_INTERVAL};
use crate::sfu::api::{CreateTransportRequest, Direction, Event, ProduceRequest};
use crate::wire::relay::{self, payload::Payload};

/// Records link datagrams; drops everything else.
#[derive(Default)]
struct Wire(Vec<(u16, SocketAddr, Vec<u8>)>);
impl Egress for Wire {
    fn send(&mut self, _: Path, _: &[u8]) {}
    fn send_to(&mut self, local_port: u16, to: SocketAddr, datagram: &[u8]) {
        self.0.push((local_port, to, datagram.to_vec()));
    }
}

fn settings() -> Settings {
    Settings {
        announced: vec![Announced {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp: true,
            tcp: false,
        }],
        consent_timeout: Duration::from_secs(30),
        dtls_timeout: Duration::from_secs(30),
        consumer_hold: Duration::ZERO,
        dtls_config: crate::wire::dtls::dtls_config(),
        identity: crate::wire::dtls::DtlsIdentity::generate().unwrap(),
    }
}

fn addr(node: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, node)), 7000)
}

const PORT: u16 = 7000;

/// Link ids and keys of the direction `from` → `to` (nodes 1, 2, 3).
fn id(from: u8, to: u8) -> u32 {
    u32::from(from) << 8 | u32::from(to)
}
fn key(from: u8, to: u8) -> [u8; 32] {
    [from * 16 + to; 32]
}

/// Node `me`'s link of room `room` to node `peer`.
fn params(room: &str, me: u8, peer: u8) -> LinkParams {
    LinkParams {
        channel_id: room.into(),
        peer: format!("n{peer}"),
        peer_region: String::new(),
        receive_id: id(peer, me),
        receive_key: key(peer, me),
        send_id: id(me, peer),
        send_key: key(me, peer),
        peer_addr: addr(peer),
        local_port: PORT,
    }
}

fn rtp_parameters(ssrc: u32) -> crate::sfu::ortc::RtpParameters {
    serde_json::from_value(serde_json::json!({
        "codecs":[{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2}],
        "headerExtensions":[{"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","id":1}],
        "encodings":[{"ssrc":ssrc}],"rtcp":{"cname":"c"}}))
    .unwrap()
}

fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x90, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0x85, 0, 0]);
    p.extend_from_slice(&[0xf8, 1, 2, 3]);
    p
}

/// Node A (1) with a local producer in room "r", node B (2) with the link back and that
/// producer as a remote one.
struct Pair {
    now: Instant,
    a: Sfu,
    b: Sfu,
    /// A's producer's send transport.
    transport: usize,
    producer_id: String,
}

fn pair() -> Pair {
    let now = Instant::now();
    let mut a = Sfu::new(settings(), now);
    let mut b = Sfu::new(settings(), now);
    a.open_room("r");
    b.open_room("r");
    let req = CreateTransportRequest {
        channel_id: "r".into(),
        user_id: "alice".into(),
        direction: Direction::Send,
    };
    let (transport, _) = a.create_transport(&req, 40_000, now).unwrap();
    let producer_id = a
        .produce(&ProduceRequest {
            channel_id: "r".into(),
            user_id: "alice".into(),
            kind: "audio".into(),
            rtp_parameters: rtp_parameters(0x1234_5678),
            paused: false,
        })
        .unwrap();
    a.add_link(params("r", 1, 2), now).unwrap();
    b.add_link(params("r", 2, 1), now).unwrap();
    let announced = a.relayed_producer("r", &producer_id).unwrap();
    assert_eq!(a.relayed_producers("r").unwrap(), vec![announced.clone()]);
    b.add_remote_producer("r", "n1", announced).unwrap();
    a.take_events();
    Pair {
        now,
        a,
        b,
        transport,
        producer_id,
    }
}

impl Pair {
    /// A local packet on A; what A sent on its links.
    fn speak(&mut self, seq: u16) -> Wire {
        let mut wire = Wire::default();
        let p = packet(seq);
        self.a.forward_rtp(self.transport, &p, self.now, &mut wire);
        wire
    }

    fn deliver_b(&mut self, datagram: &[u8]) -> Wire {
        let mut d = datagram.to_vec();
        let mut wire = Wire::default();
        self.b
            .on_link_datagram(PORT, addr(1), &mut d, self.now, &mut wire);
        wire
    }
}

#[test]
fn a_local_packet_is_sealed_once_per_link_and_opened_by_the_peer() {
    let mut p = pair();
    let events = p.b.take_events();
    assert!(matches!(&events[..], [e] if e.event == Event::NewProducer {
        user_id: "alice".into(), producer_id: p.producer_id.clone(), kind: "audio".into(),
        node: Some("n1".into()), region: Some(String::new()) }));
    let wire = p.speak(1);
    assert_eq!(wire.0.len(), 1);
    let (port, to, d) = &wire.0[0];
    assert_eq!((*port, *to), (PORT, addr(2)));
    assert_eq!(d[0], relay::KIND);
    assert_eq!(relay::header(d).unwrap().link_id, id(1, 2));
    // The peer opens it and finds the RTP packet as the speaker sent it.
    let mut rx = relay::Receiver::new(relay::LinkKey::new(&key(1, 2)).unwrap(), id(1, 2));
    let mut copy = d.clone();
    let (_, plain) = rx.open(&mut copy).unwrap();
    let stream = p.a.relayed_producer("r", &p.producer_id).unwrap().stream;
    assert_eq!(
        Payload::parse(plain),
        Ok(Payload::Media {
            stream,
            rtp: &packet(1)
        })
    );
    let d = d.clone();
    let back = p.deliver_b(&d);
    assert!(back.0.is_empty(), "a relayed packet is never relayed again");
    let c = p.b.counters();
    assert_eq!((c.relay_packets_in, c.relay_packets_out), (1, 0));
    assert!(c.drops.is_empty(), "{:?}", c.drops);
    assert_eq!(p.a.counters().relay_packets_out, 1);
    let list = p.b.list_producers("r", "bob").unwrap_err();
    assert_eq!(list.status, 404, "bob is no participant of B");
}

#[test]
fn bad_datagrams_are_dropped_and_counted_without_disturbing_the_link() {
    let mut p = pair();
    let good = p.speak(1).0.remove(0).2;
    let next = p.speak(2).0.remove(0).2;
    let mut forged = good.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    p.deliver_b(&forged);
    let mut unknown = good.clone();
    unknown[2..6].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    p.deliver_b(&unknown);
    p.deliver_b(&good[..10]);
    let mut d = good.clone();
    let mut w = Wire::default();
    p.b.on_link_datagram(PORT + 1, addr(1), &mut d, p.now, &mut w);
    p.deliver_b(&next);
    p.deliver_b(&good);
    p.deliver_b(&good);
    let c = p.b.counters();
    for reason in ["forged", "unknown_link", "short", "wrong_port", "replayed"] {
        assert_eq!(c.dropped("relay", reason), 1, "{reason}: {:?}", c.drops);
    }
    assert_eq!(c.relay_packets_in, 2);
    assert_eq!(c.relay_peer_moves, 0);
    // Reordered, then complete: nothing lost.
    let link = p.b.link("r", "n1").unwrap();
    assert_eq!((link.datagrams_in, link.lost), (2, 0));
    let third = p.speak(3).0.remove(0).2;
    p.speak(4);
    let fifth = p.speak(5).0.remove(0).2;
    p.deliver_b(&third);
    p.deliver_b(&fifth);
    let link = p.b.link("r", "n1").unwrap();
    assert_eq!((link.datagrams_in, link.lost), (4, 1));
    // Per peer node (for /metrics): the live link, then what it counted once removed.
    let peer = p.b.peer_stats();
    assert_eq!(peer.len(), 1);
    assert_eq!(
        (peer[0].peer.as_str(), peer[0].links, peer[0].streams_in),
        ("n1", 1, 1)
    );
    assert_eq!(
        (peer[0].packets_in, peer[0].datagrams_in, peer[0].missing),
        (4, 4, 1)
    );
    assert_eq!(p.a.peer_stats()[0].streams_out, 1);
    p.b.remove_link("r", "n1", None).unwrap();
    let gone = &p.b.peer_stats()[0];
    assert_eq!((gone.links, gone.streams_in, gone.rtt_max_us), (0, 0, 0));
    assert_eq!(
        (gone.packets_in, gone.datagrams_in, gone.missing),
        (4, 4, 1)
    );
}

#[test]
fn a_packet_before_its_producer_is_an_unknown_stream_and_the_next_one_is_delivered() {
    let mut p = pair();
    let remote = p.b.links()[0].clone();
    assert_eq!(remote.remote_producers, 1);
    p.b.remove_link("r", "n1", None).unwrap();
    assert!(matches!(
        &p.b.take_events()[1].event,
        Event::ProducerClosed { .. }
    ));
    p.b.add_link(params("r", 2, 1), p.now).unwrap();
    let first = p.speak(1).0.remove(0).2;
    // A's sender continues its sequence; B's new receiver takes it.
    p.deliver_b(&first);
    assert_eq!(p.b.counters().dropped("relay", "unknown_stream"), 1);
    let announced = p.a.relayed_producer("r", &p.producer_id).unwrap();
    p.b.add_remote_producer("r", "n1", announced.clone())
        .unwrap();
    assert_eq!(
        p.b.add_remote_producer("r", "n1", announced)
            .unwrap_err()
            .status,
        409
    );
    let second = p.speak(2).0.remove(0).2;
    p.deliver_b(&second);
    assert_eq!(p.b.counters().relay_packets_in, 1);
}

#[test]
fn links_are_one_per_peer_and_need_their_room() {
    let now = Instant::now();
    let mut s = Sfu::new(settings(), now);
    assert_eq!(s.add_link(params("r", 2, 1), now).unwrap_err().status, 404);
    s.open_room("r");
    s.open_room("q");
    s.add_link(params("r", 2, 1), now).unwrap();
    assert_eq!(s.add_link(params("r", 2, 1), now).unwrap_err().status, 409);
    // Another room's link with the same receive id: refused, ids are the shard's.
    assert_eq!(s.add_link(params("q", 2, 1), now).unwrap_err().status, 409);
    let mut q = params("q", 2, 1);
    q.receive_id = 99;
    s.add_link(q, now).unwrap();
    assert_eq!(s.counters().links, 2);
    assert_eq!(s.remove_link("r", "n3", None).unwrap_err().status, 404);
    s.remove_link("r", "n1", None).unwrap();
    assert_eq!(s.counters().links, 1);
    assert!(s.link("q", "n1").is_some());
    assert!(format!("{:?}", params("r", 2, 1)).contains("LinkParams"));
    assert!(!format!("{:?}", params("r", 2, 1)).contains("33"));
}

#[test]
fn keepalives_give_liveness_and_rtt_and_a_moved_peer_is_latched() {
    let mut p = pair();
    let mut wire = Wire::default();
    p.a.handle_timeout(p.now, &mut wire);
    assert_eq!(wire.0.len(), 1, "the first keepalive at once");
    // B's own first keepalive (lost on the way, say).
    p.b.handle_timeout(p.now, &mut Wire::default());
    assert!(p.a.poll_timeout().unwrap() <= p.now + KEEPALIVE_INTERVAL);
    p.now += Duration::from_millis(30);
    let probe = wire.0.remove(0).2;
    let mut d = probe.clone();
    let mut ack = Wire::default();
    let moved = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 7001);
    p.b.on_link_datagram(PORT, moved, &mut d, p.now, &mut ack);
    let b_link = p.b.link("r", "n1").unwrap();
    let alive_at = Some(p.now);
    assert_eq!(b_link.last_received, alive_at);
    assert_eq!(b_link.peer_addr, moved);
    assert_eq!(p.b.counters().relay_peer_moves, 1);
    assert_eq!(ack.0.len(), 1);
    assert_eq!(ack.0[0].1, moved, "the answer goes to the latched address");
    p.now += Duration::from_millis(30);
    let mut d = ack.0.remove(0).2;
    p.a.on_link_datagram(PORT, addr(2), &mut d, p.now, &mut Wire::default());
    let a_link = p.a.link("r", "n2").unwrap();
    assert_eq!(a_link.rtt, Some(Duration::from_millis(60)));
    assert_eq!(p.a.counters().link_rtt_max_us, 60_000);
    // A replayed, altered datagram from elsewhere neither moves the peer nor counts as alive.
    let mut forged = probe.clone();
    forged[20] ^= 1;
    p.now += Duration::from_millis(1);
    p.b.on_link_datagram(PORT, addr(7), &mut forged, p.now, &mut Wire::default());
    let b_link = p.b.link("r", "n1").unwrap();
    assert_eq!((b_link.peer_addr, b_link.last_received), (moved, alive_at));
    assert_eq!(p.b.counters().dropped("relay", "replayed"), 1);
    // Each end, having heard its peer for the first time, sends one more keepalive at once (so
    // that a peer waiting for the link to carry datagrams learns it in one round trip), then
    // nothing before the interval.
    for sfu in [&mut p.a, &mut p.b] {
        let mut wire = Wire::default();
        sfu.handle_timeout(p.now, &mut wire);
        assert_eq!(
            wire.0.len(),
            1,
            "a keepalive at once after the first datagram"
        );
        let mut wire = Wire::default();
        sfu.handle_timeout(p.now, &mut wire);
        assert!(wire.0.is_empty(), "then only every interval");
    }
    let mut wire = Wire::default();
    p.now += KEEPALIVE_INTERVAL;
    p.a.handle_timeout(p.now, &mut wire);
    assert_eq!(wire.0.len(), 1);
}

#[test]
fn remote_producers_pause_close_and_leave_like_local_ones() {
    let mut p = pair();
    p.b.take_events();
    let id = p.producer_id.clone();
    assert_eq!(
        p.b.set_remote_paused("r", "n2", &id, true)
            .unwrap_err()
            .status,
        404
    );
    p.b.set_remote_paused("r", "n1", &id, true).unwrap();
    assert!(
        matches!(&p.b.take_events()[..], [e] if matches!(e.event, Event::ProducerPaused { .. }))
    );
    let d = p.speak(1).0.remove(0).2;
    p.deliver_b(&d);
    assert_eq!(p.b.counters().dropped("rtp", "producer_paused"), 1);
    p.b.set_remote_paused("r", "n1", &id, false).unwrap();
    p.b.take_events();
    // A local pause stops the relay at A.
    p.a.set_producer_paused(
        &crate::sfu::api::ProducerRequest {
            channel_id: "r".into(),
            user_id: "alice".into(),
            producer_id: id.clone(),
        },
        true,
    )
    .unwrap();
    assert!(p.speak(2).0.is_empty());
    p.b.remove_remote_producer("r", "n1", &id, Some("left"))
        .unwrap();
    let events: Vec<Event> = p.b.take_events().into_iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        vec![
            Event::ProducerClosed {
                user_id: "alice".into(),
                producer_id: id.clone()
            },
            Event::ParticipantLeft {
                user_id: "alice".into(),
                reason: "left".into()
            }
        ]
    );
    assert_eq!(p.b.counters().remote_producers, 0);
    assert!(p.b.link("r", "n1").unwrap().remote_producers == 0);
    // A remote participant without a producer leaves.
    assert!(p
        .b
        .remote_participant_left("r", "n1", "carol", "left")
        .is_ok());
    assert!(
        matches!(&p.b.take_events()[..], [e] if matches!(&e.event, Event::ParticipantLeft { user_id, .. } if user_id == "carol"))
    );
}

#[test]
fn a_resync_repairs_lost_announcements_and_changes_nothing_when_both_sides_agree() {
    let mut p = pair();
    p.b.take_events();
    let id = p.producer_id.clone();
    let listed = p.a.relayed_producers("r").unwrap();
    assert_eq!(p.b.sync_remote_producers("r", "n1", listed.clone()), Ok(0));
    assert!(p.b.take_events().is_empty(), "agreeing lists emit nothing");
    assert_eq!(
        p.b.sync_remote_producers("r", "n2", listed.clone())
            .unwrap_err()
            .status,
        404
    );
    // A pause whose announcement was lost.
    let mut paused = listed.clone();
    paused[0].paused = true;
    assert_eq!(p.b.sync_remote_producers("r", "n1", paused), Ok(1));
    assert!(matches!(
        &p.b.take_events()[..],
        [e] if matches!(e.event, Event::ProducerPaused { .. })
    ));
    // A close whose announcement was lost.
    assert_eq!(p.b.sync_remote_producers("r", "n1", Vec::new()), Ok(1));
    let events: Vec<Event> = p.b.take_events().into_iter().map(|e| e.event).collect();
    assert_eq!(
        events,
        vec![Event::ProducerClosed {
            user_id: "alice".into(),
            producer_id: id.clone()
        }]
    );
    assert_eq!(p.b.links()[0].remote_producers, 0);
    // A new producer whose announcement was lost: added, and its packets delivered.
    assert_eq!(p.b.sync_remote_producers("r", "n1", listed), Ok(1));
    assert!(matches!(
        &p.b.take_events()[..],
        [e] if matches!(e.event, Event::NewProducer { .. })
    ));
    let d = p.speak(1).0.remove(0).2;
    p.deliver_b(&d);
    assert_eq!(p.b.counters().relay_packets_in, 1);
}

#[test]
fn a_room_whose_participants_left_closes_with_its_last_link_and_one_never_joined_does_not() {
    let mut p = pair();
    // A's only participant leaves: the link keeps the room...
    p.a.leave(&crate::sfu::api::ParticipantRequest {
        channel_id: "r".into(),
        user_id: "alice".into(),
    })
    .unwrap();
    assert_eq!(p.a.room_list().len(), 1);
    // ...until the link goes.
    p.a.remove_link("r", "n2", None).unwrap();
    assert!(p.a.room_list().is_empty(), "{:?}", p.a.room_list());
    // B's room never had a participant (opened for the link): it stays for the join deadline.
    p.b.remove_link("r", "n1", None).unwrap();
    assert_eq!(p.b.room_list().len(), 1);
}
