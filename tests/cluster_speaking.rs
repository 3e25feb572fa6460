//! Events and speaking across regions (issue 22): two nodes in regions `a` and `b` (real
//! redis-server, real choir processes), scripted speakers (`choir::client` transports sending
//! RFC 6464 levels, tests/common/speaker.rs) on both. A new producer is announced on the remote
//! node within 200 ms of its own node's announcement; both nodes name the same dominant speaker
//! for a scripted pattern, within one speaking interval of each other; a pause on one node is
//! `producerPaused` on the other, and its packets stop crossing the link.

mod common;
#[path = "common/cluster.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;
#[path = "common/speaker.rs"]
mod speaker;

use std::time::{Duration, Instant};

use harness::{listed, node, until};
use redis_server::Redis;
use serde_json::{json, Value};
use speaker::{is, play, Events, Speaker, LOUD, SILENT, SLACK, TICK};

fn relay_in(d: &common::Daemon) -> u64 {
    d.stats()["total"]["relayPacketsIn"].as_u64().unwrap()
}

fn lists(d: &common::Daemon, channel: &str, user: &str, producer_id: &str) -> bool {
    let (status, v) = d.get(&format!("producers/{channel}/{user}"));
    assert_eq!(status, 200, "{v}");
    v["producers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["producerId"] == producer_id)
}

#[test]
fn events_speaking_and_the_dominant_speaker_agree_across_regions() {
    let redis = Redis::start();
    let nodes = [
        node(&redis, 1, &["--region", "a"]),
        node(&redis, 2, &["--region", "b"]),
    ];
    for d in &nodes {
        assert!(until(Duration::from_secs(10), || listed(d).len() == 2));
    }
    let (na, nb) = (&nodes[0], &nodes[1]);
    let ch = "span-speaking";
    let mut speakers = vec![
        Speaker::join(na, ch, "sa", 0x1111),
        Speaker::join(nb, ch, "sb", 0x2222),
    ];
    let mut on_a = Events::open(na, ch, "la", false);
    let mut on_b = Events::open(nb, ch, "lb", false);
    // Linked: each node lists the other's speaker.
    let (pa, pb) = (
        speakers[0].producer_id.clone(),
        speakers[1].producer_id.clone(),
    );
    let start = Instant::now();
    let mut linked = false;
    while !linked && start.elapsed() < Duration::from_secs(10) {
        play(&mut speakers, start, Duration::from_millis(100), |_, _| {});
        linked = lists(na, ch, "sa", &pb) && lists(nb, ch, "sb", &pa);
    }
    assert!(linked, "the nodes never listed each other's speaker");

    // A new producer on a: announced on b within 200 ms of a's own announcement.
    speakers.push(Speaker::join(na, ch, "sc", 0x3333));
    let pc = speakers[2].producer_id.clone();
    let here = on_a.wait(Duration::from_secs(3), is("newProducer", "sc"));
    let there = on_b.wait(Duration::from_secs(3), is("newProducer", "sc"));
    let (here, there) = (
        here.expect("newProducer of sc on a").0,
        there.expect("newProducer of sc on b").0,
    );
    let late = there.saturating_duration_since(here);
    eprintln!("newProducer on the remote node {late:?} after the local one");
    assert!(late <= Duration::from_millis(200), "{late:?}");
    assert_eq!(
        on_b.wait(Duration::ZERO, is("newProducer", "sc"))
            .unwrap()
            .1["producerId"],
        pc.as_str()
    );

    // Silence, then sa (on a) talks for 2 s, then sb (on b) for 2 s; sc stays silent.
    let script_start = Instant::now();
    play(
        &mut speakers,
        script_start,
        Duration::from_millis(5500),
        |t, s| {
            s[0].level = Some(if (500..2500).contains(&t) {
                LOUD
            } else {
                SILENT
            });
            s[1].level = Some(if (2500..4500).contains(&t) {
                LOUD
            } else {
                SILENT
            });
        },
    );
    let dominant = |e: &mut Events| -> Vec<(Instant, String)> {
        e.of_type("dominantSpeaker")
            .into_iter()
            .map(|(at, v)| (at, v["userId"].as_str().unwrap().to_string()))
            .collect()
    };
    let (da, db) = (dominant(&mut on_a), dominant(&mut on_b));
    let names = |d: &[(Instant, String)]| d.iter().map(|(_, u)| u.clone()).collect::<Vec<_>>();
    eprintln!(
        "dominantSpeaker on a: {:?}, on b: {:?}",
        names(&da),
        names(&db)
    );
    assert_eq!(names(&da), ["sa", "sb"], "on node a");
    assert_eq!(names(&db), ["sa", "sb"], "on node b");
    for ((ta, user), (tb, _)) in da.iter().zip(&db) {
        let apart = if ta > tb { *ta - *tb } else { *tb - *ta };
        eprintln!("{user}: the nodes named it {apart:?} apart");
        assert!(apart <= TICK + SLACK, "{user}: {apart:?} apart");
    }
    // Both nodes saw each speaker start and stop talking.
    for e in [&mut on_a, &mut on_b] {
        for user in ["sa", "sb"] {
            let flips: Vec<bool> = e
                .of_type("speakingChanged")
                .into_iter()
                .filter(|(_, v)| v["userId"] == user)
                .map(|(_, v)| v["speaking"].as_bool().unwrap())
                .collect();
            assert_eq!(flips, [true, false], "{user}");
        }
    }

    // sa paused on a: producerPaused on b, and its packets (still sent) stop crossing.
    let ids = json!({"channelId": ch, "userId": "sa", "producerId": pa});
    na.ok("pause-producer", &ids);
    let paused = on_b.wait(Duration::from_secs(3), |v: &Value| {
        v["type"] == "producerPaused" && v["producerId"] == pa.as_str()
    });
    assert!(paused.is_some(), "no producerPaused of sa on b");
    speakers[1].level = None;
    speakers[2].level = None;
    play(&mut speakers, start, Duration::from_millis(300), |_, _| {});
    let before = relay_in(nb);
    play(&mut speakers, start, Duration::from_secs(1), |_, s| {
        s[0].level = Some(LOUD);
    });
    assert_eq!(
        relay_in(nb),
        before,
        "a paused speaker's packets crossed the link"
    );
    assert!(
        on_b.of_type("speakingChanged")
            .iter()
            .filter(|(_, v)| v["userId"] == "sa")
            .count()
            == 2,
        "a paused speaker was heard speaking on b"
    );
    na.ok("resume-producer", &ids);
    assert!(on_b
        .wait(Duration::from_secs(3), |v: &Value| {
            v["type"] == "producerResumed" && v["producerId"] == pa.as_str()
        })
        .is_some());
    play(&mut speakers, start, Duration::from_millis(500), |_, _| {});
    assert!(
        relay_in(nb) > before,
        "a resumed speaker's packets do not cross"
    );
}
