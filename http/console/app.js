// The kvmesh web console: plain JavaScript over the node's HTTP API (README "HTTP API").
// Every action is an API request under the caller's credentials; the server decides what is
// allowed and its error messages are shown as it worded them.
'use strict';

const TOKEN_KEY = 'kvmesh.token';
const PAGE = 50;  // rows per page in the instance list and the key browser

// --- the API ---

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/// Sends a request; resolves to the Response (ok) or rejects with an ApiError carrying the
/// server's {code, message}.
async function request(method, url, body, contentType) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers['Authorization'] = 'Bearer ' + token;
  if (contentType) headers['Content-Type'] = contentType;
  let res;
  try {
    res = await fetch(url, {method, headers, body, cache: 'no-store'});
  } catch (e) {
    throw new ApiError(0, 'unavailable', 'cannot reach the node: ' + e.message);
  }
  if (res.ok) return res;
  let code = 'error', message = res.status + ' ' + res.statusText;
  try {
    const j = await res.json();
    if (j.code) code = j.code;
    if (j.message) message = j.message;
  } catch (e) { /* not JSON: keep the status line */ }
  if (res.status === 401) showLogin(message);
  throw new ApiError(res.status, code, message);
}

async function getJson(url) {
  return (await request('GET', url)).json();
}

/// A database path as the API addresses it: segments percent-encoded, "keys" as "%6Beys".
function dbUrl(path) {
  const segs = path.split('/').filter(s => s.length > 0).map(s =>
    s === 'keys' ? '%6Beys' : encodeURIComponent(s));
  return '/v1/databases/' + segs.join('/');
}

