//! The process around the shards and the control plane: settings from flags and the
//! environment ([`config`]), start-up and signals ([`daemon`]), logs ([`logging`]) and what
//! happens when a shard dies ([`faults`]).

pub mod config;
pub mod daemon;
pub mod faults;
pub mod logging;
