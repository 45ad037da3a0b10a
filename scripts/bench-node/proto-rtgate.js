// rtgate adapter for the Socket.IO peer's load generator (loadgen.js `--proto rtgate`), so the
// very same Node client drives rtgate, the raw baseline and Socket.IO. scripts/bench copies it
// next to loadgen.js. The loadgen's events map onto rtgate's: `echo` → `sys:echo`,
// `room:join` → `sys:room-join`, `room:publish` → `sys:room-publish` (event `msg`), so the
// server must run with --dev-events. Frames are rtgate's WebSocket text frames (PROTOCOL.md).
const WebSocket = require('ws');
exports.connect = function connect(url, token, onEvent) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url + '/ws', { perMessageDeflate: false });
    const acks = new Map(); let nextId = 1; let done = false;
    const send = (o) => ws.send(JSON.stringify(o));
    const map = (name, data) => {
      if (name === 'echo') return ['sys:echo', data];
      if (name === 'room:join') return ['sys:room-join', { room: data }];
      if (name === 'room:publish') return ['sys:room-publish', { room: data.room, event: 'msg', data: data.payload }];
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
      else if (f.type === 'event') onEvent && onEvent(f.event, f.data);
      else if (f.type === 'ping') send({ type: 'pong' });
      else if (!done && (f.type === 'error' || f.type === 'disconnect')) { done = true; reject(new Error(JSON.stringify(f))); }
    });
    ws.on('error', (e) => { if (!done) reject(e); });
  });
};