function keyUrl(path, key) {
  return dbUrl(path) + '/keys/' + encodeURIComponent(key.replace(/^\//, '')).replace(/%2F/g, '/');
}

// --- small helpers ---

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function fmtBytes(n) {
  if (n === undefined || n === null) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0, v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; ++i; }
  return (i === 0 ? v : v.toFixed(v < 10 ? 2 : 1).replace(/\.0+$/, '')) + ' ' + units[i];
}

/// A size as the config syntax writes it, exactly: "100MB", "64KiB", "1500B".
function sizeText(n) {
  for (const [unit, f] of [['TB', 1e12], ['GB', 1e9], ['MB', 1e6], ['KB', 1e3],
                           ['TiB', 2 ** 40], ['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 1024]]) {
    if (n >= f && n % f === 0) return (n / f) + unit;
  }
  return n + 'B';
}

function fmtAge(ms) {
  if (ms === undefined || ms === null) return '';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

/// "1 instance", "2 instances".
function plural(n, noun) {
  return n + ' ' + noun + (n === 1 ? '' : 's');
}

function fmtTime(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

/// The matcher kind as config/matcher.hpp reads it from the text (the server has the last word).
function matcherKind(p) {
  if (/[\\()[\]{}+?|^$,]/.test(p)) return 'regex';
  const segs = p.split('/');
  if (p.includes('*') && segs.some(s => s.includes('*') && s !== '*' && s !== '**')) return 'regex';
  if (segs.some(s => s === '*' || s === '**')) return 'wildcard';
  return 'literal';
}

function banner(message, kind) {
  const b = document.getElementById('banner');
  if (!message) { b.hidden = true; return; }
  b.textContent = message;
  b.className = kind || '';
  b.hidden = false;
}

let keepNote = false;

/// A success note that survives the view change the action makes next.
function note(message) {
  banner(message, 'info');
  keepNote = true;
}

function showError(e) {
  banner(e instanceof ApiError ? e.message : String(e));
}

const confirmDialog = document.getElementById('confirm-dialog');

/// Asks before a destructive action; resolves true when confirmed.
function confirmAction(title, text, okLabel) {
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel || 'Delete';
  confirmDialog.returnValue = '';
  confirmDialog.showModal();
  document.getElementById('confirm-cancel').focus();
  return new Promise(resolve => {
    confirmDialog.addEventListener('close', () => resolve(confirmDialog.returnValue === 'ok'),
                                   {once: true});
  });
}

// --- who is logged in ---

let whoami = null;

async function loadWhoami() {
  whoami = await getJson('/v1/whoami');
  const node = document.getElementById('node-name');
  if (!node.textContent) {
    getJson('/v1/health').then(h => { node.textContent = 'node ' + h.node_id; }).catch(() => {});
  }
  const who = document.getElementById('who');
  who.textContent = whoami.principal ? whoami.principal + ' (' + whoami.by + ')' : '';
  who.title = whoami.rights;
  document.getElementById('logout').hidden = !sessionStorage.getItem(TOKEN_KEY);
}

async function mayWrite(path) {
  if (!whoami || whoami.admin) return true;
  try {
    const w = await getJson('/v1/whoami?database=' + encodeURIComponent(path));
    return w.database.write;
  } catch (e) {
    return false;
  }
}

let loginShown = false;

function showLogin(message) {
  if (loginShown) return;
  loginShown = true;
  stopTimers();
  banner(null);
  const view = document.getElementById('view');
  const input = el('input', {id: 'login-token', type: 'password', autocomplete: 'off',
                             'aria-label': 'Bearer token', placeholder: 'kvmesh_…'});
  const form = el('form', {class: 'login panel', id: 'login-form'},
    el('h1', {}, 'Log in'),
    el('p', {class: 'muted'}, 'This node requires a client certificate or a bearer token. ' +
       'Paste a token made with "kvmesh token new --principal NAME".'),
    el('p', {id: 'login-message', class: 'check error'}, message || ''),
    input,
    el('div', {class: 'actions'}, el('button', {class: 'primary', type: 'submit', id: 'login-submit'}, 'Log in')));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    loginShown = false;
    try {
      await loadWhoami();
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      loginShown = false;
      showLogin(e.message);
    }
  });
  view.replaceChildren(form);
  input.focus();
}

document.getElementById('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  whoami = null;
  document.getElementById('who').textContent = '';
  showLogin('');
});

// --- views ---

let timers = [];
function stopTimers() {
  timers.forEach(t => clearInterval(t));
  timers = [];
}

function setTitle(...parts) {
  document.getElementById('view').replaceChildren();
  return el('h1', {}, ...parts);
}

// Databases: the configs in force, and the form that creates and edits them.

async function viewDatabases() {
  const view = document.getElementById('view');
  const admin = !whoami || whoami.admin;
  const plus = admin ? el('button', {class: 'plus primary', id: 'new-config', title: 'New database',
                                     'aria-label': 'New database', onclick: () => openConfigForm(null)}, '+') : null;
  view.replaceChildren(el('h1', {}, 'Databases', plus), el('p', {class: 'muted'}, 'Loading…'));
  const configs = await getJson('/v1/configs');
  const rows = configs.map(c => {
    const editable = admin && c.origin !== 'file';
    return el('tr', {'data-id': c.id},
      el('td', {}, el('strong', {}, c.id), c.description ? el('div', {class: 'muted'}, c.description) : null),
      el('td', {}, (c.tags || []).map(t => el('span', {class: 'badge'}, t)), ' '),
      el('td', {}, el('code', {}, c.matcher), ' ', el('span', {class: 'badge ' + c.matcher_kind}, c.matcher_kind)),
      el('td', {}, c.replication.min + '–' + c.replication.max),
      el('td', {class: 'num'}, fmtBytes(c.size_bytes)),
      el('td', {}, c.origin ? el('span', {class: 'badge'}, c.origin) : null, ' ',
         el('span', {class: 'muted mono', title: c.source || ''}, (c.source || '').split('/').pop())),
      el('td', {class: 'row-actions'},
        el('a', {href: '#/instances?config=' + encodeURIComponent(c.id)}, 'Instances'), ' ',
        c.origin === 'api' ? el('button', {onclick: () => showHistory(c.id), 'aria-label': 'History of ' + c.id}, 'History') : null, ' ',
        editable ? el('button', {onclick: () => openConfigForm(c), 'aria-label': 'Edit ' + c.id}, 'Edit') : null, ' ',
        editable ? el('button', {class: 'danger', 'aria-label': 'Delete ' + c.id,
                                 onclick: () => deleteConfig(c.id)}, 'Delete') : null));
  });
  view.replaceChildren(
    el('h1', {}, 'Databases', plus),
    el('p', {class: 'muted'}, 'The database configs in force on this node. A config created here applies on every node; ' +
       'configs from a node\'s YAML files are edited in the files.'),
    configs.length === 0 ? el('p', {}, 'No database configs yet.') :
    el('table', {id: 'configs'},
      el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', {}, 'Tags'), el('th', {}, 'Matcher'),
        el('th', {}, 'Replication'), el('th', {class: 'num'}, 'Size'), el('th', {}, 'Source'), el('th', {}, ''))),
      el('tbody', {}, rows)));
}

/// Every apply and delete of a cluster-wide config (GET /v1/configs/{id}/history): who, where,
/// when, and which one is in force (concurrent edits: the later one wins everywhere).
async function showHistory(id) {
  const dialog = document.getElementById('history-dialog');
  const body = document.getElementById('history-body');
  document.getElementById('history-title').textContent = 'History of ' + id;
  body.replaceChildren(el('p', {class: 'muted'}, 'Loading…'));
  dialog.showModal();
  try {
    const entries = await getJson('/v1/configs/' + encodeURIComponent(id) + '/history');
    body.replaceChildren(el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'When'), el('th', {}, 'What'), el('th', {}, 'By'),
                           el('th', {}, 'Node'), el('th', {}, ''))),
      el('tbody', {}, entries.map(e => el('tr', {},
        el('td', {}, fmtTime(e.time_ms)),
        el('td', {}, e.deleted ? 'deleted' : el('code', {}, e.config.matcher + ' · ' + fmtBytes(e.config.size_bytes))),
        el('td', {}, e.applied_by), el('td', {class: 'mono'}, e.node),
        el('td', {}, e.in_force ? el('span', {class: 'badge ok'}, 'in force') : ''))))));
  } catch (e) {
    body.replaceChildren(el('p', {class: 'check error'}, e.message));
  }
}

