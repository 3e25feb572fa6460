// The try-it page served by choir at `/` (web/, issue 16), used like a person would: type a
// channel and a name, join with the (fake) microphone, look at the participant list and the
// connection panel, mute, leave. Each user whose microphone must sound different has a browser
// process of its own (Chromium's fake capture plays one WAV per process, Firefox's fake device one
// frequency per profile). The driver hears through src/probe.js, as lib/checks.mjs expects.
import { ABS_SEND_TIME, expectAllHearAll, expectEmpty, FIREFOX_CONSENT_TIMEOUT, ROUTER_EXTENSIONS } from './firefox.mjs';
import { expectHears, toneOf, waitHearing } from './lib/checks.mjs';
import { createHmac } from 'node:crypto';
import { check, eventually, sleep } from './lib/util.mjs';

/** Present and not muted: "in the channel" until choir sends speaking events, then speaking or quiet. */
const present = (x) => !x.muted && /^(in the channel|speaking|quiet)/.test(x.what);

/** The participant list shows `self` first (as "you") and then exactly `others`. */
async function expectList(user, others, what = present) {
  return eventually(`${user.name}'s participant list`, 5000, async () => {
    const { participants: p } = await user.ui();
    check(p[0]?.userId === user.name && p[0].self, `first entry is ${JSON.stringify(p[0])}, not ${user.name} (you)`, p);
    const rest = p.slice(1).map((x) => x.userId);
    check(JSON.stringify(rest) === JSON.stringify([...others].sort()), `lists ${rest}, expected ${others}`, p);
    for (const x of p.slice(1)) check(typeof what === 'function' ? what(x) : x.what === what, `${x.userId} shown as "${x.what}"`, p);
    return p;
  }, 100);
}

/** The connection panel: both paths UDP to choir's RTC address and ports, per-user rows rising. */
async function expectPanel(t, user, others) {
  const [lo, hi] = t.choir.rtcPorts;
  // The page refreshes the panel each second; over 3 s it must show packets arriving.
  const first = await user.panel();
  await sleep(3000);
  const panel = await user.panel();
  for (const side of ['send', 'recv']) {
    const p = panel[side];
    check(p.protocol === 'udp', `${user.name}: ${side} path "${p.text}" is not UDP`, panel);
    const [ip, port] = p.remote.split(/:(?=\d+$)/);
    check(ip === t.rtcIp && Number(port) >= lo && Number(port) <= hi, `${user.name}: ${side} path goes to ${p.remote}, not choir's ${t.rtcIp}:${lo}-${hi}`, panel);
    check(/^[\d.]+:\d+$/.test(p.local ?? ''), `${user.name}: ${side} path has no local address`, panel);
    check(p.rtt !== '' && Number.isFinite(Number(p.rtt)), `${user.name}: ${side} path shows no round-trip time`, panel);
  }
  for (const other of others) {
    const a = first.remotes.find((r) => r.userId === other);
    const b = panel.remotes.find((r) => r.userId === other);
    check(a && b, `${user.name}: no connection row for ${other}`, panel);
    check(b.received - a.received >= 40, `${user.name}: packets from ${other} rose by ${b.received - a.received} in 3 s`, { a, b });
    check(b.lost >= 0 && b.jitter !== null, `${user.name}: row for ${other} shows lost ${b.lost}, jitter ${b.jitter}`, b);
  }
  check(panel.remotes.length === others.length, `${user.name}: rows for ${panel.remotes.map((r) => r.userId)}`, panel);
  return panel;
}

/** An address choir may announce that no browser reaches (on loopback, or inside the namespace). */
const unreachableOf = (rtcIp) => (rtcIp === '127.0.0.1' ? '127.0.0.2' : '198.18.0.99');

/**
 * Two people in two browser processes of `kind`: join (one by keyboard), hear each other, list
 * and panel, a screenshot, phone width, mute and unmute, leave; meanwhile a third tries a choir
 * that announces an unreachable address and must be told why nothing connects. `addListener`,
 * if given, puts a listen-only user in the channel (in ana's browser) who must hear both.
 */
