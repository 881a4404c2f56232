// Axon's console: one hand-written module, no framework. It talks to the JSON API through
// /app/api/ (the session cookie plus the page's CSRF token in a header), keeps one live
// WebSocket with a lost-connection notice that recovers by itself, and draws charts as SVG.
// Every string comes from the page (#axon-text, from the server's catalogs).

const body = document.body;
const csrf = body.dataset.csrf || '';
const role = body.dataset.role || '';
const lang = document.documentElement.lang || 'es';
const text = JSON.parse(document.getElementById('axon-text')?.textContent || '{}');
const t = (key) => text[key] || key;
const canOperate = role === 'admin' || role === 'operator';

// ---- API -----------------------------------------------------------------------------

class Failure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, { json, raw, headers = {}, signal } = {}) {
  const h = { 'x-axon-csrf': csrf, ...headers };
  let payload = raw;
  if (json !== undefined) {
    h['content-type'] = 'application/json';
    payload = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch('/app/api/' + path, { method, headers: h, body: payload, signal, credentials: 'same-origin' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new Failure(0, t('js.offline'));
  }
  if (res.status === 401) {
    // The session ended (sign-out, password change, disabled account): back to sign-in.
    location.assign('/app');
    throw new Failure(401, t('js.signed_out'));
  }
  if (!res.ok) {
    let message = res.statusText;
    try {
      message = (await res.json()).error.message;
    } catch (_) { /* not JSON */ }
    throw new Failure(res.status, message);
  }
  return res;
}

async function getJson(path) {
  return (await call('GET', path)).json();
}

// Reads a text/event-stream answer, calling `on(event, data)` for each event.
async function events(res, on) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) on(name, data.join('\n'));
    }
  }
}

// ---- Small DOM helpers -----------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const $ = (sel, root = document) => root.querySelector(sel);

function toast(message, kind = 'ok') {
  const box = $('#toast');
  if (!box) return;
  const item = el('p', { class: 'toast ' + kind, text: message });
  box.append(item);
  setTimeout(() => item.remove(), 6000);
}

// Marks a control busy while `work` runs: disabled, aria-busy, a status line.
async function busy(button, status, work) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  if (status) status.textContent = t('js.working');
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    if (status && status.textContent === t('js.working')) status.textContent = '';
  }
}

const numbers = new Intl.NumberFormat(lang, { maximumFractionDigits: 1 });
const times = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'medium' });

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return numbers.format(n) + ' ' + units[i];
}

const formats = {
  pct: (v) => numbers.format(v) + ' %',
  bytes,
  rate: (v) => bytes(v) + '/s',
  celsius: (v) => numbers.format(v) + ' °C',
  watts: (v) => numbers.format(v) + ' W',
};

// ---- Live updates ----------------------------------------------------------------------

