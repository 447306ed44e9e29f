// Levee writers load client for bench/levee.py.
// usage: node levee_writers.js SOCKET_URL WRITERS OPS_PER_WRITER
// WRITERS phoenix clients connect to one document (document:bench:<random>)
// as write clients, then each submits OPS_PER_WRITER ops, one per submitOp,
// keeping at most 20 unacknowledged; every client receives every sequenced
// op.  Prints READY when the ops start, then JSON {ops, seconds, rate}
// (rate: ops sequenced and delivered to all writers per second).
"use strict";
const { Socket } = require("../tests/interop/node_modules/phoenix");
const WebSocket = require("../tests/interop/node_modules/ws");

const [url, writersArg, opsArg] = process.argv.slice(2);
const WRITERS = Number(writersArg), OPS = Number(opsArg);
const WINDOW = 20;
const TOPIC = `document:bench:${Math.random().toString(36).slice(2)}`;
const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout" })); process.exit(1); }, 180000);
let started = 0n, connected = 0, finished = 0;
const clients = [];

class Writer {
  constructor() {
    this.socket = new Socket(url, { transport: WebSocket });
    this.socket.connect();
    this.channel = this.socket.channel(TOPIC, {});
    this.csn = 0;
    this.acked = 0;
    this.lastSeq = 0;
    this.seen = 0;
    this.channel.on("connect_document_success", (p) => {
      this.clientId = p.clientId;
      this.lastSeq = p.checkpointSequenceNumber;
      if (++connected === WRITERS) start();
    });
    this.channel.on("op", (p) => this.onOps(p.op));
    this.channel.on("nack", (p) => { console.log(JSON.stringify({ error: "nack", p })); process.exit(1); });
    this.channel.join().receive("ok", () => this.channel.push("connect_document", {
      tenantId: "bench", id: TOPIC.split(":")[2], token: "dev",
      client: { mode: "write", details: { capabilities: { interactive: true } }, permission: [], scopes: [], user: { id: "bench" } },
      mode: "write", versions: ["^0.4.0"],
    }));
  }

  onOps(ops) {
    for (const op of ops) {
      this.lastSeq = op.sequenceNumber;
      if (op.type !== "op") continue;
      this.seen += 1;
      if (op.clientId === this.clientId) this.acked += 1;
    }
    if (started !== 0n) this.pump();
    if (this.seen === WRITERS * OPS && !this.done) {
      this.done = true;
      if (++finished === WRITERS) report();
    }
  }

  pump() {
    while (this.csn < OPS && this.csn - this.acked < WINDOW) {
      this.csn += 1;
      this.channel.push("submitOp", { clientId: this.clientId, messageBatches: [[{
        type: "op", clientSequenceNumber: this.csn, referenceSequenceNumber: this.lastSeq,
        contents: { key: "k", value: this.csn }, metadata: null,
      }]] });
    }
  }
}

function start() {
  process.stdout.write("READY\n");
  started = process.hrtime.bigint();
  for (const c of clients) c.pump();
}

function report() {
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const ops = WRITERS * OPS;
  console.log(JSON.stringify({ ops, seconds, rate: ops / seconds }));
  clearTimeout(timer);
  process.exit(0);
}

for (let i = 0; i < WRITERS; i += 1) clients.push(new Writer());
