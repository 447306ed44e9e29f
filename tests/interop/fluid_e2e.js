// The real Fluid loader and runtime (container-loader, fluid-static, map)
// against a real `twistd beryl --levee`, through fluid_driver.js.
//
//   node fluid_e2e.js '{"stage": "collaborate", "httpUrl": ..., "socketUrl": ..., "tenantId": ...}'
//   node fluid_e2e.js '{"stage": "reload", ..., "documentId": ...}'
//
// collaborate: alice creates and attaches a SharedMap container, bob loads
// it and sees her values, both write concurrently (same keys and own keys)
// until they converge, and the runtime's own summarizer gets two summaries
// acknowledged in the op stream (the second one incremental).  reload (after a server restart): carol
// loads from the newest summary plus the deltas after it.
// Prints one JSON line: {"result": {...}} or {"error": ...}.
"use strict";

const {
  createDetachedContainer,
  loadExistingContainer,
  waitContainerToCatchUp,
} = require("@fluidframework/container-loader/legacy");
const { createDOProviderContainerRuntimeFactory, createFluidContainer } = require("@fluidframework/fluid-static/internal");
const { SharedMap } = require("@fluidframework/map/legacy");
const { leveeDriver } = require("./fluid_driver.js");

const args = JSON.parse(process.argv[2] || "{}");
const watchdog = setTimeout(() => fail("timed out"), args.timeoutMs || 90000);
const trace = [];

function fail(error) {
  console.log(JSON.stringify({ error: String(error && error.stack ? error.stack : error), trace }));
  process.exit(1);
}

const tokens = new Map();
async function getToken(tenantId, documentId) {
  const key = `${tenantId}/${documentId}`;
  if (!tokens.has(key)) {
    const response = await fetch(`${args.httpUrl}/api/tenants/${tenantId}/token-mint`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ documentId, user: { id: "e2e", name: "e2e" } }),
    });
    if (!response.ok) throw new Error(`token-mint -> ${response.status}`);
    tokens.set(key, (await response.json()).token);
  }
  return tokens.get(key);
}

const driver = leveeDriver({
  httpUrl: args.httpUrl,
  socketUrl: args.socketUrl,
  tenantId: args.tenantId,
  getToken,
  summarizeProtocolTree: args.summarizeProtocolTree,
});
const schema = { initialObjects: { map: SharedMap } };
const runtimeFactory = createDOProviderContainerRuntimeFactory({
  schema,
  compatibilityMode: "2",
  runtimeOptionOverrides: {
    summaryOptions: {
      summaryConfigOverrides: {
        state: "enabled",
        minIdleTime: 0,
        maxIdleTime: 2000,
        maxTime: 60000,
        maxOps: 20,
        minOpsForLastSummaryAttempt: 1,
        maxAckWaitTime: 30000,
        maxOpsSinceLastSummary: 7000,
        initialSummarizerDelayMs: 0,
        nonRuntimeOpWeight: 0.1,
        runtimeOpWeight: 1,
        nonRuntimeHeuristicThreshold: 20,
      },
    },
  },
});
const codeLoader = {
  load: async () => ({
    module: { fluidExport: runtimeFactory },
    details: { package: "beryl-levee-e2e" },
  }),
};
const loaderProps = {
  urlResolver: driver.urlResolver,
  documentServiceFactory: driver.documentServiceFactory,
  codeLoader,
};

function connected(container) {
  return container.connectionState === 2
    ? Promise.resolve()
    : new Promise((resolve) => container.once("connected", () => resolve()));
}

async function load(documentId) {
  const container = await loadExistingContainer({
    ...loaderProps,
    request: { url: driver.documentUrl(documentId) },
  });
  const fluid = await createFluidContainer({ container });
  await connected(container);
  return { container, fluid, map: fluid.initialObjects.map };
}

function entries(map) {
  return Object.fromEntries([...map.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
}

async function until(what, test, ms = 45000) {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`waited too long for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  trace.push(what);
}

function watchSummaries(container, seen) {
  container.deltaManager.on("op", (op) => {
    if (op.type === "summaryAck" || op.type === "summaryNack") {
      seen.push({ type: op.type, sequenceNumber: op.sequenceNumber, contents: op.contents });
    }
  });
}

async function collaborate() {
  // 1. alice creates and attaches a container with a SharedMap.
  const container = await createDetachedContainer({
    ...loaderProps,
    codeDetails: { package: "beryl-levee-e2e" },
  });
  const aliceFluid = await createFluidContainer({ container });
  const aliceMap = aliceFluid.initialObjects.map;
  aliceMap.set("created", "before attach");
  await container.attach({ url: driver.documentUrl("") });
  const documentId = container.resolvedUrl.id;
  await connected(container);
  aliceMap.set("alice", 1);
  trace.push("attached");
  const summaries = [];
  watchSummaries(container, summaries);

  // 2. bob loads it and sees alice's values.
  const bob = await load(documentId);
  await until("bob sees alice", () => bob.map.get("alice") === 1);
  const bobFirst = entries(bob.map);

  // 3. both write at once, to a shared key and to keys of their own.
  for (let i = 0; i < 15; i += 1) {
    aliceMap.set("shared", `alice-${i}`);
    bob.map.set("shared", `bob-${i}`);
    aliceMap.set(`a${i}`, i);
    bob.map.set(`b${i}`, i);
  }
  await until(
    "converged",
    () => aliceMap.get("b14") === 14 && bob.map.get("a14") === 14
      && JSON.stringify(entries(aliceMap)) === JSON.stringify(entries(bob.map))
      && !container.isDirty && !bob.container.isDirty,
  );
  const converged = entries(aliceMap);

  // 4. the runtime's summarizer gets a summary acknowledged in the op stream,
  // and a second one, incremental (unchanged subtrees sent as handles).
  await until("summary acked", () => summaries.some((s) => s.type === "summaryAck"), 60000);
  for (let i = 0; i < 25; i += 1) bob.map.set(`c${i}`, i);
  await until("second summary acked", () => summaries.filter((s) => s.type === "summaryAck").length >= 2, 60000);
  aliceMap.set("after summary", true);
  await until("after-summary op seen", () => bob.map.get("after summary") === true && !container.isDirty);
  const final = entries(bob.map);
  container.close();
  bob.container.close();
  return { documentId, bobFirst, converged, final, summaries };
}

async function reload() {
  const carol = await load(args.documentId);
  await waitContainerToCatchUp(carol.container);
  const values = entries(carol.map);
  const initialSequenceNumber = carol.container.deltaManager.initialSequenceNumber;
  carol.map.set("carol", "after restart");
  await until("carol's write acked", () => !carol.container.isDirty);
  carol.container.close();
  return { values, initialSequenceNumber };
}

(args.stage === "reload" ? reload() : collaborate()).then(
  (result) => {
    clearTimeout(watchdog);
    console.log(JSON.stringify({ result, trace }));
    process.exit(0);
  },
  fail,
);
