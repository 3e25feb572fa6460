//! Cascading in the sans-IO core (issue 22): two and three in-memory nodes (each a shard's core
//! with real `choir::client` peers: ICE, DTLS, SRTP) whose sealed links are queues
//! (tests/common/cascade.rs). One copy per producer per remote node, split horizon, remote
//! producers fanned out like local ones, pause and close across nodes, and bad link datagrams
//! dropped and counted.

#[path = "common/cascade.rs"]
mod cascade;
#[path = "common/loopback.rs"]
mod loopback;

use std::collections::{BTreeMap, BTreeSet};

use cascade::{link_id, link_key, node_id, Mesh};
use choir::sfu::api::{Event, ProducerRequest};
use choir::wire::relay::{self, payload::Payload, Header, HEADER_LEN};

const CH: &str = "cascade";

fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

fn ssrc_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[8], p[9], p[10], p[11]])
}

fn producer_id(m: &Mesh, node: usize, member: usize) -> String {
    m.nodes[node].members[member].producer_id.clone().unwrap()
}

/// The payload of packet `seq` of `member` of `node`, as the speaker sent it.
fn payload(m: &Mesh, node: usize, member: usize, seq: u16) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let n = m.nodes[node].rtp_packet(member, seq, &mut buf);
    buf[20..n].to_vec()
}

/// Two nodes: a speaker on the first, a listener on the second consuming it (negotiating NACK
/// when `nack`), settled. Returns the mesh, the members, the producer id and the consumer SSRC.
fn speaker_on_a_listener_on_b(nack: bool) -> (Mesh, usize, usize, String, u32) {
    let mut m = Mesh::new(2, CH);
    let speaker = m.nodes[0].join(CH, "speaker", true);
    let listener = m.nodes[1].join(CH, "listener", false);
    m.announce(CH);
    let pid = producer_id(&m, 0, speaker);
    let ssrc = m.nodes[1].consume_id(CH, listener, &pid, nack, false);
    m.settle();
    (m, speaker, listener, pid, ssrc)
}

fn events(m: &mut Mesh, node: usize) -> Vec<Event> {
    m.nodes[node]
        .sfu
        .take_events()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

#[test]
fn one_relayed_copy_per_packet_feeds_twenty_remote_listeners() {
    let mut m = Mesh::new(2, CH);
    let speaker = m.nodes[0].join(CH, "speaker", true);
    let local = m.nodes[0].join(CH, "local", false);
    m.nodes[0].consume(CH, local, speaker);
    let remote: Vec<usize> = (0..20)
        .map(|i| m.nodes[1].join(CH, &format!("b{i}"), false))
        .collect();
    m.announce(CH);
    let pid = producer_id(&m, 0, speaker);
    assert!(events(&mut m, 1).contains(&Event::NewProducer {
        user_id: "speaker".into(),
        producer_id: pid.clone(),
        kind: "audio".into(),
        node: Some(node_id(0)),
        region: Some("region-0".into()),
    }));
    for &l in &remote {
        m.nodes[1].consume_id(CH, l, &pid, false, false);
    }
    let listed = m.nodes[1].sfu.list_producers(CH, "b0").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].user_id.as_str(), &listed[0].producer_id),
        ("speaker", &pid)
    );
    // Where the remote speaker is, for the try-it page; a local one has no such fields.
    assert_eq!(
        (listed[0].node.as_deref(), listed[0].region.as_deref()),
        (Some(node_id(0).as_str()), Some("region-0"))
    );
    let here = m.nodes[0].sfu.list_producers(CH, "local").unwrap();
    assert_eq!(here.len(), 1);
    assert!(here[0].node.is_none() && here[0].region.is_none());
    m.settle();

    let mut heard: BTreeMap<(usize, usize), Vec<u16>> = BTreeMap::new();
    for seq in 0..50 {
        let (got, sent) = m.speak(0, speaker, seq);
        assert_eq!(
            sent, 1,
            "one relayed copy of packet {seq}, for 20 remote listeners"
        );
        assert_eq!(got.len(), 21);
        for (node, member, bytes) in got {
            assert_eq!(
                &bytes[bytes.len() - 100..],
                &payload(&m, 0, speaker, seq)[..],
                "payload intact"
            );
            heard
                .entry((node, member))
                .or_default()
                .push(seq_of(&bytes));
        }
    }
    let expected: BTreeSet<(usize, usize)> =
        remote.iter().map(|&l| (1, l)).chain([(0, local)]).collect();
    assert_eq!(heard.keys().copied().collect::<BTreeSet<_>>(), expected);
    for (who, seqs) in &heard {
        let distinct: BTreeSet<u16> = seqs.iter().copied().collect();
        assert_eq!(distinct.len(), 50, "{who:?}: no duplicate, none missing");
    }
    assert_eq!(m.hops.get(&(0, 1)), Some(&50));
    assert_eq!(m.hops.get(&(1, 0)), None, "nothing goes back");
    let (a, b) = (m.nodes[0].sfu.counters(), m.nodes[1].sfu.counters());
    assert_eq!((a.relay_packets_out, a.relay_packets_in), (50, 0));
    assert_eq!((b.relay_packets_out, b.relay_packets_in), (0, 50));
    assert_eq!(b.rtp_forwarded, 1000);
    assert_eq!((b.links, b.remote_producers), (1, 1));
    let (a_link, b_link) = (
        m.nodes[0].sfu.link(CH, &node_id(1)).unwrap(),
        m.nodes[1].sfu.link(CH, &node_id(0)).unwrap(),
    );
    assert_eq!(
        (a_link.streams_out, a_link.packets_out),
        (1, 50),
        "1 relayed stream, not 20"
    );
    assert_eq!((b_link.remote_producers, b_link.packets_in), (1, 50));
    assert_eq!((b_link.streams_out, b_link.lost), (0, 0));
    assert!(b.drops.is_empty(), "{:?}", b.drops);
}

