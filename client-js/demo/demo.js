// The rtgate demo page: a connection indicator, a token login, and one conversation with its
// members' presence. Every string that came from the server or another user is rendered with
// textContent (see `text`), never as markup.

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
  conversation: null,
  attempt: 0,
  lastReason: null,
  stopped: null, // the client's `stopped` info until the next Connect
};
// For the browser tests and for poking at from the console.
window.rtgateDemo = demo;

if (params.get('transport')) $('transport-choice').value = params.get('transport');
if (params.get('wtPort')) $('wt-port').value = params.get('wtPort');

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

function connect() {
  demo.client?.disconnect();
  demo.attempt = 0;
  demo.lastReason = null;
  demo.stopped = null;
  const client = new RtgateClient({
    getToken: () => $('token').value.trim(),
    transport: $('transport-choice').value,
    wtPort: Number($('wt-port').value) || 4433,
    autoConnect: false,
  });
  demo.client = client;
  client.on('state', renderStatus);
  client.on('connect', ({ transport, session }) => {
    log(`connected over ${transport} to ${session.instanceId}`);
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
  client.on('presence', renderMembers);
  client.connect();
  renderStatus();
}

// ---- conversation ------------------------------------------------------------------------

let members = [];
let typingTimer = null;
const typingUsers = new Map();

function renderMembers() {
  const ul = $('members');
  ul.replaceChildren();
  for (const userId of members) {
    const p = demo.client?.presence.get(userId);
    const li = text('li', userId);
    li.classList.toggle('online', Boolean(p?.online));
    li.dataset.userId = userId;
    li.title = p?.online ? 'online' : 'offline';
    ul.append(li);
  }
}

function renderMessage(m) {
  const li = document.createElement('li');
  li.dataset.seq = String(m.seq);
  li.append(text('span', `#${m.seq}`, 'seq'), text('span', m.senderId, 'sender'), text('span', m.content, 'content'));
  const list = $('messages');
  list.append(li);
  list.scrollTop = list.scrollHeight;
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
  typingUsers.clear();
  renderTyping();
  const conv = client.conversation(id);
  demo.conversation = conv;
  conv.on('message', (m) => {
    if (demo.conversation === conv) renderMessage(m);
  });
  conv.on('typing', ({ userId, isTyping }) => {
    if (isTyping) typingUsers.set(userId, Date.now());
    else typingUsers.delete(userId);
    renderTyping();
  });
  conv.on('removed', () => log(`removed from ${id}`));
  try {
    const ack = await conv.join();
    log(`joined ${id} at seq ${ack.lastSeq}`);
    const info = await client._getJson(`/api/conversations/${encodeURIComponent(id)}`);
    $('conv-title').textContent = info.title ? info.title : 'Messages';
    members = (info.members ?? []).map((m) => m.userId);
    renderMembers();
    await client.presence.subscribe(members);
    // The latest page of history, so joining shows some context; live messages follow in order.
    const recent = await conv.history({ beforeSeq: ack.lastSeq + 1, limit: 50 });
    const first = $('messages').firstElementChild;
    for (const m of recent.messages ?? []) {
      if (m.seq > ack.lastSeq) continue;
      const li = document.createElement('li');
      li.dataset.seq = String(m.seq);
      li.append(text('span', `#${m.seq}`, 'seq'), text('span', m.senderId, 'sender'), text('span', m.content, 'content'));
      $('messages').insertBefore(li, first);
    }
  } catch (err) {
    log(`join failed: ${err.code ?? ''} ${err.message}`);
  }
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
  try {
    const res = await fetch(`${client.url}/api/conversations`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${client.token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ members: invite }),
    });
    const body = await res.json();
    if (!res.ok) throw Object.assign(new Error(body.message), { code: body.code });
    $('conv-id').value = body.id;
    log(`created conversation ${body.id}`);
    await join(body.id);
  } catch (err) {
    log(`create failed: ${err.code ?? ''} ${err.message}`);
  }
});

$('compose-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const conv = demo.conversation;
  const content = $('compose').value;
  if (!conv || !content.trim()) return;
  $('compose').value = '';
  conv.typing(false);
  try {
    await conv.send(content);
  } catch (err) {
    log(`send failed: ${err.code ?? ''} ${err.message}`);
  }
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
// (Started once here; event handlers and connect() must not start more.)
setInterval(() => {
  const stale = [...typingUsers].filter(([, at]) => Date.now() - at > 6000);
  for (const [userId] of stale) typingUsers.delete(userId);
  if (stale.length) renderTyping();
}, 1000);

renderStatus();