// One WebSocket for the page; reconnects with backoff and shows a notice while it is down.
function live(subscription, on) {
  const notice = $('#connection');
  let delay = 500;
  let lost = false;
  const open = () => {
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const ws = new WebSocket(scheme + location.host + '/app/api/ws', 'axon.v1');
    ws.addEventListener('open', () => {
      ws.send(JSON.stringify(subscription));
    });
    ws.addEventListener('message', (m) => {
      let event;
      try {
        event = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      if (event.type === 'subscribed') {
        delay = 500;
        if (notice) notice.hidden = true;
        body.dataset.live = 'up';
        on({ type: 'connected', again: lost });
        lost = false;
        return;
      }
      on(event);
    });
    ws.addEventListener('close', (e) => {
      if (e.code === 4401) {
        location.assign('/app');
        return;
      }
      lost = true;
      body.dataset.live = 'down';
      if (notice) notice.hidden = false;
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    });
  };
  open();
}

// ---- Charts ----------------------------------------------------------------------------

const W = 600;
const H = 120;

// A chart: an SVG with one polyline per series, a scale label and the latest value.
class Chart {
  constructor(figure) {
    this.figure = figure;
    this.lines = [...figure.querySelectorAll('polyline')];
    this.series = this.lines.map(() => []);
    this.format = formats[figure.dataset.format] || formats.pct;
    this.fixedMax = figure.dataset.max ? Number(figure.dataset.max) : null;
    this.value = $('.value', figure);
    this.scale = $('.scale', figure);
    this.svg = $('svg', figure);
    this.caption = $('figcaption .name', figure)?.textContent || '';
  }

  clear() {
    this.series = this.lines.map(() => []);
  }

  push(ts, values) {
    values.forEach((v, i) => {
      if (v !== null && v !== undefined && Number.isFinite(v) && this.series[i]) this.series[i].push([ts, v]);
    });
  }

  draw(from, to) {
    const span = Math.max(1, to - from);
    let max = this.fixedMax;
    if (max === null) {
      max = 1;
      for (const s of this.series) for (const [ts, v] of s) if (ts >= from && v > max) max = v;
      max *= 1.15;
    }
    this.series.forEach((s, i) => {
      // Keep what the window shows, and one point before it so the line reaches the edge.
      while (s.length > 2 && s[1][0] < from) s.shift();
      const points = s
        .map(([ts, v]) => ((ts - from) / span * W).toFixed(1) + ',' + (H - Math.min(v, max) / max * H).toFixed(1))
        .join(' ');
      this.lines[i].setAttribute('points', points);
    });
    if (this.scale) this.scale.textContent = this.format(max);
    const latest = this.series.map((s) => (s.length ? this.format(s[s.length - 1][1]) : '—')).join(' / ');
    if (this.value) this.value.textContent = latest;
    this.svg.setAttribute('aria-label', this.caption + ': ' + latest);
    this.figure.dataset.points = String(this.series.reduce((n, s) => n + s.length, 0));
  }
}

function pointValues(p) {
  const pct = (used, total) => (total ? (used / total) * 100 : null);
  return {
    cpu: [p.cpu_pct],
    mem: [pct(p.mem_used_bytes, p.mem_total_bytes)],
    net: [p.net_rx_bps, p.net_tx_bps],
    disk: [p.disk_read_bps ?? null, p.disk_write_bps ?? null],
    gpu: [p.gpu_util_pct ?? null, pct(p.gpu_mem_used_bytes, p.gpu_mem_total_bytes)],
  };
}

function sampleValues(s) {
  const net = s.net.filter((n) => n.iface !== 'lo');
  const sum = (list, f) => list.reduce((a, x) => a + (f(x) ?? 0), 0);
  const gpus = s.gpus || [];
  const util = gpus.filter((g) => g.util_pct !== null && g.util_pct !== undefined);
  const memUsed = sum(gpus, (g) => g.mem_used_bytes);
  const memTotal = sum(gpus, (g) => g.mem_total_bytes);
  const disks = s.disks.filter((d) => d.read_bps !== null && d.read_bps !== undefined);
  const seen = new Set();
  const devices = disks.filter((d) => !seen.has(d.device) && seen.add(d.device));
  return {
    cpu: [s.cpu.total_pct],
    mem: [s.memory.total ? (s.memory.used / s.memory.total) * 100 : null],
    net: [sum(net, (n) => n.rx_bps), sum(net, (n) => n.tx_bps)],
    disk: devices.length ? [sum(devices, (d) => d.read_bps), sum(devices, (d) => d.write_bps)] : [null, null],
    gpu: util.length
      ? [sum(util, (g) => g.util_pct) / util.length, memTotal ? (memUsed / memTotal) * 100 : null]
      : [null, null],
  };
}

function hostPage() {
  const host = body.dataset.host;
  const charts = {};
  for (const f of document.querySelectorAll('figure.chart')) charts[f.dataset.chart] = new Chart(f);
  const ranges = document.querySelectorAll('[data-range]');
  let range = '15m';
  let spanMs = 15 * 60 * 1000;
  const spans = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };
  let frame = 0;
  const redraw = () => {
    if (frame) return;
    // One draw per animation frame at most, and none while the tab is hidden.
    frame = requestAnimationFrame(() => {
      frame = 0;
      const now = Date.now();
      for (const c of Object.values(charts)) c.draw(now - spanMs, now);
    });
  };
  const load = async () => {
    const status = $('#charts-status');
    status.textContent = t('js.loading');
    try {
      const data = await getJson(`hosts/${host}/metrics?since=${range}`);
      for (const c of Object.values(charts)) c.clear();
      for (const p of data.points) {
        const v = pointValues(p);
        for (const [k, c] of Object.entries(charts)) if (v[k]) c.push(p.ts_ms, v[k]);
      }
      status.textContent = data.points.length ? '' : t('js.no_samples');
      redraw();
    } catch (e) {
      status.textContent = e.message;
    }
  };
  for (const b of ranges) {
    b.addEventListener('click', () => {
      range = b.dataset.range;
      spanMs = spans[range];
      for (const o of ranges) o.setAttribute('aria-pressed', String(o === b));
      load();
    });
  }
  const state = $('#host-state');
  live({ hosts: [host], types: ['metrics', 'host_online', 'host_offline', 'gpu_alert'] }, (e) => {
    if (e.type === 'connected') {
      if (e.again) load();
    } else if (e.type === 'metrics') {
      const s = e.sample;
      const v = sampleValues(s);
      for (const [k, c] of Object.entries(charts)) {
        if (v[k]) c.push(s.ts_ms, v[k]);
      }
      for (const g of s.gpus || []) {
        const values = { util: [g.util_pct], mem: [g.mem_used_bytes], temp: [g.temperature_c], power: [g.power_w] };
        for (const [k, v2] of Object.entries(values)) charts[`gpu${g.index}-${k}`]?.push(s.ts_ms, v2);
      }
      redraw();
    } else if (e.type === 'host_online' || e.type === 'host_offline') {
      const up = e.type === 'host_online';
      state.textContent = up ? t('js.online') : t('js.offline_host');
      state.className = 'badge ' + (up ? 'ok' : 'off');
    } else if (e.type === 'gpu_alert') {
      toast(t('js.gpu_alert') + ' ' + (e.alert.message || ''), 'bad');
    }
  });
  load();
}

