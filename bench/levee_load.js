// Levee load-time client for bench/levee.py, on the real Fluid loader and the
// interop tests' driver (tests/interop/fluid_driver.js).
// usage: node levee_load.js HTTP_URL SOCKET_URL OPS ROUNDS
// Creates two SharedMap documents holding OPS keys: "deltas", whose OPS sets
// were sequenced after its only summary (the create-new one), and
// "summary", whose keys are all in that summary.  Then loads each ROUNDS
// times and prints JSON {deltas, summary} (the best load time of each, in
// seconds: loadExistingContainer until caught up).
"use strict";
const path = require("node:path");
const { createRequire } = require("node:module");
const interop = createRequire(path.join(__dirname, "..", "tests", "interop", "package.json"));
const { createDetachedContainer, loadExistingContainer, waitContainerToCatchUp } =
  interop("@fluidframework/container-loader/legacy");
const { createDOProviderContainerRuntimeFactory, createFluidContainer } =
  interop("@fluidframework/fluid-static/internal");
const { SharedMap } = interop("@fluidframework/map/legacy");
const { leveeDriver } = interop("./fluid_driver.js");

const [httpUrl, socketUrl, opsArg, roundsArg] = process.argv.slice(2);
const OPS = Number(opsArg), ROUNDS = Number(roundsArg);
const timer = setTimeout(() => { console.log(JSON.stringify({ error: "timeout" })); process.exit(1); }, 600000);

const driver = leveeDriver({ httpUrl, socketUrl, tenantId: "bench", getToken: async () => "dev" });
const runtimeFactory = createDOProviderContainerRuntimeFactory({
  schema: { initialObjects: { map: SharedMap } },
  compatibilityMode: "2",
  runtimeOptionOverrides: {
    summaryOptions: { summaryConfigOverrides: { state: "disabled" } },
    enableGroupedBatching: false,
  },
});
const loaderProps = {
  urlResolver: driver.urlResolver,
  documentServiceFactory: driver.documentServiceFactory,
  codeLoader: { load: async () => ({ module: { fluidExport: runtimeFactory }, details: { package: "bench" } }) },
};

async function settled(container) {
  while (container.isDirty || container.connectionState !== 2) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function create(inSummary) {
  const container = await createDetachedContainer({ ...loaderProps, codeDetails: { package: "bench" } });
  const map = (await createFluidContainer({ container })).initialObjects.map;
  if (inSummary) for (let i = 0; i < OPS; i += 1) map.set(`k${i}`, i);
  await container.attach({ url: driver.documentUrl("") });
  await settled(container);
  if (!inSummary) {
    for (let i = 0; i < OPS; i += 500) {
      for (let j = i; j < Math.min(i + 500, OPS); j += 1) map.set(`k${j}`, j);
      await settled(container);
    }
  }
  container.close();
  return container.resolvedUrl.id;
}

async function loadTime(documentId) {
  const start = process.hrtime.bigint();
  const container = await loadExistingContainer({ ...loaderProps, request: { url: driver.documentUrl(documentId) } });
  await waitContainerToCatchUp(container);
  const map = (await createFluidContainer({ container })).initialObjects.map;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (map.get(`k${OPS - 1}`) !== OPS - 1) throw new Error("loaded document is incomplete");
  container.close();
  return seconds;
}

(async () => {
  const deltasDoc = await create(false);
  const summaryDoc = await create(true);
  let deltas = Infinity, summary = Infinity;
  for (let r = 0; r < ROUNDS; r += 1) {
    deltas = Math.min(deltas, await loadTime(deltasDoc));
    summary = Math.min(summary, await loadTime(summaryDoc));
  }
  console.log(JSON.stringify({ deltas, summary }));
  clearTimeout(timer);
  process.exit(0);
})().catch((error) => { console.log(JSON.stringify({ error: String(error.stack || error) })); process.exit(1); });
