// Debian's Firefox ESR (/usr/bin/firefox-esr), headless, driven over WebDriver BiDi by
// puppeteer-core 24 (playwright-core's Firefox support wants its own patched build; puppeteer 25
// wants a newer Node than Debian's). One browser process per launch, each user a browser context
// (its own cookies and connections) with one tab. Fake microphone: Firefox's own fake device, a
// sine at `micHz` (`media.navigator.audio.fake_frequency`). Sound: the PulseAudio null sink of
// lib/pulse.mjs (without it Firefox's AudioContext never runs).
import puppeteer from 'puppeteer-core';
import { User } from './browser.mjs';
import { CheckFailed, trackChild, withTimeout } from './util.mjs';

export function firefoxPrefs({ micHz = 1000 } = {}) {
  return {
    'media.navigator.streams.fake': true,
    'media.navigator.audio.fake_frequency': micHz,
    'media.navigator.permission.disabled': true,
    'media.autoplay.default': 0,
    'media.autoplay.block-webaudio': false,
    // Real host addresses in candidates (not mDNS names), as choir's tests need them.
    'media.peerconnection.ice.obfuscate_host_addresses': false,
    // Several users are tabs of one window: none of them may be throttled as a background tab
    // (Chromium: --disable-background-timer-throttling and friends).
    'dom.min_background_timeout_value': 4,
    'dom.timeout.enable_budget_timer_throttling': false,
    'media.block-autoplay-until-in-foreground': false,
    // Nothing in the background competing with the media for the two cores.
    'browser.safebrowsing.malware.enabled': false,
    'browser.safebrowsing.phishing.enabled': false,
    'app.update.enabled': false,
  };
}

/**
 * Starts Firefox; the same interface as lib/browser.mjs's launchBrowser (`openUser`, `openPage`,
 * `users`, `close`). `pulseEnv`: the sound server's environment (lib/pulse.mjs).
 */
export async function launchFirefox({ executablePath, headed, pageUrl, micHz, pulseEnv, onLog, browserLog }) {
  let browser;
  try {
    browser = await withTimeout(
      puppeteer.launch({
        browser: 'firefox',
        executablePath,
        headless: !headed,
        extraPrefsFirefox: firefoxPrefs({ micHz }),
        env: { ...process.env, ...pulseEnv, MOZ_CRASHREPORTER_DISABLE: '1' },
        protocolTimeout: 30000,
        timeout: 30000,
      }),
      40000,
      `starting ${executablePath}`,
    );
  } catch (e) {
    throw new CheckFailed(`Firefox did not start: ${e.message}`);
  }
  const child = browser.process();
  if (child) {
    trackChild(child);
    child.stderr?.on('data', (chunk) => browserLog?.(chunk.toString()));
    child.stdout?.on('data', (chunk) => browserLog?.(chunk.toString()));
  }
  const version = await browser.version();
  browserLog?.(`$ ${executablePath} (${version}, puppeteer-core over WebDriver BiDi), fake microphone ${micHz} Hz\n`);
  const users = [];

  async function openPage(url, { viewport = { width: 1000, height: 800 } } = {}) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport(viewport);
    await withTimeout(page.goto(url, { timeout: 15000 }), 20000, `loading ${url}`);
    return page;
  }

  async function openUser(name) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    const user = new FirefoxUser(name, page, onLog);
    users.push(user);
    await withTimeout(page.goto(pageUrl, { timeout: 15000 }), 20000, `${name}: loading the page`);
    await withTimeout(page.waitForFunction(() => window.choir, { timeout: 15000 }), 20000, `${name}: window.choir`);
    return user;
  }

  async function close() {
    await withTimeout(browser.close(), 15000, 'closing Firefox').catch(() => {
      child?.kill('SIGKILL');
    });
    return child ? { code: child.exitCode, signal: child.signalCode } : null;
  }

  return { kind: 'firefox', version: `Firefox ${version.replace(/^firefox\//, '')}`, openUser, openPage, users, close };
}

/** A tab of the test page in Firefox: lib/browser.mjs's User, closed the puppeteer way. */
class FirefoxUser extends User {
  async closeTab() {
    this.closed = true;
    const context = this.page.browserContext();
    await withTimeout(this.page.close({ runBeforeUnload: false }), 10000, `${this.name}: closing the tab`);
    await context.close().catch(() => {});
  }
}
