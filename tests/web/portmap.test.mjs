// portmap.test.mjs: browser checks of the port map page (issue 13) in Debian's
// headless Chromium, through playwright-core. Works against any server of the
// page: the fixture server (serve.mjs) or the real exporter.
//
// usage: node portmap.test.mjs --url URL --scenario FILE [options]
//   --url URL             the page, e.g. http://127.0.0.1:10224/ (must end in /)
//   --scenario FILE       expected states (format below)
//   --user U --password P basic auth
//   --ca FILE | --insecure   TLS: trust this CA (PEM) in a fresh NSS store, or ignore certificate errors
//   --change-cmd CMD      run CMD (sh -c) to cause the change the scenario's "after" describes
//   --change-stdin        print "CHANGE NOW" and wait for a line on stdin instead
//   --change-slack-ms N   the change must show within one refresh plus N ms (default 2000)
//   --refresh S           the page's refresh interval, passed as ?refresh=S (default 1)
//   --max-first-render-ms N   fail if the first render takes longer (default 5000)
//   --timing-runs N       load the page N more times and print first-render timings
//   --screenshot FILE     save a full-page PNG after the checks; --hover PORT hovers that
//                         port's cell first (tooltip in the picture); --width W (default 1180)
//   --chromium PATH       default /usr/bin/chromium
// Scenario: {"maps": [{"range", "protocol", "netns"?, "ports": {"3224": "expected", ...},
//             "others": "free"?}], "text": ["strings that must show as text"],
//            "hover": {"range", "protocol", "port", "owner"}?, "after": {"maps": [...]}?,
//            "banner": "text the error banner must show (then the maps must be marked stale)"?,
//            "ephemeral": {"absent"?, "error"?, "views": [...]}? (see checkEphemeral),
//            "cmdline_withheld": "text the withheld note must show" | null (the note hidden)?}
// A port not in "ports" must be in state "others" (unchecked when absent). Maps
// drawn in blocks are checked per block: a block must show the worst state of
// the ports in it.
// Prints "ok - ..." or "FAIL - ..." per check and "N passed, N failed, N skipped";
// exits 1 when a check failed, 2 on bad usage.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

// --host-resolver-rules: Chromium's own DNS client binds its UDP sockets to
// random ports anywhere in 1024-65535 (not the kernel's ephemeral range), so
// in a namespace without a reachable resolver a lookup left a socket in a
// watched range (CI: 16968 in rtp's 10000-20000, shown `unknown`). The pages
// are loaded from 127.0.0.1 and need no name resolved.
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'];
const RANK = { free: 0, reserved: 1, in_use: 2, expected: 3, kernel: 4, unknown: 5, unexpected: 6 };

function parseArgs(argv) {
  const o = { refresh: '1', 'change-slack-ms': '2000', 'max-first-render-ms': '5000', 'timing-runs': '0', width: '1180', chromium: '/usr/bin/chromium' };
  const flags = new Set(['insecure', 'change-stdin']);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (flags.has(k)) o[k] = true;
    else if (argv[i].startsWith('--') && argv[i + 1] !== undefined) o[k] = argv[++i];
    else usage(`bad argument ${argv[i]}`);
  }
  if (!o.url || !o.scenario) usage('--url and --scenario are required');
  return o;
}
function usage(msg) { console.error(`portmap.test.mjs: ${msg} (see the header of this file)`); process.exit(2); }

