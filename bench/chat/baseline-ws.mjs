// Baseline for bench/chat-fanout.sh: the Node.js `ws` broadcast loop most chat servers
// start as — what a venue would run instead. It speaks the same frames as commeowd but does
// far less: no tokens, no limits, no history, no moderation, no slow-socket policy. Each
// message is serialized once and sent as one shared Buffer (the fast way to use `ws`).
// Usage: node baseline-ws.mjs <port>
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2]);
const wss = new WebSocketServer({ host: '127.0.0.1', port });
let nextId = 1;

wss.on('connection', (socket) => {
  socket.send(JSON.stringify({
    type: 'hello', channel: 'bench', viewers: wss.clients.size, history: 0, user: null, moderator: false,
  }));
  socket.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame;
    try { frame = JSON.parse(data.toString()); } catch { return; }
    if (frame.type !== 'chat' || typeof frame.text !== 'string') return;
    const out = Buffer.from(JSON.stringify({
      type: 'chat', id: nextId++, user: { id: 1, nickname: 'bench', role: 'viewer' },
      text: frame.text, at: new Date().toISOString(),
    }));
    for (const client of wss.clients) {
      if (client.readyState === 1) client.send(out, { binary: false });
    }
  });
});
wss.on('listening', () => console.error(`baseline listening on ${port}`));