async function deleteConfig(id) {
  if (!await confirmAction('Delete database config ' + id + '?',
      'New databases stop opening under "' + id + '" on every node. Data already stored is kept until the instances are dropped.')) return;
  try {
    await request('DELETE', '/v1/configs/' + encodeURIComponent(id));
    banner('Deleted config ' + id, 'info');
    await viewDatabases();
  } catch (e) {
    showError(e);
  }
}

const configDialog = document.getElementById('config-dialog');
const cfg = name => document.getElementById('cfg-' + name);
let editing = null;       // the config being edited, or null for a new one
let checkTimer = null;
let checkSeq = 0;

function configBody() {
  const tags = cfg('tags').value.split(',').map(t => t.trim()).filter(t => t);
  const body = {
    id: cfg('id').value.trim(),
    matcher: cfg('matcher').value.trim(),
    replication: {min: Number(cfg('min').value), max: Number(cfg('max').value)},
    size: cfg('size').value.trim(),
  };
  if (cfg('description').value.trim()) body.description = cfg('description').value.trim();
  if (tags.length) body.tags = tags;
  return body;
}

function setCheck(text, kind) {
  const c = cfg('check');
  c.textContent = text;
  c.className = 'check ' + (kind || '');
}

/// Asks the server's validator (POST /v1/configs/validate) as the user types.
async function checkConfig() {
  const body = configBody();
  cfg('kind').textContent = body.matcher ? matcherKind(body.matcher) : 'literal';
  cfg('kind').className = 'badge ' + cfg('kind').textContent;
  if (!body.id || !body.matcher || !body.size) {
    setCheck('Name, matcher and size are required.', '');
    return;
  }
  const seq = ++checkSeq;
  try {
    const res = await request('POST', '/v1/configs/validate', JSON.stringify(body), 'application/json');
    const j = await res.json();
    if (seq !== checkSeq) return;
    if (j.config && j.config.matcher_kind) {
      cfg('kind').textContent = j.config.matcher_kind;
      cfg('kind').className = 'badge ' + j.config.matcher_kind;
    }
    setCheck((j.warnings && j.warnings.length) ? 'Valid, with warnings:\n' + j.warnings.join('\n') : 'Valid.',
             (j.warnings && j.warnings.length) ? 'warn' : 'ok');
  } catch (e) {
    if (seq !== checkSeq) return;
    setCheck(e.message, 'error');
  }
}

function openConfigForm(c) {
  editing = c;
  banner(null);
  document.getElementById('config-title').textContent = c ? 'Edit database ' + c.id : 'New database';
  cfg('id').value = c ? c.id : '';
  cfg('id').readOnly = !!c;
  cfg('description').value = c ? (c.description || '') : '';
  cfg('tags').value = c ? (c.tags || []).join(', ') : '';
  cfg('matcher').value = c ? c.matcher : '';
  cfg('min').value = c ? c.replication.min : 1;
  cfg('max').value = c ? c.replication.max : 2;
  cfg('size').value = c ? sizeText(c.size_bytes) : '';
  setCheck('', '');
  cfg('kind').textContent = c ? c.matcher_kind : 'literal';
  cfg('kind').className = 'badge ' + cfg('kind').textContent;
  cfg('save').textContent = c ? 'Save' : 'Push';
  configDialog.showModal();
  (c ? cfg('size') : cfg('id')).focus();
}

document.getElementById('config-form').addEventListener('input', () => {
  clearTimeout(checkTimer);
  checkTimer = setTimeout(checkConfig, 300);
});
cfg('cancel').addEventListener('click', () => configDialog.close());
document.getElementById('config-form').addEventListener('submit', async ev => {
  ev.preventDefault();
  clearTimeout(checkTimer);
  ++checkSeq;  // a validation still in flight must not overwrite what the push says
  const body = configBody();
  if (!body.id) { setCheck('Name is required.', 'error'); return; }
  cfg('save').disabled = true;
  try {
    const res = await request('PUT', '/v1/configs/' + encodeURIComponent(body.id), JSON.stringify(body), 'application/json');
    const j = await res.json();
    configDialog.close();
    banner((editing ? 'Saved ' : 'Created ') + body.id +
           ((j.warnings && j.warnings.length) ? '\nWarnings: ' + j.warnings.join('\n') : ''), 'info');
    await viewDatabases();
  } catch (e) {
    setCheck(e.message, 'error');
  } finally {
    cfg('save').disabled = false;
  }
});

// Instances: the databases instantiated from the configs.

/// Replica badges of one database from its replication status.
function replicaBadges(cell, path) {
  getJson(dbUrl(path) + '/status').then(s => {
    cell.replaceChildren(...s.replicas.map(r => {
      const p = s.peers.find(x => x.node_id === r);
      const state = r === s.node_id ? 'ok' : (p && p.reachable ? (p.pending_deltas ? 'warn' : 'ok') : 'bad');
      const label = r === s.node_id ? 'this node' : (p && p.reachable ? (p.pending_deltas ? p.pending_deltas + ' pending' : 'in sync') : 'unreachable');
      return el('span', {class: 'badge ' + state, title: r}, r.slice(-6) + ': ' + label);
    }));
  }).catch(e => { cell.textContent = e.message; });
}

