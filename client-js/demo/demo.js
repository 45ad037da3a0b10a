// The rtgate demo page: a connection indicator, a token login, the user's conversations, one
// conversation with its members' presence, and a live channel panel. Every string that came from the server or another
// user is rendered with textContent (see `text`), never as markup: the page's CSP forbids inline
// script, and nothing from the wire is parsed as HTML.

import { RtgateClient } from '/client/rtgate.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

/** An element whose content is plain text. */
function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = String(value ?? '');
  if (className) el.className = className;
  return el;
}

function log(line) {
  const li = text('li', `${new Date().toLocaleTimeString()} ${line}`);
  $('log').prepend(li);
  while ($('log').childElementCount > 200) $('log').lastElementChild.remove();
}

const demo = {
  client: null,
  settings: null, // the transport settings `client` was made with
  conversation: null,
  attempt: 0,
  lastReason: null,
  stopped: null, // the client's `stopped` info until the next Connect
  userId: null, // who the last connection was, for this user's own unsent messages
};
// For the browser tests and for poking at from the console.
window.rtgateDemo = demo;

if (params.get('transport')) $('transport-choice').value = params.get('transport');
if (params.get('wtPort')) $('wt-port').value = params.get('wtPort');

// ---- connection --------------------------------------------------------------------------

function renderStatus() {
  const c = demo.client;
  const state = c?.state ?? 'disconnected';
  $('status').dataset.state = state;
  document.body.dataset.state = state;
  let label = state;
  if (state === 'reconnecting') label = `reconnecting (attempt ${demo.attempt})`;
  if (state === 'disconnected' && demo.stopped) {
    const { reason, code, auth } = demo.stopped;
    label = `disconnected: ${reason} (${code}) — ${auth ? 'sign in again' : 'cannot reconnect'}`;
  } else if (state === 'disconnected' && demo.lastReason) {
    label = `disconnected: ${demo.lastReason}`;
  }
  $('status-text').textContent = label;
  $('transport').textContent = c?.transport ? `via ${c.transport}` : '';
  $('user').textContent = c?.session ? `as ${c.session.userId}` : '';
  const hint = $('signin-hint');
  hint.hidden = !demo.stopped;
  if (demo.stopped?.auth) {
    hint.textContent = `The server refused this token (${demo.stopped.reason}). Paste a new token and press Connect.`;
  } else if (demo.stopped) {
    hint.textContent = `The server refused this client (${demo.stopped.reason}); reconnecting would not help.`;
  }
}

function currentSettings() {
  return { transport: $('transport-choice').value, wtPort: Number($('wt-port').value) || 4433 };
}

/** Connect: reuses the client while the transport settings are unchanged, so what was queued
 * while disconnected (messages typed offline) and the joined conversation carry over. */
function connect() {
  demo.attempt = 0;
  demo.lastReason = null;
  demo.stopped = null;
  const settings = currentSettings();
  const same = demo.client && demo.settings.transport === settings.transport && demo.settings.wtPort === settings.wtPort;
  if (same) {
    const c = demo.client;
    // A different token in the box while connected: start over with it.
    if (c.state !== 'disconnected' && c.token !== $('token').value.trim()) c.disconnect();
    c.connect();
    renderAll();
    return;
  }
  const old = demo.client;
  old?.disconnect();
  const client = new RtgateClient({
    getToken: () => $('token').value.trim(),
    ...settings,
    autoConnect: false,
  });
  demo.client = client;
  demo.settings = settings;
  wire(client);
  client.connect();
  if (old && demo.conversation) {
    // The old client will not connect again: rejoin on the new one and resend what the old one
    // still held, with the same clientMessageIds so nothing is stored twice.
    const id = demo.conversation.id;
    const unsent = [...pending.entries()];
    demo.conversation = null;
    join(id).then(() => {
      for (const [clientMessageId, entry] of unsent) send(entry.content, entry.li, clientMessageId);
    });
  }
  renderAll();
}

