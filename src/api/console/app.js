// iotpipe console: every page is drawn here from the JSON API under /api/v1 (docs/console.md).
// Text from the server (device names, client ids, topics, payloads) only ever becomes DOM text
// nodes: nothing is parsed as HTML, so a `<script>` inside a client id is shown, never run.
'use strict';

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const main = document.getElementById('main');
const MESSAGE_TYPES = ['upstream', 'status', 'lifecycle', 'thing_history', 'tag_change'];
let timers = [];

// ---- DOM and API helpers -------------------------------------------------------------------

/** Builds an element; strings among the children become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : String(c));
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = CSRF;
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch('/api/v1' + path, init);
  if (r.status === 401) {
    location.assign('/console/login');
    throw new ApiError(401, { message: 'signed out' });
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { message: text }; }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

const enc = encodeURIComponent;
const time = (ms) => (ms ? new Date(ms).toLocaleString() : '—');

function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ''; }, 6000);
}

/** A refusal from the server, shown where the user looks. */
function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err.code ? `${err.code}: ` : '', err.message);
}

function every(ms, fn) {
  timers.push(setInterval(fn, ms));
}

// ---- dialogs -------------------------------------------------------------------------------

/** A modal dialog; `build(close, errorArea)` returns its body; resolves with close's value. */
function modal(title, build) {
  return new Promise((resolve) => {
    const error = h('div', { class: 'dialog-error', 'aria-live': 'assertive' });
    const dlg = h('dialog', { 'aria-labelledby': 'dialog-title' });
    const close = (value) => { dlg.close(); dlg.remove(); resolve(value); };
    dlg.append(h('h2', { id: 'dialog-title' }, title), build(close, error), error);
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); close(undefined); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

/** Asks to confirm an action; resolves true on Confirm. */
function confirmDialog(title, text, action) {
  return modal(title, (close, error) => h('form', {
    method: 'dialog',
    onsubmit: async (e) => {
      e.preventDefault();
      try { await action(); close(true); } catch (err) { error.replaceChildren(errorBox(err)); }
    },
  }, h('p', {}, text), h('div', { class: 'buttons' },
    h('button', { type: 'submit', class: 'primary' }, 'Confirm'),
    h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'))));
}

// ---- routing -------------------------------------------------------------------------------

const routes = [
  [/^#\/overview$/, overview],
  [/^#\/groups$/, groupList],
  [/^#\/groups\/([^/?]+)(?:\?tab=(\w+))?$/, groupDetails],
  [/^#\/subscriptions$/, subscriptionList],
  [/^#\/rules$/, ruleList],
  [/^#\/rules\/new$/, () => ruleEditor(null)],
  [/^#\/rules\/([^/]+)$/, (name) => ruleEditor(decodeURIComponent(name))],
  [/^#\/devices(?:\?product=([^&]+))?$/, (pk) => deviceList(pk && decodeURIComponent(pk))],
];

async function render() {
  timers.forEach(clearInterval);
  timers = [];
  const hash = location.hash || '#/overview';
  for (const a of document.querySelectorAll('nav a')) {
    const current = hash.startsWith(a.getAttribute('href'));
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (m) {
      try {
        await page(...m.slice(1).map((x) => (x === undefined ? undefined : decodeURIComponent(x))));
      } catch (err) {
        main.replaceChildren(h('h1', {}, 'Something went wrong'), errorBox(err));
      }
      return;
    }
  }
  location.hash = '#/overview';
}

function page(title, ...children) {
  document.title = `${title} · iotpipe`;
  main.replaceChildren(h('h1', {}, title), ...children);
  main.focus({ preventScroll: true });
}

// ---- overview ------------------------------------------------------------------------------

/** Prometheus text -> [{name, labels, value}]. */
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

async function overview() {
  const figures = h('dl', { class: 'figures' });
  const groups = h('tbody');
  page('Overview', figures, h('h2', {}, 'Consumer groups by accumulated messages'),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Consumer group'),
      h('th', { scope: 'col' }, 'Accumulated'), h('th', { scope: 'col' }, 'Consumption rate (messages/min)'),
      h('th', { scope: 'col' }, 'Online clients'))), groups));
  let last = null;
  const refresh = async () => {
    const r = await fetch('/metrics', { credentials: 'same-origin' });
    const m = parseMetrics(await r.text());
    const one = (name) => (m.find((x) => x.name === name) || { value: 0 }).value;
    const now = Date.now();
    const msgs = one('iotpipe_ingress_messages_total') || one('iotpipe_ingress_messages');
    const rate = last ? ((msgs - last.msgs) * 1000) / Math.max(1, now - last.now) : null;
    last = { msgs, now };
    const consumers = m.filter((x) => x.name === 'iotpipe_group_online_clients').reduce((a, x) => a + x.value, 0);
    figures.replaceChildren(
      h('div', {}, h('dt', {}, 'Messages in per second'), h('dd', {}, rate === null ? '…' : rate.toFixed(1))),
      h('div', {}, h('dt', {}, 'Connected devices'), h('dd', {}, one('iotpipe_ingress_connections'))),
      h('div', {}, h('dt', {}, 'Online consumers'), h('dd', {}, consumers)));
    const by = (name) => Object.fromEntries(m.filter((x) => x.name === name).map((x) => [x.labels.group, x.value]));
    const acc = by('iotpipe_group_accumulated');
    const rates = by('iotpipe_group_consumption_rate');
    const online = by('iotpipe_group_online_clients');
    groups.replaceChildren(...Object.keys(acc).sort((a, b) => acc[b] - acc[a]).map((g) => h('tr', {},
      h('td', {}, h('a', { href: `#/groups/${enc(g)}` }, g)), h('td', {}, acc[g]), h('td', {}, rates[g] || 0),
      h('td', {}, online[g] || 0))));
  };
  await refresh();
  every(5000, () => refresh().catch(() => {}));
}

// ---- consumer groups -----------------------------------------------------------------------

/** The server's name rule, checked as the user types: 4-30, Chinese and Japanese count 2. */
function groupNameProblem(name) {
  const cjk = /[\u4E00-\u9FFF\u3400-\u4DBF\uF900-\uFAFF\u3040-\u309F\u30A0-\u30FF\u31F0-\u31FF\uFF66-\uFF9F]/;
  let length = 0;
  for (const c of name) {
    if (cjk.test(c)) length += 2;
    else if (/^[A-Za-z0-9_]$/.test(c)) length += 1;
    else return `"${c}" is not allowed: use letters, digits, underscore, Chinese or Japanese.`;
  }
  if (length < 4 || length > 30) return `4 to 30 characters (Chinese and Japanese count 2); this counts ${length}.`;
  return null;
}

async function groupList() {
  const search = h('input', { id: 'group-search', type: 'search', placeholder: 'Consumer group name' });
  const body = h('tbody');
  const area = h('div');
  const load = async () => {
    const q = search.value.trim();
    const list = await api('GET', '/consumer-groups' + (q ? `?name=${enc(q)}` : ''));
    body.replaceChildren(...list.map((g) => h('tr', {},
      h('td', {}, g.name), h('td', {}, h('code', {}, g.id)),
      h('td', { class: 'actions' },
        h('a', { href: `#/groups/${enc(g.id)}`, 'aria-label': `View ${g.name}` }, 'View'),
        h('button', { type: 'button', class: 'link danger', onclick: () => deleteGroup(g, load) }, 'Delete')))));
    if (!list.length) body.append(h('tr', {}, h('td', { colspan: 3 }, 'No consumer group matches.')));
  };
  page('Consumer Groups',
    h('div', { class: 'toolbar' },
      h('form', { role: 'search', onsubmit: (e) => { e.preventDefault(); load().catch((err) => area.replaceChildren(errorBox(err))); } },
        h('label', { for: 'group-search' }, 'Search by name'), search, h('button', { type: 'submit' }, 'Search')),
      h('button', { type: 'button', class: 'primary', onclick: () => createGroup(load) }, 'Create Consumer Group')),
    area,
    h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Consumer group name'),
      h('th', { scope: 'col' }, 'Consumer group ID'), h('th', { scope: 'col' }, 'Actions'))), body));
  await load();
}

function createGroup(reload) {
  return modal('Create Consumer Group', (close, error) => {
    const hint = h('p', { id: 'group-name-hint', class: 'hint', 'aria-live': 'polite' },
      '4 to 30 letters, digits, underscores, Chinese or Japanese characters (which count as 2).');
    const input = h('input', { id: 'group-name', name: 'name', required: true, 'aria-describedby': 'group-name-hint',
      oninput: () => {
        const problem = groupNameProblem(input.value);
        hint.textContent = problem || 'The name can be used.';
        hint.className = problem ? 'hint invalid' : 'hint valid';
        input.setAttribute('aria-invalid', problem ? 'true' : 'false');
      } });
    return h('form', { onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api('POST', '/consumer-groups', { name: input.value });
        close(true);
        toast(`Consumer group ${input.value} created.`);
        await reload();
      } catch (err) { error.replaceChildren(errorBox(err)); }
    } }, h('label', { for: 'group-name' }, 'Consumer group name'), input, hint,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Confirm'),
      h('button', { type: 'button', onclick: () => close(false) }, 'Cancel')));
  });
}

async function deleteGroup(g, after) {
  const done = await confirmDialog('Delete Consumer Group',
    `Delete ${g.name}? Its accumulated messages and dead letters are dropped and its online clients are disconnected. This cannot be undone.`,
    () => api('DELETE', `/consumer-groups/${enc(g.id)}`));
  if (done) {
    toast(`Consumer group ${g.name} deleted.`);
    if (after) await after(); else location.hash = '#/groups';
  }
}

const TABS = [['status', 'Consumer Group Status'], ['products', 'Subscribed Products'], ['alerts', 'Alert Settings'], ['dead', 'Dead Letters']];

async function groupDetails(id, tab) {
  tab = tab || 'status';
  const g = await api('GET', `/consumer-groups/${enc(id)}`);
  const status = await api('GET', `/consumer-groups/${enc(id)}/status`);
  const tabs = TABS.filter(([t]) => t !== 'dead' || status.deadLetterCount > 0 || tab === 'dead');
  const panel = h('section', { role: 'tabpanel', id: 'panel', 'aria-labelledby': `tab-${tab}` });
  page(g.name,
    h('p', { class: 'sub' }, 'Consumer group ID ', h('code', {}, g.id), ' · ',
      h('button', { type: 'button', class: 'link danger', onclick: () => deleteGroup(g) }, 'Delete')),
    h('div', { role: 'tablist', 'aria-label': 'Consumer group' }, tabs.map(([t, label]) => h('a', {
      role: 'tab', id: `tab-${t}`, href: `#/groups/${enc(id)}?tab=${t}`, 'aria-selected': String(t === tab),
      'aria-controls': 'panel' }, label))),
    panel);
  const draw = { status: groupStatus, products: subscribedProducts, alerts: alertSettings, dead: deadLetters }[tab] || groupStatus;
  await draw(g, panel);
}

async function groupStatus(g, panel) {
  const figures = h('dl', { class: 'figures' });
  const clients = h('tbody');
  const charts = h('div', { class: 'charts' });
  panel.replaceChildren(figures, h('h2', {}, 'Online clients'),
    h('table', {}, h('thead', {}, h('tr', {}, ['Client ID', 'IP:port', 'Online since', 'Consumption rate (messages/min)'].map((c) => h('th', { scope: 'col' }, c)))), clients),
    h('h2', {}, 'Last hour'), charts);
  const refresh = async () => {
    const s = await api('GET', `/consumer-groups/${enc(g.id)}/status`);
    const clear = s.accumulatedCount > 0
      ? h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (await confirmDialog('Clear accumulated messages',
          `Drop the ${s.accumulatedCount} accumulated messages of ${g.name}? They will not be delivered.`,
          () => api('POST', `/consumer-groups/${enc(g.id)}/clear`))) {
          toast('Accumulated messages cleared.');
          await refresh();
        }
      } }, 'Clear')
      : null;
    figures.replaceChildren(
      h('div', {}, h('dt', {}, 'Consumption rate'), h('dd', {}, `${s.consumptionRate} messages/min`)),
      h('div', {}, h('dt', {}, 'Accumulated messages'), h('dd', { id: 'accumulated' }, String(s.accumulatedCount), ' ', clear)),
      h('div', {}, h('dt', {}, 'Last consumption time'), h('dd', {}, time(s.lastConsumptionTime))),
      h('div', {}, h('dt', {}, 'Dead letters'), h('dd', {}, String(s.deadLetterCount || 0))));
    clients.replaceChildren(...s.onlineClients.map((c) => h('tr', {},
      h('td', {}, c.clientId), h('td', {}, c.clientIpPort), h('td', {}, time(c.onlineTime)), h('td', {}, c.consumptionRate))));
    if (!s.onlineClients.length) clients.append(h('tr', {}, h('td', { colspan: 4 }, 'No client online.')));
    const hist = await api('GET', `/consumer-groups/${enc(g.id)}/history`);
    charts.replaceChildren(
      chart('Accumulated messages', hist.samples, 'accumulatedCount'),
      chart('Consumption rate (messages/min)', hist.samples, 'consumptionRate'));
  };
  await refresh();
  every(5000, () => refresh().catch(() => {}));
}

/** A line chart of `field` over the samples' times, as SVG. */
function chart(title, samples, field) {
  const W = 480; const H = 160; const P = 30;
  const now = Date.now(); const from = now - 3600 * 1000;
  const max = Math.max(1, ...samples.map((s) => s[field]));
  const x = (t) => P + ((t - from) / (now - from)) * (W - P - 8);
  const y = (v) => H - P + 10 - (v / max) * (H - P - 10);
  const points = samples.filter((s) => s.time >= from).map((s) => `${x(s.time).toFixed(1)},${y(s[field]).toFixed(1)}`).join(' ');
  const latest = samples.length ? samples[samples.length - 1][field] : 0;
  return h('figure', {}, svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${latest} now, at most ${max} in the last hour` },
    svg('line', { x1: P, y1: H - P + 10, x2: W - 8, y2: H - P + 10, class: 'axis' }),
    svg('line', { x1: P, y1: 10, x2: P, y2: H - P + 10, class: 'axis' }),
    svg('text', { x: P - 4, y: 14, 'text-anchor': 'end' }, String(max)),
    svg('text', { x: P - 4, y: H - P + 10, 'text-anchor': 'end' }, '0'),
    svg('text', { x: P, y: H - 4 }, '−60 min'),
    svg('text', { x: W - 8, y: H - 4, 'text-anchor': 'end' }, 'now'),
    svg('polyline', { points, class: 'series' })), h('figcaption', {}, title));
}

async function subscribedProducts(g, panel) {
  const subs = (await api('GET', '/subscriptions')).filter((s) => s.consumerGroupIds.includes(g.id));
  const body = h('tbody');
  panel.replaceChildren(h('table', {}, h('thead', {}, h('tr', {}, ['Product', 'Message types', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), body));
  body.replaceChildren(...subs.map((s) => h('tr', {}, h('td', {}, s.productKey), h('td', {}, s.messageTypes.join(', ')),
    h('td', { class: 'actions' }, h('button', { type: 'button', class: 'link danger', onclick: async () => {
      if (s.consumerGroupIds.length === 1) {
        await modal('Unsubscribe', (close) => h('div', {},
          h('p', { role: 'alert' }, `${g.name} is the only consumer group of the subscription of ${s.productKey}: it cannot be unsubscribed. Edit the subscription to add another consumer group first, or delete the subscription.`),
          h('div', { class: 'buttons' }, h('a', { class: 'button', href: '#/subscriptions', onclick: () => close(true) }, 'Go to Server-side Subscription'),
            h('button', { type: 'button', onclick: () => close(false) }, 'Close'))));
        return;
      }
      if (await confirmDialog('Unsubscribe', `Stop sending ${s.productKey}'s messages to ${g.name}?`,
        () => api('DELETE', `/subscriptions/${enc(s.productKey)}/consumer-groups/${enc(g.id)}`))) {
        toast('Unsubscribed.');
        await subscribedProducts(g, panel);
      }
    } }, 'Unsubscribe')))));
  if (!subs.length) body.append(h('tr', {}, h('td', { colspan: 3 }, 'No product is subscribed to this consumer group.')));
}