function usedBar(used, limit) {
  const pct = limit ? Math.min(100, 100 * used / limit) : 0;
  return [el('span', {class: 'bar' + (pct > 90 ? ' high' : ''), title: pct.toFixed(1) + '%'},
             el('span', {style: 'width:' + pct + '%'})), ' ',
          fmtBytes(used) + (limit ? ' / ' + fmtBytes(limit) : '')];
}

/// One config's instances, paged by the server (GET /v1/configs/{id}/instances): a regex config
/// may have 100k of them, so only the page shown is ever fetched.
async function viewConfigInstances(config, params) {
  const view = document.getElementById('view');
  view.replaceChildren(el('h1', {}, 'Instances'), el('p', {class: 'muted'}, 'Loading…'));
  let limit = 0;
  try {
    limit = (await getJson('/v1/configs/' + encodeURIComponent(config))).size_bytes;
  } catch (e) { /* shown without a limit */ }
  const cursors = [''];  // cursor of each page visited, for Previous
  let page = 0;
  let filter = params.get('q') || '';
  const search = el('input', {type: 'search', id: 'instance-search', placeholder: 'Filter this page by path',
                              'aria-label': 'Filter instances', value: filter});
  const table = el('table', {id: 'instances'});
  const pager = el('div', {class: 'pager'});
  let rows = [], next = '';
  const draw = () => {
    const f = filter.toLowerCase();
    const shown = rows.filter(i => !f || i.path.toLowerCase().includes(f));
    table.replaceChildren(
      el('thead', {}, el('tr', {}, el('th', {}, 'Path'), el('th', {class: 'num'}, 'Keys'),
        el('th', {}, 'Used / limit'), el('th', {}, 'Replicas'), el('th', {}, 'Running'),
        el('th', {}, 'Last access'))),
      el('tbody', {}, shown.map(i => {
        const reps = el('td', {}, '');
        replicaBadges(reps, i.path);
        return el('tr', {},
          el('td', {}, el('a', {href: '#/keys?db=' + encodeURIComponent(i.path)}, el('code', {}, i.path))),
          el('td', {class: 'num'}, String(i.keys)), el('td', {}, ...usedBar(i.used_bytes, limit)), reps,
          el('td', {}, i.active ? 'yes' : 'idle'),
          el('td', {class: 'muted'}, i.last_access_ms ? fmtTime(i.last_access_ms) : 'not since it was created'));
      })));
    pager.replaceChildren(
      el('button', {disabled: page === 0, onclick: () => { --page; load(); }}, '← Previous'),
      el('span', {class: 'muted'}, 'page ' + (page + 1) + ' · ' + plural(rows.length, 'instance') + ' on this node'),
      el('button', {disabled: !next, onclick: () => { cursors[page + 1] = next; ++page; load(); }}, 'Next →'));
  };
  const load = async () => {
    const q = new URLSearchParams({limit: String(PAGE)});
    if (cursors[page]) q.set('cursor', cursors[page]);
    const body = await getJson('/v1/configs/' + encodeURIComponent(config) + '/instances?' + q.toString());
    rows = body.instances;
    next = body.next_cursor || '';
    draw();
  };
  search.addEventListener('input', () => { filter = search.value; draw(); });
  view.replaceChildren(el('h1', {}, 'Instances'),
    el('div', {class: 'toolbar'}, search, el('span', {class: 'badge'}, 'config: ' + config),
       el('a', {href: '#/instances'}, 'all configs')),
    el('p', {class: 'muted'}, 'The databases of this config held by this node, from the node\'s catalog.'),
    table, pager);
  await load();
}

async function viewInstances(params) {
  const view = document.getElementById('view');
  const config = params.get('config') || '';
  if (config) return viewConfigInstances(config, params);
  view.replaceChildren(el('h1', {}, 'Instances'), el('p', {class: 'muted'}, 'Loading…'));
  const all = await getJson('/v1/databases');
  let filter = params.get('q') || '';
  let page = 0;
  const search = el('input', {type: 'search', id: 'instance-search', placeholder: 'Filter by path or config',
                              'aria-label': 'Filter instances', value: filter});
  const table = el('table', {id: 'instances'});
  const pager = el('div', {class: 'pager'});
  const render = async () => {
    const f = filter.toLowerCase();
    const rows = all.filter(d => (!config || d.config === config) &&
                             (!f || d.path.toLowerCase().includes(f) || d.config.toLowerCase().includes(f)));
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    page = Math.min(page, pages - 1);
    const shown = rows.slice(page * PAGE, (page + 1) * PAGE);
    table.replaceChildren(
      el('thead', {}, el('tr', {}, el('th', {}, 'Path'), el('th', {}, 'Config'), el('th', {class: 'num'}, 'Keys'),
        el('th', {}, 'Used / limit'), el('th', {}, 'Replicas'), el('th', {}, 'Created'))),
      el('tbody', {}, shown.map(d => {
        const keys = el('td', {class: 'num'}, '…'), used = el('td', {}, ''), reps = el('td', {}, '');
        // Stats and replication status per shown row only: a page costs PAGE requests, never
        // one per instance of a config with 100k of them.
        getJson(dbUrl(d.path) + '/stats').then(s => {
          keys.textContent = s.keys;
          used.replaceChildren(...usedBar(s.used_bytes, s.limit_bytes));
        }).catch(e => { keys.textContent = ''; used.textContent = e.message; });
        replicaBadges(reps, d.path);
        return el('tr', {},
          el('td', {}, el('a', {href: '#/keys?db=' + encodeURIComponent(d.path)}, el('code', {}, d.path))),
          el('td', {}, d.config), keys, used, reps, el('td', {class: 'muted'}, fmtTime(d.created_ms)));
      })));
    pager.replaceChildren(
      el('button', {disabled: page === 0, onclick: () => { --page; render(); }}, '← Previous'),
      el('span', {class: 'muted'}, plural(rows.length, 'instance') + ' · page ' + (page + 1) + ' of ' + pages),
      el('button', {disabled: page + 1 >= pages, onclick: () => { ++page; render(); }}, 'Next →'));
  };
  search.addEventListener('input', () => { filter = search.value; page = 0; render(); });
  view.replaceChildren(el('h1', {}, 'Instances'),
    el('div', {class: 'toolbar'}, search, config ? el('span', {class: 'badge'}, 'config: ' + config) : null,
       config ? el('a', {href: '#/instances'}, 'all configs') : null),
    table, pager);
  await render();
}

