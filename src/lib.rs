//! choir: a voice SFU speaking mediasoup-client's voice API.
//!
//! The modules follow a packet's path: a datagram arrives on a shard's socket ([`shard`]), is
//! classified ([`demux`]) and handled by its transport ([`sfu::transport`]): STUN by ICE-lite
//! ([`stun`], [`ice`]), DTLS records by [`dtls`], SRTP/SRTCP by [`srtp`]; a decrypted RTP
//! packet goes to its producer and is fanned out to consumers ([`sfu`]), each copy rewritten
//! ([`rtp`]) and encrypted again; [`rtcp`] reports flow both ways. The control plane
//! ([`control`], [`api`], [`ortc`]) drives the shards with commands.

pub mod api;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demux;
pub mod dtls;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod ice;
pub mod logging;
pub mod metrics;
pub mod ortc;
pub mod rtcp;
pub mod rtp;

pub mod sfu;
pub mod shard;
pub mod srtp;
pub mod stun;
