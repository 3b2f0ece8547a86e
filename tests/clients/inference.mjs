#!/usr/bin/env node
// Drives the real, unmodified @inferencesh/sdk against keyrelay in proxy mode (`proxyUrl` option).
// Prints ONE JSON line to stdout; exit code 0 when every step passed, 1 otherwise (2 on bad usage).
//
// Usage: PROXY_URL=http://127.0.0.1:8080/api/inference/proxy node inference.mjs [STEP ...]
//   STEPs (default: run):
//     run      client.run({app, input})   POST /apps/run, then follows GET /tasks/<id>/stream (NDJSON) to a terminal status
//     poll     the same with {stream: false}: polls GET /tasks/<id>/status, GET /tasks/<id> when the status changes
//     upload   client.uploadFile(Blob)    POST /files via the proxy, then PUT of the bytes straight to the returned upload_url
// Environment:
//   PROXY_URL            (required) the proxy URL given to the SDK as `proxyUrl`; any path works
//   INF_APP              app id (default infsh/echo); INF_PROMPT the prompt in the input (default "hello")
//   INF_POLL_INTERVAL_MS polling interval for `poll` (SDK default 2000)
//   UPLOAD_BYTES         size of the uploaded blob (default 4096); UPLOAD_CONTENT_TYPE (default image/png)
//   TIMEOUT_MS           overall time limit (default 30000)
// The SDK 0.6.54 dist imports its own modules without file extensions, which plain Node rejects;
// lib/extensionless-esm-hook.mjs (module.register) resolves them. The SDK itself is not modified.
import { register } from "node:module";
import { env, lastPut, packageLabel, recordingFetch, runSteps, startDriver, uploadBlob } from "./lib/driver.mjs";

register("./lib/extensionless-esm-hook.mjs", import.meta.url);
const { Inference } = await import("@inferencesh/sdk");

const app = env.INF_APP || "infsh/echo";
const driver = startDriver({
  client: packageLabel("@inferencesh/sdk"),
  allSteps: ["run", "poll", "upload"],
  stepsVar: "INF_STEPS",
  defaultSteps: "run",
  fields: { app },
});
const { proxyUrl, out } = driver;
const input = { prompt: env.INF_PROMPT || "hello" };

// The SDK calls the global fetch and has no fetch option: wrap the global to record what it sent
// (pure pass-through; the SDK code is untouched).
globalThis.fetch = recordingFetch(out, globalThis.fetch, "x-inf-target-url", (init) => ({ credentials: init.credentials }));

function describeError(error) {
  return { name: error?.name, message: String(error?.message ?? error), status: error?.statusCode ?? error?.status, body: error?.responseBody };
}

function client(extra = {}) {
  return new Inference({ proxyUrl, ...extra }); // proxy mode: no apiKey, no Authorization header
}

// A finished task: the SDK's TaskStatusCompleted (10), or the status spelled out.
const completed = (task) => task?.status === 10 || String(task?.status).toLowerCase() === "completed";

const runners = {
  async run() {
    const started = Date.now();
    const updates = [];
    const updateMs = []; // arrival of each NDJSON update, ms after the run started (shows whether it was buffered)
    const note = (t) => {
      updates.push(t.status);
      updateMs.push(Date.now() - started);
    };
    const task = await client().run({ app, input }, { onUpdate: note, onPartialUpdate: note });
    return { ok: completed(task), task_id: task.id, status: task.status, output: task.output, updates, update_ms: updateMs };
  },

  async poll() {
    const pollIntervalMs = env.INF_POLL_INTERVAL_MS ? Number(env.INF_POLL_INTERVAL_MS) : undefined;
    const updates = [];
    const task = await client({ stream: false, pollIntervalMs }).run({ app, input }, { onUpdate: (t) => updates.push(t.status) });
    return { ok: completed(task), task_id: task.id, status: task.status, output: task.output, updates };
  },

  async upload() {
    const { blob, ...sent } = uploadBlob();
    const file = await client().uploadFile(blob, { filename: "keyrelay-test.png" });
    return { ok: typeof file?.uri === "string" && file.uri.length > 0, file, ...sent, ...lastPut(out) };
  },
};

await runSteps(driver, runners, describeError);