#[test]
fn three_nodes_full_mesh_each_packet_crosses_one_link() {
    let mut m = Mesh::new(3, CH);
    let mut speakers = Vec::new();
    let mut listeners = Vec::new();
    for n in 0..3 {
        speakers.push(m.nodes[n].join(CH, &format!("s{n}"), true));
        listeners.push(m.nodes[n].join(CH, &format!("l{n}"), false));
    }
    m.announce(CH);
    // Consumer SSRC → the speaking node, per receiving (node, member).
    let mut source: BTreeMap<(usize, usize, u32), usize> = BTreeMap::new();
    for n in 0..3 {
        for from in 0..3 {
            let pid = producer_id(&m, from, speakers[from]);
            let mut who = vec![listeners[n]];
            if from != n {
                who.push(speakers[n]);
            }
            for member in who {
                let ssrc = m.nodes[n].consume_id(CH, member, &pid, false, false);
                source.insert((n, member, ssrc), from);
            }
        }
    }
    m.settle();
    let mut heard: BTreeMap<(usize, usize, usize), BTreeSet<u16>> = BTreeMap::new();
    let mut received = 0;
    for seq in 0..20 {
        for from in 0..3 {
            let (got, sent) = m.speak(from, speakers[from], seq);
            assert_eq!(sent, 2, "one copy per remote node");
            for (node, member, bytes) in got {
                let src = source[&(node, member, ssrc_of(&bytes))];
                assert_eq!(
                    &bytes[bytes.len() - 100..],
                    &payload(&m, src, speakers[src], seq)[..]
                );
                assert!(heard
                    .entry((node, member, src))
                    .or_default()
                    .insert(seq_of(&bytes)));
                received += 1;
            }
        }
    }
    // Every listener hears all three, every speaker the two others, each packet once.
    assert_eq!(heard.len(), 3 * 3 + 3 * 2);
    assert!(heard.values().all(|s| s.len() == 20));
    assert_eq!(received, 20 * 15);
    for n in 0..3 {
        let c = m.nodes[n].sfu.counters();
        assert_eq!(
            (c.relay_packets_out, c.relay_packets_in),
            (40, 40),
            "node {n}"
        );
        assert!(c.drops.is_empty(), "{:?}", c.drops);
    }
    // Producers' packets × remote nodes, each over one link: nothing re-relayed.
    assert_eq!(m.hops.values().sum::<u64>(), 3 * 20 * 2);
    assert!(m.hops.values().all(|&n| n == 20), "{:?}", m.hops);
}

#[test]
fn pause_on_the_origin_pauses_the_remote_producer_and_stops_its_packets() {
    let (mut m, speaker, _, pid, _) = speaker_on_a_listener_on_b(false);
    assert_eq!(m.speak(0, speaker, 0).0.len(), 1);
    let req = ProducerRequest {
        channel_id: CH.into(),
        user_id: "speaker".into(),
        producer_id: pid.clone(),
    };
    m.nodes[0].sfu.set_producer_paused(&req, true).unwrap();
    // The control plane carries the origin's event to the other node.
    let paused = Event::ProducerPaused {
        user_id: "speaker".into(),
        producer_id: pid.clone(),
    };
    assert!(events(&mut m, 0).contains(&paused));
    events(&mut m, 1);
    m.nodes[1]
        .sfu
        .set_remote_paused(CH, &node_id(0), &pid, true)
        .unwrap();
    assert_eq!(events(&mut m, 1), vec![paused]);
    assert!(m.nodes[1].sfu.list_producers(CH, "listener").unwrap()[0].paused);
    for seq in 1..10 {
        let (got, sent) = m.speak(0, speaker, seq);
        assert_eq!((got.len(), sent), (0, 0));
    }
    m.nodes[0].sfu.set_producer_paused(&req, false).unwrap();
    m.nodes[1]
        .sfu
        .set_remote_paused(CH, &node_id(0), &pid, false)
        .unwrap();
    let (got, sent) = m.speak(0, speaker, 10);
    assert_eq!((got.len(), sent), (1, 1));
}

