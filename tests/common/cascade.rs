//! Several in-memory nodes ([`Loopback`]s, each a shard's core with its own clients) whose
//! cascade links are queues: link datagrams go from one core to the other by their destination
//! address, counted per directed pair. The test plays the control plane: it adds the links
//! (ids and keys from fixed bytes) and announces each node's producers to the others.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use choir::sfu::cascade::LinkParams;

use super::loopback::{Loopback, Queue};

/// The port every node's links use.
pub const PORT: u16 = 7000;

/// Node `i`'s link address.
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 99, 0, i as u8 + 1)), PORT)
}

pub fn node_id(i: usize) -> String {
    format!("node{i}")
}

/// Link id of the direction `from` → `to` in room number `room` (chosen by `to`).
pub fn link_id(room: usize, from: usize, to: usize) -> u32 {
    (room as u32) << 16 | (from as u32) << 8 | to as u32
}

/// Key of the direction `from` → `to` in room number `room`.
pub fn link_key(room: usize, from: usize, to: usize) -> [u8; 32] {
    let mut k = [0x5a; 32];
    k[0] = room as u8;
    k[1] = from as u8;
    k[2] = to as u8;
    k
}

/// Node `me`'s link to `peer` for `channel` (room number `room`).
pub fn link_params(channel: &str, room: usize, me: usize, peer: usize) -> LinkParams {
    LinkParams {
        channel_id: channel.into(),
        peer: node_id(peer),
        peer_region: format!("region-{peer}"),
        receive_id: link_id(room, peer, me),
        receive_key: link_key(room, peer, me),
        send_id: link_id(room, me, peer),
        send_key: link_key(room, me, peer),
        peer_addr: addr(peer),
        local_port: PORT,
    }
}

/// A link datagram on its way: from node, to node, bytes.
pub type Hop = (usize, usize, Vec<u8>);
/// A client's decrypted RTP packet: node, member, bytes.
pub type Heard = (usize, usize, Vec<u8>);

pub struct Mesh {
    pub nodes: Vec<Loopback>,
    /// Link datagrams delivered, per (from, to).
    pub hops: BTreeMap<(usize, usize), u64>,
}

impl Mesh {
    /// `n` nodes; `channel` (room number 0) opened on each, with a full mesh of links.
    pub fn new(n: usize, channel: &str) -> Mesh {
        let mut nodes: Vec<Loopback> = (0..n).map(|_| Loopback::new()).collect();
        let start = nodes[0].now;
        for lb in nodes.iter_mut() {
            lb.now = start;
        }
        let mut mesh = Mesh {
            nodes,
            hops: BTreeMap::new(),
        };
        mesh.open(channel, 0);
        mesh
    }

    /// Opens `channel` (room number `room`) on every node and links it in a full mesh.
    pub fn open(&mut self, channel: &str, room: usize) {
        let n = self.nodes.len();
        for me in 0..n {
            let lb = &mut self.nodes[me];
            lb.sfu.open_room(channel);
            for peer in (0..n).filter(|&p| p != me) {
                let now = lb.now;
                lb.sfu
                    .add_link(link_params(channel, room, me, peer), now)
                    .unwrap();
            }
        }
    }

    /// The control plane: every node's local producers of `channel` added on the other nodes
    /// (those already there are skipped).
    pub fn announce(&mut self, channel: &str) {
        let n = self.nodes.len();
        for from in 0..n {
            let list = self.nodes[from].sfu.relayed_producers(channel).unwrap();
            for to in (0..n).filter(|&t| t != from) {
                for p in &list {
                    match self.nodes[to]
                        .sfu
                        .add_remote_producer(channel, &node_id(from), p.clone())
                    {
                        Ok(()) => {}
                        Err(e) if e.status == 409 => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }

    /// The link datagrams of node `from`'s queue, addressed by destination.
    pub fn hops(&self, from: usize, q: &mut Queue) -> Vec<Hop> {
        q.1.drain(..)
            .map(|(port, to, d)| {
                assert_eq!(port, PORT);
                let to = (0..self.nodes.len())
                    .find(|&i| addr(i) == to)
                    .expect("a link datagram to a node");
                (from, to, d)
            })
            .collect()
    }

    /// Delivers link datagrams (and whatever they cause, until nothing is left); returns the
    /// clients' decrypted RTP as (node, member, bytes).
    pub fn carry(&mut self, mut hops: Vec<Hop>) -> Vec<Heard> {
        let mut got = Vec::new();
        while !hops.is_empty() {
            let mut next = Vec::new();
            for (from, to, mut d) in hops {
                *self.hops.entry((from, to)).or_default() += 1;
                let mut q = Queue::default();
                let lb = &mut self.nodes[to];
                let now = lb.now;
                lb.sfu
                    .on_link_datagram(PORT, addr(from), &mut d, now, &mut q);
                next.extend(self.hops(to, &mut q));
                let lb = &mut self.nodes[to];
                got.extend(lb.deliver(q).into_iter().map(|(m, b)| (to, m, b)));
            }
            hops = next;
        }
        got
    }

    /// `member` of node `node` sends RTP packet `seq`; returns what every client received, and
    /// how many link datagrams the sending node emitted.
    pub fn speak(&mut self, node: usize, member: usize, seq: u16) -> (Vec<Heard>, usize) {
        let (mut got, hops) = self.speak_hops(node, member, seq);
        let sent = hops.len();
        got.extend(self.carry(hops));
        (got, sent)
    }

    /// [`Mesh::speak`] without carrying the link datagrams: what the sending node's clients
    /// received, and its link datagrams.
    pub fn speak_hops(&mut self, node: usize, member: usize, seq: u16) -> (Vec<Heard>, Vec<Hop>) {
        let mut buf = [0u8; 2048];
        let lb = &mut self.nodes[node];
        let len = lb.rtp_packet(member, seq, &mut buf);
        let mut q = lb.send_rtp(member, &buf[..len]);
        let hops = self.hops(node, &mut q);
        let lb = &mut self.nodes[node];
        let got = lb
            .deliver(q)
            .into_iter()
            .map(|(m, b)| (node, m, b))
            .collect();
        (got, hops)
    }

    /// Every node's clients connected.
    pub fn settle(&mut self) {
        for lb in self.nodes.iter_mut() {
            lb.settle();
        }
        // The nodes' clocks stay together.
        let now = self.nodes.iter().map(|lb| lb.now).max().unwrap();
        for lb in self.nodes.iter_mut() {
            lb.now = now;
        }
    }
}
