// rtgate adapter for the Socket.IO peer's load generator (loadgen.js `--proto rtgate`), so the
// very same Node client drives rtgate, the raw baseline and Socket.IO. scripts/bench copies it
// next to loadgen.js. The loadgen's events map onto rtgate's: `echo` → `sys:echo`, a room `r`
// is the channel `bench:r` (a namespace without history in scripts/bench-channels.toml),
// `room:join` → `channel:subscribe`, `room:publish` → `sys:channel-publish`, and a
// `channel:publication` arrives as the loadgen's `msg` event with the published data. The server
// must run with --dev-events and that namespace (scripts/bench-flags.sh). Frames are rtgate's
// WebSocket text frames (PROTOCOL.md).
const WebSocket = require('ws');
const CHANNEL_NS = 'bench:';
exports.connect = function connect(url, token, onEvent) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url + '/ws', { perMessageDeflate: false });
    const acks = new Map(); let nextId = 1; let done = false;
    const send = (o) => ws.send(JSON.stringify(o));
    const map = (name, data) => {
      if (name === 'echo') return ['sys:echo', data];
      if (name === 'room:join') return ['channel:subscribe', { channel: CHANNEL_NS + data }];
      if (name === 'room:publish') return ['sys:channel-publish', { channel: CHANNEL_NS + data.room, data: data.payload }];
      return [name, data];
    };
    const conn = {
      emit(name, data) { const [event, d] = map(name, data); send({ type: 'event', event, data: d }); },
      request(name, data) {
        const [event, d] = map(name, data); const id = nextId++;
        send({ type: 'event', event, id, data: d });
        return new Promise((r) => acks.set(id, r));
      },
      close() { ws.terminate(); },
    };
    ws.on('open', () => send({ type: 'connect', v: 1, token }));
    ws.on('message', (buf) => {
      const f = JSON.parse(buf.toString());
      if (f.type === 'connected') { done = true; resolve(conn); }
      else if (f.type === 'ack' || (f.type === 'error' && f.id !== undefined)) {
        const r = acks.get(f.id); if (r) { acks.delete(f.id); r(f.data); }
      }
      else if (f.type === 'event') {
        if (f.event === 'channel:publication') onEvent && onEvent('msg', f.data.data);
        else onEvent && onEvent(f.event, f.data);
      }
      else if (f.type === 'ping') send({ type: 'pong' });
      else if (!done && (f.type === 'error' || f.type === 'disconnect')) { done = true; reject(new Error(JSON.stringify(f))); }
    });
    ws.on('error', (e) => { if (!done) reject(e); });
  });
};
