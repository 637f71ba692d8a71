// fixture.mjs: writes api/v1/status fixtures (notes/STATUS_API.md format) and
// the matching scenario files for portmap.test.mjs, for the fixture server.
//
// usage: node fixture.mjs realistic OUT.json        the screenshot scenario
//        node fixture.mjs check DIR [--netns]       DIR/before.json, DIR/after.json, DIR/scenario.json;
//                                                   DIR/down.json (up false) and scenarios for error banners
//        node fixture.mjs size N DIR [--used F]     one range of N ports (F of them not free, default 0.1):
//                                                   DIR/status.json, DIR/scenario.json
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const HOSTILE = '<img src=x onerror=alert(1)>';
const HOSTILE_USER = '<script>window.__pwned=1</script>';

// A range: intervals, the used ports ({port, state, process?, pid?, user?, allowed?, owner?}) and reserved intervals.
function range(name, protocol, intervals, used, reserved = [], netns) {
  const ports = intervals.reduce((n, [a, b]) => n + b - a + 1, 0);
  used = [...used].sort((x, y) => x.port - y.port);
  const isReserved = (p) => reserved.some(([a, b]) => p >= a && p <= b);
  const reservedFree = reserved.reduce((n, [a, b]) => n + b - a + 1, 0) - used.filter((u) => isReserved(u.port)).length;
  const count = (s) => used.filter((u) => u.state === s).length;
  const r = {
    range: name, protocol, spec: intervals.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(','),
    intervals, ports, in_use: used.length, free: ports - used.length - reservedFree,
    unexpected: count('unexpected'), unknown: count('unknown'), unattributed: count('unknown'),
    // against Linux's default ip_local_port_range, 32768-60999
    ephemeral_overlap: intervals.reduce((n, [a, b]) => n + Math.max(0, Math.min(b, 60999) - Math.max(a, 32768) + 1), 0),
    used: used.map((u) => {
      const e = { port: u.port, state: u.state, owner: u.owner ?? (u.process ? `${u.process} (pid ${u.pid}, user ${u.user})` : '') };
      if (u.state === 'kernel') e.allowed = !!u.allowed;
      return e;
    }),
    reserved,
  };
  if (netns !== undefined) r.netns = netns;
  return r;
}

function listeners(ranges) {
  const rank = { unexpected: 0, unknown: 1, kernel: 2, expected: 3 };
  const out = [];
  for (const r of ranges) {
    for (const u of r._used) {
      if (!(u.state in rank)) continue;
      const l = { range: r.range, protocol: r.protocol, address: u.address ?? '0.0.0.0', port: u.port,
        process: u.state === 'kernel' ? '' : (u.process ?? ''), pid: u.pid ?? null, user: u.user ?? '',
        expected: u.state === 'expected' || (u.state === 'kernel' && u.allowed) ? 'true' : u.state === 'unknown' ? 'unknown' : 'false',
        kernel: u.state === 'kernel', _rank: rank[u.state] };
      if (r.netns !== undefined) l.netns = r.netns;
      out.push(l);
    }
  }
  out.sort((a, b) => a._rank - b._rank || a.port - b.port);
  return out.map(({ _rank, ...l }) => l);
}

function status(defs, { netns = false, up = true } = {}) {
  const ranges = defs.map((d) => Object.assign(range(d.name, d.protocol, d.intervals, d.used, d.reserved, netns ? d.netns ?? 'host' : undefined), { _used: d.used }));
  const doc = {
    exporter: { version: '0.2.0', revision: 'abc1234', metrics_path: '/metrics' },
    collected_at: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), duration_seconds: 0.0042,
    up, error: up ? null : 'sock_diag: Operation not permitted', netns_collector: netns,
    ranges: ranges.map(({ _used, ...r }) => r), listeners: listeners(ranges),
  };
  return JSON.stringify(doc, null, 1) + '\n';
}

const ctx = (port, pid) => ({ port, state: 'expected', process: 'CtxGfx', pid, user: 'citrix', address: '10.0.4.17' });
const mosh = (port, pid, user) => ({ port, state: 'expected', process: 'mosh-server', pid, user });
function framehawkUdp(extra = []) {
  return { name: 'framehawk', protocol: 'udp', intervals: [[3224, 3324]], used: [
    ctx(3224, 2812), ctx(3225, 2812), ctx(3226, 3190), ctx(3227, 3377), ctx(3229, 4021),
    { port: 3240, state: 'unexpected', process: 'socat', pid: 9911, user: 'root' },
    { port: 3250, state: 'unknown', owner: 'unknown owner (uid 1001)', user: '1001' },
    { port: 3300, state: 'kernel', owner: 'kernel (vxlan0)', allowed: false },
    ...extra] };
}
const moshUdp = { name: 'mosh', protocol: 'udp', intervals: [[60000, 61000]], used: [
  mosh(60001, 12001, 'alice'), mosh(60002, 12877, 'bob'), mosh(60003, 13020, 'carol'), mosh(60004, 13544, 'alice')] };

