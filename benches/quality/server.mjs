// The bench page's origin: the bundled page (page/ → dist, with esbuild and mediasoup-client
// from tests/browser's pinned node_modules), the speech file, and `POST /bridge`, through which
// the page asks for a relay bridge to a candidate (the leg names map to impairment chains that
// the driver sets per case).
import { createServer } from 'node:http';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const browserSuite = path.join(here, '..', '..', 'tests', 'browser');

/** Bundles page/bench.js (+ mediasoup-client) into `dist`; resolves to `dist`. */
export async function buildPage(dist) {
  const require = createRequire(path.join(browserSuite, 'package.json'));
  let esbuild;
  try {
    esbuild = await import(pathToFileURL(require.resolve('esbuild')).href);
  } catch (e) {
    throw new Error(`esbuild not found: run \`npm ci\` in tests/browser (scripts/quality.sh does): ${e.message}`);
  }
  await mkdir(dist, { recursive: true });
  await esbuild.build({
    entryPoints: [path.join(here, 'page', 'bench.js')],
    outdir: dist,
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: ['chrome120', 'firefox115'],
    nodePaths: [path.join(browserSuite, 'node_modules')],
    logLevel: 'warning',
  });
  await copyFile(path.join(here, 'page', 'worklet.js'), path.join(dist, 'worklet.js'));
  return dist;
}

const INDEX = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>choir quality bench</title></head>
<body><p>choir quality bench: driven through <code>window.quality</code>.</p><script src="bench.js"></script></body></html>`;

const TYPES = { '.js': 'text/javascript; charset=utf-8', '.wav': 'audio/wav' };

/**
 * Serves `dist` and `wav` (as /speech.wav) on `ip`:0. `relay` gets the bridges; `legs` (set per
 * case: `server.legs = { up: [...], down: [...], p2p: [...] }`) names the chains.
 */
export async function startServer({ dist, wav, relay, ip = '127.0.0.1' }) {
  const server = {
    relay,
    legs: {},
    url: null,
    bridges: [],
  };
  const http = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    try {
      if (req.method === 'POST' && url.pathname === '/bridge') {
        let body = '';
        for await (const chunk of req) body += chunk;
        const { target, leg, exclude } = JSON.parse(body);
        const chain = server.legs[leg];
        if (!chain) throw new Error(`no leg ${leg} in this case`);
        const b = await relay.bridge(target, chain, leg, exclude ?? []);
        server.bridges.push({ leg, target, relay: b.address });
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(b.address));
        return;
      }
      let file;
      if (url.pathname === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' }).end(INDEX);
        return;
      } else if (url.pathname === '/favicon.ico') {
        res.writeHead(204).end();
        return;
      } else if (url.pathname === '/speech.wav') file = wav;
      else if (/^\/[\w.-]+\.js$/.test(url.pathname)) file = path.join(dist, url.pathname.slice(1));
      else {
        res.writeHead(404).end();
        return;
      }
      const data = await readFile(file);
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' }).end(data);
    } catch (e) {
      res.writeHead(500, { 'Content-Type': 'text/plain' }).end(String(e.message ?? e));
    }
  });
  await new Promise((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, ip, resolve);
  });
  server.url = `http://${ip}:${http.address().port}`;
  server.close = () => new Promise((resolve) => http.close(resolve));
  return server;
}
