// Inbound load client for bench/ping.py.
// usage: node ping_client.js URL SOCKETS WINDOW TOTAL MODE   (MODE: beryl | baseline)
// Each socket keeps WINDOW pings in flight; stops after TOTAL replies.
// Prints READY when the measured phase starts, then JSON {replies, seconds, rate}.
const WebSocket = require("ws");
const [url, socketsArg, windowArg, totalArg, mode] = process.argv.slice(2);
const S = Number(socketsArg), W = Number(windowArg), TOTAL = Number(totalArg);
let open = 0, joined = 0, replies = 0, sent = 0, started = 0n;
const sockets = [];
const timer = setTimeout(() => { console.log(JSON.stringify({error: "timeout", replies})); process.exit(1); }, 120000);
const PING = mode === "beryl"
  ? (i) => `["1","${i}","feed:bench","ping",{"n":${i},"text":"hello"}]`
  : (i) => `[null,"${i}","feed:bench","ping",{"n":${i},"text":"hello"}]`;

function send(ws) { if (sent < TOTAL) ws.send(PING(++sent)); }

function start() {
  process.stdout.write("READY\n");
  started = process.hrtime.bigint();
  for (const ws of sockets) for (let k = 0; k < W; k++) send(ws);
}

function connect(i) {
  const ws = new WebSocket(url, {perMessageDeflate: false});
  sockets.push(ws);
  ws.on("open", () => {
    if (mode === "beryl") ws.send(`["1","1","feed:bench","phx_join",{}]`);
    else if (++open === S) start();
    if (i + 1 < S) connect(i + 1);
  });
  ws.on("message", () => {
    if (mode === "beryl" && joined < S) { if (++joined === S) start(); return; }
    if (++replies === TOTAL) {
      const s = Number(process.hrtime.bigint() - started) / 1e9;
      console.log(JSON.stringify({replies, seconds: s, rate: replies / s}));
      clearTimeout(timer);
      process.exit(0);
    }
    send(ws);
  });
}
connect(0);
