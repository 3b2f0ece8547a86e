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
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { register } from "node:module";

register("./lib/extensionless-esm-hook.mjs", import.meta.url);
const { Inference } = await import("@inferencesh/sdk");

const pkg = (name) => JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url), "utf8"));
const CLIENT = `@inferencesh/sdk@${pkg("@inferencesh/sdk").version}`;
const ALL_STEPS = ["run", "poll", "upload"];

const env = process.env;
const proxyUrl = env.PROXY_URL;
const app = env.INF_APP || "infsh/echo";
const steps = (process.argv.slice(2).join(",") || env.INF_STEPS || "run").split(/[,\s]+/).filter(Boolean);
const timeoutMs = Number(env.TIMEOUT_MS || 30000);
const input = { prompt: env.INF_PROMPT || "hello" };

const out = { ok: false, client: CLIENT, proxy_url: proxyUrl, app, steps: {}, requests: [] };
function finish(code) {
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(code);
}
const bad = steps.filter((s) => !ALL_STEPS.includes(s));
if (!proxyUrl || bad.length) {
  out.error = !proxyUrl ? "PROXY_URL is not set" : `unknown step(s) ${bad.join(", ")}; known: ${ALL_STEPS.join(", ")}`;
  finish(2);
}
setTimeout(() => {
  out.error = `timed out after ${timeoutMs} ms`;
  finish(1);
}, timeoutMs).unref();

// The SDK calls the global fetch and has no fetch option: wrap the global to record what it sent
// (pure pass-through; the SDK code is untouched).
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
  const headers = new Headers(init.headers);
  const entry = {
    method: (init.method || "GET").toUpperCase(),
    url: String(url),
    target: headers.get("x-inf-target-url"),
    accept: headers.get("accept"),
    authorization: headers.get("authorization"),
    credentials: init.credentials,
  };
  out.requests.push(entry);
  try {
    const response = await realFetch(url, init);
    entry.status = response.status;
    entry.content_type = response.headers.get("content-type");
    return response;
  } catch (error) {
    entry.error = String(error?.cause?.code || error);
    throw error;
  }
};

function describeError(error) {
  return { name: error?.name, message: String(error?.message ?? error), status: error?.statusCode ?? error?.status, body: error?.responseBody };
}

function client(extra = {}) {
  return new Inference({ proxyUrl, ...extra }); // proxy mode: no apiKey, no Authorization header
}

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
    return { ok: task?.status === 10 || String(task?.status).toLowerCase() === "completed", task_id: task.id, status: task.status, output: task.output, updates, update_ms: updateMs };
  },

  async poll() {
    const pollIntervalMs = env.INF_POLL_INTERVAL_MS ? Number(env.INF_POLL_INTERVAL_MS) : undefined;
    const updates = [];
    const task = await client({ stream: false, pollIntervalMs }).run({ app, input }, { onUpdate: (t) => updates.push(t.status) });
    return { ok: task?.status === 10 || String(task?.status).toLowerCase() === "completed", task_id: task.id, status: task.status, output: task.output, updates };
  },

  async upload() {
    const size = Number(env.UPLOAD_BYTES || 4096);
    const bytes = new Uint8Array(size).map((_, i) => (i * 7 + 3) % 256);
    const blob = new Blob([bytes], { type: env.UPLOAD_CONTENT_TYPE || "image/png" });
    const file = await client().uploadFile(blob, { filename: "keyrelay-test.png" });
    const put = out.requests.filter((r) => r.method === "PUT").at(-1);
    return {
      ok: typeof file?.uri === "string" && file.uri.length > 0,
      file,
      bytes: size,
      sha256: createHash("sha256").update(bytes).digest("hex"),
      upload_url: put?.url,
      upload_via_proxy: put ? put.target != null : undefined,
    };
  },
};

let failed = false;
for (const step of steps) {
  const started = Date.now();
  try {
    out.steps[step] = await runners[step]();
  } catch (error) {
    out.steps[step] = { ok: false, error: describeError(error) };
  }
  out.steps[step].ms = Date.now() - started;
  failed ||= !out.steps[step].ok;
}
out.ok = !failed;
finish(failed ? 1 : 0);
