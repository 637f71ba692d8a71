// serve.mjs: a tiny stand-in for the exporter's web side, so the port map
// page can be tested before (and apart from) the Rust server. It serves
// src/web/portmap.{html,css,js} with the placeholders filled (HTML-escaped,
// as the exporter does), the same Content-Security-Policy, and
// api/v1/status from a JSON file that is re-read on every request (change
// the file to change what the page sees; a missing file gives a 503).
//
// usage: node serve.mjs --status FILE [--port N] [--prefix /p/] [--web DIR]
//          [--tls-cert PEM --tls-key PEM] [--basic-auth USER:PASSWORD]
// Prints "listening URL" once ready; stops on SIGTERM or SIGINT.
import { readFileSync, promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const here = path.dirname(fileURLToPath(import.meta.url));
const opt = { port: '0', prefix: '/', web: path.join(here, '../../src/web') };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const k = argv[i].replace(/^--/, '');
  if (!['status', 'port', 'prefix', 'web', 'tls-cert', 'tls-key', 'basic-auth'].includes(k) || argv[i + 1] === undefined) {
    console.error(`serve.mjs: unknown or incomplete option ${argv[i]}`);
    process.exit(2);
  }
  opt[k] = argv[i + 1];
}
if (!opt.status) { console.error('serve.mjs: --status FILE is required'); process.exit(2); }
if (!opt.prefix.startsWith('/') || !opt.prefix.endsWith('/')) { console.error('serve.mjs: --prefix must start and end with /'); process.exit(2); }

const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fill = { VERSION: '0.2.0-fixture', REVISION: 'fixture', METRICS_PATH: '/metrics' };
// RANGE_ROWS is HTML the exporter builds from its configuration; the fixture has none.
const raw = { RANGE_ROWS: '' };
const auth = opt['basic-auth'] ? 'Basic ' + Buffer.from(opt['basic-auth']).toString('base64') : null;

async function handle(req, res) {
  const send = (code, type, body, extra = {}) => {
    res.writeHead(code, { 'Content-Type': type, 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-store', ...extra });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (auth && req.headers.authorization !== auth) {
    return send(401, 'text/plain; charset=utf-8', 'Unauthorized\n', { 'WWW-Authenticate': 'Basic realm="portrange_exporter"' });
  }
  const url = new URL(req.url, 'http://x');
  if (!url.pathname.startsWith(opt.prefix)) return send(404, 'text/plain; charset=utf-8', 'Not Found\n');
  const rest = url.pathname.slice(opt.prefix.length);
  if (rest === '') {
    const tpl = await fs.readFile(path.join(opt.web, 'portmap.html'), 'utf8');
    return send(200, 'text/html; charset=utf-8', tpl.replace(/\{\{([A-Z_]+)\}\}/g, (m, k) => (k in fill ? esc(fill[k]) : k in raw ? raw[k] : m)));
  }
  if (rest === 'portmap.js') return send(200, 'text/javascript; charset=utf-8', await fs.readFile(path.join(opt.web, 'portmap.js')));
  if (rest === 'portmap.css') return send(200, 'text/css; charset=utf-8', await fs.readFile(path.join(opt.web, 'portmap.css')));
  if (rest === 'metrics') return send(200, 'text/plain; version=0.0.4; charset=utf-8', '# fixture server: no metrics\n');
  if (rest === 'api/v1/status') {
    let body;
    try { body = await fs.readFile(opt.status); } catch (e) {
      return send(503, 'text/plain; charset=utf-8', `status fixture unreadable: ${e.code}\n`);
    }
    return send(200, 'application/json', body);
  }
  return send(404, 'text/plain; charset=utf-8', 'Not Found\n');
}

const tls = opt['tls-cert'] ? { cert: readFileSync(opt['tls-cert']), key: readFileSync(opt['tls-key']) } : null;
const handler = (req, res) => handle(req, res).catch((e) => { res.writeHead(500); res.end(String(e)); });
const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
server.listen(Number(opt.port), '127.0.0.1', () => {
  console.log(`listening ${tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}${opt.prefix}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { server.close(); server.closeAllConnections(); });
