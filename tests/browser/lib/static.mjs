// A static file server for the bundled page, on its own port (another origin than choir's API).
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8' };

export async function serveStatic(dir) {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const name = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    if (name.includes('..') || name.includes('/')) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(path.join(dir, name));
      res.writeHead(200, {
        'Content-Type': TYPES[path.extname(name)] ?? 'application/octet-stream',
        'Cache-Control': 'no-store',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