// Keys: a browser for one database.

function isText(bytes) {
  try {
    const s = new TextDecoder('utf-8', {fatal: true}).decode(bytes);
    return !/[\x00-\x08\x0e-\x1f\x7f]/.test(s);
  } catch (e) {
    return false;
  }
}

function hexDump(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const chunk = Array.from(bytes.slice(i, i + 16));
    const hex = chunk.map(b => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = chunk.map(b => (b >= 32 && b < 127) ? String.fromCharCode(b) : '.').join('');
    lines.push(i.toString(16).padStart(8, '0') + '  ' + hex.padEnd(47) + '  ' + ascii);
  }
  return lines.join('\n');
}

async function viewKeys(params) {
  const view = document.getElementById('view');
  const db = params.get('db') || '';
  if (!db) {
    const dbs = await getJson('/v1/databases');
    const input = el('input', {id: 'open-db', list: 'db-list', placeholder: '/example/kv', 'aria-label': 'Database path'});
    const form = el('form', {class: 'toolbar'}, input,
      el('datalist', {id: 'db-list'}, dbs.map(d => el('option', {value: d.path}))),
      el('button', {class: 'primary', type: 'submit'}, 'Open'));
    form.addEventListener('submit', ev => {
      ev.preventDefault();
      if (input.value.trim()) location.hash = '#/keys?db=' + encodeURIComponent(input.value.trim());
    });
    view.replaceChildren(el('h1', {}, 'Keys'),
      el('p', {class: 'muted'}, 'Open a database by its path (a path a config matches opens it), or pick one:'),
      form,
      el('ul', {}, dbs.slice(0, 100).map(d => el('li', {}, el('a', {href: '#/keys?db=' + encodeURIComponent(d.path)}, el('code', {}, d.path))))));
    input.focus();
    return;
  }
  const prefix = params.get('prefix') || '/';
  const cursor = params.get('cursor') || '';
  const prev = params.get('prev') || '';  // cursors of earlier pages, comma separated
  const selected = params.get('key') || '';
  const writable = await mayWrite(db);
  const link = p => '#/keys?' + new URLSearchParams(p).toString();

  // Breadcrumbs: the prefix's folders.
  const crumbs = el('div', {class: 'crumbs', 'aria-label': 'Folder'});
  crumbs.append(el('a', {href: link({db})}, db), ' ');
  let acc = '/';
  for (const seg of prefix.split('/').filter(s => s)) {
    acc += seg + '/';
    crumbs.append(' / ', el('a', {href: link({db, prefix: acc})}, seg));
  }

  const url = dbUrl(db) + '/keys?limit=' + PAGE + '&prefix=' + encodeURIComponent(prefix) +
              (cursor ? '&cursor=' + cursor : '');
  const page = await getJson(url);
  // Keys under the prefix, shown as folders at the next "/".
  const folders = new Set();
  const keys = [];
  for (const item of page.keys) {
    const rest = item.key.slice(prefix.length);
    const slash = rest.indexOf('/');
    if (slash >= 0 && slash < rest.length - 1) folders.add(prefix + rest.slice(0, slash + 1));
    else keys.push(item.key);
  }
  const rows = [];
  for (const f of folders) {
    rows.push(el('tr', {}, el('td', {}, el('a', {class: 'folder', href: link({db, prefix: f})}, f.slice(prefix.length)))));
  }
  for (const k of keys) {
    rows.push(el('tr', {class: k === selected ? 'selected' : ''},
      el('td', {}, el('a', {href: link({db, prefix, key: k, ...(cursor ? {cursor, prev} : {})}), 'data-key': k}, k.slice(prefix.length) || k))));
  }
  const prevList = prev ? prev.split(',') : [];
  const pager = el('div', {class: 'pager'},
    el('button', {disabled: !cursor, onclick: () => {
      const back = prevList.slice(0, -1);
      const c = prevList.length ? prevList[prevList.length - 1] : '';
      location.hash = link({db, prefix, ...(c ? {cursor: c} : {}), ...(back.length ? {prev: back.join(',')} : {})});
    }}, '← Previous'),
    el('button', {disabled: !page.next_cursor, onclick: () => {
      location.hash = link({db, prefix, cursor: page.next_cursor, ...(cursor ? {prev: [...prevList, cursor].join(',')} : {prev: ''})});
    }}, 'Next →'));

  const left = el('div', {class: 'panel'},
    el('h2', {}, 'Keys under ', el('code', {}, prefix)),
    rows.length ? el('table', {class: 'keylist', id: 'keys'}, el('tbody', {}, rows)) : el('p', {class: 'muted'}, 'No keys here.'),
    pager);
  const right = el('div', {class: 'panel', id: 'key-panel'});
  if (selected) await renderValue(right, db, selected, writable, () => route());
  else renderNewKey(right, db, prefix, writable);

  view.replaceChildren(
    el('h1', {}, 'Keys in ', el('code', {}, db),
       el('a', {class: 'button', href: '#/cluster?db=' + encodeURIComponent(db), style: 'font-size:0.7em'}, 'Replication')),
    crumbs, el('div', {class: 'split'}, left, right));
}