// ---- Services and containers -----------------------------------------------------------

function servicesPage() {
  const host = body.dataset.host;
  const table = $('#services tbody');
  const status = $('#services-status');
  const kindSelect = $('#service-kind');
  const logs = $('#logs');
  const logsTitle = $('#logs-title');
  const follow = $('#follow');
  let following = null;
  let current = null;

  // What the role may do, what the state makes sense of, and what the host's rules allow.
  const actions = (s) => {
    if (!canOperate) return [];
    const running = s.kind === 'docker' ? s.active_state === 'running' : s.active_state === 'active';
    const fitting = running ? ['stop', 'restart'] : ['start'];
    return fitting.filter((a) => (s.allowed_actions || []).includes(a));
  };
  const act = async (s, action, button) => {
    await busy(button, status, async () => {
      try {
        await call('POST', `hosts/${host}/services/${s.kind}/${encodeURIComponent(s.name)}/${action}`);
        toast(t('js.done') + ': ' + action + ' ' + s.name);
        await load();
      } catch (e) {
        toast(e.message, 'bad');
      }
    });
  };
  const stopFollowing = () => {
    if (following) following.abort();
    following = null;
    follow.textContent = t('js.follow');
    follow.setAttribute('aria-pressed', 'false');
  };
  const details = $('#service-details');
  const detail = async (s) => {
    try {
      const d = await getJson(`hosts/${host}/services/${s.kind}/${encodeURIComponent(s.name)}`);
      const rows = [
        [t('js.detail.pid'), d.main_pid],
        [t('js.detail.memory'), d.memory_bytes === undefined ? undefined : bytes(d.memory_bytes)],
        [t('js.detail.cpu'), d.cpu_nsec === undefined ? undefined : numbers.format(d.cpu_nsec / 1e9) + ' s'],
        [t('js.detail.since'), d.active_since ? times.format(new Date(d.active_since * 1000)) : undefined],
        [t('js.detail.result'), d.last_result],
        [t('js.detail.file'), d.unit_file_state],
        [t('js.detail.image'), d.image],
        [t('js.detail.status'), d.status],
      ].filter(([, v]) => v !== undefined && v !== null && v !== '');
      details.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: String(v) })]));
    } catch (e) {
      details.replaceChildren(el('dt', { text: s.name }), el('dd', { text: e.message }));
    }
  };
  const show = async (s) => {
    stopFollowing();
    current = s;
    detail(s);
    logsTitle.textContent = t('js.logs_of') + ' ' + s.name;
    logs.textContent = t('js.loading');
    follow.disabled = false;
    try {
      const data = await getJson(`hosts/${host}/services/${s.kind}/${encodeURIComponent(s.name)}/logs?lines=200`);
      logs.textContent = data.lines.map((l) => l.message).join('\n');
    } catch (e) {
      logs.textContent = e.message;
    }
  };
  follow.addEventListener('click', async () => {
    if (following) {
      stopFollowing();
      return;
    }
    if (!current) return;
    following = new AbortController();
    follow.textContent = t('js.stop_following');
    follow.setAttribute('aria-pressed', 'true');
    logs.textContent = '';
    try {
      const res = await call('GET', `hosts/${host}/services/${current.kind}/${encodeURIComponent(current.name)}/logs?follow=true&lines=20`, { signal: following.signal });
      await events(res, (name, data) => {
        if (name !== 'line') return;
        let line = data;
        try {
          const parsed = JSON.parse(data);
          line = parsed.message ?? data;
        } catch (_) { /* plain text */ }
        logs.append(line + '\n');
        logs.scrollTop = logs.scrollHeight;
      });
    } catch (e) {
      if (e.name !== 'AbortError') toast(e.message, 'bad');
    }
    stopFollowing();
  });
  // Rows are kept and updated in place, so a refresh never takes the focus or a button
  // from under the user.
  const rows = new Map();
  const update = (row, s) => {
    row.service = s;
    const up = ['active', 'running'].includes(s.active_state);
    row.badge.className = 'badge ' + (up ? 'ok' : 'off');
    row.badge.textContent = s.active_state + (s.sub_state ? ' · ' + s.sub_state : '');
    row.description.textContent = s.description || '';
    const wanted = actions(s);
    if (row.dataset.actions === wanted.join(',')) return;
    row.dataset.actions = wanted.join(',');
    row.actions.replaceChildren(row.view, ...wanted.map((a) => {
      const b = el('button', { type: 'button', class: 'button', 'data-action': a, text: t('js.action.' + a) });
      b.addEventListener('click', () => act(row.service, a, b));
      return b;
    }));
  };
  const make = (s) => {
    const row = el('tr', { 'data-service': s.name }, el('th', { scope: 'row', text: s.name }));
    row.description = el('td');
    row.badge = el('span');
    row.actions = el('td', { class: 'actions' });
    row.view = el('button', { type: 'button', class: 'button quiet', text: t('js.logs'), onclick: () => show(row.service) });
    row.append(row.description, el('td', {}, row.badge), row.actions);
    return row;
  };
  const load = async () => {
    status.textContent = t('js.loading');
    try {
      const kind = kindSelect.value;
      const list = await getJson(`hosts/${host}/services?kind=${kind}&all=true`);
      const seen = new Set();
      list.forEach((s, i) => {
        seen.add(s.name);
        let row = rows.get(s.name);
        if (!row) {
          row = make(s);
          rows.set(s.name, row);
        }
        update(row, s);
        if (table.children[i] !== row) table.insertBefore(row, table.children[i] || null);
      });
      for (const [name, row] of rows) {
        if (!seen.has(name)) {
          row.remove();
          rows.delete(name);
        }
      }
      status.textContent = list.length ? '' : t('js.no_services');
    } catch (e) {
      status.textContent = e.message;
    }
  };
  kindSelect.addEventListener('change', () => {
    for (const row of rows.values()) row.remove();
    rows.clear();
    load();
  });
  // A burst of changes (a restart is several) reloads the list once.
  let pending = 0;
  live({ hosts: [host], types: ['service_changed'] }, (e) => {
    if (e.type !== 'service_changed' && !(e.type === 'connected' && e.again)) return;
    clearTimeout(pending);
    pending = setTimeout(load, 250);
  });
  load();
}