#[test]
fn forged_replayed_unknown_and_wrong_room_datagrams_are_dropped_and_counted() {
    let mut m = Mesh::new(2, CH);
    m.open("other", 1);
    let speaker = m.nodes[0].join(CH, "speaker", true);
    let other = m.nodes[0].join("other", "other-speaker", true);
    let listener = m.nodes[1].join(CH, "listener", false);
    m.announce(CH);
    m.announce("other");
    let pid = producer_id(&m, 0, speaker);
    m.nodes[1].consume_id(CH, listener, &pid, false, false);
    m.settle();

    let (_, good) = m.speak_hops(0, speaker, 0);
    let (_, next) = m.speak_hops(0, speaker, 1);
    // The other room's third datagram: a sequence number this room's link has not seen.
    let other_room: Vec<_> = (0..3)
        .flat_map(|seq| m.speak_hops(0, other, seq).1)
        .collect();
    let good = good[0].2.clone();
    let bad = |d: &[u8]| vec![(0, 1, d.to_vec())];

    let mut forged = good.clone();
    forged[HEADER_LEN + 3] ^= 0x10;
    assert!(m.carry(bad(&forged)).is_empty());
    assert_eq!(m.carry(bad(&good)).len(), 1, "the genuine one still passes");
    assert!(m.carry(bad(&good)).is_empty(), "replayed");
    let mut unknown = next[0].2.clone();
    unknown[2..6].copy_from_slice(&0x0bad_0bad_u32.to_be_bytes());
    assert!(m.carry(bad(&unknown)).is_empty());
    // The other room's datagram under this room's link id: its key does not open it.
    let mut wrong_room = other_room[2].2.clone();
    wrong_room[2..6].copy_from_slice(&link_id(0, 0, 1).to_be_bytes());
    assert!(m.carry(bad(&wrong_room)).is_empty());
    // A genuine datagram of this room's link naming the other room's stream.
    let stream = m.nodes[0]
        .sfu
        .relayed_producer("other", &producer_id(&m, 0, other))
        .unwrap()
        .stream;
    let mut buf = [0u8; 2048];
    let mut rtp = [0u8; 2048];
    let n = m.nodes[0].rtp_packet(other, 5, &mut rtp);
    let len = Payload::Media {
        stream,
        rtp: &rtp[..n],
    }
    .write(&mut buf[HEADER_LEN..])
    .unwrap();
    let key = relay::LinkKey::new(&link_key(0, 0, 1)).unwrap();
    let header = Header {
        link_id: link_id(0, 0, 1),
        seq: 100,
    };
    let len = relay::seal_in_place(&key, header, &mut buf, len).unwrap();
    assert!(m.carry(bad(&buf[..len])).is_empty());

    let c = m.nodes[1].sfu.counters();
    for reason in ["forged", "replayed", "unknown_link", "unknown_stream"] {
        let n = if reason == "forged" { 2 } else { 1 };
        assert_eq!(c.dropped("relay", reason), n, "{reason}: {:?}", c.drops);
    }
    // Nothing else was disturbed: the next genuine packet, still within the window, passes.
    let got = m.carry(next);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, listener);
    assert_eq!(m.nodes[1].sfu.counters().relay_packets_in, 2);
    assert_eq!(m.nodes[1].sfu.counters().relay_peer_moves, 0);
}

#[test]
fn a_packet_before_its_producer_is_dropped_and_the_first_after_is_delivered() {
    let mut m = Mesh::new(2, CH);
    let speaker = m.nodes[0].join(CH, "speaker", true);
    let listener = m.nodes[1].join(CH, "listener", false);
    m.settle();
    let (got, sent) = m.speak(0, speaker, 0);
    assert_eq!((got.len(), sent), (0, 1));
    assert_eq!(
        m.nodes[1].sfu.counters().dropped("relay", "unknown_stream"),
        1
    );
    m.announce(CH);
    let pid = producer_id(&m, 0, speaker);
    m.nodes[1].consume_id(CH, listener, &pid, false, false);
    let (got, _) = m.speak(0, speaker, 1);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1), (1, listener));
    assert_eq!(
        &got[0].2[got[0].2.len() - 100..],
        &payload(&m, 0, speaker, 1)[..]
    );
}

