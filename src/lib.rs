//! choir: a voice SFU.
pub mod demux;
pub mod ice;
pub mod stun;
pub mod dtls;

pub mod rtcp;
pub mod rtp;

pub mod srtp;
