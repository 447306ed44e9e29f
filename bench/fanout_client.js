// Fan-out load client for bench/fanout.py.
// usage: node fanout_client.js URL[,URL...] N M MODE [PACED]   (MODE: beryl | baseline)
// Several URLs spread the sockets over several servers (socket i goes to
// URL i mod count); socket 0, the sender, is on the first.
// Opens N WebSockets, joins feed:bench (beryl), then one socket sends M
// messages; every socket counts the broadcasts it receives.  PACED=1 sends
// each message only when the sender got its own copy of the previous one, so
// every broadcast is written on its own (no batching of several broadcasts
// into one send() per socket).  Prints JSON: {deliveries, seconds, rate}.
const WebSocket = require("ws");
const [url, nArg, mArg, mode, pacedArg] = process.argv.slice(2);
const paced = pacedArg === "1";
let sent = 0;
const N = Number(nArg), M = Number(mArg);
const expected = N * M;
let open = 0, joined = 0, received = 0, started = 0;
const sockets = [];
const JOIN = JSON.stringify(["1", "1", "feed:bench", "phx_join", {}]);
const timer = setTimeout(() => { console.log(JSON.stringify({error: "timeout", received, joined, open})); process.exit(1); }, 120000);

function onMessage(data) {
  if (paced && this === sockets[0] && data[1] === 110 && sent < M) sendOne();
  if (mode === "beryl") {
    if (data[1] !== 110) {                    // not [null,...: a reply
      if (joined < N && ++joined === N) fire();
      return;
    }
  }
  if (++received === expected) {
    const seconds = (process.hrtime.bigint() - started) / 1000n;
    const s = Number(seconds) / 1e6;
    console.log(JSON.stringify({deliveries: received, seconds: s, rate: received / s}));
    clearTimeout(timer);
    process.exit(0);
  }
}

function fire() {
  process.stdout.write("READY\n");
  started = process.hrtime.bigint();
  if (paced) sendOne();
  else while (sent < M) sendOne();
}

function sendOne() {
  const i = sent++;
  if (mode === "beryl") sockets[0].send(JSON.stringify(["1", String(i + 2), "feed:bench", "new_msg", {body: "tick " + i}]));
  else sockets[0].send(JSON.stringify([null, null, "feed:bench", "new_msg", {user: null, body: "tick " + i}]));
}

function connect(i) {
  const urls = url.split(",");
  const ws = new WebSocket(urls[i % urls.length], {perMessageDeflate: false});
  sockets[i] = ws;
  ws.on("open", () => {
    open++;
    if (mode === "beryl") ws.send(JOIN);
    else if (open === N) fire();
    if (i + 1 < N) connect(i + 1);
  });
  ws.on("message", function (data) { onMessage.call(ws, data); });
  ws.on("error", (e) => { console.log(JSON.stringify({error: String(e)})); process.exit(1); });
}
connect(0);