function renderNewKey(panel, db, prefix, writable) {
  if (!writable) {
    panel.replaceChildren(el('h2', {}, 'Read only'), el('p', {class: 'muted'},
      'You may read this database but not change it.'));
    return;
  }
  const key = el('input', {id: 'new-key', value: prefix, 'aria-label': 'Key', style: 'width:100%;box-sizing:border-box'});
  const value = el('textarea', {id: 'new-value', rows: 8, 'aria-label': 'Value', style: 'width:100%;box-sizing:border-box'});
  const file = el('input', {type: 'file', id: 'new-file', 'aria-label': 'Upload a file as the value'});
  const form = el('form', {id: 'put-form'},
    el('h2', {}, 'Put a key'),
    el('label', {}, 'Key', key), el('label', {}, 'Value', value),
    el('p', {class: 'hint'}, 'Or upload a file as the value: ', file),
    el('div', {class: 'actions'}, el('button', {class: 'primary', type: 'submit', id: 'put-submit'}, 'Put')));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const k = key.value.trim();
    try {
      const body = file.files.length ? file.files[0] : value.value;
      await request('PUT', keyUrl(db, k), body, 'application/octet-stream');
      note('Stored ' + k);
      location.hash = '#/keys?' + new URLSearchParams({db, prefix: k.slice(0, k.lastIndexOf('/') + 1) || '/', key: k}).toString();
    } catch (e) {
      showError(e);
    }
  });
  panel.replaceChildren(form);
}

async function renderValue(panel, db, key, writable, refresh) {
  let bytes;
  try {
    const res = await request('GET', keyUrl(db, key));
    bytes = new Uint8Array(await res.arrayBuffer());
  } catch (e) {
    panel.replaceChildren(el('h2', {}, el('code', {}, key)), el('p', {class: 'check error'}, e.message));
    return;
  }
  const text = isText(bytes);
  let json = null;
  if (text) {
    try { json = JSON.parse(new TextDecoder().decode(bytes)); } catch (e) { json = null; }
  }
  let mode = json !== null ? 'json' : text ? 'text' : 'hex';
  const pre = el('pre', {class: 'value', id: 'value-view'});
  const tabs = el('div', {class: 'tabs', role: 'group', 'aria-label': 'Show the value as'});
  const show = () => {
    pre.textContent = mode === 'hex' ? hexDump(bytes)
                    : mode === 'json' ? JSON.stringify(json, null, 2)
                    : new TextDecoder().decode(bytes);
    pre.dataset.mode = mode;
    tabs.replaceChildren(...[['text', 'Text', text], ['json', 'JSON', json !== null], ['hex', 'Hex', true]]
      .map(([m, label, ok]) => el('button', {'aria-pressed': String(m === mode), disabled: !ok, id: 'mode-' + m,
                                             onclick: () => { mode = m; show(); }}, label)));
  };
  show();
  const download = el('a', {class: 'button', id: 'download', download: key.split('/').pop() || 'value',
                            href: URL.createObjectURL(new Blob([bytes]))}, 'Download');
  const actions = el('div', {class: 'actions', style: 'justify-content:flex-start'}, download);
  if (writable) {
    actions.append(
      el('button', {id: 'edit-value', disabled: !text, title: text ? '' : 'Binary values are replaced by uploading a file',
                    onclick: () => editValue(panel, db, key, new TextDecoder().decode(bytes), refresh)}, 'Edit'),
      el('button', {class: 'danger', id: 'delete-key', onclick: async () => {
        if (!await confirmAction('Delete key?', 'Delete ' + key + ' from ' + db + '? This cannot be undone.')) return;
        try {
          await request('DELETE', keyUrl(db, key));
          note('Deleted ' + key);
          const p = new URLSearchParams(location.hash.split('?')[1] || '');
          p.delete('key');
          location.hash = '#/keys?' + p.toString();
        } catch (e) { showError(e); }
      }}, 'Delete'));
  }
  panel.replaceChildren(el('h2', {}, el('code', {id: 'value-key'}, key)),
    el('p', {class: 'muted'}, bytes.length + ' bytes' + (text ? '' : ', binary')), tabs, pre, actions);
}