function wire(client) {
  client.on('state', () => {
    if (demo.client !== client) return;
    renderStatus();
    renderMembers();
  });
  client.on('connect', ({ transport, session }) => {
    demo.userId = session.userId;
    freshPresence.clear();
    log(`connected over ${transport} to ${session.instanceId}`);
    loadConversations(client);
    subscribeChannels(client, session.userId);
    renderStatus();
  });
  client.on('disconnect', (reason, code) => {
    demo.lastReason = `${reason} (${code})`;
    log(`disconnected: ${reason} (${code})`);
    renderStatus();
  });
  client.on('stopped', (info) => {
    demo.stopped = info;
    log(`stopped reconnecting: ${info.reason} (${info.code})${info.auth ? ', sign in again' : ''}`);
    renderStatus();
  });
  client.on('reconnect_attempt', (n, delay) => {
    demo.attempt = n;
    log(`reconnect attempt ${n} in ${(delay / 1000).toFixed(1)} s`);
    renderStatus();
  });
  client.on('reconnect', (n) => log(`reconnected after ${n} attempt(s)`));
  client.on('reconnect_failed', () => log('gave up reconnecting'));
  client.on('error', (err) => log(`error: ${err.code ?? ''} ${err.message}`));
  client.on('rate_limit_exceeded', (i) => log(`rate limited until ${new Date(i.resetAt).toLocaleTimeString()}`));
  client.on('presence', (p) => {
    freshPresence.add(p.userId);
    renderMembers();
  });
  client.onEvent('conversation:added', (data) => {
    const c = data?.conversation;
    if (!c || typeof c.id !== 'string') return;
    conversations.set(c.id, c);
    log(`added to ${c.title || c.id} by ${c.createdBy}`);
    renderConversations();
  });
  client.onEvent('conversation:removed', (data) => {
    conversations.delete(data?.conversationId);
    renderConversations();
  });
}

/** A REST call with the client's current token. */
async function api(path, init = {}) {
  const client = demo.client;
  const res = await fetch(`${client.url}${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${client.token}`, 'Content-Type': 'application/json', ...init.headers },
  });
  const body = res.status === 204 ? null : await res.json().catch(() => ({}));
  if (!res.ok) throw Object.assign(new Error(body?.message ?? `HTTP ${res.status}`), { code: body?.code });
  return body;
}

// ---- conversations -----------------------------------------------------------------------

/** id -> {id, title, createdBy, createdAt, lastSeq, role}: from the list and `conversation:added`. */
const conversations = new Map();

async function loadConversations(client) {
  try {
    const body = await api('/api/conversations?limit=50');
    if (demo.client !== client) return;
    for (const c of body.conversations ?? []) conversations.set(c.id, c);
    renderConversations();
  } catch (err) {
    log(`could not list conversations: ${err.code ?? ''} ${err.message}`);
  }
}

function renderConversations() {
  const ul = $('conversations');
  ul.replaceChildren();
  const list = [...conversations.values()].sort((a, b) => (b.createdAt ?? 0) - (a.createdAt ?? 0));
  for (const c of list) {
    const li = document.createElement('li');
    li.dataset.conversationId = c.id;
    li.classList.toggle('current', demo.conversation?.id === c.id);
    const open = text('button', c.title || `untitled (…${String(c.id).slice(-8)})`);
    open.type = 'button';
    open.addEventListener('click', () => {
      $('conv-id').value = c.id;
      join(c.id);
    });
    li.append(open, text('span', ` ${c.role ?? ''} · by ${c.createdBy ?? '?'}`, 'muted'));
    ul.append(li);
  }
  $('no-conversations').hidden = list.length > 0;
}

// ---- one conversation ----------------------------------------------------------------------

let members = [];
let typingTimer = null;
const typingUsers = new Map();
/** Users whose presence arrived on the current connection; the others show as unknown. */
const freshPresence = new Set();
/** clientMessageId -> {li, content}: this user's messages not yet seen as `message:new`. */
const pending = new Map();
const wired = new WeakSet();

function renderMembers() {
  const ul = $('members');
  ul.replaceChildren();
  const live = demo.client?.state === 'connected';
  for (const userId of members) {
    const p = live && freshPresence.has(userId) ? demo.client.presence.get(userId) : undefined;
    // Only a connected client knows: while reconnecting or disconnected every dot is unknown.
    const presence = p ? (p.online ? 'online' : 'offline') : 'unknown';
    const li = text('li', userId);
    li.dataset.userId = userId;
    li.dataset.presence = presence;
    li.classList.toggle('online', presence === 'online');
    li.title = presence === 'unknown' ? 'unknown (not connected)' : presence;
    ul.append(li);
  }
}

function messageItem(m) {
  const li = document.createElement('li');
  li.dataset.seq = String(m.seq);
  li.append(text('span', `#${m.seq}`, 'seq'), text('span', m.senderId, 'sender'), text('span', m.content, 'content'));
  return li;
}

