//! Speaking indicators end to end: the real `choir` binary, `choir::client` peers doing ICE,
//! DTLS and SRTP over loopback UDP and sending scripted RFC 6464 levels, and the push channel
//! read over HTTP. Asserts the events' order and timing against the script's own clock, the
//! late joiner's view (`GET /producers`, a new stream's first event), metrics, and settings.

mod common;

#[path = "common/speaker.rs"]
mod speaker;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::{json, Value};
use speaker::{is, play, Events, Speaker, HANG, LOUD, SILENT, SLACK, TICK};

#[test]
fn bursts_turn_on_and_off_with_a_dominant_speaker_that_follows() {
    let d = Daemon::start(&[]);
    let ch = "burst";
    let mut listener = Events::open(&d, ch, "listener", true);
    let mut speakers = vec![
        Speaker::join(&d, ch, "a", 0x1111),
        Speaker::join(&d, ch, "b", 0x2222),
        Speaker::join(&d, ch, "c", 0x3333),
    ];
    let mut own = Events::open(&d, ch, "a", false);
    // Silence for 1 s, then a talks for 2 s, then b for 2 s; c stays silent throughout.
    let start = Instant::now();
    let mut gates: Vec<(&str, bool, Instant)> = Vec::new();
    let mut producers_during_b = None;
    play(&mut speakers, start, Duration::from_millis(7000), |t, s| {
        let want = [(1000..3000).contains(&t), (3000..5000).contains(&t)];
        for (i, on) in want.into_iter().enumerate() {
            let level = if on { LOUD } else { SILENT };
            if s[i].level != Some(level) {
                s[i].level = Some(level);
                gates.push((["a", "b"][i], on, Instant::now()));
            }
        }
        if t >= 4500 && producers_during_b.is_none() {
            producers_during_b = Some(d.get("producers/burst/c").1);
        }
    });
    listener.wait(Duration::from_secs(2), |v| {
        v["type"] == "speakingChanged" && v["userId"] == "b" && v["speaking"] == false
    });

    let speaking = listener.of_type("speakingChanged");
    let flips: Vec<(String, bool)> = speaking
        .iter()
        .map(|(_, v)| {
            (
                v["userId"].as_str().unwrap().into(),
                v["speaking"].as_bool().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, bool)> = [("a", true), ("a", false), ("b", true), ("b", false)]
        .iter()
        .map(|(u, s)| (u.to_string(), *s))
        .collect();
    // a's "off" and b's "on" may come in either order (b starts as a stops).
    let mut sorted = flips.clone();
    sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sorted, want_sorted, "{speaking:?}");
    for (user, on, at) in &gates {
        let (got, v) = speaking
            .iter()
            .find(|(_, v)| v["userId"] == *user && v["speaking"] == *on)
            .unwrap();
        let delay = got.saturating_duration_since(*at);
        let bound = if *on {
            TICK + SLACK
        } else {
            HANG + TICK + SLACK
        };
        assert!(delay <= bound, "{user} {on}: {delay:?} > {bound:?}: {v}");
        if *on {
            // The window that starts speaking is at least 40 % loud (of its wall-clock time; a
            // little less of the packets that arrived in it): its mean power is about 4 dB
            // under the loud level at most.
            assert!(v["volume"].as_i64().unwrap() >= -(LOUD as i64) - 5, "{v}");
        }
        eprintln!("{user} speaking {on}: {delay:?} after the gate");
    }
    // The dominant speaker follows a, then b.
    let dominant: Vec<String> = listener
        .of_type("dominantSpeaker")
        .iter()
        .map(|(_, v)| v["userId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dominant, ["a", "b"]);
    // audioLevels: only on the levels stream, loudest first, the silent c never listed.
    let levels = listener.of_type("audioLevels");
    assert!(!levels.is_empty());
    for (_, v) in &levels {
        let list = v["levels"].as_array().unwrap();
        let volumes: Vec<i64> = list.iter().map(|l| l["volume"].as_i64().unwrap()).collect();
        assert!(volumes.windows(2).all(|w| w[0] >= w[1]), "{v}");
        assert!(list.iter().all(|l| l["userId"] != "c"), "{v}");
    }
    assert!(levels.iter().any(|(_, v)| v["levels"][0]["userId"] == "b"));
    // The speaker's own stream got its own speakingChanged, and no audioLevels.
    assert_eq!(own.of_type("speakingChanged").len(), 4);
    assert!(own.of_type("audioLevels").is_empty());
    // A late joiner: /producers said b was speaking; a new stream starts with b dominant.
    let list = producers_during_b.unwrap();
    let b = list["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["userId"] == "b")
        .unwrap();
    assert_eq!(b["speaking"], true, "{list}");
    assert_eq!(b["paused"], false);
    let mut late = Events::open(&d, ch, "late", false);
    let (_, first) = late.wait(Duration::from_secs(2), |_| true).unwrap();
    assert_eq!(
        first,
        json!({"type":"dominantSpeaker","userId":"b","producerId":speakers[1].producer_id})
    );
    // Metrics count the transitions.
    let metrics = ureq::get(&format!("{}/metrics", d.base))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let sum = |to: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("choir_speaking_transitions_total{")
                    && l.contains(&format!("to=\"{to}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!((sum("on"), sum("off")), (2, 2), "{metrics}");
}

#[test]
fn pause_leave_and_stopped_packets_end_speaking_first() {
    let d = Daemon::start(&[]);
    let ch = "order";
    let mut ev = Events::open(&d, ch, "listener", false);
    let mut speakers = vec![
        Speaker::join(&d, ch, "a", 0x4444),
        Speaker::join(&d, ch, "b", 0x5555),
    ];
    let (a_id, b_id) = (
        speakers[0].producer_id.clone(),
        speakers[1].producer_id.clone(),
    );
    let start = Instant::now();
    speakers[0].level = Some(LOUD);
    play(&mut speakers, start, Duration::from_millis(800), |_, _| {});
    assert!(ev
        .wait(Duration::from_secs(1), is("speakingChanged", "a"))
        .is_some());
    // Pause: speaking false at once, before producerPaused.
    let body = json!({"channelId":ch,"userId":"a","producerId":a_id});
    d.ok("pause-producer", &body);
    let (_, paused) = ev
        .wait(Duration::from_secs(2), is("producerPaused", "a"))
        .unwrap();
    let names: Vec<String> = ev
        .drain()
        .iter()
        .rev()
        .take(2)
        .map(|(_, v)| v["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["producerPaused", "speakingChanged"], "{paused}");
    let (_, list) = d.get(&format!("producers/{ch}/b"));
    assert_eq!(list["producers"][0]["paused"], true);
    assert_eq!(list["producers"][0]["speaking"], false);
    // Still loud while paused: nothing more.
    play(&mut speakers, start, Duration::from_millis(600), |_, _| {});
    assert_eq!(ev.of_type("speakingChanged").len(), 2);
    d.ok("resume-producer", &body);
    play(&mut speakers, start, Duration::from_millis(600), |_, _| {});
    assert_eq!(ev.of_type("speakingChanged").len(), 3);

    // b talks, then its packets stop altogether: off within the hang (+ window and slack).
    speakers[1].level = Some(LOUD);
    play(&mut speakers, start, Duration::from_millis(600), |_, _| {});
    assert!(ev
        .wait(Duration::from_secs(1), |v| v["type"] == "speakingChanged"
            && v["userId"] == "b")
        .is_some());
    speakers[1].level = None;
    let stopped = Instant::now();
    play(&mut speakers, start, HANG + TICK + SLACK, |_, _| {});
    let off = ev.wait(Duration::from_millis(100), |v| {
        v["userId"] == "b" && v["speaking"] == false
    });
    let (at, _) = off.expect("b still speaking after its packets stopped");
    eprintln!("b off {:?} after its packets stopped", at - stopped);
    assert!(at - stopped <= HANG + TICK + SLACK);

    // Leave while speaking: speakingChanged false, producerClosed, participantLeft.
    let before = ev.drain().len();
    d.ok("leave", &json!({"channelId":ch,"userId":"a"}));
    ev.wait(Duration::from_secs(2), is("participantLeft", "a"))
        .unwrap();
    let tail: Vec<(String, String)> = ev.drain()[before..]
        .iter()
        .map(|(_, v)| {
            (
                v["type"].as_str().unwrap().into(),
                v["userId"].as_str().unwrap_or("").into(),
            )
        })
        .filter(|(_, u)| u == "a")
        .collect();
    let want: Vec<(String, String)> = ["speakingChanged", "producerClosed", "participantLeft"]
        .iter()
        .map(|t| (t.to_string(), "a".to_string()))
        .collect();
    assert_eq!(tail, want);
    // a was dominant; now gone, a new stream does not start with it.
    let mut late = Events::open(&d, ch, "late", false);
    play(
        &mut speakers[1..],
        start,
        Duration::from_millis(300),
        |_, _| {},
    );
    assert!(late
        .drain()
        .iter()
        .all(|(_, v)| v["userId"] != "a" || v["producerId"] != a_id.as_str()));
    let _ = b_id;
}

#[test]
fn settings_are_env_vars_and_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_choir"))
        .args([
            "--print-config",
            "--speaking-threshold",
            "-50",
            "--speaking-hang",
            "1s",
        ])
        .env("CHOIR_SPEAKING_INTERVAL", "100ms")
        .env("CHOIR_SPEAKING_RATIO", "25%")
        .env("CHOIR_SPEAKING_THRESHOLD", "-30")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        c["speaking"],
        json!({"intervalMs":100,"thresholdDbov":-50,"ratio":0.25,"hangMs":1000})
    );
    for (flag, value, env) in [
        ("--speaking-interval", "5ms", "--speaking-interval \"5ms\""),
        ("--speaking-threshold", "10", "--speaking-threshold \"10\""),
        ("--speaking-ratio", "2", "--speaking-ratio \"2\""),
        ("--speaking-hang", "soon", "--speaking-hang \"soon\""),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_choir"))
            .args(["--print-config", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(env) && err.lines().count() == 1, "{err}");
    }
    // Off: no speaking events at all.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_choir"))
        .args(["--print-config", "--speaking-interval", "0"])
        .output()
        .unwrap();
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["speaking"]["intervalMs"], 0);
}

#[test]
fn disabled_detection_pushes_nothing() {
    let d = Daemon::start(&["--speaking-interval", "0"]);
    let mut ev = Events::open(&d, "off", "listener", true);
    let mut speakers = vec![Speaker::join(&d, "off", "a", 0x6666)];
    speakers[0].level = Some(LOUD);
    play(
        &mut speakers,
        Instant::now(),
        Duration::from_millis(1000),
        |_, _| {},
    );
    ev.wait(Duration::from_millis(200), |_| false);
    let kinds: Vec<&str> = ev
        .drain()
        .iter()
        .map(|(_, v)| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["newProducer"]);
    let (status, v) = d.get("events/off/x?levels=maybe");
    assert_eq!(status, 400, "{v}");
}
