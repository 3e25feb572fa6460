//! choir: a voice SFU.
