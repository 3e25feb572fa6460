//! Instructions per fanned-out packet, counted by valgrind rather than timed, so that a change
//! of a few percent shows on a shared, noisy machine (see BENCHMARKS.md, "Speaking indicators").
//!
//! Sets up one speaker and K listeners on the in-memory loopback (real ICE, DTLS, SRTP), encrypts
//! N packets (audio level extension included) and hands them to `Sfu::handle_datagram` in
//! [`run_packets`], the only function to count:
//!
//! ```sh
//! cargo bench --bench fanout_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   --toggle-collect='fanout_instructions::run_packets' \
//!   target/release/deps/fanout_instructions-<hash> 10 5000   # K consumers, N packets
//! ```
//!
//! "Collected" / N is the cost per packet. Run alone (`cargo bench`), it just runs K=1, N=5000.

#[path = "../tests/common/loopback.rs"]
mod loopback;

use std::time::Instant;

use choir::sfu::{Path, Sfu};
use loopback::{Counter, Loopback};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (consumers, packets) = (
        args.first().copied().unwrap_or(1),
        args.get(1).copied().unwrap_or(5000),
    );
    let mut lb = Loopback::new();
    let speaker = lb.speaker_with_listeners("room", consumers);
    let key = lb.members[speaker].send.key;
    let path = lb.members[speaker].send.path;
    let mut bufs = Vec::with_capacity(packets);
    for seq in 0..packets {
        let mut d = vec![0u8; 2048];
        let len = lb.rtp_packet(speaker, seq as u16, &mut d);
        let n = lb.members[speaker]
            .send
            .client
            .protect_rtp(&mut d, len)
            .unwrap();
        bufs.push((d, n));
    }
    let mut out = Counter { sent: 0, bytes: 0 };
    let now = lb.now;
    run_packets(&mut lb.sfu, key, path, &mut bufs, now, &mut out);
    println!(
        "{packets} packets to {consumers} consumers: {} sent",
        out.sent
    );
}

#[inline(never)]
fn run_packets(
    sfu: &mut Sfu,
    key: usize,
    path: Path,
    bufs: &mut [(Vec<u8>, usize)],
    now: Instant,
    out: &mut Counter,
) {
    for (d, n) in bufs.iter_mut() {
        sfu.handle_datagram(Some(key), path, d, *n, now, out);
    }
}