// ---- Files -----------------------------------------------------------------------------

function filesPage() {
  const host = body.dataset.host;
  const table = $('#entries tbody');
  const crumbs = $('#crumbs');
  const status = $('#files-status');
  const editor = $('#editor');
  const area = $('#content');
  const editorTitle = $('#editor-title');
  const save = $('#save');
  const conflict = $('#conflict');
  const upload = $('#upload');
  let dir = new URLSearchParams(location.search).get('path') || '';
  let open = null; // { path, etag }

  const url = (path) => `hosts/${host}/files/content?path=${encodeURIComponent(path)}`;
  const name = (path) => path.split('/').pop() || path;
  const showCrumbs = () => {
    const parts = dir ? dir.split('/') : [];
    const items = [el('li', {}, el('a', { href: '?path=', text: t('js.roots'), onclick: (e) => { e.preventDefault(); go(''); } }))];
    parts.forEach((p, i) => {
      const path = parts.slice(0, i + 1).join('/');
      items.push(el('li', {}, el('a', { href: '?path=' + encodeURIComponent(path), text: p, onclick: (e) => { e.preventDefault(); go(path); } })));
    });
    crumbs.replaceChildren(...items);
  };
  const go = async (path) => {
    dir = path;
    history.replaceState(null, '', '?path=' + encodeURIComponent(path) + '&lang=' + lang);
    showCrumbs();
    status.textContent = t('js.loading');
    try {
      const listing = await getJson(`hosts/${host}/files?path=${encodeURIComponent(path)}`);
      table.replaceChildren(
        ...(listing.entries || []).map((e) => {
          const isDir = e.kind === 'dir';
          const link = el('a', {
            href: '?path=' + encodeURIComponent(e.path),
            text: name(e.path) + (isDir ? '/' : ''),
            onclick: (ev) => {
              ev.preventDefault();
              if (isDir) go(e.path);
              else edit(e.path);
            },
          });
          const download = !isDir && canOperate
            ? el('button', { type: 'button', class: 'button quiet', text: t('js.download'), onclick: () => fetchDownload(e.path) })
            : null;
          return el(
            'tr',
            { 'data-path': e.path },
            el('th', { scope: 'row' }, link),
            el('td', { text: isDir ? '—' : bytes(e.size) }),
            el('td', { text: e.modified ? times.format(new Date(e.modified * 1000)) : '—' }),
            el('td', { text: '0' + (e.mode & 0o777).toString(8) }),
            el('td', {}, download),
          );
        }),
      );
      status.textContent = (listing.entries || []).length ? (listing.truncated ? t('js.truncated') : '') : t('js.empty_dir');
      upload.disabled = !path || !canOperate;
    } catch (e) {
      status.textContent = e.message;
    }
  };
  const fetchDownload = async (path) => {
    try {
      const res = await call('GET', url(path));
      const blob = await res.blob();
      const a = el('a', { href: URL.createObjectURL(blob), download: name(path) });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      toast(e.message, 'bad');
    }
  };
  const edit = async (path) => {
    if (!canOperate) {
      toast(t('js.read_only'), 'bad');
      return;
    }
    conflict.hidden = true;
    status.textContent = t('js.loading');
    try {
      const res = await call('GET', url(path));
      const buf = new Uint8Array(await res.arrayBuffer());
      let content;
      try {
        content = new TextDecoder('utf-8', { fatal: true }).decode(buf);
      } catch (_) {
        status.textContent = t('js.binary');
        return;
      }
      open = { path, etag: res.headers.get('etag') };
      editorTitle.textContent = path;
      area.value = content;
      editor.hidden = false;
      status.textContent = '';
      area.focus();
    } catch (e) {
      status.textContent = e.message;
    }
  };
  const write = async (force) => {
    if (!open) return;
    const headers = force || !open.etag ? {} : { 'if-match': open.etag };
    await busy(save, $('#save-status'), async () => {
      try {
        const entry = await (await call('PUT', url(open.path), { raw: area.value, headers })).json();
        open.etag = entry.etag ? '"' + entry.etag + '"' : null;
        conflict.hidden = true;
        area.removeAttribute('aria-invalid');
        $('#save-status').textContent = t('js.saved');
        toast(t('js.saved') + ': ' + open.path);
        go(dir);
      } catch (e) {
        if (e.status === 412 || e.status === 409) {
          conflict.hidden = false;
          area.setAttribute('aria-invalid', 'true');
          $('#conflict-text').textContent = t('js.conflict');
        } else {
          $('#save-status').textContent = e.message;
        }
      }
    });
  };
  editor.addEventListener('submit', (e) => {
    e.preventDefault();
    write(false);
  });
  $('#overwrite').addEventListener('click', () => write(true));
  $('#reload').addEventListener('click', () => open && edit(open.path));
  $('#close').addEventListener('click', () => {
    editor.hidden = true;
    open = null;
  });
  upload.addEventListener('change', async () => {
    const file = upload.files[0];
    if (!file || !dir) return;
    const target = dir + '/' + file.name;
    status.textContent = t('js.uploading') + ' ' + file.name;
    try {
      await call('PUT', url(target), { raw: file, headers: { 'if-none-match': '*' } });
      toast(t('js.uploaded') + ': ' + target);
      upload.value = '';
      go(dir);
    } catch (e) {
      status.textContent = e.message;
    }
  });
  live({ hosts: [host], types: ['file_changed'] }, (e) => {
    if (e.type === 'file_changed' && e.path.startsWith(dir)) {
      if (open && e.path === open.path) $('#changed').hidden = false;
    }
  });
  go(dir);
}