function editValue(panel, db, key, current, refresh) {
  const area = el('textarea', {id: 'edit-area', rows: 12, style: 'width:100%;box-sizing:border-box', 'aria-label': 'Value'});
  area.value = current;
  const form = el('form', {}, el('h2', {}, 'Edit ', el('code', {}, key)), area,
    el('div', {class: 'actions'},
      el('button', {type: 'button', onclick: refresh}, 'Cancel'),
      el('button', {class: 'primary', type: 'submit', id: 'save-value'}, 'Save')));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    try {
      await request('PUT', keyUrl(db, key), area.value, 'application/octet-stream');
      note('Saved ' + key);
      refresh();
    } catch (e) { showError(e); }
  });
  panel.replaceChildren(form);
  area.focus();
}

// Cluster: members, replication per database, and ops/s and latency from the metrics.

const history = [];  // {t, requests, seconds, count}

function parseMetrics(text) {
  let requests = 0, seconds = 0, count = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = line.match(/^(\w+)(\{[^}]*\})?\s+(\S+)/);
    if (!m) continue;
    const v = Number(m[3]);
    if (m[1] === 'kvmesh_requests_total') requests += v;
    else if (m[1] === 'kvmesh_request_duration_seconds_sum') seconds += v;
    else if (m[1] === 'kvmesh_request_duration_seconds_count') count += v;
  }
  return {t: Date.now(), requests, seconds, count};
}

function drawChart(canvas, points, label, unit) {
  const w = canvas.width = canvas.clientWidth * devicePixelRatio;
  const h = canvas.height = canvas.clientHeight * devicePixelRatio;
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, w, h);
  const max = Math.max(1e-9, ...points);
  // One bar a sample, the newest on the right, 60 samples (two minutes) across.
  g.fillStyle = '#2457c5';
  const bw = w / 60;
  points.forEach((p, i) => {
    const bh = Math.max(1, (p / max) * (h - 30 * devicePixelRatio));
    g.fillRect(w - (points.length - i) * bw + 1, h - bh, bw - 2, bh);
  });
  g.fillStyle = '#5d6677';
  g.font = (12 * devicePixelRatio) + 'px system-ui, sans-serif';
  const last = points.length ? points[points.length - 1] : 0;
  g.fillText(label + ': ' + last.toFixed(unit === 'ms' ? 2 : 1) + ' ' + unit + ' (max ' + max.toFixed(unit === 'ms' ? 2 : 1) + ')',
             8 * devicePixelRatio, 16 * devicePixelRatio);
}

/// A member's place in placement (README "Draining a node"): in it, draining with progress, or
/// drained; and this node's own databases still waiting to rebalance.
function placementCell(m) {
  const parts = [];
  if (m.placement === 'draining') {
    parts.push(el('span', {class: 'badge warn'}, 'draining'), ' ',
               el('span', {class: 'muted'}, (m.drain_total - m.drain_left) + ' of ' + m.drain_total +
                  ' databases handed over'));
  } else if (m.placement === 'drained') {
    parts.push(el('span', {class: 'badge down'}, 'drained'), ' ',
               el('span', {class: 'muted'}, m.drain_total + ' databases handed over'));
  } else {
    parts.push(el('span', {class: 'badge ok'}, 'active'));
  }
  if (m.rebalance_pending > 0) {
    parts.push(' ', el('span', {class: 'badge warn'}, 'rebalancing ' + m.rebalance_pending));
  }
  return parts;
}

/// Drain (asks first: the node hands every database over) or undrain, then `done()`.
function drainButton(m, done) {
  const drained = m.placement === 'draining' || m.placement === 'drained';
  const label = drained ? 'Undrain' : 'Drain';
  return el('button', {class: drained ? '' : 'danger', 'aria-label': label + ' ' + m.node_id,
                       onclick: async () => {
    if (!drained && !await confirmAction('Drain node ' + m.node_id + '?',
        'It hands every database it holds over to the other nodes and takes no new ones until ' +
        'undrained. Writes go on throughout.', 'Drain')) return;
    try {
      const res = await request('POST', '/v1/members/' + encodeURIComponent(m.node_id) + '/' +
                                (drained ? 'undrain' : 'drain'));
      const body = await res.json();
      note(body.summary || (label + 'ed ' + m.node_id));
      await done();
    } catch (e) {
      showError(e);
    }
  }}, label);
}

