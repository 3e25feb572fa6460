//! ICE-lite agent tests with a fake clock; peers built by our writer and by `rtc-stun`.

use super::*;
use crate::wire::stun::tests::{rtc, Rng};
use crate::wire::stun::{write_binding_request, MessageWriter, METHOD_BINDING};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const UFRAG: &str = "choirlocalufrag1";
const PWD: &str = "choir-local-password-0123456789ab";
const USERNAME: &str = "choirlocalufrag1:remoteufrag";
const CONSENT: Duration = Duration::from_secs(5);

fn v4() -> SocketAddr {
    "192.0.2.1:32853".parse().unwrap()
}

fn v6() -> SocketAddr {
    "[2001:db8:1234:5678:11:2233:4455:6677]:40000"
        .parse()
        .unwrap()
}

fn agent(t0: Instant) -> IceLite {
    IceLite::new(UFRAG, PWD, CONSENT, t0)
}

fn request(tid: u8, use_candidate: bool) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let len = write_binding_request(&mut buf, [tid; 12], USERNAME, PWD, 1234, use_candidate, 42);
    buf[..len].to_vec()
}

/// A Binding request with any subset of the usual attributes.
struct Req {
    username: Option<&'static str>,
    priority: bool,
    controlling: bool,
    controlled: bool,
    extra: Option<(u16, &'static [u8])>,
    password: Option<&'static str>,
    fingerprint: bool,
}

impl Req {
    fn valid() -> Self {
        Req {
            username: Some(USERNAME),
            priority: true,
            controlling: true,
            controlled: false,
            extra: None,
            password: Some(PWD),
            fingerprint: true,
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, METHOD_BINDING, Class::Request, &[5; 12]).unwrap();
        if let Some(u) = self.username {
            w.attribute(attr::USERNAME, u.as_bytes()).unwrap();
        }
        if self.priority {
            w.attribute_u32(attr::PRIORITY, 99).unwrap();
        }
        if self.controlling {
            w.attribute_u64(attr::ICE_CONTROLLING, 1).unwrap();
        }
        if self.controlled {
            w.attribute_u64(attr::ICE_CONTROLLED, 2).unwrap();
        }
        if let Some((typ, value)) = self.extra {
            w.attribute(typ, value).unwrap();
        }
        if let Some(p) = self.password {
            w.message_integrity(&IntegrityKey::new(p.as_bytes()))
                .unwrap();
        }
        if self.fingerprint {
            w.fingerprint().unwrap();
        }
        let len = w.finish();
        buf[..len].to_vec()
    }
}

fn reply_len(outcome: StunOutcome) -> usize {
    match outcome {
        StunOutcome::Reply { len, .. } => len,
        StunOutcome::Drop(d) => panic!("dropped: {}", d.as_str()),
    }
}

/// Sends `req` to a fresh agent; expects an error response and returns (code, integrity ok).
fn rejection(req: &[u8]) -> (u16, Option<bool>, Vec<u16>) {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    let mut out = [0u8; 256];
    let len = reply_len(ice.handle_stun(req, v4(), t0, &mut out));
    // A rejection changes nothing.
    assert_eq!(ice.state(), IceState::New);
    assert_eq!(ice.selected(), None);
    assert_eq!(ice.poll_timeout(), Some(t0 + CONSENT));

    let msg = Message::parse(&out[..len]).unwrap();
    assert_eq!(msg.class(), Class::ErrorResponse);
    assert_eq!(msg.method(), METHOD_BINDING);
    assert_eq!(
        msg.transaction_id(),
        Message::parse(req).unwrap().transaction_id()
    );
    msg.check_fingerprint().unwrap();
    let integrity = msg.has_integrity().then(|| {
        msg.check_integrity(&IntegrityKey::new(PWD.as_bytes()))
            .is_ok()
    });
    let unknown = msg
        .get(attr::UNKNOWN_ATTRIBUTES)
        .map(|v| {
            v.chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect()
        })
        .unwrap_or_default();
    // The independent decoder agrees on the code.
    let mut m = rtc_stun::message::Message::new();
    m.raw = out[..len].to_vec();
    m.decode().unwrap();
    let mut ec = rtc_stun::error_code::ErrorCodeAttribute::default();
    rtc_stun::message::Getter::get_from(&mut ec, &m).unwrap();
    assert_eq!(Some(ec.code.0), msg.error_code());
    (ec.code.0, integrity, unknown)
}

#[test]
fn answers_valid_requests_v4_and_v6() {
    let t0 = Instant::now();
    for from in [v4(), v6()] {
        let mut ice = agent(t0);
        let mut out = [0u8; 256];
        let req = request(1, false);
        let outcome = ice.handle_stun(&req, from, t0, &mut out);
        let StunOutcome::Reply {
            len,
            selected_changed,
            valid: true,
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        assert!(selected_changed);
        let ok = crate::wire::stun::parse_binding_success(&out[..len], PWD).unwrap();
        assert_eq!(ok.mapped, from);
        assert_eq!(ok.transaction_id, [1; 12]);
        assert_eq!(ice.state(), IceState::Connected);
        assert_eq!(ice.selected(), Some(from));
    }
}

#[test]
fn rtc_stun_peer_round_trip() {
    let t0 = Instant::now();
    for from in [v4(), v6()] {
        for use_candidate in [false, true] {
            let mut ice = agent(t0);
            let req = rtc::binding_request([7; 12], USERNAME, PWD, 0x7e7f_00ff, use_candidate, 9);
            let mut out = [0u8; 256];
            let len = reply_len(ice.handle_stun(&req, from, t0, &mut out));
            let m = rtc::decode_verified(&out[..len], PWD);
            assert_eq!(m.typ, rtc_stun::message::BINDING_SUCCESS);
            assert_eq!(m.transaction_id.0, [7; 12]);
            assert_eq!(rtc::xor_mapped_address(&m), from);
            assert_eq!(ice.selected(), Some(from));
            assert_eq!(ice.nominated(), use_candidate);
        }
    }
}

#[test]
fn ipv4_mapped_source_is_reported_as_ipv4() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    let mut out = [0u8; 256];
    let mapped: SocketAddr = "[::ffff:192.0.2.1]:32853".parse().unwrap();
    let len = reply_len(ice.handle_stun(&request(1, true), mapped, t0, &mut out));
    let ok = crate::wire::stun::parse_binding_success(&out[..len], PWD).unwrap();
    assert_eq!(ok.mapped, v4());
    assert_eq!(ice.selected(), Some(mapped));
}

#[test]
fn rejections_carry_the_right_error_code() {
    let missing_username = Req {
        username: None,
        ..Req::valid()
    };
    assert_eq!(rejection(&missing_username.build()), (400, None, vec![]));
    let missing_integrity = Req {
        password: None,
        ..Req::valid()
    };
    assert_eq!(rejection(&missing_integrity.build()), (400, None, vec![]));

    for username in [
        "someoneelseufrag:remote",
        UFRAG,
        "choirlocalufrag1x:remote",
        "choirlocalufrag",
    ] {
        let wrong_ufrag = Req {
            username: Some(username),
            ..Req::valid()
        };
        assert_eq!(
            rejection(&wrong_ufrag.build()),
            (401, None, vec![]),
            "{username}"
        );
    }
    let wrong_password = Req {
        password: Some("not-the-password-not-the-password"),
        ..Req::valid()
    };
    assert_eq!(rejection(&wrong_password.build()), (401, None, vec![]));

    // Authenticated from here on: the error response is integrity-protected.
    let missing_fingerprint = Req {
        fingerprint: false,
        ..Req::valid()
    };
    assert_eq!(
        rejection(&missing_fingerprint.build()),
        (400, Some(true), vec![])
    );
    let missing_priority = Req {
        priority: false,
        ..Req::valid()
    };
    assert_eq!(
        rejection(&missing_priority.build()),
        (400, Some(true), vec![])
    );
    let short_priority = Req {
        priority: false,
        extra: Some((attr::PRIORITY, &[1, 2])),
        ..Req::valid()
    };
    assert_eq!(
        rejection(&short_priority.build()),
        (400, Some(true), vec![])
    );
    let unknown = Req {
        extra: Some((0x7777, b"??")),
        ..Req::valid()
    };
    assert_eq!(rejection(&unknown.build()), (420, Some(true), vec![0x7777]));
    let both_controlled = Req {
        controlling: false,
        controlled: true,
        ..Req::valid()
    };
    assert_eq!(
        rejection(&both_controlled.build()),
        (487, Some(true), vec![])
    );
}

#[test]
fn optional_unknown_attributes_and_missing_role_are_accepted() {
    let t0 = Instant::now();
    let mut out = [0u8; 256];
    for req in [
        // GOOG-NETWORK-INFO as Chrome sends it: comprehension-optional.
        Req {
            extra: Some((0xC057, &[0, 1, 0, 10])),
            ..Req::valid()
        },
        Req {
            controlling: false,
            ..Req::valid()
        },
    ] {
        let mut ice = agent(t0);
        let len = reply_len(ice.handle_stun(&req.build(), v4(), t0, &mut out));
        assert_eq!(
            Message::parse(&out[..len]).unwrap().class(),
            Class::SuccessResponse
        );
    }
}

#[test]
fn drops_what_must_not_be_answered() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    let mut out = [0u8; 256];
    let mut dropped =
        |ice: &mut IceLite, packet: &[u8]| match ice.handle_stun(packet, v4(), t0, &mut out) {
            StunOutcome::Drop(d) => d,
            other => panic!("answered {other:?}"),
        };

