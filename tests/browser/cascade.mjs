// Cascading regions (issue 22): one channel across two choir nodes of different regions, each
// browser on the node of its own region. The scenario starts a real redis-server (lib/redis.mjs)
// and two nodes (`--region a`, `--region b`, one cluster secret) and waits until each lists both;
// then a mediasoup-client user (the plan's frontend, Chromium) joins through node a's API and a
// person on choir's try-it page, served by node b, joins the same channel there. Each must hear
// the other (tone by FFT, and its own getStats(): packets, bytes and audio energy rising), each
// browser's ICE path must end in its own node's RTC port range (so they are not both on one
// node), and both nodes must show the room on both nodes with a ready cascade link between them
// and relayed packets rising each way (so the media crossed the link).
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { FIREFOX_CONSENT_TIMEOUT } from './firefox.mjs';
import { eachInbound, expectHears, toneOf, waitHearing } from './lib/checks.mjs';
import { startRedis } from './lib/redis.mjs';
import { check, eventually, fmt, sleep } from './lib/util.mjs';

const NODES = { a: 'node-a', b: 'node-b' };

/** Redis and the nodes of regions a and b, all stopped when the scenario ends. */
async function startCluster(t) {
  const redis = await startRedis({ logFile: path.join(t.dir, 'redis.log') });
  t.cleanup(() => redis.stop());
  const env = { CHOIR_REDIS_URL: redis.url, CHOIR_CLUSTER_SECRET: randomBytes(32).toString('hex') };
  // Inside the namespace (Firefox) the nodes bind and announce its address with
  // `--listen-ips`, as the driver's choir does, and announce their links there too.
  const ips = t.rtcIp === '127.0.0.1' ? [] : ['--listen-ips', t.rtcIp];
  const nodes = {};
  const overlaps = (n) => Object.values(nodes).some((m) => m !== n && n.rtcPorts[0] <= m.rtcPorts[1] && m.rtcPorts[0] <= n.rtcPorts[1]);
  for (const [region, id] of Object.entries(NODES)) {
    // Each node's RTC range is probed free when it starts, but a node binds its ports as its
    // transports come: a later range could overlap an earlier one. Disjoint ranges tell whose
    // port a browser reached, so an overlapping node is started again.
    for (let attempt = 1; ; attempt++) {
      const n = await t.startChoir(['--node-id', id, '--region', region, '--shards', '1', ...ips], { env });
      n.id = id;
      nodes[region] = n;
      if (!overlaps(n)) break;
      check(attempt < 5, `${id}: RTC range ${n.rtcPorts.join('-')} overlaps another node's, ${attempt} times`);
      t.note(`${id}: RTC range ${n.rtcPorts.join('-')} overlaps another node's; starting it again`);
      await n.stop();
    }
  }
  const want = JSON.stringify(Object.entries(NODES).map(([r, id]) => `${id}@${r}`).sort());
  for (const n of Object.values(nodes)) {
    await eventually(`${n.id} listing both nodes`, 15000, async () => {
      const c = await n.get('/cluster');
      const got = JSON.stringify(c.nodes.map((x) => `${x.id}@${x.region}`).sort());
      check(got === want, `GET /cluster lists ${got}`, c);
    });
  }
  t.note(`redis 127.0.0.1:${redis.port}; ${Object.entries(nodes).map(([r, n]) => `${n.id} (region ${r}) ${n.url}, RTC ${n.rtcPorts.join('-')}`).join('; ')}`);
  return nodes;
}

/** `node`'s GET /cluster shows the room on both nodes and a ready link to the other one. */
async function expectSpansBoth(node, peer, channel) {
  return eventually(`${node.id}: room ${channel} on both nodes with a ready link to ${peer.id}`, 10000, async () => {
    const c = await node.get('/cluster');
    const span = (c.roomNodes?.[channel] ?? []).map((x) => `${x.node}@${x.region}`).sort();
    check(JSON.stringify(span) === JSON.stringify(['node-a@a', 'node-b@b']), `roomNodes.${channel} is ${JSON.stringify(span)}`, c);
    const links = (c.cascade?.links ?? []).filter((l) => l.channel === channel);
    check(links.length === 1 && links[0].peer === peer.id && links[0].ready === true, `cascade links of ${channel}: ${JSON.stringify(links)}`, c);
    return c;
  });
}