// ---- Commands --------------------------------------------------------------------------

function commandsPage() {
  const host = body.dataset.host;
  const pick = $('#command');
  const fields = $('#params');
  const form = $('#run-form');
  const output = $('#output');
  const run = $('#run');
  const status = $('#run-status');
  const described = $('#command-help');
  let commands = [];

  const field = (name, schema) => {
    const id = 'param-' + name;
    let input;
    let hint = '';
    if (schema.type === 'enum') {
      input = el('select', { id, name }, ...schema.values.map((v) => el('option', { value: v, text: v })));
    } else if (schema.type === 'integer') {
      input = el('input', { id, name, type: 'number', min: schema.min, max: schema.max, step: 1, required: true, inputmode: 'numeric' });
      hint = `${numbers.format(schema.min)} – ${numbers.format(schema.max)}`;
    } else {
      input = el('input', { id, name, type: 'text', required: true, maxlength: schema.max_len || 253, autocomplete: 'off', spellcheck: 'false' });
      if (schema.type === 'string') hint = t('js.pattern') + ' ' + schema.pattern;
      if (schema.type === 'unit') hint = t('js.unit_hint');
    }
    input.dataset.type = schema.type;
    const hintId = id + '-hint';
    input.setAttribute('aria-describedby', hintId);
    return el('div', { class: 'field' }, el('label', { for: id, text: name }), input, el('p', { class: 'hint', id: hintId, text: hint }));
  };
  const choose = () => {
    const c = commands.find((x) => x.name === pick.value);
    fields.replaceChildren(...(c ? Object.entries(c.params).map(([n, s]) => field(n, s)) : []));
    described.textContent = c ? c.description + (c.available ? '' : ' — ' + t('js.unavailable')) : '';
    run.disabled = !c || !c.available || !canOperate;
  };
  pick.addEventListener('change', choose);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const params = {};
    for (const input of fields.querySelectorAll('input, select')) {
      input.removeAttribute('aria-invalid');
      params[input.name] = input.dataset.type === 'integer' ? Number(input.value) : input.value;
    }
    output.textContent = '';
    $('#exit').textContent = '';
    await busy(run, status, async () => {
      status.textContent = t('js.running');
      try {
        const res = await call('POST', `hosts/${host}/exec?stream=sse`, { json: { command: pick.value, params } });
        await events(res, (name, data) => {
          const d = JSON.parse(data);
          if (name === 'output') {
            const span = el('span', { class: d.stream === 'stderr' ? 'stderr' : '', text: d.data });
            output.append(span);
          } else if (name === 'result') {
            const code = d.exit_code ?? (d.signal ? 'signal ' + d.signal : '?');
            $('#exit').textContent = t('js.exit') + ' ' + code + ' · ' + numbers.format(d.duration_ms) + ' ms' + (d.timed_out ? ' · ' + t('js.timed_out') : '');
            status.textContent = t('js.done');
          } else if (name === 'error') {
            status.textContent = d.error.message;
            const named = Object.keys(params).find((p) => d.error.message.includes(p));
            if (named) $('#param-' + named)?.setAttribute('aria-invalid', 'true');
          }
        });
      } catch (err) {
        status.textContent = err.message;
      }
    });
  });
  (async () => {
    status.textContent = t('js.loading');
    try {
      commands = await getJson(`hosts/${host}/commands`);
      pick.replaceChildren(...commands.map((c) => el('option', { value: c.name, text: c.name })));
      status.textContent = commands.length ? '' : t('js.no_commands');
      choose();
    } catch (e) {
      status.textContent = e.message;
    }
  })();
}