// The check scenario: states before and after a change, hostile names, a
// reserved stretch (as on Windows) and a range big enough to be drawn in blocks.
function check(dir, netns) {
  const hostile = { port: 3260, state: 'unexpected', process: HOSTILE, pid: 4242, user: HOSTILE_USER };
  const fhTcp = { name: 'framehawk', protocol: 'tcp', intervals: [[3224, 3324]], reserved: [[3300, 3309]],
    used: [ctx(3305, 2812), { port: 3230, state: 'in_use', owner: '' }] };
  const coturn = (after) => ({ name: 'coturn', protocol: 'udp', intervals: [[49152, 65535]], netns: 'tenant-a', used: [
    { port: 49152, state: 'expected', process: 'turnserver', pid: 700, user: 'turnserver' },
    ...(after ? [] : [{ port: 50000, state: 'unexpected', process: 'nc', pid: 31337, user: 'nobody' }]),
    { port: 65000, state: 'in_use', owner: '' },
    { port: 65535, state: 'kernel', owner: 'kernel (wireguard)', allowed: true }] });
  const before = [framehawkUdp([{ port: 3228, state: 'in_use', owner: '' }, hostile]), fhTcp, moshUdp, coturn(false)];
  const after = [framehawkUdp([{ port: 3241, state: 'unexpected', process: 'nc', pid: 5150, user: 'nobody' }, hostile]),
    fhTcp, moshUdp, coturn(true)];
  const expect = (defs) => defs.map((d) => {
    const m = { range: d.name, protocol: d.protocol, ports: {}, others: 'free' };
    if (netns) m.netns = d.netns ?? 'host';
    for (const [a, b] of d.reserved ?? []) for (let p = a; p <= b; p++) m.ports[p] = 'reserved';
    for (const u of d.used) m.ports[u.port] = u.state;
    return m;
  });
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'before.json'), status(before, { netns }));
  writeFileSync(path.join(dir, 'after.json'), status(after, { netns }));
  writeFileSync(path.join(dir, 'down.json'), status(before, { netns, up: false }));
  writeFileSync(path.join(dir, 'down.scenario.json'), JSON.stringify({ banner: 'Sampling failed: sock_diag: Operation not permitted' }) + '\n');
  writeFileSync(path.join(dir, 'unreachable.scenario.json'), JSON.stringify({ banner: 'Could not fetch api/v1/status: HTTP 503' }) + '\n');
  writeFileSync(path.join(dir, 'scenario.json'), JSON.stringify({
    maps: expect(before), text: [HOSTILE, HOSTILE_USER], hover: { range: 'framehawk', protocol: 'udp', port: 3240, owner: 'socat' },
    after: { maps: expect(after) },
  }, null, 1) + '\n');
}

// N ports, a fraction of them taken, in a deterministic mix of states.
function size(n, dir, frac) {
  const start = n >= 65535 ? 1 : n > 1000 ? 10000 : 3224;
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const used = [];
  for (let p = start; p < start + n; p++) {
    if (rnd() >= frac) continue;
    const x = rnd();
    if (x < 0.6) used.push({ port: p, state: 'expected', process: 'worker', pid: 1000 + (p % 500), user: 'svc' });
    else if (x < 0.85) used.push({ port: p, state: 'in_use', owner: '' });
    else if (x < 0.9) used.push({ port: p, state: 'unexpected', process: 'socat', pid: 9000 + (p % 50), user: 'root' });
    else if (x < 0.95) used.push({ port: p, state: 'unknown', owner: '' });
    else used.push({ port: p, state: 'kernel', owner: 'kernel (vxlan0)', allowed: x < 0.975 });
  }
  const def = { name: `size${n}`, protocol: 'udp', intervals: [[start, start + n - 1]], used };
  const ports = {};
  for (const u of used) ports[u.port] = u.state;
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'status.json'), status([def]));
  writeFileSync(path.join(dir, 'scenario.json'), JSON.stringify({ maps: [{ range: def.name, protocol: 'udp', ports, others: 'free' }] }) + '\n');
}

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'realistic' && args[0]) writeFileSync(args[0], status([framehawkUdp(), moshUdp]));
else if (cmd === 'check' && args[0]) check(args[0], args.includes('--netns'));
else if (cmd === 'size' && Number(args[0]) > 0 && args[1]) {
  const i = args.indexOf('--used');
  size(Number(args[0]), args[1], i >= 0 ? Number(args[i + 1]) : 0.1);
} else {
  console.error('usage: node fixture.mjs realistic OUT.json | check DIR [--netns] | size N DIR [--used F]');
  process.exit(2);
}
