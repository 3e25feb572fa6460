//! The ICE-lite request path allocates nothing in steady state: 10,000 Binding request →
//! success response handlings, plus the client-side parse of each response, under a counting
//! global allocator.
//!

use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_in;

use choir::wire::ice::{IceLite, StunOutcome};
use choir::wire::stun::{parse_binding_success_with_key, write_binding_request, IntegrityKey};

const UFRAG: &str = "choirlocalufrag1";
const PWD: &str = "choir-local-password-0123456789ab";

struct Setup {
    ice: IceLite,
    key: IntegrityKey,
    requests: Vec<(Vec<u8>, SocketAddr)>,
    t0: Instant,
}

fn setup() -> Setup {
    let t0 = Instant::now();
    let ice = IceLite::new(UFRAG, PWD, Duration::from_secs(30), t0);
    let requests = (0..4u8)
        .map(|i| {
            let mut buf = [0u8; 256];
            let len = write_binding_request(
                &mut buf,
                [i; 12],
                "choirlocalufrag1:remoteufrag",
                PWD,
                0x6e00_01ff,
                i % 2 == 0,
                0x0102_0304_0506_0708,
            );
            let from: SocketAddr = if i < 2 {
                "192.0.2.1:40000".parse().unwrap()
            } else {
                "[2001:db8::1]:40000".parse().unwrap()
            };
            (buf[..len].to_vec(), from)
        })
        .collect();
    Setup {
        ice,
        key: IntegrityKey::new(PWD.as_bytes()),
        requests,
        t0,
    }
}

fn round(s: &mut Setup, i: usize, out: &mut [u8]) {
    let (req, from) = &s.requests[i % s.requests.len()];
    let now = s.t0 + Duration::from_millis(i as u64);
    match s.ice.handle_stun(req, *from, now, out) {
        StunOutcome::Reply { len, .. } => {
            let ok = parse_binding_success_with_key(&out[..len], &s.key).unwrap();
            assert_eq!(ok.mapped, *from);
        }
        StunOutcome::Drop(d) => panic!("dropped: {}", d.as_str()),
    }
    assert!(!s.ice.handle_timeout(now));
}

#[test]
fn no_allocation_per_request() {
    let mut s = setup();
    let mut out = [0u8; 1500];
    for i in 0..100 {
        round(&mut s, i, &mut out);
    }
    let ((), allocations) = allocations_in(|| {
        for i in 0..10_000 {
            round(&mut s, i, &mut out);
        }
    });
    assert_eq!(allocations, 0, "allocations on the request path");
}