// ---- alert settings ------------------------------------------------------------------------

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

async function alertSettings(g, panel) {
  const all = await api('GET', '/alert-rules');
  const mine = all.filter((r) => !r.consumerGroupIds || !r.consumerGroupIds.length || r.consumerGroupIds.includes(g.id));
  const details = await Promise.all(mine.map((r) => api('GET', `/alert-rules/${enc(r.id)}`)));
  const reload = () => alertSettings(g, panel);
  const body = h('tbody');
  panel.replaceChildren(
    h('div', { class: 'toolbar' }, h('button', { type: 'button', class: 'primary', onclick: () => alertForm(g, null, reload) }, 'Create Alert Rule')),
    h('table', {}, h('thead', {}, h('tr', {}, ['Name', 'Condition', 'Period', 'Consecutive periods', 'Mute', 'Effective', 'Callback URL', 'State', 'Last notification', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), body));
  body.replaceChildren(...details.map((r) => {
    const st = (r.status || []).find((s) => s.groupId === g.id) || {};
    const last = (r.history || []).filter((n) => n.groupId === g.id).pop();
    return h('tr', {}, h('td', {}, r.name), h('td', {}, `${r.metric} ${r.comparison} ${r.threshold}`),
      h('td', {}, `${r.periodSeconds} s`), h('td', {}, r.consecutivePeriods), h('td', {}, `${r.muteSeconds} s`),
      h('td', {}, r.effective ? `${(r.effective.days || []).join(' ')} ${r.effective.start}–${r.effective.end}` : 'always'),
      h('td', {}, r.callbackUrl || '—'), h('td', {}, st.state || 'ok'),
      h('td', {}, last ? `${last.state} at ${time(last.time)} (${last.delivery})` : '—'),
      h('td', { class: 'actions' }, r.source === 'config' ? 'from the configuration file' : [
        h('button', { type: 'button', class: 'link', onclick: () => alertForm(g, r, reload) }, 'Edit'),
        h('button', { type: 'button', class: 'link danger', onclick: async () => {
          if (await confirmDialog('Delete alert rule', `Delete the alert rule ${r.name}?`, () => api('DELETE', `/alert-rules/${enc(r.id)}`))) await reload();
        } }, 'Delete')]));
  }));
  if (!details.length) body.append(h('tr', {}, h('td', { colspan: 10 }, 'No alert rule watches this consumer group.')));
}

function field(label, input) {
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input);
}

function alertForm(g, rule, reload) {
  const r = rule || { name: '', metric: 'accumulatedCount', comparison: '>', threshold: 1000, periodSeconds: 300,
    consecutivePeriods: 3, muteSeconds: 3600, effective: { days: DAYS, start: '00:00', end: '23:59' }, callbackUrl: '' };
  const eff = r.effective || { days: DAYS, start: '00:00', end: '23:59' };
  const f = {
    name: h('input', { id: 'alert-name', value: r.name, required: true }),
    metric: h('select', { id: 'alert-metric' }, [['accumulatedCount', 'Accumulated messages'], ['consumptionRate', 'Consumption rate (messages/min)']]
      .map(([v, l]) => h('option', { value: v, selected: v === r.metric }, l))),
    comparison: h('select', { id: 'alert-comparison' }, ['>', '>=', '<', '<='].map((c) => h('option', { value: c, selected: c === r.comparison }, c))),
    threshold: h('input', { id: 'alert-threshold', type: 'number', value: r.threshold, required: true }),
    period: h('input', { id: 'alert-period', type: 'number', min: 1, value: r.periodSeconds, required: true }),
    consecutive: h('input', { id: 'alert-consecutive', type: 'number', min: 1, value: r.consecutivePeriods, required: true }),
    mute: h('input', { id: 'alert-mute', type: 'number', min: 0, value: r.muteSeconds, required: true }),
    start: h('input', { id: 'alert-start', type: 'time', value: eff.start }),
    end: h('input', { id: 'alert-end', type: 'time', value: eff.end }),
    callback: h('input', { id: 'alert-callback', type: 'url', value: r.callbackUrl || '' }),
  };
  const days = DAYS.map((d) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', value: d, checked: (eff.days || DAYS).includes(d) }), d));
  return modal(rule ? 'Edit Alert Rule' : 'Create Alert Rule', (close, error) => h('form', { onsubmit: async (e) => {
    e.preventDefault();
    const body = {
      name: f.name.value, consumerGroupIds: rule ? rule.consumerGroupIds : [g.id], metric: f.metric.value,
      comparison: f.comparison.value, threshold: Number(f.threshold.value), periodSeconds: Number(f.period.value),
      consecutivePeriods: Number(f.consecutive.value), muteSeconds: Number(f.mute.value),
      effective: { days: days.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value), start: f.start.value, end: f.end.value },
    };
    if (f.callback.value) body.callbackUrl = f.callback.value;
    try {
      if (rule) await api('PUT', `/alert-rules/${enc(rule.id)}`, body); else await api('POST', '/alert-rules', body);
      close(true);
      toast(`Alert rule ${body.name} saved.`);
      await reload();
    } catch (err) { error.replaceChildren(errorBox(err)); }
  } }, field('Name', f.name), field('Metric', f.metric), field('Comparison', f.comparison), field('Threshold', f.threshold),
  field('Period (seconds)', f.period), field('Consecutive periods', f.consecutive), field('Mute (seconds)', f.mute),
  h('fieldset', {}, h('legend', {}, 'Effective days'), days), field('Effective from', f.start), field('Effective until', f.end),
  field('Callback URL', f.callback),
  h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Confirm'),
    h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'))));
}

// ---- dead letters --------------------------------------------------------------------------

async function deadLetters(g, panel) {
  const list = await api('GET', `/consumer-groups/${enc(g.id)}/dead-letters`);
  const items = Array.isArray(list) ? list : (list.messages || list.items || []);
  const reload = () => deadLetters(g, panel);
  panel.replaceChildren(
    h('div', { class: 'toolbar' },
      h('button', { type: 'button', onclick: async () => {
        if (await confirmDialog('Re-queue dead letters', 'Deliver every dead letter of this group again?', () => api('POST', `/consumer-groups/${enc(g.id)}/dead-letters/requeue`, {}))) await reload();
      } }, 'Re-queue all'),
      h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (await confirmDialog('Purge dead letters', 'Drop every dead letter of this group?', () => api('DELETE', `/consumer-groups/${enc(g.id)}/dead-letters`))) await reload();
      } }, 'Purge')),
    h('table', {}, h('thead', {}, h('tr', {}, ['Message', 'Topic', 'Payload (start)'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, items.map((m) => h('tr', {}, h('td', {}, m.messageId || m.seq || ''), h('td', {}, m.topic || ''),
        h('td', {}, h('code', {}, preview(m.payloadBase64))))))));
}

/** The first 120 characters of a base64 payload, as UTF-8 text. */
function preview(b64) {
  if (!b64) return '';
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes).slice(0, 120);
}

// ---- server-side subscription --------------------------------------------------------------

async function subscriptionList() {
  const subs = await api('GET', '/subscriptions');
  const body = h('tbody');
  page('Server-side Subscription',
    h('div', { class: 'toolbar' }, h('button', { type: 'button', class: 'primary', onclick: () => subscriptionForm(null) }, 'Create Subscription')),
    h('table', {}, h('thead', {}, h('tr', {}, ['Product', 'Message types', 'Consumer groups', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), body));
  body.replaceChildren(...subs.map((s) => h('tr', {}, h('td', {}, s.productKey), h('td', {}, s.messageTypes.join(', ')),
    h('td', {}, s.consumerGroupIds.map((id) => h('a', { href: `#/groups/${enc(id)}`, class: 'tag' }, id))),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'link', onclick: () => subscriptionForm(s) }, 'Edit'),
      h('button', { type: 'button', class: 'link danger', onclick: async () => {
        if (await confirmDialog('Delete subscription', `Stop the server-side subscription of ${s.productKey}?`, () => api('DELETE', `/subscriptions/${enc(s.productKey)}`))) await render();
      } }, 'Delete')))));
  if (!subs.length) body.append(h('tr', {}, h('td', { colspan: 4 }, 'No subscription yet.')));
}