/** Puts a stored message in seq order, above this user's messages still being sent. */
function place(li) {
  const list = $('messages');
  const seq = Number(li.dataset.seq);
  let before = null;
  for (const el of list.children) {
    if (el === li) continue;
    if (el.dataset.status === 'sending' || Number(el.dataset.seq) > seq) {
      before = el;
      break;
    }
  }
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.insertBefore(li, before);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function markSent(li, seq) {
  li.dataset.status = 'sent';
  li.dataset.seq = String(seq);
  li.querySelector('.seq').textContent = `#${seq}`;
  li.querySelector('.status').textContent = 'sent';
}

function renderMessage(m) {
  const own = m.clientMessageId ? pending.get(m.clientMessageId) : undefined;
  if (own) {
    pending.delete(m.clientMessageId);
    markSent(own.li, m.seq);
    place(own.li);
    return;
  }
  if ($('messages').querySelector(`li[data-seq="${m.seq}"]`)) return;
  place(messageItem(m));
}

function renderTyping() {
  const names = [...typingUsers.keys()];
  $('typing').textContent = names.length ? `${names.join(', ')} typing…` : '';
}

async function join(id) {
  const client = demo.client;
  if (!client || !id || demo.conversation?.id === id) return;
  demo.conversation?.leave().catch(() => {});
  $('messages').replaceChildren();
  pending.clear();
  typingUsers.clear();
  renderTyping();
  const conv = client.conversation(id);
  demo.conversation = conv;
  renderConversations();
  if (!wired.has(conv)) {
    wired.add(conv);
    conv.on('message', (m) => {
      if (demo.conversation === conv) renderMessage(m);
    });
    conv.on('typing', ({ userId, isTyping }) => {
      if (demo.conversation !== conv) return;
      if (isTyping) typingUsers.set(userId, Date.now());
      else typingUsers.delete(userId);
      renderTyping();
    });
    conv.on('removed', () => log(`removed from ${id}`));
  }
  try {
    const ack = await conv.join();
    log(`joined ${id} at seq ${ack.lastSeq}`);
    const info = await api(`/api/conversations/${encodeURIComponent(id)}`);
    $('conv-title').textContent = info.title ? info.title : 'Messages';
    members = (info.members ?? []).map((m) => m.userId);
    renderMembers();
    await client.presence.subscribe(members);
    // The latest page of history, so joining shows some context; live messages follow in order.
    const recent = await conv.history({ beforeSeq: ack.lastSeq + 1, limit: 50 });
    if (demo.conversation !== conv) return;
    for (const m of recent.messages ?? []) {
      if (m.seq > ack.lastSeq || $('messages').querySelector(`li[data-seq="${m.seq}"]`)) continue;
      place(messageItem(m));
    }
  } catch (err) {
    log(`join failed: ${err.code ?? ''} ${err.message}`);
  }
}

function newClientMessageId() {
  const rand = globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}.${Math.random().toString(36).slice(2)}`;
  return `demo:${rand}`;
}

/**
 * Sends, showing the message at once as "sending…" (it waits in the client's queue while
 * offline), then "sent" with its seq once the server stored it.
 */
async function send(content, li, clientMessageId = newClientMessageId()) {
  const conv = demo.conversation;
  if (!li) {
    li = messageItem({ seq: '…', senderId: demo.client?.session?.userId ?? demo.userId ?? 'me', content });
    delete li.dataset.seq;
    li.dataset.status = 'sending';
    li.append(text('span', 'sending…', 'status'));
    $('messages').append(li);
    $('messages').scrollTop = $('messages').scrollHeight;
  }
  li.dataset.clientMessageId = clientMessageId;
  pending.set(clientMessageId, { li, content });
  try {
    const ack = await conv.send(content, { clientMessageId });
    if (li.dataset.status === 'sending') {
      markSent(li, ack.seq);
      place(li);
    }
  } catch (err) {
    pending.delete(clientMessageId);
    li.dataset.status = 'failed';
    li.querySelector('.status').textContent = `not sent: ${err.code ?? err.message}`;
    log(`send failed: ${err.code ?? ''} ${err.message}`);
  }
}

// ---- live channel ----------------------------------------------------------------------------
// Subscriptions survive reconnects by themselves (the client resubscribes and recovers what was
// missed); the page only shows what happens: publications as text, who is here, and whether the
// last resubscribe recovered everything. No timers: everything is drawn when an event arrives.

const PUBLIC_CHANNEL = 'public:demo';
const MAX_SHOWN = 50; // publications kept on screen per channel
/** channel -> {state, status, recovery, recovered, pubs}: what the panel shows, per channel. */
const channelViews = new Map();
/** clientId -> info: who is subscribed to PUBLIC_CHANNEL (subscribe ack, then join/leave). */
const here = new Map();
demo.channels = channelViews;

/**
 * At every connect: the public channel, and the signed-in user's own channel (the user may have
 * changed with the token, and a user-limited channel only lets its user in).
 */
function subscribeChannels(client, userId) {
  const mine = `notify:#${userId}`;
  for (const sub of client.subscriptions()) {
    if (sub.channel === PUBLIC_CHANNEL || sub.channel === mine) continue;
    client.removeSubscription(sub);
    channelViews.delete(sub.channel);
  }
  for (const channel of [PUBLIC_CHANNEL, mine]) {
    if (!client.subscription(channel)) watchChannel(client, client.subscribe(channel));
  }
  renderChannels();
}