#[test]
fn removing_a_link_closes_its_remote_producers() {
    let (mut m, speaker, _, pid, _) = speaker_on_a_listener_on_b(false);
    assert_eq!(m.speak(0, speaker, 0).0.len(), 1);
    events(&mut m, 1);
    m.nodes[1]
        .sfu
        .remove_link(CH, &node_id(0), Some("node_lost"))
        .unwrap();
    assert_eq!(
        events(&mut m, 1),
        vec![
            Event::ProducerClosed {
                user_id: "speaker".into(),
                producer_id: pid.clone()
            },
            Event::ParticipantLeft {
                user_id: "speaker".into(),
                reason: "node_lost".into()
            }
        ]
    );
    assert!(m.nodes[1]
        .sfu
        .list_producers(CH, "listener")
        .unwrap()
        .is_empty());
    let c = m.nodes[1].sfu.counters();
    assert_eq!((c.links, c.remote_producers), (0, 0));
    assert_eq!(m.nodes[1].sfu.counts().consumers, 0);
    let (got, sent) = m.speak(0, speaker, 1);
    assert_eq!((got.len(), sent), (0, 1));
    assert_eq!(
        m.nodes[1].sfu.counters().dropped("relay", "unknown_link"),
        1
    );
}

#[test]
fn a_remote_speaker_is_detected_from_its_relayed_audio_level() {
    let (mut m, speaker, _, pid, _) = speaker_on_a_listener_on_b(false);
    events(&mut m, 1);
    // One second of loud packets (level −5 dBov), 20 ms apart; both nodes' timers run.
    for seq in 0..50 {
        for lb in m.nodes.iter_mut() {
            lb.now += std::time::Duration::from_millis(20);
        }
        m.speak(0, speaker, seq);
        for lb in m.nodes.iter_mut() {
            let now = lb.now;
            lb.sfu.handle_timeout(now, &mut loopback::Queue::default());
        }
    }
    let seen = events(&mut m, 1);
    assert!(
        seen.iter().any(|e| matches!(e, Event::SpeakingChanged { user_id, speaking: true, .. } if user_id == "speaker")),
        "{seen:?}"
    );
    assert!(seen.contains(&Event::DominantSpeaker {
        user_id: "speaker".into(),
        producer_id: pid.clone()
    }));
    assert!(m.nodes[1].sfu.list_producers(CH, "listener").unwrap()[0].speaking);
    // The remote user is no participant of B: leave, produce and pause do not apply to it.
    let leave = choir::sfu::api::ParticipantRequest {
        channel_id: CH.into(),
        user_id: "speaker".into(),
    };
    assert_eq!(m.nodes[1].sfu.leave(&leave).unwrap_err().status, 404);
    let pause = ProducerRequest {
        channel_id: CH.into(),
        user_id: "speaker".into(),
        producer_id: pid,
    };
    assert_eq!(
        m.nodes[1]
            .sfu
            .set_producer_paused(&pause, true)
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(m.nodes[1].sfu.counts().participants, 1);
}

#[test]
fn a_local_listener_nacks_a_remote_producer_from_the_local_history() {
    let (mut m, speaker, listener, _, ssrc) = speaker_on_a_listener_on_b(true);
    let mut sent = Vec::new();
    for seq in 0..10 {
        let (_, hops) = m.speak_hops(0, speaker, seq);
        if seq == 4 {
            // Node B gets it; the listener's leg loses it.
            let mut d = hops[0].2.clone();
            let lb = &mut m.nodes[1];
            let now = lb.now;
            let mut q = loopback::Queue::default();
            lb.sfu
                .on_link_datagram(cascade::PORT, cascade::addr(0), &mut d, now, &mut q);
            assert_eq!(q.0.len(), 1);
            continue;
        }
        for (_, _, p) in m.carry(hops) {
            sent.push(seq_of(&p));
        }
    }
    let lost = sent[3].wrapping_add(1);
    assert_eq!(sent[4], lost.wrapping_add(1), "the listener missed one");
    let mut buf = [0u8; 256];
    let n = choir::wire::rtcp::write_nack(&mut buf, 0x77, ssrc, [lost]).unwrap();
    let q = m.nodes[1].send_rtcp(listener, false, &buf[..n]);
    let again = m.nodes[1].deliver(q);
    assert_eq!(again.len(), 1, "{:?}", m.nodes[1].sfu.counters());
    assert_eq!(seq_of(&again[0].1), lost);
    let payload_4 = payload(&m, 0, speaker, 4);
    assert_eq!(
        &again[0].1[again[0].1.len() - 100..],
        &payload_4[..],
        "retransmitted by node B"
    );
    assert_eq!(m.nodes[1].sfu.counters().rtp_retransmitted, 1);
    assert_eq!(m.hops.get(&(1, 0)), None, "nothing asked of node A");
}
