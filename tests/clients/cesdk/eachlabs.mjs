#!/usr/bin/env node
// Drives the EachLabs providers of the real, unmodified CE.SDK AI plugins (image 1.69, video 0.2.17,
// `dist/eachlabs`) against keyrelay as their `proxyUrl`: each step is one provider's generate(), as
// the editor calls it. The editor itself is not needed: the providers ask it only for icons,
// translations and panels (a no-op stand-in answers) and, for an input image, its MIME type.
// Prints ONE JSON line to stdout; exit code 0 when every step passed, 1 otherwise (2 on bad usage).
//
// Usage: PROXY_URL=http://127.0.0.1:8080/api/eachlabs node cesdk/eachlabs.mjs [STEP ...]
//   STEPs (default: image):
//     image   NanoBananaPro.Text2Image   POST /v1/prediction, then GET /v1/prediction/<id> every 2 s until done
//     edit    NanoBananaPro.Image2Image  an input image (blob: URL) first: POST /api/v1/upload (multipart)
//     video   KlingV26ProTextToVideo     as image, polled every 3 s
// Environment:
//   PROXY_URL    (required) the proxy URL given to the providers as `proxyUrl`
//   PROXY_COOKIE the app's session cookie, as a browser sends it to its own origin (the client sets no header)
//   TIMEOUT_MS   overall time limit (default 30000)
import { env, packageLabel, recordingFetch, runSteps, startDriver } from "../lib/driver.mjs";

const image = (await import("@imgly/plugin-ai-image-generation-web/eachlabs")).default;
const video = (await import("@imgly/plugin-ai-video-generation-web/eachlabs")).default;
const modules = "../cesdk/node_modules/";
const driver = startDriver({
  client: ["@imgly/plugin-ai-image-generation-web", "@imgly/plugin-ai-video-generation-web"]
    .map((name) => packageLabel(name, modules))
    .join(" "),
  allSteps: ["image", "edit", "video"],
  stepsVar: "EACHLABS_STEPS",
  defaultSteps: "image",
});
const { proxyUrl, out } = driver;

// The providers call the global fetch: wrapped to record what they sent (and add the cookie).
globalThis.fetch = recordingFetch(out, globalThis.fetch, null, (init) => ({
  content_type_sent: new Headers(init.headers).get("content-type"),
}));

// The editor, as far as these providers use it: every call answers itself (a no-op), but the
// MIME type of an input image, which names the uploaded file.
const editor = new Proxy(() => editor, {
  get: (_, key) => (key === "then" ? undefined : key === "getMimeType" ? async () => "image/png" : editor),
  apply: () => editor,
});
// An input image's size is read through the DOM's Image, which Node has not: a stand-in that loads.
globalThis.Image = class {
  width = 1024;
  height = 1024;
  set src(_) {
    queueMicrotask(() => this.onload?.());
  }
};

async function generate(factory, input) {
  const provider = await factory({ proxyUrl })({ cesdk: editor });
  await provider.initialize({ cesdk: editor, engine: editor });
  const output = await provider.output.generate(input, { abortSignal: new AbortController().signal });
  return { ok: typeof output?.url === "string" && output.url.startsWith("https://"), output };
}

const runners = {
  image: () => generate(image.NanoBananaPro.Text2Image, { prompt: "a cat" }),
  edit: () => {
    const picture = new Blob([new Uint8Array(64).fill(7)], { type: "image/png" });
    return generate(image.NanoBananaPro.Image2Image, { prompt: "make it blue", image_url: URL.createObjectURL(picture) });
  },
  video: () => generate(video.KlingV26ProTextToVideo, { prompt: "a cat walks", duration: "5" }),
};

await runSteps(driver, runners, (error) => ({ name: error?.name, message: String(error?.message ?? error) }));