function watchChannel(client, sub) {
  const { channel } = sub;
  const view = { state: sub.state, status: 'subscribing…', recovery: '', recovered: null, pubs: [] };
  channelViews.set(channel, view);
  const current = () => demo.client === client && client.subscription(channel) === sub;
  sub.on('state', (state) => {
    if (!current()) return;
    view.state = state;
    if (channel === PUBLIC_CHANNEL && state !== 'subscribed') {
      here.clear(); // unknown until the next subscribe says who is here
      renderHere();
    }
    renderChannels();
  });
  sub.on('subscribing', ({ code }) => {
    if (!current()) return;
    view.status = code === 'transport_closed' ? 'waiting for the connection…' : `subscribing again (${code})…`;
    renderChannels();
  });
  sub.on('subscribed', (ctx) => {
    if (!current()) return;
    view.status = `subscribed at offset ${ctx.offset}`;
    view.recovered = ctx.wasRecovering ? ctx.recovered : null;
    if (ctx.wasRecovering && ctx.recovered) {
      // The missed publications are delivered right after this event: from the position held
      // until now up to the ack's offset.
      const missed = typeof sub.offset === 'number' ? ctx.offset - sub.offset : 0;
      view.recovery = `recovered after reconnect: ${missed} missed`;
    } else if (ctx.wasRecovering) {
      view.recovery = 'not recovered: what was missed is gone, reloaded from history';
    } else {
      view.recovery = '';
    }
    log(`subscribed to ${channel}${ctx.wasRecovering ? ` (recovered: ${ctx.recovered})` : ''}`);
    if (channel === PUBLIC_CHANNEL && ctx.presence) {
      here.clear();
      for (const info of ctx.presence) here.set(info.clientId, info);
      renderHere();
    }
    if (!ctx.recovered) {
      // A first subscribe, or a recovery that failed: what is on screen may be stale.
      view.pubs = [];
      reloadChannel(sub, view);
    }
    renderChannels();
  });
  sub.on('publication', (p) => {
    if (!current()) return;
    addPublications(view, [p]);
    renderChannels();
  });
  sub.on('join', ({ info }) => {
    if (!current() || !info) return;
    log(`${info.userId} joined ${channel}`);
    if (channel === PUBLIC_CHANNEL) here.set(info.clientId, info);
    renderHere();
  });
  sub.on('leave', ({ info }) => {
    if (!current() || !info) return;
    log(`${info.userId} left ${channel}`);
    if (channel === PUBLIC_CHANNEL) here.delete(info.clientId);
    renderHere();
  });
  sub.on('unsubscribed', ({ code, reason }) => {
    if (!current()) return;
    view.status = `unsubscribed: ${code}`;
    view.recovery = '';
    log(`unsubscribed from ${channel}: ${code} ${reason}`);
    renderChannels();
  });
  sub.on('error', (err) => {
    if (current()) log(`${channel}: ${err.code ?? ''} ${err.message}`);
  });
}

/** The latest publications from history, merged with those that arrived meanwhile. */
async function reloadChannel(sub, view) {
  try {
    const h = await sub.history({ limit: 20, reverse: true });
    if (channelViews.get(sub.channel) !== view) return;
    addPublications(view, (h.publications ?? []).map((p) => ({ ...p, channel: sub.channel })));
    renderChannels();
  } catch (err) {
    log(`history of ${sub.channel}: ${err.code ?? ''} ${err.message}`);
  }
}

