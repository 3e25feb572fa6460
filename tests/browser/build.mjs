// Bundles the test page (src/page.js + mediasoup-client) into dist/ with esbuild, and the probe
// that the driver puts into choir's own try-it page (src/probe.js).
//   node build.mjs
import { copyFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Builds dist/index.html, dist/page.js and dist/probe.js; returns the dist directory. */
export async function buildPage({ minify = false } = {}) {
  const dist = path.join(here, 'dist');
  await mkdir(dist, { recursive: true });
  await esbuild.build({
    entryPoints: [path.join(here, 'src', 'page.js'), path.join(here, 'src', 'probe.js')],
    outdir: dist,
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: ['chrome120', 'firefox115'],
    sourcemap: 'inline',
    minify,
    logLevel: 'warning',
  });
  await copyFile(path.join(here, 'index.html'), path.join(dist, 'index.html'));
  return dist;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dist = await buildPage();
  console.log(`built ${dist}`);
}
