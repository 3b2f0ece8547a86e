#!/usr/bin/env node
// Drives the Runware providers of the real, unmodified CE.SDK AI plugins (image 1.69, video 0.2.17,
// `dist/runware`) against keyrelay as their `proxyUrl`: each step is one provider's generate(), as
// the editor calls it. Their client POSTs arrays of tasks to the proxy URL itself and polls with
// getResponse (image every 1 s, video every 3 s). It sends no header but Content-Type: the
// providers never hand a `headers` option on, so the app's session goes as a cookie.
// Prints ONE JSON line to stdout; exit code 0 when every step passed, 1 otherwise (2 on bad usage).
//
// Usage: PROXY_URL=http://127.0.0.1:8080/api/runware node cesdk/runware.mjs [STEP ...]
//   STEPs (default: image):
//     image   Flux2Pro.Text2Image    imageInference (bfl:5@1), then getResponse until done
//     video   Veo31Fast.Text2Video   videoInference (google:3@3), then getResponse until done
// Environment:
//   PROXY_URL    (required) the proxy URL given to the providers as `proxyUrl`
//   PROXY_COOKIE the app's session cookie, as a browser sends it to its own origin
//   TIMEOUT_MS   overall time limit (default 30000)
import { env, packageLabel, recordingFetch, runSteps, startDriver } from "../lib/driver.mjs";

const image = (await import("@imgly/plugin-ai-image-generation-web/runware")).default;
const video = (await import("@imgly/plugin-ai-video-generation-web/runware")).default;
const modules = "../cesdk/node_modules/";
const driver = startDriver({
  client: ["@imgly/plugin-ai-image-generation-web", "@imgly/plugin-ai-video-generation-web"]
    .map((name) => packageLabel(name, modules))
    .join(" "),
  allSteps: ["image", "video"],
  stepsVar: "RUNWARE_STEPS",
  defaultSteps: "image",
});
const { proxyUrl, out } = driver;

// The providers call the global fetch: wrapped to record what they sent (and add the cookie).
globalThis.fetch = recordingFetch(out, globalThis.fetch, null, (init) => ({
  tasks: init.body ? JSON.parse(init.body).map((t) => t.taskType) : undefined,
}));

// The editor, as far as these providers use it: every call answers itself (a no-op).
const editor = new Proxy(() => editor, {
  get: (_, key) => (key === "then" ? undefined : editor),
  apply: () => editor,
});

async function generate(factory, input) {
  const provider = await factory({ proxyUrl })({ cesdk: editor });
  await provider.initialize({ cesdk: editor, engine: editor });
  const output = await provider.output.generate(input, { abortSignal: new AbortController().signal });
  return { ok: typeof output?.url === "string" && output.url.startsWith("https://"), output };
}

const runners = {
  image: () => generate(image.Flux2Pro.Text2Image, { prompt: "a cat" }),
  video: () => generate(video.Veo31Fast.Text2Video, { prompt: "a cat walks" }),
};

await runSteps(driver, runners, (error) => ({ name: error?.name, message: String(error?.message ?? error) }));
