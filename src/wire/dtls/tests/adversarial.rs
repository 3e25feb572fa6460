//! Garbage, truncated and corrupted datagrams: never a panic, and noise does not stop a
//! handshake.

use super::*;

/// xorshift64*: deterministic bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Random datagrams, half of them with a plausible DTLS record header.
fn noise(rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = (rng.next() % 1500) as usize;
            let mut d = rng.bytes(len);
            if i % 2 == 0 && len >= 13 {
                d[0] = [20, 21, 22, 23][i / 2 % 4];
                d[1..3].copy_from_slice(&[0xfe, 0xfd]);
                let body = (len - 13) as u16;
                d[11..13].copy_from_slice(&body.to_be_bytes());
            }
            d
        })
        .collect()
}

/// A lossless choir ↔ choir handshake's transcript.
fn transcript() -> (DtlsIdentity, DtlsIdentity, Transcript) {
    let (c_id, s_id) = (identity(), identity());
    let mut now = Instant::now();
    let mut client = Choir::new(&c_id, DtlsRole::Client, now);
    let mut server = Choir::new(&s_id, DtlsRole::Server, now);
    client.expect(&s_id);
    server.expect(&c_id);
    let limit = now;
    let t = run(&mut client, &mut server, &mut now, limit, lossless);
    assert_eq!(client.connected_events + server.connected_events, 2);
    (c_id, s_id, t)
}

fn feed(choir: &mut Choir, datagram: &[u8], now: Instant) {
    choir.receive(datagram, now);
    let mut out = Vec::new();
    choir.drain(&mut out);
    assert!(choir.failures.len() <= 1);
    assert!(choir.connected_events <= 1);
}

#[test]
fn random_datagrams_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let id = identity();
    let now = Instant::now();
    for role in [DtlsRole::Client, DtlsRole::Server] {
        let mut choir = Choir::new(&id, role, now);
        for d in noise(&mut rng, 2000) {
            feed(&mut choir, &d, now);
        }
        feed(&mut choir, &[], now);
    }
}

#[test]
fn noise_before_and_during_a_handshake_is_dropped() {
    let mut rng = Rng(7);
    let (c_id, s_id) = (identity(), identity());
    let mut now = Instant::now();
    let mut client = Choir::new(&c_id, DtlsRole::Client, now);
    let mut server = Choir::new(&s_id, DtlsRole::Server, now);
    client.expect(&s_id);
    server.expect(&c_id);
    for d in noise(&mut rng, 200) {
        feed(&mut client, &d, now);
        feed(&mut server, &d, now);
    }
    // Interleave more noise with every real datagram.
    let mut noisy = NoisyPeer { inner: server, rng };
    let limit = now + DEADLINE;
    run(&mut client, &mut noisy, &mut now, limit, lossless);
    assert!(client.failures.is_empty(), "{:?}", client.failures);
    assert!(
        noisy.inner.failures.is_empty(),
        "{:?}",
        noisy.inner.failures
    );
    assert_eq!(client.connected_events, 1);
    assert_eq!(noisy.inner.connected_events, 1);
}

/// Receives a few random datagrams before every real one.
struct NoisyPeer {
    inner: Choir,
    rng: Rng,
}

impl Endpoint for NoisyPeer {
    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        self.inner.drain(out)
    }
    fn receive(&mut self, datagram: &[u8], now: Instant) {
        for d in noise(&mut self.rng, 3) {
            self.inner.receive(&d, now);
        }
        self.inner.receive(datagram, now)
    }
    fn timeout(&mut self, now: Instant) {
        self.inner.timeout(now)
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.inner.next_timeout()
    }
    fn is_done(&self) -> bool {
        self.inner.is_done()
    }
}

#[test]
fn every_truncation_of_every_handshake_datagram() {
    let (c_id, s_id, t) = transcript();
    let now = Instant::now();
    // Client datagrams go to a fresh server, server datagrams to a client that has sent its
    // ClientHello.
    for (side, datagrams) in t.sent.iter().enumerate() {
        for d in datagrams {
            for len in 0..d.len() {
                let mut choir = if side == CLIENT {
                    Choir::new(&s_id, DtlsRole::Server, now)
                } else {
                    let mut c = Choir::new(&c_id, DtlsRole::Client, now);
                    c.drain(&mut Vec::new());
                    c
                };
                feed(&mut choir, &d[..len], now);
            }
        }
    }
}

#[test]
fn corrupted_handshake_datagrams_never_panic() {
    let (c_id, s_id, t) = transcript();
    let mut rng = Rng(42);
    let now = Instant::now();
    // Replay the client's real flights into a server, each one corrupted at random places
    // first; the uncorrupted copy follows so the server state advances.
    let mut server = Choir::new(&s_id, DtlsRole::Server, now);
    server.expect(&c_id);
    for d in &t.sent[CLIENT] {
        for _ in 0..50 {
            let mut bad = d.clone();
            let at = (rng.next() as usize) % bad.len();
            bad[at] ^= 1 << (rng.next() % 8);
            feed(&mut server, &bad, now);
        }
        feed(&mut server, d, now);
    }
    // The server's flights (their randoms do not fit this server's client) into a client:
    // no panic, at worst a clean failure.
    let mut client = Choir::new(&c_id, DtlsRole::Client, now);
    client.expect(&s_id);
    client.drain(&mut Vec::new());
    for d in &t.sent[SERVER] {
        for _ in 0..50 {
            let mut bad = d.clone();
            let at = (rng.next() as usize) % bad.len();
            bad[at] = rng.next() as u8;
            feed(&mut client, &bad, now);
        }
        feed(&mut client, d, now);
    }
}
