// A scripted Fluid-like client of the Levee document channel, on the
// official phoenix client, for tests/integration/test_levee_clients.py.
//
//   node levee_client.js '{"url": "ws://127.0.0.1:PORT/socket"}'
//
// Two writers (alice, bob) and a reader (rita) connect to one document the
// way the Levee driver does, check every op stream as the Fluid loader
// would (sequence numbers strictly consecutive, join/leave carry `data`),
// submit ops, signals, a gap (nacked), catch up with requestOps, and leave.
// Prints one JSON line: {"result": {...}} or {"error": ...}.
"use strict";

const { Socket } = require("phoenix");
const WebSocket = require("ws");

const args = JSON.parse(process.argv[2] || "{}");
const TENANT = "acme";
const DOCUMENT = "doc:with:colons";
const TOPIC = `document:${TENANT}:${DOCUMENT}`;
const VERSIONS = ["^0.4.0", "^0.3.0", "^0.2.0", "^0.1.0"];

const watchdog = setTimeout(() => fail("timed out"), args.timeoutMs || 20000);
const clients = [];

function fail(error, extra) {
  const seen = {};
  for (const c of clients) seen[c.name] = { ops: c.ops.map((o) => o.sequenceNumber), events: c.events };
  console.log(JSON.stringify({ error, extra, seen }));
  process.exit(1);
}

class FluidClient {
  constructor(name, mode) {
    this.name = name;
    this.mode = mode;
    this.ops = [];       // every sequenced op seen, in order (live)
    this.signals = [];
    this.nacks = [];
    this.replays = [];
    this.events = [];
    this.last = {};      // the latest payload of each event
    this.lastSeq = null; // the loader's "last processed SN"
    this.csn = 0;
    this.waiters = [];
    clients.push(this);
    this.socket = new Socket(args.url, { transport: WebSocket });
    this.socket.connect();
    this.openChannel();
  }

  openChannel() {
    const name = this.name;
    this.channel = this.socket.channel(TOPIC, { token: "dev" });
    this.channel.on("op", (payload) => this.onOps(payload));
    this.channel.on("signal", (payload) => this.record("signal", payload, this.signals));
    this.channel.on("nack", (payload) => this.record("nack", payload, this.nacks));
    this.channel.on("connect_document_success", (payload) => this.record("connect_document_success", payload));
    this.channel.on("connect_document_error", (payload) => fail(`${name}: connect_document_error`, payload));
  }

  // Reconnect as the driver does after a nack that ends its connection:
  // leave, join again and connect_document again, as a new client.
  async reconnect() {
    await new Promise((resolve) => this.channel.leave().receive("ok", resolve));
    this.events = [];
    this.last = {};
    this.lastSeq = null; // the loader catches up separately
    this.csn = 0;
    this.openChannel();
    await this.join();
    await this.connect();
  }

  noop() {
    this.channel.push("noop", { clientId: this.clientId, referenceSequenceNumber: this.lastSeq });
  }

  record(event, payload, list) {
    this.events.push(event);
    this.last[event] = payload;
    if (list) list.push(payload);
    this.poke();
  }

  onOps(payload) {
    this.events.push("op");
    if (payload.documentId !== DOCUMENT) fail(`${this.name}: op for ${payload.documentId}`);
    const ops = payload.op || payload.ops || payload;
    if (this.expectReplay) {
      this.expectReplay = false;
      this.replays.push(ops);
    } else {
      for (const op of ops) {
        // the loader throws "Protocol state is not moving sequentially"
        if (this.lastSeq !== null && op.sequenceNumber !== this.lastSeq + 1) {
          fail(`${this.name}: SN ${op.sequenceNumber} after ${this.lastSeq}`);
        }
        if ((op.type === "join" || op.type === "leave") && typeof op.data !== "string") {
          fail(`${this.name}: ${op.type} op without data`, op);
        }
        this.lastSeq = op.sequenceNumber;
        this.ops.push(op);
      }
    }
    this.poke();
  }

  poke() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const [predicate, resolve] of waiters) {
      if (predicate()) resolve();
      else this.waiters.push([predicate, resolve]);
    }
  }

  until(predicate) {
    return new Promise((resolve) => {
      if (predicate()) resolve();
      else this.waiters.push([predicate, resolve]);
    });
  }

  join() {
    return new Promise((resolve) => {
      this.channel
        .join()
        .receive("ok", resolve)
        .receive("error", (reason) => fail(`${this.name}: join refused`, reason));
    });
  }

  async connect() {
    this.channel.push("connect_document", {
      tenantId: TENANT,
      id: DOCUMENT,
      token: "dev-token",
      client: {
        mode: this.mode,
        details: { capabilities: { interactive: true } },
        permission: [],
        user: { id: this.name },
        scopes: [],
      },
      mode: this.mode,
      versions: VERSIONS,
      nonce: `${this.name}-nonce`,
    });
    await this.until(() => this.events.includes("connect_document_success"));
    this.connected = this.last.connect_document_success;
    this.clientId = this.connected.clientId;
    if (this.mode === "write") {
      // a write client is "Connected" once it has processed its own join op
      await this.until(() =>
        this.ops.some((op) => op.type === "join" && JSON.parse(op.data).clientId === this.clientId)
      );
    }
  }

  submit(contents, csn, reference) {
    this.csn = csn === undefined ? this.csn + 1 : csn;
    const op = {
      clientSequenceNumber: this.csn,
      referenceSequenceNumber: reference === undefined ? this.lastSeq : reference,
      type: "op",
      contents,
      metadata: null,
    };
    this.channel.push("submitOp", { clientId: this.clientId, messageBatches: [[op]] });
    return op;
  }
}