// ---- Enrollment ------------------------------------------------------------------------

function enrollPage() {
  const form = $('#enroll-form');
  const out = $('#enroll-command');
  const copy = $('#copy');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = $('#enroll-create');
    await busy(button, $('#enroll-status'), async () => {
      try {
        const ttl = Number($('#ttl').value) * 3600;
        const labels = {};
        const label = $('#label').value.trim();
        if (label) labels.role = label;
        const created = await (await call('POST', 'enrollment-tokens', { json: { ttl_secs: ttl, labels } })).json();
        // The token goes in the environment, not a flag: flags show in the process list.
        const command = `sudo env AGENTD_TOKEN='${created.token}' agentd enroll --server ${location.origin} && sudo systemctl enable --now agentd`;
        out.textContent = command;
        $('#enroll-result').hidden = false;
        $('#enroll-status').textContent = t('js.token_ready');
        copy.focus();
      } catch (err) {
        $('#enroll-status').textContent = err.message;
      }
    });
  });
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(out.textContent);
      toast(t('js.copied'));
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(out);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      toast(t('js.copy_by_hand'));
    }
  });
}

// ---- Fleet: live online state ----------------------------------------------------------

function fleetPage() {
  live({ types: ['host_online', 'host_offline'] }, (e) => {
    if (e.type !== 'host_online' && e.type !== 'host_offline') return;
    const badge = $(`tr[data-host="${CSS.escape(e.host_id)}"] .badge`);
    if (!badge) return;
    const up = e.type === 'host_online';
    badge.textContent = up ? t('js.online') : t('js.offline_host');
    badge.className = 'badge ' + (up ? 'ok' : 'off');
  });
}