async function twoPeople(t, kind, tones, addListener) {
  const [b0, b1] = [await t.launch(kind, { micHz: tones.ana }), await t.launch(kind, { micHz: tones.ben })];
  const listener = await addListener?.(b0);
  const unreachable = unreachableOf(t.rtcIp);
  const far = await t.startChoir(['--listen-ips', `${t.rtcIp}=${unreachable}`]);
  const dora = await t.pageUser(b1, 'dora', { url: `${far.url}/` });
  await dora.join(`${t.channel}-far`);
  const doraJoined = Date.now();
  // And one whose choir offers only TCP: the page connects over ICE-TCP and says so.
  const tcpOnly = await t.startChoir(['--listen-ips', t.rtcIp, '--enable-udp', 'false']);
  const tess = await t.pageUser(b0, 'tess', { url: `${tcpOnly.url}/` });
  await tess.join(`${t.channel}-tcp`);

  const ana = await t.pageUser(b0, 'ana');
  const ben = await t.pageUser(b1, 'ben');
  await ana.join(t.channel, { keyboard: true });
  await ben.join(t.channel);
  await waitHearing(ana, ['ben'], 15000);
  await waitHearing(ben, ['ana'], 15000);
  await expectHears(ana, { ben: tones.ben }, 1500);
  await expectHears(ben, { ana: tones.ana }, 1500);
  await expectList(ana, ['ben']);
  await expectList(ben, ['ana']);
  // Speaking indicators: ana's fake microphone plays a steady tone, so ben's page lights her ring.
  await eventually("GET /producers for ben lists ana's producer as speaking", 3000, async () => {
    const { producers } = await t.choir.get(`/producers/${encodeURIComponent(t.channel)}/ben`);
    check(producers.length === 1 && producers[0].speaking === true, JSON.stringify(producers));
  });
  await expectList(ben, ['ana'], (x) => x.speaking && x.what.startsWith('speaking'));
  t.note("speaking events: ben's page shows ana speaking");
  await expectPanel(t, ana, ['ben']);
  await expectPanel(t, ben, ['ana']);
  if (listener) {
    await waitHearing(listener, ['ana', 'ben'], 15000);
    await expectHears(listener, tones, 1000);
    check((await listener.ui()).participants[0].what === 'you, listening only', "the listener's own entry does not say listening only");
    check((await listener.panel()).send.text.startsWith('listening only'), "the listener's panel does not say it sends nothing");
  }
  await ana.screenshot(t.artifact(`${t.name}.png`));

  // Phone width: nothing wider than the screen.
  await ben.setViewport(360, 740);
  const width = await ben.call(() => document.documentElement.scrollWidth, null, 5000, 'scrollWidth');
  check(width <= 360, `ben's page is ${width} px wide at a 360 px screen`);
  await ben.screenshot(t.artifact(`${t.name}-phone.png`));

  // Mute: ben stops hearing ana and sees her muted; unmute: she is back.
  const silent = ben.waitLevel('ana', false, { timeoutMs: 5000, holdMs: 200 });
  await ana.clickMute();
  await silent;
  await expectList(ben, ['ana'], 'muted');
  await expectList(ana, ['ben']);
  check((await ana.ui()).participants[0].what === 'you, muted', "ana's own entry does not say muted");
  const heard = await ben.listen(1000);
  check(heard.find((h) => h.userId === 'ana')?.heardFraction === 0, 'ben still hears the muted ana', heard);
  const back = ben.waitLevel('ana', true, { timeoutMs: 5000, holdMs: 100 });
  await ana.clickMute();
  await back;
  await expectHears(ben, { ana: tones.ana }, 1000);
  await expectList(ben, ['ana']);

  // The page that cannot reach its choir says why, naming the address.
  await sleep(Math.max(0, doraJoined + 11000 - Date.now()));
  const d = await dora.ui();
  check(d.error.includes('cannot reach') && d.error.includes(unreachable), `dora's page says "${d.error}"`, d);
  t.note(`unreachable choir: the page says "${d.error.slice(0, 120)}…"`);
  await dora.leave();
  const tcp = await eventually("tess's send path over TCP", 10000, async () => {
    const p = (await tess.panel()).send;
    check(p.protocol === 'tcp' && p.remote?.startsWith(`${t.rtcIp}:`), `tess's send path: ${p.text}`, p);
    return p;
  });
  t.note(`TCP-only choir: "${tcp.text}"`);
  await tess.leave();

  // Leave: ben is gone from ana's list and ears.
  await ben.leave();
  await expectList(ana, []);
  await eventually("ana's audio of ben removed", 5000, async () => {
    check(!(await ana.state()).remotes.some((r) => r.userId === 'ben'), 'ana still has an audio element for ben');
  });
  await ana.leave();
  await listener?.leave();
  await expectEmpty(t);
  const h = await far.health();
  check(h.participants === 0, `the unreachable choir still has ${h.participants} participants`, h);
}

