// portmap.js: the live port map of portrange_exporter (issue 13), served at
// /portmap.js and loaded by portmap.html.
//
// Owns: polling api/v1/status (relative URL, same origin, so TLS and basic
// auth keep working; contract in notes/STATUS_API.md), one map per range,
// protocol and network namespace (built once, cells updated in place), the
// tooltip and keyboard focus on cells, the watched-ranges table and the
// listener table (sort, filter), the "Recent changes" list and the
// "Ephemeral ports" section. Every string from the JSON goes in through
// textContent or setAttribute, never as markup: process names are hostile.
// No inline style either (the CSP forbids it): only classes, data attributes
// and CSSOM properties.
//
// Hooks for tests and tools: cells carry data-port (or data-block-start and
// data-block-end) and data-state; maps carry data-range, data-protocol and
// data-netns. <html> gets data-updates (successful renders so far),
// data-fetch ("ok" or "error"), data-fetch-ms and data-render-ms (last
// update), data-first-render-ms and data-first-paint-ms (milliseconds since
// navigation start); the performance marks "portmap-first-render" and
// "portmap-first-paint" are set once.
'use strict';
(function () {
  // State codes, ranked: a block takes the highest code inside it (the
  // contract's order: unexpected > unknown > kernel not allowed >
  // expected, kernel allowed > in_use; reserved only beats free).
  const NAMES = ['free', 'reserved', 'in_use', 'expected', 'kernel', 'kernel', 'unknown', 'unexpected'];
  const KERNEL_OK = 4, KERNEL_BAD = 5, UNKNOWN = 6;
  const CODES = { free: 0, reserved: 1, in_use: 2, expected: 3, unknown: 6, unexpected: 7 };
  const BLOCK_OVER = 4096; // ranges with more ports are drawn in blocks
  const MAX_BLOCKS = 1024;
  const MAX_ROWS = 500; // listener rows (owners in a range) shown at once, unexpected first; the filter narrows
  const $ = (id) => document.getElementById(id);
  const root = document.documentElement;

  function codeOf(u) {
    if (u.state === 'kernel') return u.allowed === true ? KERNEL_OK : KERNEL_BAD;
    const c = CODES[u.state];
    return c === undefined ? UNKNOWN : c; // a state we do not know is not "fine"
  }
  function stateText(code) {
    if (code === KERNEL_OK) return 'kernel, allowed';
    if (code === KERNEL_BAD) return 'kernel, not allowed';
    return NAMES[code].replace('_', ' ');
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function str(v) { return v === null || v === undefined ? '' : String(v); }
  // `1 socket`, `2 sockets`: a count with its noun.
  function count(n, noun) { return `${str(n)} ${noun}${n === 1 ? '' : 's'}`; }
  // Every time on the page in one format, UTC to the second
  // (2026-12-07T12:47:35Z), whether the server sent it (RFC 3339, with or
  // without milliseconds) or the browser took it.
  function when(t) {
    const d = t instanceof Date ? t : new Date(str(t));
    return isNaN(d.getTime()) ? str(t) : d.toISOString().replace(/\.\d+Z$/, 'Z');
  }

  // ---- one range's map -------------------------------------------------
  class RangeView {
    constructor(r, id) {
      this.sig = JSON.stringify(r.intervals);
      this.iv = (Array.isArray(r.intervals) ? r.intervals : []).filter((v) => Array.isArray(v) &&
        Number.isInteger(v[0]) && Number.isInteger(v[1]) && v[0] >= 0 && v[0] <= v[1] && v[1] <= 65535).sort((x, y) => x[0] - y[0]);
      this.off = []; // index of each interval's first port
      let n = 0;
      for (const [a, b] of this.iv) { this.off.push(n); n += b - a + 1; }
      this.n = n;
      this.size = 1;
      if (n > BLOCK_OVER) { this.size = 16; while (Math.ceil(n / this.size) > MAX_BLOCKS) this.size *= 2; }
      this.codes = new Uint8Array(n);
      this.owners = new Map(); // index -> entry of "used"
      this.build(r, id);
    }
    portAt(i) {
      let k = this.off.length - 1;
      while (k > 0 && this.off[k] > i) k--;
      return this.iv[k][0] + (i - this.off[k]);
    }
    indexOf(port) {
      let lo = 0, hi = this.iv.length - 1;
      while (lo <= hi) {
        const m = (lo + hi) >> 1, [a, b] = this.iv[m];
        if (port < a) hi = m - 1; else if (port > b) lo = m + 1; else return this.off[m] + port - a;
      }
      return -1;
    }
    build(r, id) {
      const sec = this.section = el('section', 'range');
      sec.id = id;
      const h = el('h2');
      h.id = id + '-title';
      sec.setAttribute('aria-labelledby', h.id);
      h.append(el('span', 'name', str(r.range)), ' ', el('span', 'tag', str(r.protocol)),
        ' ', el('span', 'tag', str(r.spec)));
      if (r.netns !== undefined && r.netns !== null) h.append(' ', el('span', 'tag', 'netns ' + str(r.netns)));
      const stats = el('dl', 'stats');
      this.stat = {};
      for (const [key, label, cls] of [['ports', 'Ports', ''], ['in_use', 'In use', ''], ['free', 'Free', ''],
        ['unexpected', 'Unexpected', 'bad'], ['unknown', 'Unknown owner', 'minor'],
        ['unattributed', 'Unattributed', 'minor'], ['ephemeral_overlap', 'Ephemeral overlap', 'minor']]) {
        const d = el('div', cls);
        d.append(el('dt', '', label), this.stat[key] = el('dd'));
        stats.append(d);
      }
      const note = el('p', 'map-note', this.size === 1 ? 'One cell per port.'
        : `Blocks of ${this.size} ports; a block shows the worst state inside.`);
      const map = this.map = el('div', this.size === 1 ? 'map' : 'map blocks');
      map.setAttribute('data-range', str(r.range));
      map.setAttribute('data-protocol', str(r.protocol));
      if (r.netns !== undefined && r.netns !== null) map.setAttribute('data-netns', str(r.netns));
      map.setAttribute('role', 'group');
      map.setAttribute('aria-label', `Port map of ${str(r.range)} ${str(r.protocol)}; arrow keys move between cells`);
      const cols = this.cols = this.size === 1 ? Math.min(50, Math.max(this.n, 1)) : 32;
      map.style.setProperty('--cols', String(cols));
      const frag = document.createDocumentFragment();
      this.cells = [];
      this.starts = []; // first index of each cell
      for (let k = 0; k < this.iv.length; k++) {
        const [a, b] = this.iv[k];
        for (let p = a; p <= b; p += this.size) {
          const c = el('span', 'cell');
          if (this.size === 1) c.setAttribute('data-port', String(p));
          else {
            c.setAttribute('data-block-start', String(p));
            c.setAttribute('data-block-end', String(Math.min(p + this.size - 1, b)));
          }
          c.setAttribute('data-state', 'free');
          if (p === a && k > 0) c.classList.add('gap'); // a new interval starts here
          if (this.cells.length % cols === 0) frag.append(el('span', 'row-label', String(p)));
          this.starts.push(this.off[k] + p - a);
          this.cells.push(c);
          frag.append(c);
        }
      }
      this.starts.push(this.n);
      this.shown = new Int8Array(this.cells.length); // code shown per cell (0 = free)
      map.append(frag);
      this.focusIdx = 0;
      if (this.cells.length) this.cells[0].tabIndex = 0;
      // check's WARNING for ports outgoing connections can take, with the fix.
      this.overlapNote = el('p', 'banner warning overlap-note');
      this.overlapNote.hidden = true;
      sec.append(h, stats, this.overlapNote, note, map);
      wireMap(this);
    }
    update(r, probed = []) {
      const codes = this.codes;
      const hit = this.probed = new Map();
      for (const p of probed) { const i = this.indexOf(p.port); if (i >= 0) hit.set(i, p.packets); }
      codes.fill(0);
      this.owners.clear();
      const lo = this.n ? this.iv[0][0] : 0, hi = this.n ? this.iv[this.iv.length - 1][1] : -1;
      for (const [a, b] of Array.isArray(r.reserved) ? r.reserved : []) {
        for (let p = Math.max(a, lo); p <= b && p <= hi; p++) { const i = this.indexOf(p); if (i >= 0) codes[i] = 1; }
      }
      for (const u of Array.isArray(r.used) ? r.used : []) {
        const i = this.indexOf(u.port);
        if (i < 0) continue;
        codes[i] = codeOf(u);
        this.owners.set(i, u);
      }
      for (let c = 0; c < this.cells.length; c++) {
        let worst = 0;
        for (let i = this.starts[c], e = this.starts[c + 1]; i < e; i++) if (codes[i] > worst) worst = codes[i];
        if (this.shown[c] !== worst) {
          this.shown[c] = worst;
          const cell = this.cells[c];
          cell.setAttribute('data-state', NAMES[worst]);
          if (worst === KERNEL_OK || worst === KERNEL_BAD) cell.setAttribute('data-allowed', String(worst === KERNEL_OK));
          else cell.removeAttribute('data-allowed');
        }
        let probedHere = false;
        for (let i = this.starts[c], e = this.starts[c + 1]; i < e && !probedHere; i++) probedHere = hit.has(i);
        this.cells[c].toggleAttribute('data-probed', probedHere);
      }
      const fix = str(r.ephemeral_fix);
      const overlap = typeof r.ephemeral_overlap === 'number' && r.ephemeral_overlap > 0;
      const noteText = overlap ? `WARNING: ${count(r.ephemeral_overlap, 'port')} of this range ${r.ephemeral_overlap === 1 ? 'is' : 'are'} in the ` +
        `ephemeral port range, where outgoing connections can take ${r.ephemeral_overlap === 1 ? 'it' : 'them'}` + (fix ? ` (${fix})` : '') : '';
      if (this.overlapNote.textContent !== noteText) this.overlapNote.textContent = noteText;
      this.overlapNote.hidden = !overlap;
      this.stat.ephemeral_overlap.parentNode.classList.toggle('warn', overlap);
      for (const k in this.stat) {
        const v = r[k];
        this.stat[k].textContent = v === null || v === undefined ? (k === 'ephemeral_overlap' ? 'unknown' : '–') : str(v);
        this.stat[k].parentNode.classList.toggle('nonzero', typeof v === 'number' && v > 0);
      }
    }
    describe(c) {
      const s = this.starts[c], e = this.starts[c + 1];
      if (this.size === 1) {
        const u = this.owners.get(s), code = this.codes[s];
        let t = `port ${this.portAt(s)}: ${stateText(code)}`;
        if (code === 1) t += ' (the platform will not let it be bound)';
        if (u && str(u.owner)) t += `; ${str(u.owner)}`;
        if (u && str(u.since)) t += `; since ${when(u.since)}`;
        if (this.probed && this.probed.has(s)) t += `; probed: ${this.probed.get(s)} packets in the last minute that no socket took`;
        return t;
      }
      const count = new Array(NAMES.length).fill(0), owners = [];
      for (let i = s; i < e; i++) {
        count[this.codes[i]]++;
        const u = this.owners.get(i);
        if (u && str(u.owner) && owners.length < 3) owners.push(`${u.port} ${str(u.owner)}`);
      }
      const inUse = e - s - count[0] - count[1];
      const parts = [];
      for (let k = NAMES.length - 1; k >= 2; k--) if (count[k]) parts.push(`${count[k]} ${stateText(k)}`);
      let t = `ports ${this.portAt(s)}–${this.portAt(e - 1)}: ${inUse} of ${e - s} in use`;
      if (parts.length) t += ` (${parts.join(', ')})`;
      if (count[1]) t += `, ${count[1]} reserved`;
      t += `; worst: ${stateText(this.shown[c])}`;
      if (owners.length) t += `; ${owners.join('; ')}${inUse > owners.length ? '; …' : ''}`;
      return t;
    }
  }

  // ---- tooltip and keyboard ------------------------------------------------
  const tip = $('tooltip');
  let tipView = null, tipCell = -1;
  function showTip(view, c) {
    const cell = view.cells[c];
    if (!cell) return;
    tipView = view; tipCell = c;
    tip.textContent = view.describe(c);
    tip.hidden = false;
    const r = cell.getBoundingClientRect(), w = tip.offsetWidth;
    tip.style.left = Math.max(4, Math.min(r.left, window.innerWidth - w - 4)) + 'px';
    const above = r.top - tip.offsetHeight - 6; // above the cell, so the next rows stay visible
    tip.style.top = (above >= 4 ? above : r.bottom + 6) + 'px';
    if (document.activeElement === cell) { cell.setAttribute('role', 'img'); cell.setAttribute('aria-label', tip.textContent); }
  }
  function hideTip() { tip.hidden = true; tipView = null; tipCell = -1; }
  function wireMap(view) {
    const map = view.map;
    const idx = (t) => view.cells.indexOf(t);
    map.addEventListener('mouseover', (ev) => {
      if (ev.target.classList.contains('cell')) showTip(view, idx(ev.target));
    });
    map.addEventListener('mouseleave', () => {
      if (map.contains(document.activeElement)) showTip(view, view.focusIdx); else hideTip();
    });
    map.addEventListener('click', (ev) => {
      if (ev.target.classList.contains('cell')) moveFocus(view, idx(ev.target));
    });
    map.addEventListener('focusin', (ev) => { if (ev.target.classList.contains('cell')) showTip(view, idx(ev.target)); });
    map.addEventListener('focusout', (ev) => {
      ev.target.removeAttribute('aria-label');
      ev.target.removeAttribute('role');
      if (!map.contains(ev.relatedTarget)) hideTip();
    });
    map.addEventListener('keydown', (ev) => {
      const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -view.cols, ArrowDown: view.cols,
        PageUp: -view.cols * 10, PageDown: view.cols * 10 }[ev.key];
      let to;
      if (step !== undefined) to = view.focusIdx + step;
      else if (ev.key === 'Home') to = 0;
      else if (ev.key === 'End') to = view.cells.length - 1;
      else if (ev.key === 'Escape') { hideTip(); return; }
      else return;
      ev.preventDefault();
      moveFocus(view, Math.max(0, Math.min(view.cells.length - 1, to)));
    });
  }
  function moveFocus(view, c) {
    if (c < 0 || c >= view.cells.length) return;
    view.cells[view.focusIdx].removeAttribute('tabindex');
    view.focusIdx = c;
    view.cells[c].tabIndex = 0;
    view.cells[c].focus();
    showTip(view, c);
  }
  window.addEventListener('scroll', () => { if (tipView) showTip(tipView, tipCell); }, { passive: true });

  // ---- the maps and the ranges table ---------------------------------------
  const views = new Map(); // key -> RangeView
  let nextId = 0;
  function renderRanges(data) {
    const maps = $('maps'), wanted = [], seen = new Set();
    for (const r of Array.isArray(data.ranges) ? data.ranges : []) {
      const key = JSON.stringify([r.range, r.protocol, r.netns ?? null]);
      if (seen.has(key)) continue;
      seen.add(key);
      let v = views.get(key);
      if (v && v.sig !== JSON.stringify(r.intervals)) { v.section.remove(); v = null; }
      if (!v) { v = new RangeView(r, 'map-' + nextId++); views.set(key, v); }
      // --collector.traffic: closed ports probed in the last minute (the
      // exporter's own namespace only).
      const tr = data.traffic && Array.isArray(data.traffic.ranges)
        ? data.traffic.ranges.find(t => t.range === r.range && t.protocol === r.protocol && (r.netns ?? 'host') === 'host')
        : null;
      v.update(r, tr && Array.isArray(tr.probed) ? tr.probed : []);
      wanted.push([r, v]);
    }
    for (const [key, v] of views) if (!seen.has(key)) { v.section.remove(); views.delete(key); }
    // Keep the JSON's order; move sections only when it changed (moving drops focus).
    const order = wanted.map(([, v]) => v.section);
    if (order.some((s, i) => maps.children[i] !== s) || maps.children.length !== order.length) maps.replaceChildren(...order);
    if (tipView && tipView.section.isConnected) showTip(tipView, tipCell); else if (tipView) hideTip();

    const rows = wanted.map(([r, v]) => {
      const tr = el('tr'), a = el('a', '', str(r.range));
      a.href = '#' + v.section.id;
      const name = el('td'); name.append(a);
      tr.append(name, el('td', '', str(r.protocol)), el('td', 'netns-col', str(r.netns)), el('td', '', str(r.spec)),
        el('td', 'num', str(r.ports)), el('td', 'num', str(r.in_use)), el('td', 'num', str(r.free)),
        el('td', 'num' + (r.unexpected > 0 ? ' bad' : ''), str(r.unexpected)));
      return tr;
    });
    if (!rows.length) { const tr = el('tr'), td = el('td', 'empty', 'No ranges are configured.'); td.colSpan = 8; tr.append(td); rows.push(tr); }
    $('ranges').tBodies[0].replaceChildren(...rows);
  }

  // ---- the listener table ----------------------------------------------------
  // One row per owner and range (as check's long output): range, protocol,
  // namespace, process, user and verdict; the row counts the listeners and
  // names the first addresses, so fifty listeners of one process never hide
  // another's.
  const COLS = ['range', 'protocol', 'netns', 'address', 'port', 'process', 'pid', 'user', 'expected', 'count'];
  const KIND_RANK = { unexpected: 0, unknown: 1, kernel: 2, expected: 3 };
  const FIRST_ADDRESSES = 3;
  let listeners = [], sortKey = null, sortDir = 1;
  const pool = [];
  function kindOf(l) {
    if (l.kernel === true) return 'kernel';
    const e = str(l.expected);
    return e === 'true' ? 'expected' : e === 'false' ? 'unexpected' : 'unknown';
  }
  function endpointOf(l) {
    const a = str(l.address);
    return (a.includes(':') ? `[${a}]` : a) + ':' + str(l.port);
  }
  function groupsOf(ls) {
    const byKey = new Map(), out = [];
    for (const l of ls) {
      const k = JSON.stringify([l.range, l.protocol, l.netns ?? null, l.process, l.user, l.expected, l.kernel === true, l.exe_gone === true]);
      let g = byKey.get(k);
      if (!g) { g = { l, members: [], i: out.length }; byKey.set(k, g); out.push(g); }
      g.members.push(l);
    }
    return out;
  }
  function cellText(g, k) {
    const l = g.l, ms = g.members;
    if (k === 'process' && l.exe_gone === true) return str(l.process) + ' (executable gone)';
    if (k === 'count') return String(ms.length);
    if (k === 'port') return String(Math.min(...ms.map((m) => Number(m.port))));
    if (k === 'address') {
      const shown = ms.slice(0, FIRST_ADDRESSES).map(endpointOf).join(', ');
      return ms.length > FIRST_ADDRESSES ? `${shown} and ${ms.length - FIRST_ADDRESSES} more` : shown;
    }
    if (k === 'pid') {
      const pids = [...new Set(ms.map((m) => m.pid).filter((p) => p !== null && p !== undefined))];
      return pids.length > 1 ? `${pids.length} pids` : str(pids[0]);
    }
    if (k !== 'expected') return str(l[k]);
    const e = str(l.expected);
    if (l.kernel === true) return e === 'true' ? 'kernel, allowed' : 'kernel, not allowed';
    return e === 'true' ? 'yes' : e === 'false' ? 'NO' : e || 'unknown';
  }
  function renderListeners() {
    const q = $('filter').value.trim().toLowerCase();
    let rows = groupsOf(listeners).map((g) => ({ g, i: g.i, kind: kindOf(g.l), text: COLS.map((k) => cellText(g, k)),
      // The filter also finds a group by any of its addresses, shown or not.
      all: g.members.map(endpointOf).join(' ') }));
    if (q) rows = rows.filter((r) => r.text.some((t) => t.toLowerCase().includes(q)) || r.all.toLowerCase().includes(q));
    if (sortKey) {
      const k = COLS.indexOf(sortKey);
      rows.sort((x, y) => {
        let d;
        if (sortKey === 'port' || sortKey === 'count') d = Number(x.text[k]) - Number(y.text[k]);
        else if (sortKey === 'pid') d = (Number(x.text[k]) || -1) - (Number(y.text[k]) || -1);
        else if (sortKey === 'expected') d = KIND_RANK[x.kind] - KIND_RANK[y.kind];
        else d = x.text[k].localeCompare(y.text[k]);
        return d * sortDir || x.i - y.i;
      });
    }
    const shown = rows.slice(0, MAX_ROWS), body = $('listeners').tBodies[0];
    shown.forEach((r, i) => {
      let tr = pool[i];
      if (!tr) {
        tr = pool[i] = el('tr');
        for (const k of COLS) tr.append(el('td', (k === 'netns' ? 'netns-col' : '') + (k === 'port' || k === 'pid' || k === 'count' ? 'num' : '')));
      }
      if (tr.className !== r.kind) tr.className = r.kind;
      r.text.forEach((t, j) => { if (tr.cells[j].textContent !== t) tr.cells[j].textContent = t; });
      if (tr.parentNode !== body) body.append(tr);
    });
    for (let i = shown.length; i < pool.length; i++) pool[i].remove();
    const total = groupsOf(listeners).length;
    let msg = `${count(listeners.length, 'listener')} of ${count(total, 'owner')} in a range`;
    if (q) msg = `${rows.length} of ${count(total, 'row')} match`;
    if (rows.length > MAX_ROWS) msg += `; showing the first ${MAX_ROWS}`;
    $('listener-count').textContent = msg;
  }
  for (const th of $('listeners').tHead.rows[0].cells) {
    th.querySelector('button').addEventListener('click', () => {
      const k = th.getAttribute('data-key');
      // ascending, descending, then back to the server's order (unexpected first)
      if (sortKey !== k) { sortKey = k; sortDir = 1; } else if (sortDir > 0) sortDir = -1; else sortKey = null;
      for (const o of th.parentNode.cells) o.setAttribute('aria-sort', 'none');
      if (sortKey) th.setAttribute('aria-sort', sortDir > 0 ? 'ascending' : 'descending');
      renderListeners();
    });
  }
  $('filter').addEventListener('input', renderListeners);

  // ---- recent changes (the listener trail) ------------------------------------
  function eventText(e) {
    const where = e.count > 1 ? `${e.count} ${str(e.protocol)} listeners` :
      `${str(e.protocol)} ${str(e.address)}:${str(e.port)}`;
    let t = `${when(e.time)} ${str(e.kind).replace('_', ' ')}: ${where} in ${str(e.range)}`;
    if (e.netns !== null && e.netns !== undefined) t += ` (netns ${str(e.netns)})`;
    t += ` by ${str(e.process)}`;
    if (e.pid !== null && e.pid !== undefined) t += ` (pid ${str(e.pid)}, user ${str(e.user)})`;
    else t += ` (user ${str(e.user)})`;
    t += `, ${str(e.verdict)}`;
    if (e.previous_verdict) t += ` (was ${str(e.previous_verdict)})`;
    if (e.exe_gone === true) t += ', executable gone';
    if (e.cmdline) t += ` — ${str(e.cmdline)}`;
    return t;
  }
  // Command lines are withheld without authentication: one line says so
  // and why (the status document's cmdline_withheld), none per event.
  function renderWithheld(why) {
    const p = $('cmdline-withheld');
    const text = typeof why === 'string' ? `Command lines withheld: ${why}` : '';
    if (p.textContent !== text) p.textContent = text;
    p.hidden = !text;
  }
  function renderEvents(events) {
    const list = $('events');
    if (!Array.isArray(events)) return;
    const items = events.slice().reverse().map((e) => {
      const li = el('li', str(e.verdict) === 'expected' ? 'expected' : 'attention', eventText(e));
      li.setAttribute('data-seq', str(e.seq));
      li.setAttribute('data-kind', str(e.kind));
      return li;
    });
    if (!items.length) items.push(el('li', 'empty', 'No change recorded yet.'));
    list.replaceChildren(...items);
  }

  // ---- ephemeral ports (the dynamic range's headroom) --------------------------
  // One block per view (protocol, namespace): free ports toward the busiest
  // destination, TIME_WAIT, the top destinations and the top holders. A
  // view whose free_min is 0, below 20% of the range or unknown is marked
  // "attention". `ephemeral` null (collector off): the section stays hidden.
  function endpoint(addr, port) {
    const a = str(addr);
    return `${a.includes(':') ? `[${a}]` : a}:${str(port)}`;
  }
  function table(caption, heads, rows, empty) {
    const t = el('table', 'data'), head = el('tr'), body = el('tbody');
    t.append(el('caption', '', caption));
    heads.forEach(([h, num]) => { const th = el('th', num ? 'num' : '', h); th.scope = 'col'; head.append(th); });
    const thead = el('thead'); thead.append(head);
    for (const r of rows) {
      const tr = el('tr');
      r.forEach((v, i) => tr.append(el('td', heads[i][1] ? 'num' : '', str(v))));
      body.append(tr);
    }
    if (!rows.length) { const tr = el('tr'), td = el('td', 'empty', empty); td.colSpan = heads.length; tr.append(td); body.append(tr); }
    t.append(thead, body);
    return t;
  }
  function ephemeralView(v) {
    const ports = typeof v.ports === 'number' ? v.ports : null, free = v.free_min;
    const low = typeof free !== 'number' || free <= 0 || (ports !== null && free < ports * 0.2);
    const box = el('div', 'eph-view' + (low ? ' attention' : ''));
    box.setAttribute('data-protocol', str(v.protocol));
    if (v.netns !== undefined && v.netns !== null) box.setAttribute('data-netns', str(v.netns));
    const h = el('h3');
    h.append(el('span', 'name', str(v.protocol)));
    if (v.netns !== undefined && v.netns !== null) h.append(' ', el('span', 'tag', 'netns ' + str(v.netns)));
    h.append(' ', el('span', 'tag', 'range ' + str(v.range)));
    const dests = Array.isArray(v.destinations) ? v.destinations : [];
    let head = `${typeof free === 'number' ? free : 'unknown'} of ${ports === null ? 'unknown' : ports} ports free toward the busiest destination`;
    if (dests.length) head += ` (${endpoint(dests[0].address, dests[0].port)})`;
    if (typeof v.free_new === 'number') head += `, ${v.free_new} toward a new one`;
    // Without BPF a TCP port not known to be shared counts as gone for all.
    if (v.counting === 'conservative') head += '; counted conservatively (how each port was taken is unknown)';
    const states = v.sockets && typeof v.sockets === 'object' ? v.sockets : {};
    const tw = states.time_wait;
    const parts = Object.keys(states).filter((k) => k !== 'time_wait' && states[k] !== 0).map((k) => `${k.replace('_', ' ')} ${str(states[k])}`);
    let st = `${count(v.in_use, 'port')} in use; TIME_WAIT: ${count(typeof tw === 'number' ? tw : 0, 'socket')}`;
    if (parts.length) st += `; ${parts.join(', ')}`;
    if (typeof v.unattributed_sockets === 'number' && v.unattributed_sockets > 0) st += `; ${count(v.unattributed_sockets, 'socket')} without an owner`;
    const holder = (x) => (x ? `${str(x.process)} (user ${str(x.user)}, ${count(x.sockets, 'socket')})` : 'no owner known');
    const total = typeof v.destinations_total === 'number' ? v.destinations_total : dests.length;
    box.append(h, el('p', 'eph-headroom', head), el('p', 'eph-states', st),
      table(`Busiest destinations (top ${dests.length} of ${total})`,
        [['Destination'], ['Ports', true], ['Sockets', true], ['Top holder']],
        dests.map((d) => [endpoint(d.address, d.port), d.ports, d.sockets, holder(d.holder)]), 'No connected socket in the range.'),
      table('Top holders', [['Process'], ['User'], ['Sockets', true]],
        (Array.isArray(v.holders) ? v.holders : []).map((x) => [x.process, x.user, x.sockets]), 'No owned socket in the range.'));
    box.querySelectorAll('table')[0].classList.add('eph-destinations');
    box.querySelectorAll('table')[1].classList.add('eph-holders');
    return box;
  }
  function renderEphemeral(e) {
    const sec = $('ephemeral-section'), box = $('ephemeral');
    if (e === null || e === undefined || typeof e !== 'object') { sec.hidden = true; box.replaceChildren(); return; }
    sec.hidden = false;
    const out = [];
    if (e.error !== null && e.error !== undefined) {
      out.push(el('p', 'banner error eph-error', `The ephemeral collector failed: ${str(e.error)}`));
    }
    for (const v of Array.isArray(e.views) ? e.views : []) out.push(ephemeralView(v));
    if (!out.length) out.push(el('p', 'hint', 'No dynamic range reported.'));
    box.replaceChildren(...out);
  }

  // ---- polling ---------------------------------------------------------------
  const q = Number(new URLSearchParams(location.search).get('refresh'));
  const interval = q >= 1 && q <= 3600 ? q : Number(document.body.getAttribute('data-refresh-seconds')) || 5;
  const statusUrl = new URL('api/v1/status', location.href);
  statusUrl.username = ''; statusUrl.password = ''; // fetch refuses URLs with credentials
  let timer = 0, paused = false, busy = false, updates = 0, lastOk = null;
  $('interval').textContent = String(interval);

  function banner(text) { const b = $('banner'); b.textContent = text; b.hidden = !text; }
  function render(data, fetchMs) {
    const t0 = performance.now();
    const ex = data.exporter || {};
    if (ex.version !== undefined && $('version').textContent !== str(ex.version)) $('version').textContent = str(ex.version);
    if (ex.revision !== undefined && $('revision').textContent !== str(ex.revision)) $('revision').textContent = str(ex.revision);
    if (typeof ex.metrics_path === 'string' && ex.metrics_path.startsWith('/')) {
      $('metrics-link').setAttribute('href', '.' + ex.metrics_path);
      $('metrics-path').textContent = ex.metrics_path;
    }
    document.body.classList.toggle('netns-on', data.netns_collector === true);
    renderRanges(data);
    listeners = Array.isArray(data.listeners) ? data.listeners : [];
    renderListeners();
    renderEvents(data.events);
    renderWithheld(data.cmdline_withheld);
    renderEphemeral(data.ephemeral);
    const down = data.up === false;
    $('maps').classList.toggle('stale', down);
    banner(down ? `Sampling failed: ${str(data.error) || 'no reason given'}. The maps are not current.` : '');
    lastOk = new Date();
    const c = data.check && typeof data.check === 'object' ? data.check : null;
    const v = $('verdict');
    v.hidden = !c;
    if (c) {
      const text = `${str(c.status)}: ${str(c.summary)}`;
      if (v.textContent !== text) v.textContent = text;
      v.setAttribute('data-status', str(c.status).toLowerCase());
    }
    $('status').textContent = `Updated ${when(lastOk)} (collected ${when(data.collected_at)}` +
      (typeof data.duration_seconds === 'number' ? ` in ${(data.duration_seconds * 1000).toFixed(1)} ms)` : ')');
    updates++;
    root.setAttribute('data-updates', String(updates));
    root.setAttribute('data-fetch', 'ok');
    root.setAttribute('data-render-ms', (performance.now() - t0).toFixed(1));
    root.setAttribute('data-fetch-ms', fetchMs.toFixed(1));
    if (updates === 1) {
      performance.mark('portmap-first-render');
      root.setAttribute('data-first-render-ms', performance.now().toFixed(1));
      // After the next frame is painted: time to a visible map, layout included.
      requestAnimationFrame(() => setTimeout(() => {
        performance.mark('portmap-first-paint');
        root.setAttribute('data-first-paint-ms', performance.now().toFixed(1));
      }, 0));
    }
  }
  async function poll() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    const t0 = performance.now();
    try {
      const res = await fetch(statusUrl, { credentials: 'same-origin', cache: 'no-store',
        headers: { Accept: 'application/json' }, signal: AbortSignal.timeout(30000) });
      if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText}`.trim());
      const data = await res.json();
      render(data, performance.now() - t0);
    } catch (e) {
      root.setAttribute('data-fetch', 'error');
      $('maps').classList.add('stale');
      banner(`Could not fetch api/v1/status: ${e && e.message ? e.message : e}. ` +
        (lastOk ? `The maps show the data of ${when(lastOk)}.` : 'Nothing to show yet.'));
    } finally {
      busy = false;
      if (!paused) timer = setTimeout(poll, interval * 1000);
    }
  }
  $('pause').addEventListener('click', (ev) => {
    paused = !paused;
    ev.currentTarget.textContent = paused ? 'Resume' : 'Pause';
    ev.currentTarget.setAttribute('aria-pressed', String(paused));
    $('refresh-info').classList.toggle('paused', paused);
    if (paused) clearTimeout(timer); else poll();
  });
  poll();
})();
