#!/usr/bin/env node
// Drives the real, unmodified @google/genai against keyrelay, with keyrelay as its base URL (`httpOptions.baseUrl`).
// Prints ONE JSON line to stdout; exit code 0 when every step passed, 1 otherwise (2 on bad usage).
//
// Usage: PROXY_URL=http://127.0.0.1:8080/api/gemini node gemini.mjs [STEP ...]
//   STEPs (default: generate stream count models):
//     generate  ai.models.generateContent            POST /<version>/models/<model>:generateContent
//     stream    ai.models.generateContentStream      POST /<version>/models/<model>:streamGenerateContent?alt=sse
//     image     generateContent with an inline image in, responseModalities [TEXT, IMAGE]: an image out
//     count     ai.models.countTokens                POST /<version>/models/<model>:countTokens
//     models    ai.models.list (every page) and ai.models.get
// Environment:
//   PROXY_URL                 (required) the base URL given to the SDK
//   GEMINI_MODEL              model (default gemini-2.5-flash); GEMINI_API_VERSION the SDK's apiVersion (default: its own)
//   GEMINI_CLIENT_CREDENTIAL  the apiKey the *client* holds (default "client-side-dummy"): keyrelay replaces it
//   TIMEOUT_MS                overall time limit (default 30000)
import { GoogleGenAI, Modality } from "@google/genai";
import { env, packageLabel, recordingFetch, runSteps, startDriver } from "./lib/driver.mjs";

const model = env.GEMINI_MODEL || "gemini-2.5-flash";
const driver = startDriver({
  client: packageLabel("@google/genai"),
  allSteps: ["generate", "stream", "image", "count", "models"],
  stepsVar: "GEMINI_STEPS",
  defaultSteps: "generate,stream,count,models",
  fields: { model },
});
const { proxyUrl, out } = driver;

const ai = new GoogleGenAI({
  apiKey: env.GEMINI_CLIENT_CREDENTIAL || "client-side-dummy",
  apiVersion: env.GEMINI_API_VERSION || undefined,
  httpOptions: {
    baseUrl: proxyUrl,
    retryOptions: { attempts: 1 }, // a failure shows at once, not after the SDK's retries
    // Records what the SDK sent (its own key header included); a pass-through over the global fetch.
    fetch: recordingFetch(out, fetch, "x-goog-api-key"),
  },
});

function describeError(error) {
  return { name: error?.name, message: String(error?.message ?? error), status: error?.status };
}

const contents = "Say hello to keyrelay.";
// The smallest PNG: one transparent pixel.
const PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

const runners = {
  async generate() {
    const response = await ai.models.generateContent({ model, contents, config: { maxOutputTokens: 64 } });
    return { ok: Boolean(response.text), text: response.text, usage: response.usageMetadata, model_version: response.modelVersion };
  },

  async stream() {
    const started = Date.now();
    const texts = [];
    const arrivedMs = []; // each chunk's arrival, ms after the call (shows whether it was buffered)
    let usage;
    const chunks = await ai.models.generateContentStream({ model, contents, config: { maxOutputTokens: 64 } });
    for await (const chunk of chunks) {
      texts.push(chunk.text);
      arrivedMs.push(Date.now() - started);
      usage = chunk.usageMetadata;
    }
    return { ok: texts.length > 1, texts, arrived_ms: arrivedMs, usage };
  },

  async image() {
    const response = await ai.models.generateContent({
      model,
      contents: [{ role: "user", parts: [{ text: "Make this pixel a lighthouse." }, { inlineData: { mimeType: "image/png", data: PIXEL } }] }],
      config: { responseModalities: [Modality.TEXT, Modality.IMAGE] },
    });
    const image = response.candidates?.[0]?.content?.parts?.find((p) => p.inlineData)?.inlineData;
    return { ok: Boolean(image?.data), mime_type: image?.mimeType, data: image?.data, usage: response.usageMetadata };
  },

  async count() {
    const counted = await ai.models.countTokens({ model, contents });
    return { ok: Number.isInteger(counted.totalTokens), total_tokens: counted.totalTokens };
  },

  async models() {
    const names = [];
    const pager = await ai.models.list({ config: { pageSize: 2 } });
    for await (const listed of pager) {
      names.push(listed.name);
    }
    const one = await ai.models.get({ model });
    return { ok: names.length > 0 && Boolean(one.name), names, got: one.name, output_token_limit: one.outputTokenLimit };
  },
};

await runSteps(driver, runners, describeError);