/**
 * The address in `remote` (the page panel's "ip:port", or getStats' "remote-candidate udp
 * ip:port host") is `ip` with a port in `node`'s RTC range.
 */
function expectOnNode(who, side, remote, node, ip) {
  const m = /(?:^|\s)([\d.]+):(\d+)(?:\s|$)/.exec(remote ?? '');
  const [lo, hi] = node.rtcPorts;
  check(m && m[1] === ip && Number(m[2]) >= lo && Number(m[2]) <= hi, `${who}: ${side} path goes to "${remote}", not ${node.id}'s ${ip}:${lo}-${hi}`);
  return Number(m[2]);
}

/** The mediasoup-client user's selected remote candidate on each transport ("udp ip:port"). */
function selectedRemotes(snap) {
  const out = {};
  for (const side of ['send', 'recv']) {
    const s = snap[side];
    const transport = s?.transport?.[0];
    const pair = s?.pairs?.find((p) => p.id === transport?.selectedCandidatePairId) ?? s?.pairs?.find((p) => p.nominated && p.state === 'succeeded');
    out[side] = s?.candidates?.[pair?.remote] ?? '';
  }
  return out;
}

/** The try-it page's own getStats(): inbound from `userId` rises in packets, bytes and energy over `ms`. */
async function expectPageReceiving(page, userId, ms = 2000) {
  const mid = async () => (await page.call(() => window.__choirProbe.negotiated(), null, 5000, 'negotiated()')).consumers.find((c) => c.userId === userId)?.mid;
  const stream = async () => {
    const m = await mid();
    const got = await page.call(() => window.__choirProbe.inbound(), null, 5000, 'inbound()');
    return got?.streams.find((s) => s.mid === m);
  };
  const before = await stream();
  await sleep(ms);
  const after = await stream();
  check(before && after, `${page.name}: no inbound-rtp for ${userId} in the page's getStats()`, { before, after });
  const seconds = (after.timestamp - before.timestamp) / 1000;
  const rate = (after.packetsReceived - before.packetsReceived) / seconds;
  check(rate >= 40, `${page.name}: ${after.packetsReceived - before.packetsReceived} packets from ${userId} in ${fmt(seconds, 2)} s of stats time`, { before, after });
  check(after.bytesReceived > before.bytesReceived, `${page.name}: bytes from ${userId} did not rise`, { before, after });
  check(after.totalAudioEnergy > before.totalAudioEnergy && after.audioLevel > 0, `${page.name}: audio energy from ${userId} did not rise (level ${after.audioLevel})`, { before, after });
  return { rate, after };
}

/** The relay counters of a node's GET /stats. */
async function relayed(node) {
  const { total } = await node.stats();
  return { out: total.relayPacketsOut ?? 0, in: total.relayPacketsIn ?? 0 };
}

/**
 * The mixed room: `ms` (mediasoup-client, Chromium `chromium`) through node a, the page user in
 * `pageBrowser` through node b; `tones` = { A, pia }.
 */