    let mut bad_fp = request(1, true);
    let last = bad_fp.len() - 1;
    bad_fp[last] ^= 1;
    assert_eq!(dropped(&mut ice, &bad_fp), StunDrop::BadFingerprint);

    // Our own success response fed back.
    let mut resp = [0u8; 256];
    let len = reply_len(agent(t0).handle_stun(&request(1, false), v4(), t0, &mut resp));
    assert_eq!(dropped(&mut ice, &resp[..len]), StunDrop::NotRequest);

    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, METHOD_BINDING, Class::Indication, &[1; 12]).unwrap();
    w.fingerprint().unwrap();
    let len = w.finish();
    assert_eq!(dropped(&mut ice, &buf[..len]), StunDrop::Indication);

    let mut w = MessageWriter::new(&mut buf, 0x003, Class::Request, &[1; 12]).unwrap();
    w.fingerprint().unwrap();
    let len = w.finish();
    assert_eq!(dropped(&mut ice, &buf[..len]), StunDrop::UnsupportedMethod);

    assert_eq!(
        dropped(&mut ice, &[0x80, 111, 0, 1, 0, 0, 0, 0]),
        StunDrop::NotStun
    );
    assert_eq!(dropped(&mut ice, &[]), StunDrop::Truncated);

    let req = request(1, true);
    for len in 0..req.len() {
        let d = dropped(&mut ice, &req[..len]);
        assert!(
            matches!(d, StunDrop::Truncated | StunDrop::NotStun),
            "prefix {len}: {d:?}"
        );
    }
    assert_eq!(ice.state(), IceState::New);

    // A reply that does not fit changes nothing.
    let mut small = [0u8; 40];
    assert_eq!(
        ice.handle_stun(&req, v4(), t0, &mut small),
        StunOutcome::Drop(StunDrop::BufferTooSmall)
    );
    assert_eq!(ice.state(), IceState::New);
    assert_eq!(ice.selected(), None);
}