// ---- Forms that call the API ----------------------------------------------------------
//
// <form class="api" data-method="POST" data-path="orders/ID/actions/qa_pass" data-then="reload">
// Fields become a JSON body: type=number as numbers, data-list as comma-separated arrays,
// checkboxes as booleans, empty optional fields left out. After success the page reloads
// (with a toast), or `data-then="show"` reveals the answer's `data-show` field once (a new
// key, a secret, a password).

function formBody(form) {
  const body = {};
  for (const input of form.querySelectorAll('input[name], select[name], textarea[name]')) {
    const v = input.value.trim();
    if (input.type === 'checkbox') body[input.name] = input.checked;
    else if (input.dataset.list !== undefined) {
      if (v) body[input.name] = v.split(',').map((x) => x.trim()).filter(Boolean);
    } else if (input.dataset.json !== undefined) {
      if (v) body[input.name] = JSON.parse(v);
    } else if (input.type === 'number') {
      if (v) body[input.name] = input.dataset.scale ? Math.round(Number(v) * Number(input.dataset.scale)) : Number(v);
    } else if (v || input.required) body[input.name] = v;
  }
  return body;
}

function apiForms() {
  const flash = sessionStorage.getItem('axon-toast');
  if (flash) {
    sessionStorage.removeItem('axon-toast');
    toast(flash);
  }
  for (const form of document.querySelectorAll('form.api')) {
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const button = form.querySelector('button[type=submit]');
      const status = form.querySelector('.status');
      if (form.dataset.confirm && !confirm(form.dataset.confirm)) return;
      for (const f of form.querySelectorAll('[aria-invalid]')) f.removeAttribute('aria-invalid');
      await busy(button, status, async () => {
        let body;
        try {
          body = form.dataset.method === 'DELETE' ? undefined : formBody(form);
        } catch (err) {
          status.textContent = err.message;
          return;
        }
        try {
          const res = await call(form.dataset.method || 'POST', form.dataset.path, body === undefined ? {} : { json: body });
          const answer = res.status === 204 ? {} : await res.json().catch(() => ({}));
          const done = form.dataset.done || t('js.done');
          if (form.dataset.then === 'show') {
            const out = document.getElementById(form.dataset.target);
            const shownValue = answer[form.dataset.show] ?? '';
            out.querySelector('.secret').textContent = typeof shownValue === 'string' ? shownValue : JSON.stringify(shownValue, null, 2);
            out.hidden = false;
            status.textContent = done;
            toast(done);
          } else {
            sessionStorage.setItem('axon-toast', done);
            location.reload();
          }
        } catch (err) {
          status.textContent = err.message;
          // A refused body names its field ("scopes: ...", "unknown scope ..."): mark it.
          if (err.status === 400 || err.status === 422) {
            for (const f of form.querySelectorAll('[name]')) {
              const base = f.name.replace(/s$/, '');
              if (new RegExp('\\b' + base + 's?\\b').test(err.message)) f.setAttribute('aria-invalid', 'true');
            }
          }
        }
      });
    });
  }
}

// ---- Tables and bar charts filled from the API -------------------------------------------
//
// <table data-source="users" data-items="aliases"?> with <th data-field="email" data-kind=…>;
// a last <th> without data-field holds the row actions given as JSON in data-actions:
// [{"label": "Disable", "method": "POST", "path": "users/{id}/disable", "when": "!disabled"}].

const dig = (item, path) => path.split('.').reduce((o, k) => (o === null || o === undefined ? o : o[k]), item);

