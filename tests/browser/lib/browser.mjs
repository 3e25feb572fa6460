// Debian's Chromium, started here (no browser download) with a fresh --user-data-dir, loopback
// ICE and fake media allowed and autoplay without a gesture, then driven over CDP by
// playwright-core. One browser process per scenario; each user gets its own browser context (like
// its own browser: own cookies, own connection pool, so ten users' push channels do not use up
// Chromium's 6 connections per host) and one tab in it.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { CheckFailed, trackChild, withTimeout } from './util.mjs';

/** With --chrome-log: WebRTC's own log (RTP demuxing, voice engine streams) on Chromium's stderr. */
const WEBRTC_LOG = [
  '--enable-logging=stderr',
  '--v=0',
  '--vmodule=rtp_demuxer=2,webrtc_voice_engine=1,rtp_transport=2,channel=1,dtls_transport=1,p2p_transport_channel=1',
];

export function chromiumArgs({ headed = false, userDataDir, fakeAudioFile, webrtcLog = false } = {}) {
  const args = [
    ...(headed ? [] : ['--headless', '--mute-audio']),
    `--user-data-dir=${userDataDir}`,
    '--remote-debugging-port=0',
    '--allow-loopback-in-peer-connection',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-sync',
    '--password-store=basic',
    // Several tabs of one browser are all "in the foreground": no timer or audio throttling.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    '--disable-dev-shm-usage',
  ];
  if (fakeAudioFile) args.push(`--use-file-for-fake-audio-capture=${fakeAudioFile}`);
  if (webrtcLog) args.push(...WEBRTC_LOG);
  args.push('about:blank');
  return args;
}

/**
 * Starts Chromium and connects to it. `browserLog(text)`, if given, gets Chromium's stderr (with
 * WebRTC's log when `webrtcLog`).
 */
export async function launchBrowser({ executablePath, headed, pageUrl, fakeAudioFile, onLog, browserLog, webrtcLog }) {
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'choir-chromium-'));
  const args = chromiumArgs({ headed, userDataDir, fakeAudioFile, webrtcLog });
  const child = trackChild(spawn(executablePath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  browserLog?.(`$ ${executablePath} ${args.join(' ')}\n`);
  let exited = null;
  const exit = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve((exited = { code, signal })));
    child.on('error', (error) => resolve((exited = { code: null, signal: null, error: String(error) })));
  });
  const endpoint = new Promise((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (chunk) => {
      browserLog?.(chunk.toString());
      if (err.length < 100000) err += chunk;
      const m = err.match(/DevTools listening on (ws:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    child.stdout.on('data', (chunk) => browserLog?.(chunk.toString()));
    exit.then((e) => reject(new CheckFailed(`Chromium exited at start: ${JSON.stringify(e)}\n${err.slice(-2000)}`)));
  });

  async function kill() {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      await exit;
      clearTimeout(timer);
    }
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }

  let browser;
  try {
    const ws = await withTimeout(endpoint, 30000, `starting ${executablePath}`);
    browser = await withTimeout(chromium.connectOverCDP(ws, { timeout: 20000 }), 25000, 'connecting to Chromium');
  } catch (e) {
    await kill();
    throw e;
  }
  const users = [];

  async function openUser(name) {
    const context = await browser.newContext({ viewport: { width: 640, height: 360 } });
    const page = await context.newPage();
    const user = new User(name, page, onLog);
    users.push(user);
    await withTimeout(page.goto(pageUrl, { timeout: 15000 }), 20000, `${name}: loading the page`);
    await withTimeout(page.waitForFunction(() => window.choir, null, { timeout: 15000 }), 20000, `${name}: window.choir`);
    return user;
  }

  /** A tab at `url` in a browser context of its own (a page other than the test page). */
  async function openPage(url, { viewport = { width: 1000, height: 800 } } = {}) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    await withTimeout(page.goto(url, { timeout: 15000 }), 20000, `loading ${url}`);
    return page;
  }

  /** Closes the tabs, then ends Chromium (SIGTERM, SIGKILL after 10 s); resolves to its exit. */
  async function close() {
    for (const user of users) if (!user.closed) await user.page.context().close().catch(() => {});
    await withTimeout(browser.close(), 10000, 'disconnecting from Chromium').catch(() => {});
    await kill();
    return exited;
  }

  return { kind: 'chromium', version: browser.version(), openUser, openPage, users, close };
}

/** One browser tab running the test page. */
export class User {
  constructor(name, page, onLog) {
    this.name = name;
    this.page = page;
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
    page.on('crash', () => this.logs.push('[crash] the page crashed'));
  }

  call(fn, arg, ms, what) {
    return withTimeout(this.page.evaluate(fn, arg), ms, `${this.name}: ${what}`);
  }

  join(opts, ms = 20000) {
    return this.call((o) => window.choir.join(o), opts, ms, `join ${JSON.stringify(opts)}`);
  }
  leave(ms = 10000) {
    return this.call(() => window.choir.leave(), null, ms, 'leave');
  }
  state() {
    return this.call(() => window.choir.state(), null, 5000, 'state()');
  }
  stats() {
    return this.call(() => window.choir.stats(), null, 5000, 'stats()');
  }
  listen(ms = 1000) {
    return this.call((t) => window.choir.listen(t), ms, ms + 5000, `listen(${ms})`);
  }
  waitLevel(userId, heard, opts = {}) {
    const ms = (opts.timeoutMs ?? 5000) + 5000;
    return this.call(([u, h, o]) => window.choir.waitLevel(u, h, o), [userId, heard, opts], ms, `waitLevel(${userId}, ${heard})`);
  }
  resetGaps() {
    return this.call(() => window.choir.resetGaps(), null, 5000, 'resetGaps()');
  }
  apiCalls() {
    return this.call(() => window.choir.calls(), null, 5000, 'calls()');
  }
  /** Closes the tab without leaving (no beforeunload handlers). */
  async closeTab() {
    this.closed = true;
    await withTimeout(this.page.close({ runBeforeUnload: false }), 10000, `${this.name}: closing the tab`);
    await this.page.context().close().catch(() => {});
  }
}
