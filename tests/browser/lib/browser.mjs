// Debian's Chromium through playwright-core (no browser download): a fresh profile per launch,
// loopback ICE and fake media allowed, autoplay without a gesture. Each user is one tab.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { withTimeout } from './util.mjs';

export function chromiumArgs({ fakeAudioFile } = {}) {
  const args = [
    '--allow-loopback-in-peer-connection',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    // Several tabs of one browser are all "in the foreground": no timer or audio throttling.
    '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
    '--disable-dev-shm-usage',
  ];
  if (fakeAudioFile) args.push(`--use-file-for-fake-audio-capture=${fakeAudioFile}`);
  return args;
}

export async function launchBrowser({ executablePath, headed, pageUrl, fakeAudioFile, onLog }) {
  const userDataDir = await mkdtemp(path.join(os.tmpdir(), 'choir-chromium-'));
  const context = await withTimeout(
    chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: !headed,
      args: chromiumArgs({ fakeAudioFile }),
      timeout: 30000,
      viewport: { width: 640, height: 360 },
    }),
    40000,
    `launching ${executablePath}`,
  );
  const version = context.browser()?.version() ?? '?';
  const users = [];
  // The persistent context opens with one blank tab; close it so that each user is one tab.
  for (const p of context.pages()) await p.close().catch(() => {});

  async function openUser(name) {
    const page = await context.newPage();
    const user = new User(name, page, onLog);
    users.push(user);
    await withTimeout(page.goto(pageUrl, { timeout: 15000 }), 20000, `${name}: loading the page`);
    await withTimeout(page.waitForFunction(() => window.choir, null, { timeout: 15000 }), 20000, `${name}: window.choir`);
    return user;
  }

  async function close() {
    await withTimeout(context.close(), 20000, 'closing Chromium').catch(() => {});
    await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
  }

  return { version, openUser, users, close };
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
  }
}
