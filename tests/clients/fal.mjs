#!/usr/bin/env node
// Drives the real, unmodified @fal-ai/client against keyrelay, the way a browser app or server uses fal's proxy.
// Prints ONE JSON line to stdout; exit code 0 when every step passed, 1 otherwise (2 on bad usage).
//
// Usage: PROXY_URL=http://127.0.0.1:8080/api/fal/proxy node fal.mjs [STEP ...]
//   STEPs (default: subscribe stream upload):
//     run        fal.run(endpoint)                       POST https://fal.run/<endpoint>
//     subscribe  fal.subscribe(endpoint, {logs: true})   queue submit, status polling (?logs=1), result
//     stream     fal.queue.submit + fal.queue.streamStatus (SSE .../status/stream?logs=1) + fal.queue.result
//     upload     fal.storage.upload(Blob)                POST rest.fal.ai/storage/upload/initiate via the proxy,
//                                                        then PUT of the bytes straight to the returned upload_url
//     cancel     fal.queue.submit + fal.queue.cancel     PUT .../requests/<id>/cancel
// Environment:
//   PROXY_URL               (required) the proxy URL given to fal.config({proxyUrl}); any path works
//   FAL_ENDPOINT            endpoint id (default fal-ai/flux/dev)
//   FAL_PROMPT              prompt put into the input (default "a red fox in the snow")
//   FAL_POLL_INTERVAL_MS    subscribe's polling interval (client default 500)
//   FAL_CLIENT_CREDENTIALS  credentials the *client* sends (Authorization: Key ...); default none. FAL_KEY,
//                           FAL_KEY_ID and FAL_KEY_SECRET in the environment are ignored on purpose: keyrelay holds the key.
//   UPLOAD_BYTES            size of the uploaded blob (default 4096); UPLOAD_CONTENT_TYPE (default image/png)
//   TIMEOUT_MS              overall time limit (default 30000)
import { fal } from "@fal-ai/client";
import { env, lastPut, packageLabel, recordingFetch, runSteps, startDriver, uploadBlob } from "./lib/driver.mjs";

const endpoint = env.FAL_ENDPOINT || "fal-ai/flux/dev";
const driver = startDriver({
  client: packageLabel("@fal-ai/client"),
  allSteps: ["run", "subscribe", "stream", "upload", "cancel"],
  stepsVar: "FAL_STEPS",
  defaultSteps: "subscribe,stream,upload",
  fields: { endpoint },
});
const { proxyUrl, out } = driver;
const input = { prompt: env.FAL_PROMPT || "a red fox in the snow", image_size: "square_hd", num_images: 1 };

fal.config({
  proxyUrl: { url: proxyUrl, when: "always" }, // "always": proxy in Node too (default is browser only)
  credentials: env.FAL_CLIENT_CREDENTIALS || undefined, // explicit: never read FAL_KEY* from the environment
  fetch: recordingFetch(out, fetch, "x-fal-target-url"),
});

function describeError(error) {
  return {
    name: error?.name,
    message: String(error?.message ?? error),
    status: error?.status,
    body: error?.body,
    request_id: error?.requestId || undefined,
  };
}

const runners = {
  async run() {
    const result = await fal.run(endpoint, { input });
    return { ok: result?.data != null, request_id: result.requestId, data: result.data };
  },

  async subscribe() {
    const updates = [];
    const result = await fal.subscribe(endpoint, {
      input,
      logs: true,
      pollInterval: env.FAL_POLL_INTERVAL_MS ? Number(env.FAL_POLL_INTERVAL_MS) : undefined,
      onQueueUpdate: (u) => updates.push({ status: u.status, logs: u.logs?.length ?? 0 }),
    });
    const completed = updates.at(-1)?.status === "COMPLETED";
    return { ok: completed && result?.data != null, request_id: result.requestId, statuses: updates.map((u) => u.status), logs_seen: updates.reduce((n, u) => n + u.logs, 0), data: result.data };
  },

  async stream() {
    const { request_id: requestId } = await fal.queue.submit(endpoint, { input });
    const opened = Date.now();
    const stream = await fal.queue.streamStatus(endpoint, { requestId, logs: true });
    const events = [];
    const eventMs = []; // arrival of each SSE event, ms after the stream was opened (shows whether it was buffered)
    stream.on("data", (event) => {
      events.push(event);
      eventMs.push(Date.now() - opened);
    });
    const last = await stream.done();
    const result = await fal.queue.result(endpoint, { requestId });
    const completed = last?.status === "COMPLETED";
    return { ok: completed && result?.data != null, request_id: requestId, events: events.map((e) => e.status), event_ms: eventMs, last_event: last, data: result.data };
  },

  async upload() {
    const { blob, ...sent } = uploadBlob();
    const fileUrl = await fal.storage.upload(blob);
    // lastPut: where the bytes went (directly, not through PROXY_URL)
    return { ok: typeof fileUrl === "string" && fileUrl.length > 0, file_url: fileUrl, ...sent, ...lastPut(out) };
  },

  async cancel() {
    const { request_id: requestId } = await fal.queue.submit(endpoint, { input });
    await fal.queue.cancel(endpoint, { requestId });
    return { ok: true, request_id: requestId };
  },
};

await runSteps(driver, runners, describeError);
