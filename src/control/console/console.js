// vigil's web console. It talks only to the /v1 API (docs/api.md), with the token typed at
// sign-in kept in sessionStorage, and builds every element with createElement and text nodes:
// names, ids and labels are never parsed as markup.
'use strict';

const state = {
  token: sessionStorage.getItem('vigil.token') || '',
  scope: 'write',
  tab: 'streams',
  streams: new Map(), // id -> {card, preview loop flag}
  events: [], // newest last, at most MAX_EVENTS
  people: [],
  eventsAbort: null,
  timers: [],
};
const MAX_EVENTS = 300;
const PREVIEW_MS = 400; // 2.5 previews a second per stream

const $ = (sel, root = document) => root.querySelector(sel);

// An element with attributes (`on*` are listeners) and children (nodes or text).
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids) if (k != null) e.append(k instanceof Node ? k : String(k));
  return e;
}

class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

// A call to the API with the session's token; a non-2xx answer throws its error message.
async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.ok) return r;
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  const err = body && body.error ? body.error : {};
  if (r.status === 401) signedOut(state.token ? 'The token is not valid.' : '');
  throw new ApiError(r.status, err.code || 'http_' + r.status, err.message || r.statusText, body);
}

async function json(path, opts) {
  return (await api(path, opts)).json();
}

// An image of the API (preview, snapshot, chip) as an object URL.
async function imageUrl(path) {
  const blob = await (await api(path)).blob();
  return URL.createObjectURL(blob);
}

function setImage(img, url) {
  const old = img.dataset.url;
  img.src = url;
  img.dataset.url = url;
  if (old) URL.revokeObjectURL(old);
}

function problem(msg) {
  const p = $('#problem');
  p.textContent = msg || '';
  p.hidden = !msg;
}

function say(form, msg, ok) {
  const err = $('.error', form);
  const good = $('.ok', form);
  if (err) err.textContent = ok ? '' : msg;
  if (good) good.textContent = ok ? msg : '';
}

// ---- sign-in ----

function signedOut(msg) {
  stopAll();
  state.token = '';
  sessionStorage.removeItem('vigil.token');
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== 'login';
  $('#tabs').hidden = true;
  $('#logout').hidden = true;
  $('#readonly').hidden = true;
  $('#summary').textContent = '';
  $('#login-error').textContent = msg || '';
  $('#token').focus();
}

async function start() {
  let status;
  try {
    status = await json('/v1/status');
  } catch (e) {
    if (e.status !== 401) problem('vigil does not answer: ' + e.message);
    return;
  }
  problem('');
  state.scope = status.access ? status.access.scope : 'write';
  $('#logout').hidden = !state.token;
  $('#tabs').hidden = false;
  $('#readonly').hidden = state.scope !== 'read';
  for (const b of document.querySelectorAll('.write')) lockWrite(b);
  summary(status);
  show(location.hash.slice(1) || 'streams');
  every(5000, async () => summary(await json('/v1/status')));
  every(2000, refreshStreams);
  refreshStreams();
  loadEvents();
  refreshPeople();
}

// A button that changes something: off, and saying why, for a read-only token.
function lockWrite(button) {
  const reader = state.scope === 'read';
  button.disabled = reader;
  button.title = reader ? 'This token may only read' : '';
  const mark = ' (read-only)';
  if (reader && !button.textContent.endsWith(mark)) button.append(mark);
  if (!reader && button.textContent.endsWith(mark)) {
    button.textContent = button.textContent.slice(0, -mark.length);
  }
}

function summary(s) {
  const people = s.gallery ? `, ${s.gallery.people} people enrolled` : '';
  $('#summary').textContent =
    `vigil ${s.version}: ${s.streams.up} of ${s.streams.total} streams up${people}`;
}

function every(ms, f) {
  const t = setInterval(() => f().catch((e) => e.status === 401 || problem(e.message)), ms);
  state.timers.push(t);
}

function stopAll() {
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (state.eventsAbort) state.eventsAbort.abort();
  state.eventsAbort = null;
  for (const s of state.streams.values()) s.card.remove();
  state.streams.clear();
}

// ---- tabs ----

