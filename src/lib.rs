//! choir: a voice SFU speaking mediasoup-client's voice API.
//!
//! The crate reads as its layers, and each layer's modules follow a packet's path:
//!
//! - [`wire`]: the wire protocols, sans-IO parsers and state machines fed bytes and a `now`. A
//!   datagram is classified ([`wire::demux`]); STUN is answered by ICE-lite ([`wire::stun`],
//!   [`wire::ice`]), DTLS records go to [`wire::dtls`], SRTP/SRTCP to [`wire::srtp`]; RTP packets
//!   are parsed and rewritten by [`wire::rtp`], [`wire::rtcp`] reports flow both ways.
//! - [`sfu`]: the sans-IO core. Rooms, transports, producers and consumers; a decrypted RTP
//!   packet goes to its producer and is fanned out to consumers; the voice API's messages
//!   ([`sfu::api`]) and their RTP capabilities ([`sfu::ortc`]).
//! - [`shard`]: the glommio shell. A thread per core with its sockets, timers and command loop,
//!   feeding one [`sfu::Sfu`].
//! - [`control`] and [`cluster`]: the control plane. The voice API over HTTP, its push channel,
//!   tokens ([`control::auth`]) and metrics ([`control::metrics`]); it drives the shards with
//!   commands and, in cluster mode, the other nodes through Redis ([`cluster`]); the HTTP
//!   plumbing both use is in [`http`].
//! - [`process`]: settings, start-up, logging, signals and shard failure.
//!
//! [`client`] is a test and load-generator peer speaking the same API.

pub mod client;
pub mod cluster;
pub mod control;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod process;
pub mod sfu;
pub mod shard;
pub mod wire;
