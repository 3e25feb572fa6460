// The page's apiClient: the plan's `apiClient.get/post` (axios-like `{ data }` replies) over fetch,
// against choir's voice API on another origin (choir answers CORS with `*`).

/** Every API call made by this page, for the driver's timing and failure reports. */
export const calls = [];

export class ApiError extends Error {
  constructor(method, path, status, message) {
    super(`${method} ${path} -> ${status}: ${message}`);
    this.status = status;
  }
}

export function createApiClient(base, { timeoutMs = 10000 } = {}) {
  async function request(method, path, body) {
    const started = performance.now();
    const entry = { method, path, started, ms: null, status: null };
    calls.push(entry);
    let res;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (e) {
      entry.status = 'network-error';
      throw new ApiError(method, path, 'network error', String(e));
    }
    entry.status = res.status;
    entry.ms = performance.now() - started;
    const text = await res.text();
    let data;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      throw new ApiError(method, path, res.status, `reply is not JSON: ${text.slice(0, 200)}`);
    }
    if (!res.ok) throw new ApiError(method, path, res.status, data?.error ?? text);
    return { data };
  }
  return {
    base,
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body ?? {}),
  };
}