#[test]
fn tampered_and_random_input_never_succeeds() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    let mut out = [0u8; 256];
    let req = request(1, true);
    for i in 0..req.len() {
        let mut m = req.clone();
        m[i] ^= 0x01;
        if let StunOutcome::Reply { len, .. } = ice.handle_stun(&m, v4(), t0, &mut out) {
            let class = Message::parse(&out[..len]).unwrap().class();
            assert_eq!(class, Class::ErrorResponse, "flip at {i}");
        }
    }
    let mut rng = Rng(0xfeed_f00d_1234_5678);
    let mut buf = [0u8; 200];
    for _ in 0..20_000 {
        let len = (rng.next() % 200) as usize;
        rng.fill(&mut buf[..len]);
        buf[0] &= 0x03;
        let _ = ice.handle_stun(&buf[..len], v6(), t0, &mut out);
    }
    assert_eq!(ice.state(), IceState::New);
    assert_eq!(ice.selected(), None);
}

#[test]
fn nomination_rules() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    let mut out = [0u8; 256];
    let a: SocketAddr = "198.51.100.1:1000".parse().unwrap();
    let b: SocketAddr = "198.51.100.2:2000".parse().unwrap();
    let c = v6();
    let mut send = |ice: &mut IceLite, from, nominate| match ice.handle_stun(
        &request(2, nominate),
        from,
        t0,
        &mut out,
    ) {
        StunOutcome::Reply {
            selected_changed, ..
        } => selected_changed,
        other => panic!("{other:?}"),
    };

    assert!(send(&mut ice, a, false));
    assert_eq!(ice.selected(), Some(a));
    assert!(!send(&mut ice, a, false));
    // Without nomination the last valid check wins.
    assert!(send(&mut ice, b, false));
    assert_eq!(ice.selected(), Some(b));
    // Nominating the current address does not move it.
    assert!(!send(&mut ice, b, true));
    assert!(ice.nominated());
    // Once nominated, a plain check elsewhere does not move it ...
    assert!(!send(&mut ice, a, false));
    assert_eq!(ice.selected(), Some(b));
    // ... a new nomination does.
    assert!(send(&mut ice, c, true));
    assert_eq!(ice.selected(), Some(c));
    assert!(!send(&mut ice, c, true));
}