let passed = 0, failed = 0, skipped = 0;
function check(name, ok, detail = '') {
  if (ok) passed++; else failed++;
  if (detail.length > 300) detail = detail.slice(0, 300) + '…';
  console.log(`${ok ? 'ok' : 'FAIL'} - ${name}${detail ? ': ' + detail : ''}`);
  return ok;
}
function skip(name, why) { skipped++; console.log(`SKIPPED - ${name}: ${why}`); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Compares every cell of the scenario's maps with the page; runs in the page.
function compareInPage({ maps, rank }) {
  const out = [];
  const all = [...document.querySelectorAll('[data-range][data-protocol]')];
  for (const m of maps) {
    const label = `${m.range}/${m.protocol}${m.netns !== undefined ? '/' + m.netns : ''}`;
    const map = all.find((e) => e.getAttribute('data-range') === m.range && e.getAttribute('data-protocol') === m.protocol &&
      (m.netns === undefined || e.getAttribute('data-netns') === m.netns));
    if (!map) { out.push({ label, problems: ['no map with these data-range/data-protocol/data-netns'], cells: 0 }); continue; }
    const want = (p) => m.ports[p] ?? m.others;
    const problems = [], seen = new Set();
    let cells = 0, blocks = 0;
    for (const c of map.querySelectorAll('[data-state]')) {
      cells++;
      const got = c.getAttribute('data-state');
      if (!(got in rank)) problems.push(`cell with unknown data-state "${got}"`);
      if (c.hasAttribute('data-port')) {
        const p = c.getAttribute('data-port'), w = want(p);
        seen.add(Number(p));
        if (w !== undefined && got !== w) problems.push(`port ${p}: ${got}, expected ${w}`);
      } else if (c.hasAttribute('data-block-start')) {
        blocks++;
        const s = Number(c.getAttribute('data-block-start')), e = Number(c.getAttribute('data-block-end'));
        let worst = m.others === undefined ? 'free' : m.others;
        for (let p = s; p <= e; p++) {
          seen.add(p);
          const w = m.ports[p];
          if (w !== undefined && rank[w] > rank[worst]) worst = w;
        }
        const bad = m.others === undefined ? rank[got] < rank[worst] : got !== worst;
        if (bad) problems.push(`block ${s}-${e}: ${got}, expected ${worst}`);
      } else problems.push('a data-state cell without data-port or data-block-start');
    }
    for (const p of Object.keys(m.ports)) if (!seen.has(Number(p))) problems.push(`port ${p} has no cell`);
    out.push({ label, problems, cells, blocks });
  }
  return out;
}

async function checkStates(page, maps, when) {
  const res = await page.evaluate(compareInPage, { maps, rank: RANK });
  for (const r of res) {
    const kind = r.blocks ? `${r.cells} block cells` : `${r.cells} port cells`;
    check(`${when}: map ${r.label} shows the expected states`, r.problems.length === 0,
      r.problems.length ? r.problems.slice(0, 8).join('; ') + (r.problems.length > 8 ? `; +${r.problems.length - 8} more` : '') : kind);
  }
  return res.every((r) => r.problems.length === 0);
}

async function waitUpdates(page, n, timeout) {
  await page.waitForFunction((k) => Number(document.documentElement.getAttribute('data-updates') || 0) >= k, n, { timeout, polling: 50 });
}
const attr = (page, name) => page.evaluate((a) => document.documentElement.getAttribute(a), name);

async function trustCa(caFile, home) {
  const db = path.join(home, '.pki', 'nssdb');
  mkdirSync(db, { recursive: true });
  const r = spawnSync('certutil', ['-N', '-d', `sql:${db}`, '--empty-password'], { encoding: 'utf8' });
  if (r.error) usage('--ca needs certutil (Debian package libnss3-tools)');
  execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-n', 'portmap-test-ca', '-t', 'C,,', '-i', caFile]);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const scenario = JSON.parse(readFileSync(o.scenario, 'utf8'));
  const refresh = Number(o.refresh);
  const url = new URL(o.url);
  url.searchParams.set('refresh', String(refresh));
  const home = mkdtempSync(path.join(tmpdir(), 'portmap-home-'));
  const profile = path.join(home, 'profile'); // a fresh --user-data-dir
  if (o.ca) await trustCa(o.ca, home);
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: o.chromium, headless: true, args: FLAGS, env: { ...process.env, HOME: home },
    ignoreHTTPSErrors: !!o.insecure, viewport: { width: Number(o.width), height: 900 },
    httpCredentials: o.user !== undefined ? { username: o.user, password: o.password ?? '' } : undefined,
  });
  try {
    await run(ctx, o, scenario, url, refresh);
  } finally {
    await ctx.close();
    rmSync(home, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exit(failed ? 1 : 0);
}

// The "Recent changes" list (the listener trail) holds an item for each
// expected event: every one of its `text` parts in one item, marked for
// attention (a bar and bold, class "attention") exactly when `attention`;
// with `newer_than` (a text of another expected event), above that one.
// Waits up to `waitMs` for the list to show them.
async function checkEvents(page, events, when, waitMs) {
  if (!Array.isArray(events)) return;
  const read = () => page.evaluate(() => [...document.querySelectorAll('#events li')]
    .map((li) => ({ text: li.textContent, cls: li.className, kind: li.getAttribute('data-kind') })));
  const find = (items, e) => items.findIndex((i) => e.text.every((t) => i.text.includes(t)));
  const t0 = Date.now();
  let items = await read();
  while (Date.now() - t0 < waitMs && !events.every((e) => find(items, e) >= 0)) {
    await sleep(50);
    items = await read();
  }
  for (const e of events) {
    const i = find(items, e);
    const item = items[i];
    const name = `${when}: recent changes list ${JSON.stringify(e.text.join(' … '))}`;
    if (!check(name, i >= 0, i >= 0 ? item.text : `not among ${items.length} items: ${items.slice(0, 5).map((x) => x.text).join(' | ')}`)) continue;
    check(`${when}: recent change ${JSON.stringify(e.text[0])} ${e.attention ? 'marked' : 'not marked'} for attention`,
      item.cls.split(' ').includes('attention') === e.attention && item.kind === e.kind, `class "${item.cls}", kind ${item.kind}`);
    if (e.newer_than) {
      const j = items.findIndex((x) => x.text.includes(e.newer_than));
      check(`${when}: recent change ${JSON.stringify(e.text[0])} listed above ${JSON.stringify(e.newer_than)} (newest first)`, j >= 0 && i < j, `${i} vs ${j}`);
    }
  }
}

// The "Ephemeral ports" section. `absent: true`: hidden (the collector is
// off). Otherwise each of `views` has a block (matched by protocol and
// netns) whose headroom line holds `headroom`, marked for attention (bar and
// weight, class "attention") exactly when `attention`, with TIME_WAIT at
// least `time_wait_min`; `destination` ({text, ports, sockets, holder}) is a
// row of its destinations table, each of `holders` ([process, user]) a row
// of its holders table; `error`: the collector's error is shown.
async function checkEphemeral(page, eph) {
  if (!eph) return;
  const dom = await page.evaluate(() => {
    const sec = document.getElementById('ephemeral-section');
    const rows = (t) => (t ? [...t.tBodies[0].rows].map((r) => [...r.cells].map((c) => c.textContent)) : []);
    return {
      hidden: sec.hidden || sec.getBoundingClientRect().height === 0,
      error: [...sec.querySelectorAll('.eph-error')].map((e) => e.textContent).join(' | '),
      views: [...sec.querySelectorAll('.eph-view')].map((v) => ({
        protocol: v.getAttribute('data-protocol'), netns: v.getAttribute('data-netns'), cls: v.className,
        headroom: v.querySelector('.eph-headroom').textContent, states: v.querySelector('.eph-states').textContent,
        dests: rows(v.querySelector('table.eph-destinations')), holders: rows(v.querySelector('table.eph-holders')),
      })),
    };
  });
  if (eph.absent) {
    check('ephemeral section hidden when the collector is off', dom.hidden && dom.views.length === 0,
      `hidden ${dom.hidden}, ${dom.views.length} views`);
    return;
  }
  check('ephemeral section shown', !dom.hidden, `${dom.views.length} views`);
  if (eph.error !== undefined) check('ephemeral collector error shown', dom.error.includes(eph.error), JSON.stringify(dom.error));
  for (const w of eph.views ?? []) {
    const label = `ephemeral ${w.protocol}${w.netns !== undefined ? ' netns ' + w.netns : ''}`;
    const v = dom.views.find((x) => x.protocol === w.protocol && (w.netns === undefined ? x.netns === null : x.netns === w.netns));
    if (!check(`${label}: a block`, !!v, dom.views.map((x) => `${x.protocol}/${x.netns}`).join(', '))) continue;
    if (w.headroom !== undefined) check(`${label}: headroom shown`, v.headroom.includes(w.headroom), JSON.stringify(v.headroom));
    check(`${label}: ${w.attention ? 'marked' : 'not marked'} for attention`,
      v.cls.split(' ').includes('attention') === w.attention, `class "${v.cls}", ${JSON.stringify(v.headroom)}`);
    if (w.time_wait_min !== undefined) {
      const m = /TIME_WAIT: (\d+) sockets?/.exec(v.states);
      check(`${label}: TIME_WAIT count shown`, !!m && Number(m[1]) >= w.time_wait_min, JSON.stringify(v.states));
    }
    if (w.destination) {
      const d = w.destination;
      const row = v.dests.find((r) => r[0] === d.text);
      check(`${label}: destination ${d.text} named with its counts and holder`, !!row && row[1] === String(d.ports) &&
        row[2] === String(d.sockets) && row[3].startsWith(d.holder + ' ('), JSON.stringify(v.dests));
    }
    for (const [proc, user] of w.holders ?? []) {
      check(`${label}: holder ${JSON.stringify(proc)} listed`, v.holders.some((r) => r[0] === proc && r[1] === user),
        JSON.stringify(v.holders));
    }
  }
}

async function run(ctx, o, scenario, url, refresh) {
  // Anything that would show a script ran: dialogs, page errors, CSP violations.
  const dialogs = [], errors = [];
  await ctx.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = ctx.pages()[0] ?? await ctx.newPage();
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => errors.push(String(e)));
  // Failed loads are judged by URL below (a browser asks for /favicon.ico, which may 404).
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) errors.push(`HTTP ${r.status()} for ${r.url()}`); });
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));

  let resp;
  try { resp = await page.goto(url.href, { waitUntil: 'domcontentloaded' }); } catch (e) {
    check('page loads', false, String(e.message).split('\n')[0]);
    return;
  }
  if (!check('page loads', resp && resp.status() === 200, `HTTP ${resp && resp.status()}`)) return;
  const csp = (resp && resp.headers()['content-security-policy']) || '';
  check('page is served with a strict Content-Security-Policy', /default-src 'none'/.test(csp) && /script-src 'self'/.test(csp), csp || 'none');
  // The first fetch's outcome: data-fetch is "ok" after a render, "error" after a failed fetch.
  const banner = () => page.evaluate(() => { const b = document.getElementById('banner'); return b.hidden ? '' : b.textContent; });
  try {
    await page.waitForFunction(() => document.documentElement.hasAttribute('data-fetch'), null,
      { timeout: Number(o['max-first-render-ms']) + 5000, polling: 50 });
  } catch {
    check('first fetch of api/v1/status', false, 'no answer, no error shown');
    return;
  }
  if (scenario.banner !== undefined) {
    const b = await banner();
    check(`banner says ${JSON.stringify(scenario.banner)}`, b.includes(scenario.banner), JSON.stringify(b));
    check('maps marked as not current', await page.evaluate(() => document.getElementById('maps').classList.contains('stale')));
  }
  if ((await attr(page, 'data-fetch')) !== 'ok') {
    if (scenario.banner === undefined) check('status fetched without error', false, await banner());
    return;
  }
  await page.waitForFunction(() => document.documentElement.hasAttribute('data-first-paint-ms'), null, { timeout: 5000 });
  const first = Number(await attr(page, 'data-first-render-ms')), paint = Number(await attr(page, 'data-first-paint-ms'));
  check('first render in time', paint <= Number(o['max-first-render-ms']),
    `first render ${first} ms, painted ${paint} ms after navigation start (fetch ${await attr(page, 'data-fetch-ms')} ms, render ${await attr(page, 'data-render-ms')} ms)`);
  if (scenario.banner === undefined) check('no error banner', (await banner()) === '', await banner());

  await checkStates(page, scenario.maps ?? [], 'first render');

  // The top line says what `check` says of the same collection, and a range
  // whose ports lie in the dynamic range is marked as check marks it, with
  // the fix.
  const seen = await page.evaluate(async () => {
    const v = document.getElementById('verdict');
    const res = await fetch('api/v1/status', { credentials: 'same-origin', cache: 'no-store' });
    const data = await res.json();
    const notes = [...document.querySelectorAll('section.range')].map((s) => {
      const n = s.querySelector('.overlap-note');
      const m = s.querySelector('.map');
      return { range: m && m.getAttribute('data-range'), protocol: m && m.getAttribute('data-protocol'),
        text: n && !n.hidden ? n.textContent : '' };
    });
    const ls = Array.isArray(data.listeners) ? data.listeners : [];
    const owners = new Set(ls.map((l) => JSON.stringify([l.range, l.protocol, l.netns ?? null, l.process, l.user, l.expected, l.kernel === true, l.exe_gone === true])));
    const counts = [...document.querySelectorAll('#listeners tbody tr')].map((r) => Number(r.cells[9].textContent));
    return { verdict: v.hidden ? '' : v.textContent, status: v.getAttribute('data-status'), check: data.check, ranges: data.ranges, notes,
      listeners: ls.length, owners: owners.size, counts };
  });
  if (seen.owners <= 500) {
    check('listener table has one row per owner and range', seen.counts.length === seen.owners &&
      seen.counts.reduce((a, b) => a + b, 0) === seen.listeners,
      `${seen.counts.length} rows for ${seen.owners} owners, counts ${seen.counts.join('+')} for ${seen.listeners} listeners`);
  }
  check("top line shows check's verdict", !!seen.check && seen.verdict.startsWith(`${seen.check.status}: `) &&
    seen.status === String(seen.check.status).toLowerCase() && seen.verdict.length > seen.check.status.length + 2,
    JSON.stringify({ verdict: seen.verdict, check: seen.check }));
  for (const r of seen.ranges ?? []) {
    if (!(r.ephemeral_overlap > 0)) continue;
    const n = seen.notes.find((x) => x.range === r.range && x.protocol === r.protocol);
    check(`ephemeral overlap of ${r.range}/${r.protocol} marked with the fix`, !!n && n.text.startsWith('WARNING: ') &&
      n.text.includes(r.ephemeral_fix) && seen.check.summary.includes(r.ephemeral_fix), JSON.stringify(n));
  }

  // --collector.traffic: a closed port that received packets carries the
  // "probed" mark and its count in the tooltip; one that received none
  // does not.
  for (const p of scenario.probed ?? []) {
    const sel = `[data-range="${p.range}"][data-protocol="${p.protocol}"] [data-port="${p.port}"]`;
    const marked = await page.evaluate((s) => { const c = document.querySelector(s); return c ? c.hasAttribute('data-probed') : null; }, sel);
    let tip = '';
    if (marked !== null) {
      await page.hover(sel);
      tip = await page.evaluate(() => { const t = document.getElementById('tooltip'); return t.hidden ? '' : t.textContent; });
      await page.mouse.move(0, 0);
    }
    const want = `probed: ${p.packets} packets`;
    check(`port ${p.port} of ${p.range}/${p.protocol} ${p.packets ? 'marked probed' : 'not marked probed'}`,
      marked === (p.packets > 0) && (p.packets > 0 ? tip.includes(want) : !tip.includes('probed')),
      `data-probed ${marked}, tooltip ${JSON.stringify(tip)}`);
  }

  for (const t of scenario.text ?? []) {
    const found = await page.evaluate((s) => [...document.querySelectorAll('#listeners td, #events li, .map, h2, #tooltip, #ephemeral td, #ephemeral p')]
      .some((e) => e.textContent === s || e.textContent.includes(s)), t);
    check(`hostile string shown as text: ${JSON.stringify(t)}`, found);
  }
  await checkEvents(page, scenario.events, 'first render', 0);
  if (scenario.cmdline_withheld !== undefined) {
    const note = await page.evaluate(() => {
      const p = document.getElementById('cmdline-withheld');
      return p ? { hidden: p.hidden, text: p.textContent } : null;
    });
    if (scenario.cmdline_withheld === null) {
      check('command lines not said to be withheld', note !== null && note.hidden, JSON.stringify(note));
    } else {
      check(`command lines said to be withheld: ${JSON.stringify(scenario.cmdline_withheld)}`,
        note !== null && !note.hidden && note.text.includes(scenario.cmdline_withheld), JSON.stringify(note));
    }
  }
  await checkEphemeral(page, scenario.ephemeral);
  const injected = await page.evaluate(() => ({
    nodes: document.querySelectorAll('img, svg, iframe, object, embed, main script, #listeners script, #events script, #ephemeral script').length,
    pwned: window.__pwned !== undefined,
  }));
  check('no markup from the JSON became elements', injected.nodes === 0, `${injected.nodes} img/svg/script/iframe elements`);

  if (scenario.hover) {
    const h = scenario.hover;
    const sel = `[data-range="${h.range}"][data-protocol="${h.protocol}"] [data-port="${h.port}"]`;
    await page.hover(sel);
    const tip = await page.evaluate(() => { const t = document.getElementById('tooltip'); return t.hidden ? '' : t.textContent; });
    check('hovering a cell names port, state and owner', tip.includes(String(h.port)) && tip.includes(h.owner), JSON.stringify(tip));
    await page.click(sel); // moves the map's focus to this cell
    await page.keyboard.press('ArrowRight');
    const kb = await page.evaluate(() => ({ port: document.activeElement.getAttribute('data-port'),
      label: document.activeElement.getAttribute('aria-label'), tip: document.getElementById('tooltip').textContent }));
    check('arrow keys move focus along the map and name the cell', kb.port === String(h.port + 1) &&
      kb.label === kb.tip && kb.tip.includes(`port ${h.port + 1}`), JSON.stringify(kb));
    await page.mouse.move(0, 0);
    await page.locator(sel).blur();
  }

  // Sort and filter the listener table.
  const rows = () => page.evaluate(() => [...document.querySelectorAll('#listeners tbody tr')].map((r) => [...r.cells].map((c) => c.textContent)));
  const before = await rows();
  if (before.length > 1) {
    await page.click('#listeners th[data-key="port"] button');
    const ports = (await rows()).map((r) => Number(r[4]));
    check('listener table sorts by port', ports.every((p, i) => i === 0 || ports[i - 1] <= p), ports.slice(0, 12).join(','));
    await page.click('#listeners th[data-key="port"] button'); // descending
    await page.click('#listeners th[data-key="port"] button'); // back to the server's order
    const probe = before[before.length - 1][5] || before[before.length - 1][4];
    await page.fill('#filter', probe);
    const f = await rows();
    check('listener table filters by text', f.length >= 1 && f.length <= before.length && f.every((r) => r.some((c) => c.toLowerCase().includes(probe.toLowerCase()))),
      `"${probe}": ${f.length} of ${before.length} rows`);
    await page.fill('#filter', '');
    const order = (await rows()).map((r) => r[8]);
    const firstExpected = order.findIndex((e) => e === 'yes');
    check('unexpected listeners come first', order.every((e, i) => e !== 'NO' || firstExpected < 0 || i < firstExpected),
      `${order.filter((e) => e === 'NO').length} unexpected of ${order.length} rows`);
  } else skip('listener table sort and filter', 'fewer than two listeners in the scenario');

  // A change shows within one refresh, in place, without a reload.
  if (scenario.after) {
    if (!o['change-cmd'] && !o['change-stdin']) skip('state change within one refresh', 'no --change-cmd or --change-stdin');
    else {
      const token = String(Math.random());
      const m0 = scenario.after.maps[0];
      const changed = Object.keys(m0.ports).find((p) => m0.ports[p] !== (scenario.maps.find((m) => m.range === m0.range &&
        m.protocol === m0.protocol && m.netns === m0.netns)?.ports[p] ?? 'free'));
      await page.evaluate(({ token, m0, changed }) => {
        window.__portmapMarker = token;
        const map = [...document.querySelectorAll('[data-range]')].find((e) => e.getAttribute('data-range') === m0.range &&
          e.getAttribute('data-protocol') === m0.protocol);
        window.__cellRef = map && map.querySelector(`[data-port="${changed}"]`);
      }, { token, m0, changed });
      if (o['change-stdin']) {
        console.log('CHANGE NOW');
        const rl = createInterface({ input: process.stdin });
        await new Promise((r) => rl.once('line', r));
        rl.close();
      } else execFileSync('sh', ['-c', o['change-cmd']], { stdio: 'inherit' });
      const t0 = Date.now(), deadline = refresh * 1000 + Number(o['change-slack-ms']);
      let ok = false;
      while (Date.now() - t0 < deadline && !ok) {
        ok = (await page.evaluate(compareInPage, { maps: scenario.after.maps, rank: RANK })).every((r) => r.problems.length === 0);
        if (!ok) await sleep(50);
      }
      check('state change shows within one refresh', ok, `${Date.now() - t0} ms after the change (refresh ${refresh} s, limit ${deadline} ms)`);
      await checkStates(page, scenario.after.maps, 'after the change');
      const same = await page.evaluate(({ token, m0, changed }) => ({
        marker: window.__portmapMarker === token,
        cell: !!window.__cellRef && window.__cellRef.isConnected && window.__cellRef.getAttribute('data-port') === changed,
        navs: performance.getEntriesByType('navigation').length,
      }), { token, m0, changed });
      await checkEvents(page, scenario.after.events, 'after the change', refresh * 1000 + Number(o['change-slack-ms']));
      check('no reload: window marker kept', same.marker && same.navs === 1);
      check(`cell updated in place (the element of port ${changed} is the same node)`, same.cell);
    }
  }

  // Pause stops the polling, resume starts it again.
  const u0 = Number(await attr(page, 'data-updates'));
  await page.click('#pause');
  await sleep(refresh * 1000 * 2 + 500);
  const u1 = Number(await attr(page, 'data-updates'));
  await page.click('#pause');
  let resumed = true;
  try { await waitUpdates(page, u1 + 1, refresh * 1000 + 3000); } catch { resumed = false; }
  check('pause stops refreshing and resume restarts it', u1 <= u0 + 1 && resumed, `updates ${u0} -> ${u1} while paused, resumed: ${resumed}`);

  const violations = await page.evaluate(() => window.__csp);
  check('no Content-Security-Policy violations', violations.length === 0, violations.join('; '));
  check('no alert or dialog opened, window.__pwned unset', dialogs.length === 0 && !(await page.evaluate(() => window.__pwned !== undefined)),
    dialogs.join('; '));
  check('no script errors on the page', errors.length === 0, errors.slice(0, 5).join('; '));

  if (o.screenshot) {
    const plain = new URL(url.href);
    plain.searchParams.delete('refresh'); // the page's own interval, as an operator sees it
    await page.goto(plain.href, { waitUntil: 'domcontentloaded' });
    await waitUpdates(page, 1, 10000);
    if (o.hover) {
      const cell = page.locator(`[data-port="${o.hover}"]`).first();
      await cell.scrollIntoViewIfNeeded();
      await cell.hover();
    }
    await page.screenshot({ path: o.screenshot, fullPage: true });
    console.log(`# screenshot written to ${o.screenshot}`);
  }

  const runs = Number(o['timing-runs']);
  if (runs > 0) {
    const t = [];
    for (let i = 0; i < runs; i++) {
      const p = await ctx.newPage();
      await p.goto(url.href, { waitUntil: 'domcontentloaded' });
      await waitUpdates(p, 1, 60000);
      await p.waitForFunction(() => document.documentElement.hasAttribute('data-first-paint-ms'), null, { timeout: 60000 });
      const r = await p.evaluate(() => Object.fromEntries(['data-first-render-ms', 'data-first-paint-ms', 'data-fetch-ms', 'data-render-ms']
        .map((a) => [a.slice(5, -3), Number(document.documentElement.getAttribute(a))])));
      await waitUpdates(p, 2, refresh * 1000 + 60000);
      r.update = Number(await p.evaluate(() => document.documentElement.getAttribute('data-render-ms')));
      t.push(r);
      await p.close();
    }
    const med = (k) => { const v = t.map((r) => r[k]).sort((a, b) => a - b); return v[Math.floor(v.length / 2)]; };
    const max = (k) => Math.max(...t.map((r) => r[k]));
    console.log(`# timing over ${runs} loads (ms, median / max): first render ${med('first-render')} / ${max('first-render')}, ` +
      `painted ${med('first-paint')} / ${max('first-paint')}, fetch ${med('fetch')} / ${max('fetch')}, ` +
      `first render script ${med('render')} / ${max('render')}, in-place refresh ${med('update')} / ${max('update')}`);
  }
}

main().catch((e) => { console.log(`FAIL - harness error: ${e && e.stack ? e.stack : e}`); console.log(`${passed} passed, ${failed + 1} failed`); process.exit(1); });