function shown(v, kind) {
  if (v === null || v === undefined || v === '') return '—';
  if (kind === 'date') return times.format(new Date(v));
  if (kind === 'usd') return new Intl.NumberFormat(lang, { style: 'currency', currency: 'USD', maximumFractionDigits: 4 }).format(v);
  if (kind === 'number') return numbers.format(v);
  if (kind === 'targets') return v.map((x) => x.model + (x.weight > 1 ? ' ×' + x.weight : '')).join(', ');
  if (kind === 'ms') return numbers.format(v) + ' ms';
  if (Array.isArray(v)) return v.join(', ');
  if (typeof v === 'boolean') return v ? t('js.yes') : t('js.no');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function rowAction(a, item) {
  const b = el('button', { type: 'button', class: 'button quiet', 'data-row-action': a.label, text: a.label });
  b.addEventListener('click', async () => {
    if (a.confirm && !confirm(a.confirm)) return;
    await busy(b, null, async () => {
      try {
        const path = a.path.replace(/\{(\w+)\}/g, (_, k) => encodeURIComponent(item[k]));
        await call(a.method, path, a.body === undefined ? {} : { json: a.body });
        sessionStorage.setItem('axon-toast', a.done || t('js.done'));
        location.reload();
      } catch (e) {
        toast(e.message, 'bad');
      }
    });
  });
  return b;
}

async function dataTables() {
  for (const table of document.querySelectorAll('table[data-source]')) {
    const heads = [...table.querySelectorAll('thead th')];
    const actions = JSON.parse(table.dataset.actions || '[]');
    const status = document.getElementById(table.dataset.status);
    const tbody = table.querySelector('tbody');
    try {
      let items = await getJson(table.dataset.source);
      if (table.dataset.items) items = dig(items, table.dataset.items);
      tbody.replaceChildren(
        ...items.map((item) => {
          const row = el('tr', { 'data-id': item[table.dataset.key || 'id'] ?? '' });
          heads.forEach((th, i) => {
            if (th.dataset.field === undefined) {
              const holds = (w) => {
                if (!w) return true;
                if (w.includes('=')) {
                  const [k, v] = w.split('=');
                  return String(dig(item, k)) === v;
                }
                return w.startsWith('!') ? !dig(item, w.slice(1)) : Boolean(dig(item, w));
              };
              const wanted = actions.filter((a) => holds(a.when));
              row.append(el('td', { class: 'actions' }, ...wanted.map((a) => rowAction(a, item))));
              return;
            }
            const value = dig(item, th.dataset.field);
            const text = shown(value, th.dataset.kind);
            const cell = el(i === 0 ? 'th' : 'td', i === 0 ? { scope: 'row' } : {});
            if (th.dataset.kind === 'state') {
              const good = ['closed', 'healthy', 'delivered', 'ok', 'active', 'true'].includes(String(value));
              cell.append(el('span', { class: 'badge ' + (good ? 'ok' : 'bad'), text }));
            } else cell.textContent = text;
            row.append(cell);
          });
          return row;
        }),
      );
      if (status) status.textContent = items.length ? '' : table.dataset.empty || '';
    } catch (e) {
      if (status) status.textContent = e.message;
    }
    table.dataset.loaded = 'true';
  }
}

// <figure class="bars" data-source="llm/usage?group_by=model" data-items="rows"
//  data-label="model" data-value="cost_usd" data-kind="usd">: one SVG bar per row.
async function barCharts() {
  for (const figure of document.querySelectorAll('figure.bars[data-source]')) {
    const list = figure.querySelector('ul');
    try {
      let items = await getJson(figure.dataset.source);
      if (figure.dataset.items) items = dig(items, figure.dataset.items);
      const value = (x) => Number(dig(x, figure.dataset.value) || 0);
      items.sort((a, b) => value(b) - value(a));
      const max = Math.max(...items.map(value), 0) || 1;
      list.replaceChildren(
        ...items.slice(0, 12).map((x) => {
          const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
          svg.setAttribute('viewBox', '0 0 100 10');
          svg.setAttribute('preserveAspectRatio', 'none');
          svg.setAttribute('aria-hidden', 'true');
          const rect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
          rect.setAttribute('height', '10');
          rect.setAttribute('width', String(Math.max(0.5, (value(x) / max) * 100)));
          svg.append(rect);
          const label = shown(dig(x, figure.dataset.label) ?? figure.dataset.none, 'text');
          return el('li', {}, el('span', { class: 'label', text: label }), svg, el('span', { class: 'value', text: shown(value(x), figure.dataset.kind) }));
        }),
      );
      if (!items.length) list.replaceChildren(el('li', { class: 'none', text: figure.dataset.empty || '—' }));
    } catch (e) {
      list.replaceChildren(el('li', { class: 'none', text: e.message }));
    }
    figure.dataset.loaded = 'true';
  }
}

const pages = {
  host: hostPage,
  services: servicesPage,
  files: filesPage,
  commands: commandsPage,
  enroll: enrollPage,
  fleet: fleetPage,
};
// Times the server wrote in RFC 3339, shown in the reader's locale.
for (const node of document.querySelectorAll('time[datetime]')) {
  const at = new Date(node.getAttribute('datetime'));
  if (!Number.isNaN(at.getTime())) node.textContent = times.format(at);
}
pages[body.dataset.page]?.();
if (document.querySelector('form.api')) apiForms();
if (document.querySelector('table[data-source]')) dataTables();
if (document.querySelector('figure.bars[data-source]')) barCharts();