async function subscriptionForm(sub) {
  const [products, groups] = await Promise.all([api('GET', '/products'), api('GET', '/consumer-groups')]);
  const product = h('select', { id: 'sub-product', disabled: !!sub }, products.map((p) => h('option', { value: p.productKey, selected: sub && sub.productKey === p.productKey }, `${p.name} (${p.productKey})`)));
  const types = MESSAGE_TYPES.map((t) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'type', value: t, checked: sub ? sub.messageTypes.includes(t) : t === 'upstream' }), t));
  const gs = groups.map((g) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: 'group', value: g.id, checked: sub && sub.consumerGroupIds.includes(g.id) }), g.name));
  const picked = (labels) => labels.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value);
  await modal(sub ? 'Edit Subscription' : 'Create Subscription', (close, error) => h('form', { onsubmit: async (e) => {
    e.preventDefault();
    const body = { productKey: product.value, messageTypes: picked(types), consumerGroupIds: picked(gs) };
    try {
      if (sub) await api('PUT', `/subscriptions/${enc(sub.productKey)}`, body); else await api('POST', '/subscriptions', body);
      close(true);
      toast(`Subscription of ${body.productKey} saved.`);
      await render();
    } catch (err) { error.replaceChildren(errorBox(err)); }
  } }, field('Product', product), h('fieldset', {}, h('legend', {}, 'Message types'), types),
  h('fieldset', {}, h('legend', {}, 'Consumer groups'), gs),
  h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Confirm'), h('button', { type: 'button', onclick: () => close(false) }, 'Cancel'))));
}

// ---- rules ---------------------------------------------------------------------------------

async function ruleList() {
  const rules = await api('GET', '/rules');
  const body = h('tbody');
  page('Rules',
    h('div', { class: 'toolbar' }, h('a', { class: 'button primary', href: '#/rules/new' }, 'Create Rule')),
    h('table', {}, h('thead', {}, h('tr', {}, ['Rule', 'Enabled', 'Matched', 'Passed', 'Failed', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), body));
  body.replaceChildren(...rules.map((r) => h('tr', {}, h('td', {}, h('a', { href: `#/rules/${enc(r.name)}` }, r.name), h('div', { class: 'hint' }, r.description)),
    h('td', {}, h('input', { type: 'checkbox', role: 'switch', checked: r.enabled, 'aria-label': `Enable ${r.name}`, onchange: async (e) => {
      try { await api('PATCH', `/rules/${enc(r.name)}`, { enabled: e.target.checked }); toast(`${r.name} ${e.target.checked ? 'enabled' : 'disabled'}.`); } catch (err) { e.target.checked = !e.target.checked; toast(err.message); }
    } })),
    h('td', {}, r.metrics.matched), h('td', {}, r.metrics.passed), h('td', {}, r.metrics.failed),
    h('td', { class: 'actions' }, h('a', { href: `#/rules/${enc(r.name)}` }, 'Edit'),
      h('button', { type: 'button', class: 'link danger', onclick: async () => {
        if (await confirmDialog('Delete rule', `Delete the rule ${r.name} and its file?`, () => api('DELETE', `/rules/${enc(r.name)}`))) await render();
      } }, 'Delete')))));
  if (!rules.length) body.append(h('tr', {}, h('td', { colspan: 6 }, 'No rule yet.')));
}

async function ruleEditor(name) {
  const r = name ? await api('GET', `/rules/${enc(name)}`) : { name: '', description: '', enabled: true, dataType: 'json', sql: 'SELECT * FROM "/+/+/user/update"', actions: ['amqp DEFAULT_GROUP'], errorAction: null };
  const f = {
    name: h('input', { id: 'rule-name', value: r.name, required: true, readonly: !!name }),
    description: h('input', { id: 'rule-description', value: r.description || '' }),
    sql: h('textarea', { id: 'rule-sql', rows: 8, spellcheck: 'false', class: 'code' }, r.sql),
    actions: h('textarea', { id: 'rule-actions', rows: 3, spellcheck: 'false', class: 'code' }, (r.actions || []).join('\n')),
    errorAction: h('input', { id: 'rule-error-action', value: r.errorAction || '', class: 'code' }),
    dataType: h('select', { id: 'rule-data-type' }, ['json', 'binary'].map((t) => h('option', { value: t, selected: r.dataType === t }, t))),
  };
  const problems = h('div', { id: 'rule-problems', 'aria-live': 'assertive' });
  const save = async (e) => {
    e.preventDefault();
    const body = { sql: f.sql.value, actions: f.actions.value.split('\n').map((s) => s.trim()).filter(Boolean),
      description: f.description.value, dataType: f.dataType.value, enabled: r.enabled };
    if (f.errorAction.value.trim()) body.errorAction = f.errorAction.value.trim();
    try {
      let answer;
      if (name) answer = await api('PUT', `/rules/${enc(name)}`, body);
      else answer = await api('POST', '/rules', { ...body, name: f.name.value });
      const warnings = (answer && answer.warnings) || [];
      problems.replaceChildren(h('p', { class: 'ok', role: 'status' }, 'Saved and in force.'), ...warnings.map((w) => h('p', { class: 'warning' }, typeof w === 'string' ? w : JSON.stringify(w))));
      if (!name) history.replaceState(null, '', `#/rules/${enc(f.name.value)}`);
    } catch (err) {
      const list = (err.body && err.body.diagnostics) || [];
      problems.replaceChildren(errorBox(err), h('ul', { class: 'diagnostics' }, list.map((d) => h('li', {},
        `${d.field}${d.line ? `, line ${d.line}` : ''}${d.col ? `, column ${d.col}` : ''}: ${d.message}`, d.hint ? h('div', { class: 'hint' }, d.hint) : null))));
      const first = list.find((d) => d.field === 'sql' && d.line);
      if (first) selectAt(f.sql, first.line, first.col || 1);
    }
  };
  const t = {
    topic: h('input', { id: 'test-topic', value: '/a1demo/device1/user/update', class: 'code' }),
    payload: h('textarea', { id: 'test-payload', rows: 4, class: 'code', spellcheck: 'false' }, '{"temperature": 40}'),
    device: h('input', { id: 'test-device', value: '' }),
  };
  const result = h('div', { id: 'test-result', 'aria-live': 'polite' });
  const test = async (e) => {
    e.preventDefault();
    let payload = t.payload.value;
    try { payload = JSON.parse(payload); } catch (_) { /* sent as text */ }
    const body = { sql: f.sql.value, dataType: f.dataType.value, topic: t.topic.value, payload };
    if (t.device.value) body.deviceName = t.device.value;
    try {
      const a = await api('POST', '/rules/test', body);
      result.replaceChildren(a.matched
        ? h('div', {}, h('p', { class: 'ok' }, 'Matched. Result:'), h('pre', {}, typeof a.result === 'string' ? a.result : JSON.stringify(a.result, null, 2)))
        : h('p', { class: 'warning' }, 'Did not match: ', a.reason || a.error || ''));
      if (a.error) result.append(h('p', { class: 'error' }, a.error));
    } catch (err) {
      const list = (err.body && err.body.diagnostics) || [];
      result.replaceChildren(errorBox(err), h('ul', { class: 'diagnostics' }, list.map((d) => h('li', {}, `${d.field}${d.line ? `, line ${d.line}` : ''}${d.col ? `, column ${d.col}` : ''}: ${d.message}`))));
    }
  };
  page(name ? `Rule ${name}` : 'Create Rule',
    h('div', { class: 'split' },
      h('form', { onsubmit: save, class: 'editor' }, field('Rule name', f.name), field('Description', f.description),
        field('SQL', f.sql), field('Actions (one per line: amqp GROUP_ID, republish /TOPIC)', f.actions),
        field('Error action', f.errorAction), field('Data type', f.dataType), problems,
        h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Save'), h('a', { href: '#/rules', class: 'button' }, 'Back to rules'))),
      h('form', { onsubmit: test, class: 'test-pane', 'aria-label': 'Test the rule' }, h('h2', {}, 'Test'),
        field('Topic', t.topic), field('Payload', t.payload), field('Device name (optional)', t.device),
        h('button', { type: 'submit' }, 'Run test'), result)));
}

/** Puts the caret at line/column of a textarea. */
function selectAt(area, line, col) {
  const lines = area.value.split('\n');
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  pos += Math.max(0, col - 1);
  area.focus();
  area.setSelectionRange(pos, pos + 1);
}

// ---- devices -------------------------------------------------------------------------------

async function deviceList(pk) {
  const products = await api('GET', '/products');
  if (!products.length) { page('Devices', h('p', {}, 'No product is configured.')); return; }
  pk = pk || products[0].productKey;
  const devices = await api('GET', `/products/${enc(pk)}/devices`);
  const select = h('select', { id: 'device-product', onchange: () => { location.hash = `#/devices?product=${enc(select.value)}`; } },
    products.map((p) => h('option', { value: p.productKey, selected: p.productKey === pk }, `${p.name} (${p.productKey})`)));
  const body = h('tbody');
  page('Devices', h('div', { class: 'toolbar' }, field('Product', select),
    h('button', { type: 'button', class: 'primary', onclick: () => createDevice(pk) }, 'Create Device')),
  h('table', {}, h('thead', {}, h('tr', {}, ['Device name', 'State', 'Client ID', 'IP address', 'Last online', 'Enabled', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), body));
  body.replaceChildren(...devices.map((d) => h('tr', {}, h('td', {}, d.deviceName),
    h('td', {}, h('span', { class: d.online ? 'state online' : 'state' }, d.online ? 'Online' : 'Offline')),
    h('td', {}, d.clientId || '—'), h('td', {}, d.ipAddress || '—'), h('td', {}, time(d.lastOnlineTime)),
    h('td', {}, h('input', { type: 'checkbox', role: 'switch', checked: d.enabled, 'aria-label': `Enable ${d.deviceName}`, onchange: async (e) => {
      try { await api('PATCH', `/products/${enc(pk)}/devices/${enc(d.deviceName)}`, { enabled: e.target.checked }); toast(`${d.deviceName} ${e.target.checked ? 'enabled' : 'disabled'}.`); } catch (err) { e.target.checked = !e.target.checked; toast(err.message); }
    } })),
    h('td', { class: 'actions' }, h('button', { type: 'button', class: 'link danger', onclick: async () => {
      if (await confirmDialog('Delete device', `Delete ${d.deviceName}? It is disconnected and can no longer sign in.`, () => api('DELETE', `/products/${enc(pk)}/devices/${enc(d.deviceName)}`))) await render();
    } }, 'Delete')))));
  if (!devices.length) body.append(h('tr', {}, h('td', { colspan: 7 }, 'No device yet.')));
}

function createDevice(pk) {
  return modal('Create Device', (close, error) => {
    const name = h('input', { id: 'device-name', required: true });
    const form = h('form', { onsubmit: async (e) => {
      e.preventDefault();
      try {
        const d = await api('POST', `/products/${enc(pk)}/devices`, { deviceName: name.value });
        form.replaceChildren(h('p', {}, `Device ${d.deviceName} created. Its secret is shown this once: copy it now.`),
          h('dl', {}, h('dt', {}, 'ProductKey'), h('dd', {}, h('code', {}, d.productKey)), h('dt', {}, 'DeviceName'), h('dd', {}, h('code', {}, d.deviceName)),
            h('dt', {}, 'DeviceSecret'), h('dd', {}, h('code', { id: 'device-secret' }, d.deviceSecret))),
          h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'primary', onclick: () => { close(true); render(); } }, 'Done')));
      } catch (err) { error.replaceChildren(errorBox(err)); }
    } }, field('Device name (4-32 letters, digits, - . _ @ :)', name),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary' }, 'Confirm'), h('button', { type: 'button', onclick: () => close(false) }, 'Cancel')));
    return form;
  });
}

window.addEventListener('hashchange', render);
render();