async function mixedRoom(t, { chromium, pageBrowser, tones }) {
  const nodes = await startCluster(t);
  const { a: na, b: nb } = nodes;
  const a = await chromium.openUser('A');
  const pia = await t.pageUser(pageBrowser, 'pia', { url: `${nb.url}/` });
  await a.join({ api: na.api, channelId: t.channel, userId: 'A', tone: tones.A });
  await pia.join(t.channel);

  // Everyone hears the other, at its own tone.
  await waitHearing(a, ['pia'], 20000);
  await waitHearing(pia, ['A'], 20000);
  await expectHears(a, { pia: tones.pia }, 1500);
  await expectHears(pia, { A: tones.A }, 1500);

  // The room spans both nodes, linked; relayed packets rise each way while they talk.
  const [ca] = [await expectSpansBoth(na, nb, t.channel), await expectSpansBoth(nb, na, t.channel)];
  const r0 = [await relayed(na), await relayed(nb)];

  // From each browser's own getStats(): the other's packets, bytes and energy keep coming.
  let aRate = 0;
  const snap = await eachInbound(a, ['pia'], 2000, (id, after, before) => {
    const seconds = (after.timestamp - before.timestamp) / 1000;
    aRate = (after.packetsReceived - before.packetsReceived) / seconds;
    check(aRate >= 40, `A: ${after.packetsReceived - before.packetsReceived} packets from ${id} in ${fmt(seconds, 2)} s of stats time`, { before, after });
    check(after.bytesReceived > before.bytesReceived, `A: bytes from ${id} did not rise`, { before, after });
    check(after.totalAudioEnergy > before.totalAudioEnergy, `A: audio energy from ${id} did not rise`, { before, after });
  });
  const page = await expectPageReceiving(pia, 'A');
  const r1 = [await relayed(na), await relayed(nb)];
  const rise = (i, dir) => r1[i][dir] - r0[i][dir];
  check(rise(0, 'out') > 0 && rise(0, 'in') > 0 && rise(1, 'out') > 0 && rise(1, 'in') > 0,
    `relayed packets did not rise each way: node-a out +${rise(0, 'out')} in +${rise(0, 'in')}, node-b out +${rise(1, 'out')} in +${rise(1, 'in')}`, { r0, r1 });

  // Each browser's ICE path ends at its own node: A at node a's ports, pia at node b's.
  const remotes = selectedRemotes(snap);
  const ports = [];
  for (const side of ['send', 'recv']) ports.push(`A ${side} ${expectOnNode('A', side, remotes[side], na, t.rtcIp)}`);
  const panel = await eventually("pia's connection panel showing both paths", 5000, async () => {
    const p = await pia.panel();
    check(p.send.remote && p.recv.remote, `panel: ${JSON.stringify(p)}`);
    return p;
  });
  for (const side of ['send', 'recv']) {
    check(panel[side].protocol === 'udp', `pia: ${side} path "${panel[side].text}" is not UDP`, panel);
    ports.push(`pia ${side} ${expectOnNode('pia', side, panel[side].remote, nb, t.rtcIp)}`);
  }
  // The page names the node and region that serve pia, and where A is.
  check(panel.servedBy === 'node-b, region b', `pia's panel says it is served by "${panel.servedBy}"`, panel);
  const listed = (await pia.ui()).participants.find((p) => p.userId === 'A');
  check(listed?.what.includes('via node-a (region a)'), `pia's participant list shows A as "${listed?.what}"`, listed);
  t.note(`ICE paths: ${ports.join(', ')}; links: ${JSON.stringify(ca.cascade.links)}`);
  t.measure(`${t.name} relayed`, `node-a out +${rise(0, 'out')} in +${rise(0, 'in')}, node-b out +${rise(1, 'out')} in +${rise(1, 'in')} packets over the getStats window; A receives ${fmt(aRate)} packets/s, pia ${fmt(page.rate)}`);

  // Both leave: neither node holds a participant, anything of one, or the room, and the link
  // goes (each node removes it once the room left the other's node set: a few seconds).
  await a.leave();
  await pia.leave();
  for (const n of [na, nb]) {
    await eventually(`${n.id} empty after everyone left`, 20000, async () => {
      const h = await n.health();
      for (const k of ['rooms', 'participants', 'transports', 'producers', 'consumers', 'boundPorts']) {
        check(h[k] === 0, `${n.id}: GET /api/voice/health says ${k}: ${h[k]}`, h);
      }
      const c = await n.get('/cluster');
      const links = (c.cascade?.links ?? []).filter((l) => l.channel === t.channel);
      check(!links.length && !c.roomNodes?.[t.channel], `${n.id}: links ${JSON.stringify(links)}, roomNodes ${JSON.stringify(c.roomNodes?.[t.channel])}`, c);
    }, 250);
  }
}

export const cascadeScenarios = [
  {
    name: 'cascade',
    description: "two regions, one channel: mediasoup-client (Chromium) through node a, the try-it page (Chromium) through node b; each hears the other over the nodes' cascade link",
    ownChoirs: true,
    timeoutMs: 90000,
    async run(t) {
      await mixedRoom(t, { chromium: t.browser, pageBrowser: t.browser, tones: { A: toneOf(0), pia: t.options.fakeMicHz } });
    },
  },
  {
    name: 'cascade-firefox',
    description: 'the same with the try-it page in Firefox: mediasoup-client (Chromium) through node a, Firefox through node b',
    netns: true,
    ownChoirs: true,
    ownBrowsers: true,
    consentTimeout: FIREFOX_CONSENT_TIMEOUT,
    timeoutMs: 120000,
    async run(t) {
      const tones = { A: toneOf(0), pia: 850 };
      const chromium = await t.launch('chromium');
      const firefox = await t.launch('firefox', { micHz: tones.pia });
      await mixedRoom(t, { chromium, pageBrowser: firefox, tones });
    },
  },
];