async function viewCluster(params) {
  const view = document.getElementById('view');
  const members = el('table', {id: 'members'});
  const dbs = el('table', {id: 'replication'});
  const ops = el('canvas', {id: 'ops-chart', 'aria-label': 'Requests per second'});
  const lat = el('canvas', {id: 'latency-chart', 'aria-label': 'Mean latency'});
  const filterDb = params.get('db') || '';
  view.replaceChildren(el('h1', {}, 'Cluster'),
    el('h2', {}, 'Members'), members,
    el('h2', {}, 'This node\'s requests'), el('div', {class: 'grid2'}, ops, lat),
    el('h2', {}, 'Replication', filterDb ? el('span', {class: 'badge'}, filterDb) : null), dbs,
    el('p', {class: 'muted'}, 'Refreshed every 2 seconds. "Agree" compares this node\'s version vector with each reachable replica\'s.'));
  let allDbs = null;
  const refresh = async () => {
    try {
      const ms = await getJson('/v1/members');
      const admin = !whoami || whoami.admin;
      // Drains need a cluster: a single node has nobody to hand its databases to.
      const clustered = ms.length > 1;
      members.replaceChildren(
        el('thead', {}, el('tr', {}, el('th', {}, 'Node'), el('th', {}, 'Address'), el('th', {}, 'State'),
          el('th', {}, 'Placement'), el('th', {}, 'Silent for'), el('th', {}, 'Disk free'),
          admin && clustered ? el('th', {}, '') : null)),
        el('tbody', {}, ms.map(m => el('tr', {'data-node': m.node_id},
          el('td', {class: 'mono'}, m.node_id, m.self ? [' ', el('span', {class: 'badge'}, 'this node')] : null),
          el('td', {class: 'mono'}, m.cluster_address),
          el('td', {}, el('span', {class: 'badge ' + (m.alive ? 'up' : 'down')}, m.alive ? 'up' : 'down'),
             m.low_space ? [' ', el('span', {class: 'badge warn'}, 'low space')] : null),
          el('td', {class: 'placement'}, placementCell(m)),
          el('td', {}, m.self ? '' : fmtAge(m.silent_ms)),
          // Known for this node only (members carry no peer's disk space).
          el('td', {}, m.self ? fmtBytes(m.free_disk_bytes) : el('span', {class: 'muted', title: 'known on that node only'}, '—')),
          admin && clustered ? el('td', {}, drainButton(m, refresh)) : null))));
      const text = await (await request('GET', '/metrics')).text();
      history.push(parseMetrics(text));
      while (history.length > 61) history.shift();
      const rate = [], latency = [];
      for (let i = 1; i < history.length; ++i) {
        const a = history[i - 1], b = history[i];
        const dt = (b.t - a.t) / 1000;
        rate.push(dt > 0 ? Math.max(0, b.requests - a.requests) / dt : 0);
        const dc = b.count - a.count;
        latency.push(dc > 0 ? 1000 * (b.seconds - a.seconds) / dc : 0);
      }
      drawChart(ops, rate, 'ops/s', 'ops/s');
      drawChart(lat, latency, 'mean latency', 'ms');
      if (!allDbs) allDbs = await getJson('/v1/databases');
      const shown = allDbs.filter(d => !filterDb || d.path === filterDb).slice(0, 20);
      const statuses = await Promise.all(shown.map(d => getJson(dbUrl(d.path) + '/status').catch(e => ({path: d.path, error: e.message}))));
      dbs.replaceChildren(
        el('thead', {}, el('tr', {}, el('th', {}, 'Database'), el('th', {}, 'Replicas'), el('th', {}, 'Version vector'),
          el('th', {class: 'num'}, 'Pending'), el('th', {}, 'Digest'), el('th', {}, 'Agree'))),
        el('tbody', {}, statuses.map(s => {
          if (s.error) return el('tr', {}, el('td', {}, el('code', {}, s.path)), el('td', {colspan: 5}, s.error));
          const pending = s.peers.reduce((n, p) => n + p.pending_deltas, 0);
          const same = s.peers.every(p => p.reachable && String(p.version_vector) === String(s.version_vector));
          return el('tr', {},
            el('td', {}, el('a', {href: '#/keys?db=' + encodeURIComponent(s.path)}, el('code', {}, s.path))),
            el('td', {class: 'mono'}, s.replicas.length + ' (min ' + s.min + ', max ' + s.max + ')'),
            el('td', {class: 'mono'}, String(s.version_vector)),
            el('td', {class: 'num'}, pending),
            el('td', {class: 'mono'}, s.digest),
            el('td', {}, el('span', {class: 'badge ' + (same && pending === 0 ? 'ok' : 'warn')},
                            same && pending === 0 ? 'yes' : 'not yet')));
        })));
      if (allDbs.length > shown.length && !filterDb) {
        dbs.append(el('caption', {style: 'caption-side:bottom;text-align:left', class: 'muted'},
                      'First 20 of ' + allDbs.length + ' databases; open one from Instances for its status.'));
      }
    } catch (e) {
      showError(e);
    }
  };
  await refresh();
  timers.push(setInterval(refresh, 2000));
}

// --- routing ---

const views = {databases: viewDatabases, instances: viewInstances, keys: viewKeys, cluster: viewCluster};

async function route() {
  stopTimers();
  if (loginShown) return;
  const hash = location.hash.replace(/^#\/?/, '');
  const [name, query] = hash.split('?');
  const view = views[name] ? name : 'databases';
  for (const a of document.querySelectorAll('nav.side a')) {
    a.classList.toggle('active', a.dataset.view === view);
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  // A note from the action that led here stays; anything older goes.
  if (keepNote) keepNote = false; else banner(null);
  try {
    await views[view](new URLSearchParams(query || ''));
  } catch (e) {
    if (!loginShown) showError(e);
  }
}

window.addEventListener('hashchange', route);

(async () => {
  try {
    await loadWhoami();
  } catch (e) {
    if (!loginShown) showError(e);
    return;
  }
  route();
})();
