// Small helpers shared by the driver and the scenarios: timeouts, polling, assertions.

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class CheckFailed extends Error {
  constructor(message, details) {
    super(message);
    this.details = details;
  }
}

/** Fails the scenario with `message` (and `details`, printed) unless `cond` holds. */
export function check(cond, message, details) {
  if (!cond) throw new CheckFailed(message, details);
}

/** `promise`, or an error naming `what` after `ms`. */
export async function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `fn` every `everyMs` until it returns without throwing (its value is returned); after
 * `ms`, rethrows its last failure, prefixed with `what`.
 */
export async function eventually(what, ms, fn, everyMs = 200) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    if (Date.now() >= end) break;
    await sleep(everyMs);
  }
  throw new CheckFailed(`${what} (not within ${ms} ms): ${last?.message ?? last}`, last?.details);
}

export function median(xs) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

/** Processes this driver started and that still run (choir, Chromium): killed if the driver must quit. */
export const children = new Set();

export function trackChild(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

export function killChildren() {
  for (const child of children) child.kill('SIGKILL');
}