function show(tab) {
  if (!['streams', 'events', 'people', 'unknown'].includes(tab)) tab = 'streams';
  state.tab = tab;
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== tab;
  for (const b of document.querySelectorAll('#tabs button')) {
    if (b.dataset.tab === tab) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  if (location.hash.slice(1) !== tab) history.replaceState(null, '', '#' + tab);
  if (tab === 'streams') for (const [id, s] of state.streams) previewLoop(id, s);
  if (tab === 'people') refreshPeople().catch((e) => problem(e.message));
  if (tab === 'unknown') renderUnknown();
}

// ---- streams ----

async function refreshStreams() {
  const { streams } = await json('/v1/streams');
  const seen = new Set();
  for (const s of streams) {
    seen.add(s.id);
    let entry = state.streams.get(s.id);
    if (!entry) {
      entry = streamCard(s.id);
      state.streams.set(s.id, entry);
      $('#stream-list').append(entry.card);
      previewLoop(s.id, entry);
    }
    fillStream(entry, s);
  }
  for (const [id, entry] of state.streams) {
    if (!seen.has(id)) {
      entry.card.remove();
      state.streams.delete(id);
    }
  }
  const sel = $('#filter-stream');
  const have = new Set([...sel.options].map((o) => o.value));
  for (const id of seen) if (!have.has(id)) sel.append(el('option', { value: id }, id));
}

function streamCard(id) {
  const img = el('img', { class: 'preview', alt: 'Live preview of ' + id, width: 320, height: 180 });
  const remove = el('button', { type: 'button', class: 'write danger' }, 'Remove');
  lockWrite(remove);
  const card = el('article', { class: 'card stream', 'data-id': id },
    el('h3', {}, id),
    el('p', { class: 'state' }),
    img,
    el('p', { class: 'noframe note', hidden: true }, 'No frame yet'),
    el('dl', { class: 'figures' }),
    el('p', { class: 'url note' }),
    remove,
    el('p', { class: 'error', role: 'alert' }));
  const entry = { card, img, running: false };
  remove.addEventListener('click', async () => {
    if (!confirm(`Remove stream ${id}?`)) return;
    remove.disabled = true;
    try {
      await api('/v1/streams/' + encodeURIComponent(id), { method: 'DELETE' });
      card.remove();
      state.streams.delete(id);
    } catch (e) {
      $('.error', card).textContent = e.message;
      remove.disabled = false;
    }
  });
  return entry;
}

function fillStream(entry, s) {
  const c = entry.card;
  const st = $('.state', c);
  st.textContent = s.state + (s.reason ? ` (${s.reason})` : '') + (s.detail ? `: ${s.detail}` : '');
  st.dataset.state = s.state;
  const dl = $('.figures', c);
  dl.replaceChildren();
  const fig = (k, v) => dl.append(el('dt', {}, k), el('dd', {}, v));
  fig('fps', s.fps.toFixed(1));
  fig('frames', s.frames);
  fig('dropped', s.drops);
  fig('latency', s.latency_seconds == null ? '-' : s.latency_seconds.toFixed(2) + ' s');
  fig('branches', (s.branches || []).join(', ') || 'none');
  $('.url', c).textContent = s.url;
}

// One request at a time per stream, while the streams tab shows and the page is visible.
async function previewLoop(id, entry) {
  if (entry.running) return;
  entry.running = true;
  const path = '/v1/streams/' + encodeURIComponent(id) + '/preview';
  try {
    while (state.tab === 'streams' && state.streams.get(id) === entry && state.token !== null) {
      if (document.hidden) { await sleep(1000); continue; }
      const started = Date.now();
      try {
        setImage(entry.img, await imageUrl(path));
        $('.noframe', entry.card).hidden = true;
      } catch (e) {
        if (e.status === 401) return;
        $('.noframe', entry.card).hidden = false;
        await sleep(1000);
      }
      await sleep(Math.max(0, PREVIEW_MS - (Date.now() - started)));
    }
  } finally {
    entry.running = false;
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function addStream(ev) {
  ev.preventDefault();
  const f = ev.target;
  const branches = ['action', 'faces'].filter((b) => f.elements[b].checked);
  const body = { id: f.elements.id.value.trim(), url: f.elements.url.value.trim(), branches };
  if (f.elements.loop.checked) body.loop = true;
  try {
    await api('/v1/streams', { method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' } });
    say(f, '', true);
    f.reset();
    await refreshStreams();
  } catch (e) {
    say(f, e.message);
  }
}

// ---- events ----

async function loadEvents() {
  const { events } = await json('/v1/events?limit=100');
  state.events = events;
  renderEvents();
  follow();
}

// The live list: Server-Sent Events read through fetch (EventSource cannot send a token),
// resumed after the newest event known.
async function follow() {
  const ctl = new AbortController();
  state.eventsAbort = ctl;
  while (!ctl.signal.aborted) {
    try {
      const last = state.events.length ? state.events[state.events.length - 1].id : null;
      const headers = last ? { 'Last-Event-ID': last } : {};
      const r = await api('/v1/events/stream', { headers, signal: ctl.signal });
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          sseMessage(buf.slice(0, at));
          buf = buf.slice(at + 2);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted || e.status === 401) return;
    }
    await sleep(2000);
  }
}

function sseMessage(block) {
  let kind = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) kind = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (!data.length) return;
  if (kind === 'gap') {
    json('/v1/events?limit=100').then(({ events }) => { state.events = events; renderEvents(); });
    return;
  }
  let ev;
  try { ev = JSON.parse(data.join('\n')); } catch (_) { return; }
  if (!ev.id || state.events.some((e) => e.id === ev.id)) return;
  state.events.push(ev);
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  renderEvents();
  if (ev.type === 'face.unknown' && state.tab === 'unknown') renderUnknown();
}

function describe(ev) {
  switch (ev.type) {
    case 'action.started':
    case 'action.ended':
      return [ev.label, ev.score != null ? 'score ' + ev.score.toFixed(2) : ''];
    case 'face.identified':
      return [ev.identity, 'distance ' + ev.distance.toFixed(3)];
    case 'face.unknown':
      return ['unknown face', ev.distance != null ? 'nearest ' + ev.distance.toFixed(3) : ''];
    default:
      return [ev.reason || '', ev.detail || ''];
  }
}

const thumbs = new Map(); // event id -> object URL

function thumbnail(ev, alt) {
  const img = el('img', { class: 'thumb', alt, width: 96, height: 96 });
  if (!ev.snapshot) {
    img.hidden = true;
    return img;
  }
  const have = thumbs.get(ev.id);
  if (have) img.src = have;
  else imageUrl('/v1/snapshots/' + encodeURIComponent(ev.id))
    .then((u) => { thumbs.set(ev.id, u); img.src = u; })
    .catch(() => { img.hidden = true; });
  return img;
}

function renderEvents() {
  const stream = $('#filter-stream').value;
  const type = $('#filter-type').value;
  const list = $('#event-list');
  const items = [];
  for (let i = state.events.length - 1; i >= 0 && items.length < 100; i--) {
    const ev = state.events[i];
    if ((stream && ev.stream !== stream) || (type && ev.type !== type)) continue;
    const [what, how] = describe(ev);
    items.push(el('li', { class: 'event', 'data-type': ev.type, 'data-id': ev.id },
      thumbnail(ev, 'Snapshot of ' + ev.type),
      el('div', {},
        el('p', {}, el('strong', { class: 'what' }, what), ' ', el('span', { class: 'how' }, how)),
        el('p', { class: 'note' },
          el('time', { datetime: ev.wall_time }, new Date(ev.wall_time).toLocaleTimeString()),
          ' ', ev.type, ' on ', ev.stream, ' at ', ev.media_time.toFixed(1), ' s'))));
  }
  list.replaceChildren(...items);
  const live = new Set(state.events.map((e) => e.id));
  for (const [id, u] of thumbs) if (!live.has(id)) { URL.revokeObjectURL(u); thumbs.delete(id); }
}

// ---- people ----

async function refreshPeople() {
  const { people } = await json('/v1/gallery/people').catch((e) => {
    if (e.code === 'faces_disabled') return { people: [] };
    throw e;
  });
  state.people = people;
  const names = $('#people-names');
  names.replaceChildren(...people.map((p) => el('option', { value: p.name })));
  const list = $('#people-list');
  list.replaceChildren(...people.map(personCard));
}

function personCard(p) {
  const count = typeof p.embeddings === 'number' ? p.embeddings : p.embeddings.length;
  const chips = el('div', { class: 'chips' });
  for (let n = 0; n < Math.min(count, 12); n++) {
    const img = el('img', { class: 'chip', alt: `${p.name}, photo ${n + 1}`, width: 72, height: 72 });
    imageUrl(`/v1/gallery/people/${encodeURIComponent(p.name)}/photos/${n}`)
      .then((u) => setImage(img, u))
      .catch(() => img.classList.add('missing'));
    chips.append(img);
  }
  const remove = el('button', { type: 'button', class: 'write danger' }, 'Remove');
  lockWrite(remove);
  const card = el('article', { class: 'card person' },
    el('h3', {}, p.name),
    el('p', { class: 'note' }, count === 1 ? '1 photo' : `${count} photos`),
    chips, remove, el('p', { class: 'error', role: 'alert' }));
  remove.addEventListener('click', async () => {
    if (!confirm(`Remove ${p.name} from the gallery?`)) return;
    try {
      await api('/v1/gallery/people/' + encodeURIComponent(p.name), { method: 'DELETE' });
      await refreshPeople();
    } catch (e) {
      $('.error', card).textContent = e.message;
    }
  });
  return card;
}

async function enrol(ev) {
  ev.preventDefault();
  const f = ev.target;
  const name = f.elements.name.value.trim();
  const file = f.elements.photo.files[0];
  if (!file) return;
  const pick = $('#pick');
  const face = pick.hidden ? '' : '?face=' + $('#pick-face').value;
  try {
    const r = await json(`/v1/gallery/people/${encodeURIComponent(name)}/photos${face}`, {
      method: 'POST', body: file, headers: { 'Content-Type': file.type || 'image/jpeg' } });
    say(f, `Enrolled ${r.enrolled}: ${r.embeddings} photo(s).`, true);
    pick.hidden = true;
    f.reset();
    await refreshPeople();
  } catch (e) {
    if (e.code === 'several_faces' && e.body.error.boxes) {
      await offerFaces(file, e.body.error.boxes);
      say(f, 'Several faces: pick one, then enrol again.');
    } else {
      say(f, e.message);
    }
  }
}

// Shows the photo with its faces numbered (largest first) and a choice among them.
async function offerFaces(file, boxes) {
  const bitmap = await createImageBitmap(file);
  const canvas = $('#pick-canvas');
  const scale = Math.min(320 / bitmap.width, 240 / bitmap.height);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const g = canvas.getContext('2d');
  g.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  g.lineWidth = 2;
  g.font = '14px sans-serif';
  const sel = $('#pick-face');
  sel.replaceChildren();
  boxes.forEach((b, i) => {
    const [x1, y1, x2, y2] = b.map((v) => v * scale);
    g.strokeStyle = '#ffbe00';
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
    g.fillStyle = '#ffbe00';
    g.fillText(String(i + 1), x1 + 3, y1 + 15);
    sel.append(el('option', { value: i }, `Face ${i + 1}` + (i === 0 ? ' (largest)' : '')));
  });
  $('#pick').hidden = false;
}

async function lookup(ev) {
  ev.preventDefault();
  const f = ev.target;
  const file = f.elements.photo.files[0];
  const name = f.elements.name.value.trim();
  const out = $('.result', f);
  out.replaceChildren();
  say(f, '');
  const opts = { method: 'POST', body: file, headers: { 'Content-Type': file.type || 'image/jpeg' } };
  try {
    if (name) {
      const r = await json('/v1/gallery/verify?name=' + encodeURIComponent(name), opts);
      out.append(el('li', {}, `${r.same ? 'Same person as' : 'Not'} ${r.identity}: distance ` +
        `${r.distance.toFixed(3)} (threshold ${r.threshold})`));
    } else {
      const r = await json('/v1/gallery/identify', opts);
      if (!r.faces.length) out.append(el('li', {}, 'No face found.'));
      r.faces.forEach((x, i) => out.append(el('li', {},
        `Face ${i + 1}: ${x.identity || 'unknown'}` +
        (x.distance != null ? ` (distance ${x.distance.toFixed(3)})` : ''))));
    }
  } catch (e) {
    say(f, e.message);
  }
}

// ---- unknown faces ----

// Newest first, one card per unknown person (group) where the events say which: the group's
// newest sighting. A card is keyed by its group (or, without one, its event), so a card already
// shown is left as it is while its person keeps being seen (a name being typed stays); only its
// count of sightings is brought up to date.
const cardKey = (ev) => (ev.unknown_id ? 'group-' + ev.unknown_id : 'event-' + ev.id);

function renderUnknown() {
  const list = $('#unknown-list');
  const wanted = [];
  const groups = new Set();
  for (let i = state.events.length - 1; i >= 0 && wanted.length < 60; i--) {
    const ev = state.events[i];
    if (ev.type !== 'face.unknown' || !ev.snapshot) continue;
    if (ev.unknown_id) {
      if (groups.has(ev.unknown_id)) continue;
      groups.add(ev.unknown_id);
    }
    wanted.push(ev);
  }
  const keep = new Set(wanted.map(cardKey));
  for (const c of [...list.children]) if (!keep.has(c.dataset.key)) c.remove();
  const shown = new Map([...list.children].map((c) => [c.dataset.key, c]));
  let at = list.firstElementChild;
  for (const ev of wanted) {
    const card = shown.get(cardKey(ev));
    if (card) {
      if (ev.unknown_id) $('.seen', card).textContent = seenNote(ev);
      at = card.nextElementSibling;
      continue;
    }
    list.insertBefore(unknownCard(ev), at);
  }
  if (!wanted.length) list.append(el('p', { class: 'note' }, 'No unknown face among the recent events.'));
}

function seenNote(ev) {
  const seen = state.events.filter((e) => ev.unknown_id && e.unknown_id === ev.unknown_id).length;
  return (ev.unknown_id ? `Unknown ${ev.unknown_id}, seen ${seen} time(s); last ` : '') +
    `${ev.stream}, ${new Date(ev.wall_time).toLocaleTimeString()}`;
}

function unknownCard(ev) {
  const id = 'name-' + ev.id;
  const button = el('button', { type: 'submit', class: 'write' }, 'Enrol');
  lockWrite(button);
  const form = el('form', { class: 'card unknown', 'data-id': ev.id, 'data-key': cardKey(ev) },
    thumbnail(ev, 'Unknown face on ' + ev.stream),
    el('p', { class: 'note seen' }, seenNote(ev)),
    el('label', { for: id }, 'This is'),
    el('input', { id, name: 'name', list: 'people-names', required: true, maxlength: 128 }),
    button,
    el('p', { class: 'error', role: 'alert' }),
    el('p', { class: 'ok', role: 'status' }));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = form.elements.name.value.trim();
    try {
      // A group is named whole (every face kept of that person, and later sightings are
      // named); a face without a group is enrolled from its snapshot.
      const r = ev.unknown_id
        ? await json(`/v1/unknowns/${encodeURIComponent(ev.unknown_id)}/name`, {
          method: 'POST', body: JSON.stringify({ name }),
          headers: { 'Content-Type': 'application/json' } })
        : await json(`/v1/gallery/people/${encodeURIComponent(name)}/photos?event=` +
          encodeURIComponent(ev.id), { method: 'POST' });
      say(form, `Enrolled as ${r.enrolled}.`, true);
      refreshPeople().catch(() => {});
    } catch (err) {
      say(form, err.message);
    }
  });
  return form;
}

// ---- wiring ----

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('#token').value.trim();
    sessionStorage.setItem('vigil.token', state.token);
    $('#token').value = '';
    start();
  });
  $('#logout').addEventListener('click', () => signedOut(''));
  for (const b of document.querySelectorAll('#tabs button')) {
    b.addEventListener('click', () => show(b.dataset.tab));
  }
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  $('#add-stream').addEventListener('submit', addStream);
  $('#enrol').addEventListener('submit', enrol);
  $('#enrol-photo').addEventListener('change', () => { $('#pick').hidden = true; });
  $('#lookup').addEventListener('submit', lookup);
  $('#filter-stream').addEventListener('change', renderEvents);
  $('#filter-type').addEventListener('change', renderEvents);
  start();
});
