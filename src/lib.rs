//! choir: a voice SFU.

pub mod rtp;