export const pageScenarios = [
  {
    name: 'page-chromium',
    description: "choir's try-it page in two Chromium processes (fake mics 1000/1300 Hz): hear, list, panel, mute, leave; a refused microphone, an unreachable choir, TCP only, a token",
    ownBrowsers: true,
    timeoutMs: 120000,
    async run(t) {
      // A refused microphone: the page says so and offers to listen only; cal then listens.
      let first;
      await twoPeople(t, 'chromium', { ana: 1000, ben: 1300 }, async (browser) => {
        first = browser;
        const cal = await t.pageUser(browser, 'cal');
        await cal.call(() => {
          navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
        }, null, 5000, 'refusing the microphone');
        const refused = await cal.join(t.channel).then(() => null, (e) => e.message);
        check(refused && /Microphone access was refused/.test(refused), `cal's page, microphone refused, says: ${refused ?? 'nothing (joined)'}`);
        await cal.join(t.channel, { listenOnly: true });
        return cal;
      });
      await tokenPage(t, first);
    },
  },
  {
    name: 'page-firefox',
    description: "choir's try-it page in two Firefox processes (fake mics 700/900 Hz): hear, list, panel, mute, leave; an unreachable choir, TCP only",
    netns: true,
    ownBrowsers: true,
    consentTimeout: FIREFOX_CONSENT_TIMEOUT,
    timeoutMs: 150000,
    async run(t) {
      await twoPeople(t, 'firefox', { ana: 700, ben: 900 });
    },
  },
  {
    name: 'page-mixed',
    description: "the page's own client (Chromium and Firefox) with mediasoup-client users (Chromium and Firefox) in one room: all hear all",
    netns: true,
    ownBrowsers: true,
    consentTimeout: FIREFOX_CONSENT_TIMEOUT,
    timeoutMs: 120000,
    async run(t) {
      const tones = { M1: toneOf(0), M2: toneOf(1), pia: 1000, pablo: 850 };
      const chromium = await t.launch('chromium', { micHz: tones.pia });
      const firefox = await t.launch('firefox', { micHz: tones.pablo });
      const m1 = await chromium.openUser('M1');
      const m2 = await firefox.openUser('M2');
      const pia = await t.pageUser(chromium, 'pia');
      const pablo = await t.pageUser(firefox, 'pablo');
      await m1.join({ api: t.choir.api, channelId: t.channel, userId: 'M1', tone: tones.M1 });
      await pia.join(t.channel);
      await m2.join({ api: t.choir.api, channelId: t.channel, userId: 'M2', tone: tones.M2 });
      await pablo.join(t.channel);
      const users = [m1, pia, m2, pablo];
      await expectAllHearAll(users, tones);
      await expectList(pia, ['M1', 'M2', 'pablo']);
      await expectList(pablo, ['M1', 'M2', 'pia']);
      await expectPanel(t, pia, ['M1', 'M2', 'pablo']);
      const lines = await expectPageNarrowing({ pia: 'chromium', pablo: 'firefox' }, { pia, pablo, m1 });
      t.note(`extensions of the page's consumers: ${lines.join('; ')}`);
      await pia.screenshot(t.artifact(`${t.name}.png`));
      for (const u of users) await u.leave();
      await expectEmpty(t);
    },
  },
];

