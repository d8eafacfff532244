// The shortd web UI: one page, four views (sign-in, links, a link's
// detail, dashboard) chosen by the URL fragment, talking to the JSON API
// with the API key from sessionStorage as a Bearer header. No framework,
// no build step, nothing from another host (docs/ui.md).
'use strict';

(() => {
  const KEY = 'shortd.apiKey';
  const PAGE = 50;
  const HOUR = 3600e3;
  const DAY = 24 * HOUR;
  const INTERVALS = { hour: { step: HOUR, span: 48 * HOUR }, day: { step: DAY, span: 30 * DAY } };
  const BREAKDOWNS = [['referrers', 'Referrers'], ['countries', 'Countries'], ['devices', 'Devices'], ['browsers', 'Browsers'], ['os', 'Operating systems']];
  const SVG = 'http://www.w3.org/2000/svg';

  const state = { auth: 'api-key', listSeq: 0, statsSeq: 0, cursor: null, objectUrls: [] };
  const $ = (sel, root = document) => root.querySelector(sel);

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  // The API's own words: title, detail and the field at fault.
  function problemText(e) {
    const p = (e && e.problem) || {};
    let text = [p.title, p.detail].filter(Boolean).join(': ') || (e && e.message) || 'something went wrong';
    if (p.field && p.reason && !String(p.detail || '').includes(p.reason)) text += ` (${p.field} ${p.reason})`;
    return text;
  }

  async function api(path, opts = {}) {
    const headers = new Headers();
    const key = opts.key !== undefined ? opts.key : sessionStorage.getItem(KEY);
    if (key && opts.auth !== false) headers.set('Authorization', `Bearer ${key}`);
    let body;
    if (opts.json !== undefined) {
      headers.set('Content-Type', 'application/json');
      body = JSON.stringify(opts.json);
    }
    let resp;
    try {
      resp = await fetch(path, { method: opts.method || 'GET', headers, body, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' });
    } catch (err) {
      throw new ApiError(0, { title: 'Network error', detail: 'the server could not be reached' });
    }
    if (!resp.ok) {
      let problem = {};
      try {
        problem = await resp.json();
      } catch (err) {
        problem = { title: `HTTP ${resp.status}`, detail: resp.statusText };
      }
      const error = new ApiError(resp.status, problem);
      if (resp.status === 401 && opts.key === undefined && opts.auth !== false) {
        sessionStorage.removeItem(KEY);
        signIn(problemText(error));
      }
      throw error;
    }
    if (opts.raw) return resp;
    if (resp.status === 204) return null;
    const type = resp.headers.get('Content-Type') || '';
    return type.includes('json') ? resp.json() : resp.text();
  }

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'text') node.textContent = v;
      else if (k === 'class') node.className = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function mount(template, title) {
    for (const u of state.objectUrls.splice(0)) URL.revokeObjectURL(u);
    // A fresh element per view: work still running for an earlier view
    // sees `isConnected` false and lets go.
    const view = el('div', { class: 'view' });
    view.append($(`#${template}`).content.cloneNode(true));
    $('#view').replaceChildren(view);
    document.title = `${title} · shortd`;
    const h1 = $('h1', view);
    if (h1 && state.mounted) h1.focus();
    state.mounted = true;
    return view;
  }

  function notice(text) {
    $('#notice').textContent = text;
  }

  function linkState(link) {
    if (link.disabled) return 'disabled';
    const expired = link.expires_at && Date.parse(link.expires_at) <= Date.now();
    const usedUp = link.max_clicks && link.clicks >= link.max_clicks;
    return expired || usedUp ? 'expired' : 'active';
  }

  // datetime-local value (local time) <-> RFC 3339.
  function toLocalInput(rfc3339) {
    if (!rfc3339) return '';
    const d = new Date(rfc3339);
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }
  function fromLocalInput(value) {
    return value ? new Date(value).toISOString().replace(/\.\d{3}Z$/, 'Z') : null;
  }
  function iso(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  async function copy(text, status) {
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = 'Copied.';
    } catch (err) {
      const range = document.createRange();
      const target = status.parentElement.querySelector('a');
      if (target) {
        range.selectNodeContents(target);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
      status.textContent = 'Selected: press Ctrl+C to copy.';
    }
  }

  // `fn` once typing pauses for `ms`; `.now()` runs it at once instead.
  function debounce(fn, ms) {
    let timer;
    const later = (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
    later.now = (...args) => {
      clearTimeout(timer);
      fn(...args);
    };
    return later;
  }

  function codePath(code) {
    return `/api/v1/links/${encodeURIComponent(code)}`;
  }

  // ---------------------------------------------------------------- sign-in

  function signedIn() {
    return state.auth !== 'api-key' || Boolean(sessionStorage.getItem(KEY));
  }

  function updateNav() {
    $('#nav').hidden = !signedIn();
    $('#sign-out').hidden = state.auth !== 'api-key' || !sessionStorage.getItem(KEY);
  }

  function signIn(message) {
    updateNav();
    const view = mount('t-signin', 'Sign in');
    if (message) $('#signin-error', view).textContent = message;
    $('#signin-form', view).addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const key = $('#api-key', view).value.trim();
      const error = $('#signin-error', view);
      error.textContent = '';
      if (!key) {
        error.textContent = 'Enter an API key.';
        return;
      }
      try {
        await api('/api/v1/links?limit=1', { key });
      } catch (e) {
        error.textContent = problemText(e);
        return;
      }
      sessionStorage.setItem(KEY, key);
      notice('Signed in.');
      route();
    });
  }

  // ---------------------------------------------------------------- links

  function showLinks() {
    const view = mount('t-links', 'Links');
    const form = $('#create-form', view);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      create(view);
    });
    $('#copy-created', view).addEventListener('click', () => copy($('#created-url', view).textContent, $('#copy-status', view)));
    const search = debounce(() => loadLinks(view, true), 250);
    $('#search', view).addEventListener('input', search);
    $('#search', view).addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        search.now();
      }
    });
    $('#more', view).addEventListener('click', () => loadLinks(view, false));
    loadLinks(view, true);
  }

  async function create(view) {
    const error = $('#create-error', view);
    error.textContent = '';
    const url = $('#new-url', view).value.trim();
    if (!url) {
      error.textContent = 'URL: enter the address to shorten.';
      $('#new-url', view).focus();
      return;
    }
    const body = { url, redirect: Number($('#new-redirect', view).value) };
    const alias = $('#new-alias', view).value.trim();
    if (alias) body.alias = alias;
    const expires = fromLocalInput($('#new-expiry', view).value);
    if (expires) body.expires_at = expires;
    const max = $('#new-max', view).value.trim();
    if (max) body.max_clicks = Number(max);
    let link;
    try {
      link = await api('/api/v1/links', { method: 'POST', json: body });
    } catch (e) {
      error.textContent = problemText(e);
      return;
    }
    const a = $('#created-url', view);
    a.textContent = link.short_url;
    a.href = `#/links/${encodeURIComponent(link.code)}`;
    $('#created', view).hidden = false;
    $('#copy-status', view).textContent = '';
    $('#new-url', view).value = '';
    $('#new-alias', view).value = '';
    loadLinks(view, true);
  }

  function linkRow(link) {
    const st = linkState(link);
    return el('tr', {},
      el('td', { class: 'c-code' }, el('a', { href: `#/links/${encodeURIComponent(link.code)}`, text: link.code })),
      el('td', { class: 'c-url', text: link.url }),
      el('td', { class: 'c-num', text: String(link.clicks) }),
      el('td', { class: 'c-state' }, el('span', { class: `state state-${st}`, text: st })));
  }

  async function loadLinks(view, fresh) {
    if (!view.isConnected) return;
    const seq = ++state.listSeq;
    const q = $('#search', view).value.trim();
    const params = new URLSearchParams({ order: 'newest', limit: String(PAGE) });
    if (q) params.set('q', q);
    if (!fresh && state.cursor) params.set('cursor', state.cursor);
    const status = $('#list-status', view);
    let page;
    try {
      page = await api(`/api/v1/links?${params}`);
    } catch (e) {
      if (seq === state.listSeq) status.textContent = `Could not list links: ${problemText(e)}`;
      return;
    }
    if (seq !== state.listSeq || !view.isConnected) return;
    const body = $('#links-body', view);
    if (fresh) body.replaceChildren();
    body.append(...page.links.map(linkRow));
    state.cursor = page.next_cursor;
    $('#more', view).hidden = !page.next_cursor;
    const shown = body.children.length;
    status.textContent = shown === 0 ? (q ? `No link matches “${q}”.` : 'No links yet.') : q ? `${shown} matching “${q}”${page.next_cursor ? ' so far' : ''}.` : '';
  }

  // ---------------------------------------------------------------- detail

  async function showDetail(code) {
    const view = mount('t-detail', `Link ${code}`);
    $('#d-code', view).textContent = code;
    let link;
    try {
      link = await api(codePath(code));
    } catch (e) {
      $('#d-error', view).textContent = problemText(e);
      return;
    }
    if (!view.isConnected) return;
    $('#d-body', view).hidden = false;
    fillDetail(view, link);
    $('#d-copy', view).addEventListener('click', () => copy(link.short_url, $('#d-copy-status', view)));
    $('#edit-form', view).addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const patch = changes(view, link);
      const status = $('#e-status', view);
      const error = $('#e-error', view);
      status.textContent = '';
      error.textContent = '';
      if (Object.keys(patch).length === 0) {
        status.textContent = 'Nothing changed.';
        return;
      }
      try {
        link = await api(codePath(code), { method: 'PATCH', json: patch });
      } catch (e) {
        error.textContent = problemText(e);
        return;
      }
      fillDetail(view, link);
      status.textContent = 'Saved.';
    });
    $('#toggle', view).addEventListener('click', async () => {
      const error = $('#e-error', view);
      error.textContent = '';
      try {
        link = await api(codePath(code), { method: 'PATCH', json: { disabled: !link.disabled } });
      } catch (e) {
        error.textContent = problemText(e);
        return;
      }
      fillDetail(view, link);
      $('#e-status', view).textContent = link.disabled ? 'Disabled.' : 'Enabled.';
    });
    $('#delete', view).addEventListener('click', () => confirmDelete(view, code));
    for (const b of view.querySelectorAll('.switch button')) {
      b.addEventListener('click', () => loadStats(view, codePath(code) + '/stats', b.dataset.interval, drawBreakdowns));
    }
    loadQr(view, link);
    loadStats(view, codePath(code) + '/stats', 'hour', drawBreakdowns);
  }

  function fillDetail(view, link) {
    const short = $('#d-short', view);
    short.textContent = link.short_url;
    short.href = link.short_url;
    $('#d-state', view).textContent = linkState(link);
    $('#d-clicks', view).textContent = String(link.clicks);
    const created = $('#d-created', view);
    created.dateTime = link.created_at;
    created.textContent = new Date(link.created_at).toLocaleString();
    $('#e-url', view).value = link.url;
    $('#e-expiry', view).value = toLocalInput(link.expires_at);
    $('#e-max', view).value = link.max_clicks ? String(link.max_clicks) : '';
    $('#e-redirect', view).value = String(link.redirect);
    $('#e-disabled', view).checked = link.disabled;
    $('#toggle', view).textContent = link.disabled ? 'Enable' : 'Disable';
  }

  // Only what the form changed: an unchanged past expiry is not resent.
  function changes(view, link) {
    const patch = {};
    const url = $('#e-url', view).value.trim();
    if (url !== link.url) patch.url = url;
    const expiry = $('#e-expiry', view).value;
    if (expiry !== toLocalInput(link.expires_at)) patch.expires_at = fromLocalInput(expiry);
    const max = $('#e-max', view).value.trim();
    if (max !== (link.max_clicks ? String(link.max_clicks) : '')) patch.max_clicks = max ? Number(max) : null;
    const redirect = Number($('#e-redirect', view).value);
    if (redirect !== link.redirect) patch.redirect = redirect;
    const disabled = $('#e-disabled', view).checked;
    if (disabled !== link.disabled) patch.disabled = disabled;
    return patch;
  }

  // The second "Delete" replaces the first, so only one is ever on the page.
  function confirmDelete(view, code) {
    const area = $('#delete-area', view);
    const sure = el('button', { type: 'button', class: 'danger', id: 'delete-confirm', text: 'Delete' });
    const cancel = el('button', { type: 'button', class: 'quiet', text: 'Cancel' });
    area.replaceChildren(el('span', { text: `Delete ${code} for good? Its short URL will answer 410 Gone. ` }), sure, ' ', cancel);
    sure.focus();
    cancel.addEventListener('click', () => {
      const again = el('button', { type: 'button', id: 'delete', class: 'danger', text: 'Delete' });
      again.addEventListener('click', () => confirmDelete(view, code));
      area.replaceChildren(again);
      again.focus();
    });
    sure.addEventListener('click', async () => {
      try {
        await api(codePath(code), { method: 'DELETE' });
      } catch (e) {
        $('#e-error', view).textContent = problemText(e);
        return;
      }
      state.pendingNotice = `Deleted ${code}.`;
      location.hash = '#/links';
    });
  }

  // An <img src> cannot carry the key, so the QR code is fetched with it
  // and shown from a blob: URL.
  async function loadQr(view, link) {
    const img = $('#qr', view);
    const caption = $('#qr-caption', view);
    try {
      const resp = await api(`${codePath(link.code)}/qr?format=svg`, { raw: true });
      const blob = new Blob([await resp.text()], { type: 'image/svg+xml' });
      if (!view.isConnected) return;
      const url = URL.createObjectURL(blob);
      state.objectUrls.push(url);
      img.alt = `QR code for ${link.short_url}`;
      img.src = url;
      img.hidden = false;
      caption.textContent = `QR code for ${link.short_url}`;
    } catch (e) {
      caption.textContent = `QR code unavailable: ${problemText(e)}`;
    }
  }

  // ---------------------------------------------------------------- stats

  async function loadStats(view, path, interval, extra) {
    for (const b of view.querySelectorAll('.switch button')) b.setAttribute('aria-pressed', String(b.dataset.interval === interval));
    const { step, span } = INTERVALS[interval];
    const to = Math.ceil(Date.now() / step) * step;
    const params = new URLSearchParams({ from: iso(to - span), to: iso(to), interval });
    const error = $('#stats-error', view);
    // Only the latest request draws: an earlier answer arriving late (say
    // hourly after a switch to daily) is dropped.
    const seq = ++state.statsSeq;
    let stats;
    try {
      stats = await api(`${path}?${params}`);
    } catch (e) {
      if (!view.isConnected || seq !== state.statsSeq) return null;
      error.textContent = `Click statistics are unavailable: ${problemText(e)}`;
      $('#chart', view).replaceChildren();
      return null;
    }
    if (!view.isConnected || seq !== state.statsSeq) return null;
    error.textContent = '';
    $('#chart', view).replaceChildren(drawChart(stats, interval, to - span, to));
    if (extra) extra(view, stats);
    return stats;
  }

  function timeOf(t) {
    if (typeof t === 'number') return t < 1e12 ? t * 1000 : t;
    return Date.parse(t);
  }

  // Bars of clicks per bucket, every bucket from `from` to `to` shown.
  function drawChart(stats, interval, from, to) {
    const { step } = INTERVALS[interval];
    const byTime = new Map();
    for (const p of stats.series || []) {
      const t = Math.floor(timeOf(p.t) / step) * step;
      byTime.set(t, (byTime.get(t) || 0) + (p.clicks || 0));
    }
    const buckets = [];
    for (let t = from; t < to; t += step) buckets.push([t, byTime.get(t) || 0]);
    const total = buckets.reduce((s, [, c]) => s + c, 0);
    const max = Math.max(1, ...buckets.map(([, c]) => c));
    const W = 720;
    const H = 220;
    const L = 44;
    const R = 8;
    const T = 10;
    const B = 34;
    const bw = (W - L - R) / buckets.length;
    const label = `${total} clicks ${interval === 'hour' ? 'per hour over the last 48 hours' : 'per day over the last 30 days'}`;
    const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Chart: ${label}`, class: 'chart-svg' });
    chart.append(svg('title', {}, `Chart: ${label}`));
    chart.append(svg('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
    chart.append(svg('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
    chart.append(svg('text', { x: L - 6, y: T + 10, 'text-anchor': 'end', class: 'tick' }, String(max)));
    chart.append(svg('text', { x: L - 6, y: H - B, 'text-anchor': 'end', class: 'tick' }, '0'));
    buckets.forEach(([t, c], i) => {
      const h = ((H - T - B) * c) / max;
      const bar = svg('rect', { x: L + i * bw + bw * 0.1, y: H - B - h, width: Math.max(1, bw * 0.8), height: h, class: 'bar' });
      bar.append(svg('title', {}, `${new Date(t).toLocaleString()}: ${c}`));
      chart.append(bar);
    });
    const fmt = (t) => (interval === 'hour' ? new Date(t).toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit' }) : new Date(t).toLocaleDateString([], { month: 'short', day: 'numeric' }));
    for (const i of [0, Math.floor(buckets.length / 2), buckets.length - 1]) {
      const anchor = i === 0 ? 'start' : i === buckets.length - 1 ? 'end' : 'middle';
      chart.append(svg('text', { x: L + i * bw + bw / 2, y: H - 12, 'text-anchor': anchor, class: 'tick' }, fmt(buckets[i][0])));
    }
    const wrap = el('figure', { class: 'chart-figure' }, chart, el('figcaption', { text: `${total} clicks${stats.bots ? `, ${stats.bots} bot requests not counted` : ''}.` }));
    return wrap;
  }

  function table(caption, rows, columns) {
    const body = el('tbody');
    for (const row of rows) body.append(el('tr', {}, ...columns.map(([key, , cls]) => el('td', { class: cls || '', text: String(row[key] ?? '') }))));
    if (rows.length === 0) body.append(el('tr', {}, el('td', { colspan: String(columns.length), text: 'None yet' })));
    return el('table', { class: 'breakdown' },
      el('caption', { text: caption }),
      el('thead', {}, el('tr', {}, ...columns.map(([, title, cls]) => el('th', { scope: 'col', class: cls || '', text: title })))),
      body);
  }

  function drawBreakdowns(view, stats) {
    const cols = [['value', 'Value'], ['clicks', 'Clicks', 'c-num']];
    $('#breakdowns', view).replaceChildren(...BREAKDOWNS.map(([key, title]) => table(title, stats[key] || [], cols)));
  }

  // ---------------------------------------------------------------- dashboard

  function showDashboard() {
    const view = mount('t-dashboard', 'Dashboard');
    const drawTop = (v, stats) => {
      $('#dash-clicks', v).textContent = String(stats.clicks ?? '—');
      $('#dash-clicks-note', v).textContent = 'in the period of the chart';
      if (typeof stats.links === 'number') $('#dash-links', v).textContent = String(stats.links);
      const top = stats.top_links || stats.top || (Array.isArray(stats.links) ? stats.links : []);
      $('#top', v).replaceChildren(table('Top links', top, [['code', 'Code'], ['clicks', 'Clicks', 'c-num']]));
    };
    for (const b of view.querySelectorAll('.switch button')) {
      b.addEventListener('click', () => loadStats(view, '/api/v1/stats', b.dataset.interval, drawTop));
    }
    loadStats(view, '/api/v1/stats', 'hour', drawTop).then((stats) => {
      if (!stats) $('#dash-clicks', view).textContent = '—';
    });
    loadTotals(view);
    loadHealth(view);
    loadHot(view);
  }

  // Links in the store, from the Prometheus gauge (this node's).
  async function loadTotals(view) {
    try {
      const text = await api('/metrics', { auth: false });
      const m = /^shortd_links (\d+(?:\.\d+)?)/m.exec(text);
      if (m && view.isConnected && $('#dash-links', view).textContent === '…') $('#dash-links', view).textContent = String(Math.round(Number(m[1])));
    } catch (e) {
      if (view.isConnected) $('#dash-links', view).textContent = '—';
    }
  }

  async function loadHealth(view) {
    const show = async (path, id, ok) => {
      let text;
      try {
        const body = await api(path, { auth: false });
        text = ok(body);
      } catch (e) {
        text = `${path}: ${problemText(e)}`;
      }
      if (view.isConnected) $(id, view).textContent = text;
    };
    show('/healthz', '#dash-health', (b) => `Live: ${b.status}`);
    show('/readyz', '#dash-ready', (b) => `Ready: ${b.status}, writes ${b.writes}${Object.keys(b.damage || {}).length ? `, damage in ${Object.keys(b.damage).length} files` : ''}`);
  }

  async function loadHot(view) {
    const status = $('#hot-status', view);
    try {
      const hot = await api('/api/v1/stats/hot?limit=10');
      if (!view.isConnected) return;
      const body = $('#hot-body', view);
      body.replaceChildren(...hot.codes.map((c) => el('tr', {},
        el('td', {}, el('a', { href: `#/links/${encodeURIComponent(c.code)}`, text: c.code })),
        el('td', { class: 'c-num', text: String(c.requests) }),
        el('td', { class: 'c-num', text: c.per_second.toFixed(2) }))));
      status.textContent = hot.codes.length ? `Requests in the last ${hot.window_seconds} s.` : `No redirects in the last ${hot.window_seconds} s.`;
    } catch (e) {
      if (view.isConnected) status.textContent = `Hot links unavailable: ${problemText(e)}`;
    }
  }

  // ---------------------------------------------------------------- routing

  function route() {
    updateNav();
    if (!signedIn()) return signIn();
    const path = location.hash.replace(/^#/, '') || '/links';
    for (const a of document.querySelectorAll('#nav a')) {
      if (path.startsWith(a.getAttribute('href').slice(1))) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (path.startsWith('/links/')) return showDetail(decodeURIComponent(path.slice('/links/'.length)));
    if (path === '/dashboard') return showDashboard();
    return showLinks();
  }

  async function start() {
    try {
      const cfg = await api('/ui/config.json', { auth: false });
      state.auth = cfg.auth;
    } catch (e) {
      notice(`Could not read the UI settings: ${problemText(e)}`);
    }
    $('#sign-out').addEventListener('click', () => {
      sessionStorage.removeItem(KEY);
      notice('Signed out.');
      route();
    });
    window.addEventListener('hashchange', () => {
      notice(state.pendingNotice || '');
      state.pendingNotice = null;
      route();
    });
    route();
  }

  start();
})();
