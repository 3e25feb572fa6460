// A person using choir's try-it page (served by choir at `/`, web/) in a real browser tab: types
// into the form and clicks its buttons (or uses the keyboard), reads the participant list and the
// connection panel from the DOM, and hears through src/probe.js. Works on a Playwright page
// (Chromium) and on a puppeteer page (Firefox): only the calls both share are used.
import { readFile } from 'node:fs/promises';
import { CheckFailed, eventually, withTimeout } from './util.mjs';

let probeSource;

export class PageUser {
  constructor(name, page, onLog) {
    this.name = name;
    this.page = page;
    this.kind = 'page';
    this.logs = [];
    this.closed = false;
    page.on('console', (msg) => {
      const line = `${msg.type() === 'log' ? '' : `[${msg.type()}] `}${msg.text()}`;
      this.logs.push(line);
      onLog?.(this.name, line);
    });
    page.on('pageerror', (e) => {
      this.logs.push(`[pageerror] ${e.message}`);
      onLog?.(this.name, `[pageerror] ${e.message}`);
    });
  }

  /** Opens choir's page in `browser` (lib/browser.mjs or lib/firefox.mjs) as `name`. */
  static async open(browser, name, url, { viewport, probe, onLog } = {}) {
    const page = await browser.openPage(url, viewport ? { viewport } : undefined);
    const user = new PageUser(name, page, onLog);
    await user.call(() => !!document.getElementById('join-form'), null, 5000, 'the join form');
    probeSource ??= await readFile(probe, 'utf8');
    await withTimeout(page.evaluate(probeSource), 10000, `${name}: loading the probe`);
    const state = await user.call(() => window.__choirProbe.ready(), null, 10000, 'the probe AudioContext');
    if (state !== 'running') throw new CheckFailed(`${name}: the probe's AudioContext is ${state}`);
    return user;
  }

  call(fn, arg, ms, what) {
    return withTimeout(this.page.evaluate(fn, arg), ms, `${this.name}: ${what}`);
  }

  async fill(selector, text) {
    await this.call((s) => {
      const el = document.querySelector(s);
      el.value = '';
      el.focus();
    }, selector, 5000, `focus ${selector}`);
    await this.page.keyboard.type(text);
  }

  /**
   * Joins through the form: types the channel and the name, then presses Enter (the keyboard) or
   * clicks "Join with microphone". Resolves once in the call, or throws the page's error text.
   */
  async join(channel, { keyboard = false, listenOnly = false, processing = false, token } = {}) {
    await this.fill('#channel', channel);
    await this.fill('#name', this.name);
    if (token !== undefined) await this.fill('#token', token);
    // A steady test tone is what noise suppression removes: off unless asked for.
    await this.call((on) => {
      document.getElementById('processing').checked = on;
    }, processing, 5000, 'voice processing checkbox');
    if (listenOnly) await this.page.click('#join-listen');
    else if (keyboard) await this.page.keyboard.press('Enter');
    else await this.page.click('#join');
    return eventually(`${this.name} in the call`, 20000, async () => {
      const s = await this.ui();
      if (s.error) throw new CheckFailed(`${this.name}: the page says: ${s.error}`);
      if (!s.inCall) throw new Error(`not in the call yet (status "${s.status}")`);
      return s;
    }, 100).catch((e) => {
      // A shown error is final: report it as it is.
      const m = e.message.match(/the page says: .*/);
      throw new CheckFailed(m ? `${this.name}: ${m[0]}` : e.message);
    });
  }

  /** What the page shows: in the call or not, status and error, the participant list. */
  ui() {
    return this.call(() => {
      const $ = (id) => document.getElementById(id);
      return {
        inCall: !$('call').hidden,
        status: $('status').textContent,
        error: $('error').hidden ? '' : $('error').textContent,
        participants: [...document.querySelectorAll('#participants li')].map((li) => ({
          userId: li.dataset.user,
          what: li.querySelector('.what').textContent,
          self: li.dataset.self === 'true',
          muted: li.dataset.muted === 'true',
          speaking: li.dataset.speaking === 'true',
        })),
        mutePressed: $('mute').getAttribute('aria-pressed'),
      };
    }, null, 5000, 'reading the page');
  }

  /** The connection panel: both paths (protocol, addresses, RTT) and the per-user rows. */
  panel() {
    return this.call(() => {
      const path = (id) => {
        const el = document.getElementById(id);
        return { text: el.textContent, ...el.dataset };
      };
      const served = document.getElementById('conn-node-row');
      return {
        // Cluster mode: the node (and region) that holds this user's transports.
        servedBy: served && !served.hidden ? document.getElementById('conn-node').textContent : '',
        send: path('conn-send'),
        recv: path('conn-recv'),
        remotes: [...document.querySelectorAll('#remote-stats tbody tr')].map((tr) => ({
          userId: tr.dataset.user,
          received: Number(tr.dataset.received),
          lost: Number(tr.dataset.lost),
          jitter: tr.dataset.jitter === '' ? null : Number(tr.dataset.jitter),
          text: tr.textContent,
        })),
      };
    }, null, 5000, 'reading the connection panel');
  }

  async clickMute() {
    const before = (await this.ui()).mutePressed;
    await this.page.click('#mute');
    const want = before === 'true' ? 'false' : 'true';
    await eventually(`${this.name}: mute button pressed=${want}`, 5000, async () => {
      const s = await this.ui();
      if (s.mutePressed !== want) throw new Error(`aria-pressed is ${s.mutePressed}`);
    }, 50);
  }

  async leave() {
    await this.page.click('#leave');
    await eventually(`${this.name} out of the call`, 10000, async () => {
      const s = await this.ui();
      if (s.inCall) throw new Error('still in the call');
    }, 100);
  }

  /** Resizes the tab (Playwright and puppeteer name it differently). */
  async setViewport(width, height) {
    const resize = this.page.setViewportSize ? this.page.setViewportSize({ width, height }) : this.page.setViewport({ width, height });
    await withTimeout(resize, 10000, `${this.name}: viewport ${width}x${height}`);
  }

  state() {
    return this.call(() => window.__choirProbe.state(), null, 5000, 'probe state()');
  }

  listen(ms = 1000) {
    return this.call((t) => window.__choirProbe.listen(t), ms, ms + 5000, `listen(${ms})`);
  }

  waitLevel(userId, heard, opts = {}) {
    const ms = (opts.timeoutMs ?? 5000) + 5000;
    return this.call(([u, h, o]) => window.__choirProbe.waitLevel(u, h, o), [userId, heard, opts], ms, `waitLevel(${userId}, ${heard})`);
  }

  /** For the driver's diagnostics: what the page shows. */
  async stats() {
    return { ui: await this.ui(), panel: await this.panel() };
  }

  /** The page's API calls are not recorded (the test page's are). */
  async apiCalls() {
    return [];
  }

  screenshot(file) {
    return withTimeout(this.page.screenshot({ path: file, fullPage: true }), 15000, `${this.name}: screenshot`);
  }
}