/**
 * The page's client declares what its browser receives, so choir narrows per consumer: the
 * Chromium page gets abs-send-time from the Chromium producer that sends it (M1), the Firefox
 * page never does, and nobody gets it from the Firefox producer (M2). Every m-line carries the
 * router's ids, and each browser accepts exactly what choir offered it.
 */
async function expectPageNarrowing(kinds, { pia, pablo, m1 }) {
  const sent = await m1.call(() => window.choir.negotiated(), null, 5000, 'negotiated()');
  check(sent.producer.some((e) => e.uri === ABS_SEND_TIME), "M1 (Chromium) does not send abs-send-time: this check has nothing to narrow", sent.producer);
  const lines = [];
  for (const u of [pia, pablo]) {
    const n = await u.call(() => window.__choirProbe.negotiated(), null, 5000, 'negotiated()');
    for (const c of n.consumers) {
      const offered = c.offered.map((e) => e.uri).sort();
      const accepted = c.accepted.map((e) => e.uri).sort();
      for (const e of c.offered) check(ROUTER_EXTENSIONS[e.uri] === e.id, `${u.name}'s m-line for ${c.userId}: ${e.uri} with id ${e.id}`, c);
      check(JSON.stringify(accepted) === JSON.stringify(offered), `${u.name} accepted ${accepted} of ${offered} for ${c.userId}`, c);
      const abs = offered.includes(ABS_SEND_TIME);
      const want = kinds[u.name] === 'chromium' && c.userId === 'M1';
      check(abs === want, `${u.name} (${kinds[u.name]}) consuming ${c.userId}: abs-send-time ${abs ? 'offered' : 'not offered'}`, c);
      lines.push(`${u.name} (${kinds[u.name]}) <- ${c.userId}: ${c.offered.map((e) => e.uri.replace(/^.*[:/]/, '')).join(' ') || 'none'}`);
    }
    check(n.consumers.length === 3, `${u.name}'s page has ${n.consumers.length} consumers`, n);
  }
  return lines;
}

/** A token as an app's backend mints it (README: HS256 JWT with channelId, userId, exp). */
function mintToken(secret, channelId, userId) {
  const b64 = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ channelId, userId, exp: Math.floor(Date.now() / 1000) + 600 });
  return `${head}.${body}.${createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')}`;
}

/**
 * A choir with CHOIR_AUTH_SECRET: the page asks for a token and will not join without one;
 * opened with ?token=, it fills the channel and name from the token and joins.
 */
async function tokenPage(t, b) {
  const secret = 'page-test-secret-0123456789abcdef0123456789';
  const locked = await t.startChoir(['--listen-ips', t.rtcIp, '--auth-secret', secret]);
  const nobody = await t.pageUser(b, 'eve', { url: `${locked.url}/` });
  const shown = await nobody.call(() => !document.getElementById('token-field').hidden, null, 5000, 'token field');
  check(shown, 'the page of a choir with auth shows no token field');
  const refused = await nobody.join('vault', { listenOnly: true }).then(() => null, (e) => e.message);
  check(refused && /requires an access token/.test(refused), `joining without a token: ${refused ?? 'joined'}`);
  const token = mintToken(secret, 'vault', 'eve');
  const eve = await t.pageUser(b, 'eve', { url: `${locked.url}/?token=${token}` });
  const form = await eve.call(() => ({ channel: document.getElementById('channel').value, name: document.getElementById('name').value, token: document.getElementById('token').value }), null, 5000, 'the form');
  check(form.channel === 'vault' && form.name === 'eve' && form.token === token, 'the form is not filled from ?token=', form);
  await eve.page.click('#join-listen');
  await eventually('eve in the call with her token', 10000, async () => {
    const s = await eve.ui();
    check(!s.error, `the page says: ${s.error}`);
    check(s.inCall, 'not in the call');
  });
  check((await locked.health()).participants === 1, 'choir does not count eve');
  await eve.leave();
}