function addPublications(view, pubs) {
  for (const p of pubs) {
    if (Number.isSafeInteger(p.offset) && view.pubs.some((q) => q.offset === p.offset)) continue;
    view.pubs.push(p);
  }
  view.pubs.sort((a, b) => {
    const d = (a.offset ?? Infinity) - (b.offset ?? Infinity);
    return Number.isNaN(d) ? 0 : d;
  });
  if (view.pubs.length > MAX_SHOWN) view.pubs.splice(0, view.pubs.length - MAX_SHOWN);
}

/** A publication's data as text: a string, a `text` field, or its JSON. */
function publicationText(data) {
  if (typeof data === 'string') return data;
  if (typeof data?.text === 'string') return data.text;
  return JSON.stringify(data) ?? '';
}

function publicationItem(p) {
  const li = document.createElement('li');
  if (Number.isSafeInteger(p.offset)) li.dataset.offset = String(p.offset);
  if (Number.isSafeInteger(p.offset)) li.append(text('span', `#${p.offset}`, 'offset'));
  if (p.info?.userId) li.append(text('span', p.info.userId, 'publisher'));
  li.append(text('span', publicationText(p.data), 'content'));
  return li;
}

function renderChannels() {
  const root = $('channels');
  root.replaceChildren();
  for (const [channel, view] of channelViews) {
    const block = document.createElement('div');
    block.className = 'channel';
    block.dataset.channel = channel;
    block.dataset.state = view.state;
    if (view.recovered !== null) block.dataset.recovered = String(view.recovered);
    const head = document.createElement('div');
    head.append(text('strong', channel), text('span', view.status, 'channel-status'), text('span', view.recovery, 'recovery'));
    const list = document.createElement('ul');
    for (const p of view.pubs) list.append(publicationItem(p));
    if (view.pubs.length === 0) list.append(text('li', 'no publications yet', 'muted'));
    block.append(head, list);
    root.append(block);
  }
}

function renderHere() {
  const ul = $('channel-presence');
  ul.replaceChildren();
  const sub = demo.client?.subscription(PUBLIC_CHANNEL);
  if (sub?.state !== 'subscribed') {
    ul.append(text('li', 'unknown (not subscribed)', 'muted'));
    return;
  }
  for (const info of here.values()) {
    const li = text('li', `${info.userId} (${info.deviceId})`);
    li.dataset.clientId = info.clientId;
    ul.append(li);
  }
}

// ---- the page's controls ---------------------------------------------------------------------

function renderAll() {
  renderStatus();
  renderMembers();
  renderConversations();
  renderChannels();
  renderHere();
}

$('connect').addEventListener('click', connect);
$('disconnect').addEventListener('click', () => demo.client?.disconnect());

$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  join($('conv-id').value.trim());
});

$('new-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const client = demo.client;
  if (!client?.token) return;
  const invite = $('new-members').value.split(',').map((s) => s.trim()).filter(Boolean);
  const title = $('new-title').value.trim();
  try {
    const body = await api('/api/conversations', {
      method: 'POST',
      body: JSON.stringify(title ? { title, members: invite } : { members: invite }),
    });
    conversations.set(body.id, { ...body, role: 'owner' });
    $('conv-id').value = body.id;
    log(`created conversation ${body.id}`);
    await join(body.id);
  } catch (err) {
    log(`create failed: ${err.code ?? ''} ${err.message}`);
  }
});

$('compose-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const conv = demo.conversation;
  const content = $('compose').value;
  if (!conv || !content.trim()) return;
  $('compose').value = '';
  clearTimeout(typingTimer);
  typingTimer = null;
  conv.typing(false);
  send(content);
});

$('compose').addEventListener('input', () => {
  const conv = demo.conversation;
  if (!conv) return;
  if (typingTimer === null) conv.typing(true);
  clearTimeout(typingTimer);
  typingTimer = setTimeout(() => {
    typingTimer = null;
    conv.typing(false);
  }, 3000);
});

// The page's one interval: a lost "stopped typing" datagram must not leave a name up for ever.
setInterval(() => {
  const stale = [...typingUsers].filter(([, at]) => Date.now() - at > 6000);
  for (const [userId] of stale) typingUsers.delete(userId);
  if (stale.length) renderTyping();
}, 1000);

renderAll();