#[test]
fn consent_expires_without_checks() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    let mut out = [0u8; 256];
    assert_eq!(ice.poll_timeout(), Some(t0 + CONSENT));
    assert!(!ice.handle_timeout(t0 + CONSENT - Duration::from_millis(1)));

    let t1 = t0 + Duration::from_secs(3);
    reply_len(ice.handle_stun(&request(1, true), v4(), t1, &mut out));
    assert_eq!(ice.poll_timeout(), Some(t1 + CONSENT));
    assert!(!ice.handle_timeout(t0 + CONSENT));
    assert_eq!(ice.state(), IceState::Connected);

    // Rejected requests do not refresh consent.
    let unauth = Req {
        password: Some("wrong-wrong-wrong-wrong-wrong-wrong"),
        ..Req::valid()
    };
    reply_len(ice.handle_stun(&unauth.build(), v4(), t1 + Duration::from_secs(4), &mut out));
    assert_eq!(ice.poll_timeout(), Some(t1 + CONSENT));

    assert!(ice.handle_timeout(t1 + CONSENT));
    assert_eq!(ice.state(), IceState::Disconnected);
    assert!(!ice.handle_timeout(t1 + CONSENT * 2), "reported once");
    assert_eq!(ice.poll_timeout(), None);
    assert_eq!(ice.selected(), None);
    // Final: checks after expiry are not answered and do not revive the agent.
    assert_eq!(
        ice.handle_stun(&request(3, true), v4(), t1 + CONSENT * 2, &mut out),
        StunOutcome::Drop(StunDrop::ConsentExpired)
    );
    assert_eq!(ice.state(), IceState::Disconnected);
}

#[test]
fn consent_expires_when_no_check_ever_came() {
    let t0 = Instant::now();
    let mut ice = agent(t0);
    assert!(ice.handle_timeout(t0 + CONSENT));
    assert_eq!(ice.state(), IceState::Disconnected);
    assert!(!ice.handle_timeout(t0 + CONSENT));
}

#[test]
fn credentials_and_labels() {
    let ice = agent(Instant::now());
    assert_eq!(ice.local_ufrag(), UFRAG);
    assert_eq!(ice.local_pwd(), PWD);
    assert_eq!(StunDrop::BadFingerprint.as_str(), "bad_fingerprint");
    assert_eq!(IceState::Disconnected.as_str(), "disconnected");
}