function acked(client, csn) {
  return (observer) => observer.ops.some((op) => op.clientId === client.clientId && op.clientSequenceNumber === csn);
}

async function main() {
  const alice = new FluidClient("alice", "write");
  const bob = new FluidClient("bob", "write");
  const rita = new FluidClient("rita", "read");
  await Promise.all([alice.join(), bob.join(), rita.join()]);

  await alice.connect();
  await bob.connect();
  await rita.connect();
  // the reader starts its stream from the document's current SN
  rita.lastSeq = rita.connected.checkpointSequenceNumber;

  alice.submit({ text: "hello" });
  bob.submit({ text: "world" });
  alice.submit({ text: "again" });
  for (const observer of [alice, bob, rita]) {
    await observer.until(() => acked(alice, 2)(observer) && acked(bob, 1)(observer));
  }

  alice.channel.push("submitSignal", {
    clientId: alice.clientId,
    contentBatches: [[{ content: JSON.stringify({ cursor: 7 }) }]],
  });
  for (const observer of [alice, bob, rita]) {
    await observer.until(() => observer.signals.some((s) => s.clientId === alice.clientId));
  }

  bob.submit({ text: "gap" }, bob.csn + 5);
  await bob.until(() => bob.nacks.length > 0);

  rita.expectReplay = true;
  rita.channel.push("requestOps", { from: 0 });
  await rita.until(() => rita.replays.length > 0);

  // The leave arrives twice: as a sequenced op and as a system signal.
  const leaveSeen = (observer) =>
    observer.ops.some((op) => op.type === "leave" && JSON.parse(op.data) === alice.clientId) &&
    observer.signals.some((s) => s.clientId === null && JSON.parse(s.content).type === "leave");
  alice.channel.leave();
  await bob.until(() => leaveSeen(bob));
  await rita.until(() => leaveSeen(rita));

  const summary = (c) => ({
    clientId: c.clientId,
    mode: c.connected.mode,
    nonce: c.connected.nonce,
    scopes: c.connected.claims.scopes,
    initialClients: c.connected.initialClients.map((ic) => ic.clientId),
    ops: c.ops.map((op) => [op.sequenceNumber, op.type, op.clientId, op.clientSequenceNumber]),
    msns: c.ops.map((op) => op.minimumSequenceNumber),
    signals: c.signals.filter((s) => s.clientId !== null).map((s) => [s.clientId, s.content]),
    systemSignals: c.signals.filter((s) => s.clientId === null).map((s) => JSON.parse(s.content).type),
    nacks: c.nacks.map((n) => n.nacks.map((x) => [x.content.code, x.content.message])),
    replay: c.replays.map((ops) => ops.map((op) => op.sequenceNumber)),
  });
  const result = { alice: summary(alice), bob: summary(bob), rita: summary(rita) };

  // Later: a third writer moves the MSN, is nacked for a stale reference,
  // and reconnects as a new client whose ops are sequenced again.
  const carl = new FluidClient("carl", "write");
  await carl.join();
  await carl.connect();
  const msnOf = (client) => client.ops[client.ops.length - 1].minimumSequenceNumber;
  carl.submit({ text: "first" });
  await bob.until(() => acked(carl, 1)(bob));
  const msnBefore = msnOf(bob);
  bob.noop();
  // A round trip on bob's socket: his noop has been handled after it.
  bob.expectReplay = true;
  bob.channel.push("requestOps", { from: bob.lastSeq - 1 });
  await bob.until(() => bob.replays.length > 0);
  carl.noop();
  carl.submit({ text: "second" });
  await bob.until(() => acked(carl, 2)(bob));
  const msnAfter = msnOf(bob);
  carl.submit({ text: "stale" }, undefined, 0);
  await carl.until(() => carl.nacks.length > 0);
  const oldId = carl.clientId;
  await carl.reconnect();
  carl.submit({ text: "back" });
  await bob.until(() => acked(carl, 1)(bob));
  result.carl = {
    msnBefore,
    msnAfter,
    sequenceNumberAfter: bob.ops[bob.ops.length - 1].sequenceNumber,
    staleNack: carl.nacks[0].nacks.map((x) => [x.content.code, x.content.message]),
    oldId,
    newId: carl.clientId,
    bobSawNewJoin: bob.ops.some((op) => op.type === "join" && JSON.parse(op.data).clientId === carl.clientId),
  };

  clearTimeout(watchdog);
  console.log(JSON.stringify({ result }));
  for (const c of clients) c.socket.disconnect();
  setTimeout(() => process.exit(0), 50);
}

main().catch((error) => fail(String(error && error.stack || error)));
