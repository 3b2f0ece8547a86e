#!/usr/bin/env node
// Opens cesdk/editor.html (the real CE.SDK editor with one AI plugin and provider) in Debian's headless
// Chromium, types a prompt into the plugin's panel and presses Generate, as a user does; then waits until
// the result is in the editor (a block whose fill, or an audio block whose file, is the provider's answer)
// and prints ONE JSON line: the blocks, the plugin's history assets and what the browser reported.
// The text plugin has no panel: on its page a text block is selected, and the driver opens the AI menu
// over it in the canvas menu, picks a quick action (QUICK_ACTION), waits for the rewritten text and applies it.
// Exit code 0 when a result arrived, 1 otherwise (2 on bad usage).
//
// Usage: PAGE_URL='http://localhost:PORT/editor.html?proxy=http://127.0.0.1:8080&pair=image:fal&token=T' node cesdk/editor.mjs
// Environment:
//   PAGE_URL    (required) the page, served from tests/clients/cesdk (see editor.html for its parameters)
//   COOKIE      NAME=VALUE: a cookie of the page's origin (the app's session), set before the page loads
//   PROMPT      what is typed into the panel (default "a red fox in the snow")
//   QUICK_ACTION  text pairs: the label of the quick action pressed (default "Improve Writing")
//   CHROMIUM    browser executable (default /usr/bin/chromium)
//   TIMEOUT_MS  overall time limit (default 60000)
//   SCREENSHOT  a path: where a screenshot of the page goes when the run failed
//
// The browser reaches nothing but 127.0.0.1/localhost: the editor's usage events (api.img.ly) are aborted and
// the provider's result files (their CDNs) are answered here, an image as a 1x1 PNG, anything else 404.
import { withChromium } from "../lib/chromium.mjs";
import { emit } from "../lib/driver.mjs";

const env = process.env;
const pageUrl = env.PAGE_URL;
const timeoutMs = Number(env.TIMEOUT_MS || 60000);
const prompt = env.PROMPT || "a red fox in the snow";
const quickAction = env.QUICK_ACTION || "Improve Writing";
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==",
  "base64",
);

const out = { ok: false, page_url: pageUrl, browser: null, editor: null, result: null, notifications: [], console: [], page_errors: [], outside: [] };
const deadline = Date.now() + timeoutMs;
const local = (url) => ["127.0.0.1", "localhost"].includes(new URL(url).hostname) || !url.startsWith("http");

// What the editor holds: every block with a file (image or video fill, audio), and the plugin's history assets.
function snapshot() {
  const { block, asset } = window.cesdk.engine;
  const blocks = [];
  for (const id of block.findAll()) {
    const type = block.getType(id);
    let uri = null;
    if (type === "//ly.img.ubq/text") {
      // The text plugin keeps its state of a block in the block's metadata: "processing", "confirmation".
      const ai = block.hasMetadata(id, "ly.img.ai.metadata") ? JSON.parse(block.getMetadata(id, "ly.img.ai.metadata")).status : null;
      blocks.push({ id, type, kind: block.getKind(id), uri, state: block.getState(id).type, text: block.getString(id, "text/text"), ai });
      continue;
    }
    if (type === "//ly.img.ubq/audio") uri = block.getString(id, "audio/fileURI");
    else if (block.supportsFill(id)) {
      const fill = block.getFill(id);
      const fillType = block.getType(fill);
      if (fillType.endsWith("/fill/image")) uri = block.getString(fill, "fill/image/imageFileURI");
      if (fillType.endsWith("/fill/video")) uri = block.getString(fill, "fill/video/fileURI");
    }
    if (uri) blocks.push({ id, type, kind: block.getKind(id), uri, state: block.getState(id).type });
  }
  const sources = asset.findAllSources().filter((s) => s.includes("history"));
  const editMode = window.cesdk.engine.editor.getEditMode();
  return Promise.all(
    sources.map(async (source) => {
      const found = await asset.findAssets(source, { page: 0, perPage: 10 });
      return found.assets.map((a) => ({ source, id: a.id, uri: a.meta?.uri ?? null }));
    }),
  ).then((lists) => ({ blocks, history: lists.flat(), notifications: window.__notifications, editMode }));
}

// In the page: the first `selector` (inside the editor's shadow roots too) -- for a button, the one whose text is
// text starts with one of `text`, clicked; for a text area, given `text` as typing does (the element's own value setter, which React
// tracks, then an input event). Answers whether it was there.
function actInPage([selector, text]) {
  const all = (root) => [...root.querySelectorAll(selector), ...[...root.querySelectorAll("*")].flatMap((e) => (e.shadowRoot ? all(e.shadowRoot) : []))];
  if (selector === "textarea") {
    const [area] = all(document);
    if (!area) return false;
    Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set.call(area, text);
    area.dispatchEvent(new Event("input", { bubbles: true }));
    return true;
  }
  const button = all(document).find((b) => text.some((t) => b.textContent.trim().startsWith(t)) && !b.disabled);
  button?.click();
  return button !== undefined;
}

// A one-second WebM (VP8, which Chromium builds without H.264 play) recorded in the browser from a canvas: the
// file a video provider's CDN answers with here, so that the editor can load the generated video.
async function recordVideo(page) {
  const base64 = await page.evaluate(async () => {
    const canvas = Object.assign(document.createElement("canvas"), { width: 64, height: 64 });
    const paint = canvas.getContext("2d");
    const recorder = new MediaRecorder(canvas.captureStream(10), { mimeType: "video/webm;codecs=vp8" });
    const chunks = [];
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.start();
    for (let i = 0; i < 10; i++) {
      paint.fillStyle = `rgb(${i * 25}, 80, 160)`;
      paint.fillRect(0, 0, 64, 64);
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => { recorder.onstop = r; recorder.stop(); });
    const bytes = new Uint8Array(await new Blob(chunks).arrayBuffer());
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
  });
  return Buffer.from(base64, "base64");
}

if (!pageUrl) {
  out.error = "PAGE_URL is not set";
  emit(out, 2);
} else {
  const viewport = { width: 1400, height: 900 };
  try {
    await withChromium({ timeoutMs, viewport }, async (context, page) => {
      try {
        await generate(context, page);
      } finally {
        if (!out.ok && env.SCREENSHOT) await page.screenshot({ path: env.SCREENSHOT }).catch(() => {});
      }
    });
  } catch (error) {
    out.error = String(error?.message ?? error).split("\n").slice(0, Number(env.ERROR_LINES || 1)).join("\n");
  }
  emit(out, out.ok ? 0 : 1);
}

// Opens the page, presses Generate in the plugin's panel and waits for the result in the editor.
async function generate(context, page) {
  out.browser = context.browser()?.version() ?? null;
  if (env.COOKIE) {
    const [name, ...value] = env.COOKIE.split("=");
    await context.addCookies([{ name, value: value.join("="), url: new URL(pageUrl).origin, sameSite: "Strict" }]);
  }
  const video = await recordVideo(page);
  await context.route((url) => !local(url.href), (route) => {
    const url = route.request().url();
    out.outside.push(`${route.request().method()} ${url}`);
    if (new URL(url).hostname === "api.img.ly") return route.abort("blockedbyclient");
    if (/\.(png|jpe?g|webp)$/i.test(new URL(url).pathname)) return route.fulfill({ status: 200, contentType: "image/png", body: PNG });
    if (/\.(mp4|webm)$/i.test(new URL(url).pathname)) return route.fulfill({ status: 200, contentType: "video/webm", body: video });
    return route.fulfill({ status: 404, body: "" });
  });
  page.on("console", (m) => {
    if (!m.text().includes("GL Driver") && !m.text().includes("║")) out.console.push(`${m.type()}: ${m.text().slice(0, 400)}`);
  });
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  // Acts in the page until the element is there (10 s at most).
  const act = async (selector, text) => {
    for (const until = Date.now() + 10000; !(await page.evaluate(actInPage, [selector, text])); ) {
      if (Date.now() > until) throw new Error(`no ${selector} ${JSON.stringify(text)} in the page`);
      await page.waitForTimeout(200);
    }
  };
  await page.goto(pageUrl, { timeout: timeoutMs });
  await page.waitForFunction(() => window.__editor !== undefined, null, { timeout: deadline - Date.now(), polling: 100 });
  out.editor = await page.evaluate(() => window.__editor);
  out.editor.started_ms = timeoutMs - (deadline - Date.now());
  if (!out.editor.ready) throw new Error(`the editor did not start: ${out.editor.error}`);

  if (out.editor.textBlock !== null) return rewriteText(page, act);

  // Each step finds its element and acts on it in one task of the page: a video scene re-renders the panel
  // continuously, replacing its elements, so Playwright's locators (which find, then act) never settle there.
  // On Linux a video scene opens with a dialog (no H.264 encoder: video export unavailable); a user closes it.
  if (out.editor.scene === "Video") await act("button", ["Continue"]);
  // The panel's first text area is the prompt (or the text to speak); Generate starts the plugin (the
  // audio plugin 0.2.14 in editor 1.69 labels it with untranslated keys: "common.generate" and a hint).
  await act("textarea", prompt);
  await act("button", ["Generate", "common.generate"]);
  const pressed = Date.now();
  // Done when the plugin put the result in its history (or told the user it failed); then the editor
  // loads the file into its block.
  const done = () => out.result.history.some((a) => a.uri) || out.result.notifications.some((n) => n?.type === "error");
  const loading = () => out.result.blocks.some((b) => b.state === "Pending");
  for (out.result = await page.evaluate(snapshot); !done() || loading(); out.result = await page.evaluate(snapshot)) {
    if (Date.now() > deadline) throw new Error(`no result within ${timeoutMs} ms`);
    await page.waitForTimeout(200);
  }
  out.result.generated_ms = Date.now() - pressed;
  out.notifications = out.result.notifications;
  out.ok = out.result.history.some((a) => a.uri) && !out.notifications.some((n) => n?.type === "error");
}

// The text plugin: its sparkle button in the canvas menu over the selected text block opens the quick actions;
// one of them sends the block's text to the provider and streams the answer into the block. The plugin then
// asks to confirm (its canvas menu in the AI edit mode: cancel, before/after, apply); Apply keeps the text.
async function rewriteText(page, act) {
  const block = out.editor.textBlock;
  const failed = () => out.result.notifications.some((n) => n?.type === "error");
  // Polls the editor until `until()` holds or the plugin reported an error.
  const poll = async (until, what) => {
    for (out.result = await page.evaluate(snapshot); !failed() && !(await until()); out.result = await page.evaluate(snapshot)) {
      if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms`);
      await page.waitForTimeout(200);
    }
  };
  // The button's name is the plugin's component id, "ly.img.ai.text}.popover" (sic: 1.69 has a stray brace).
  await act('button[name*="ly.img.ai.text"][name$=".popover"]', [""]);
  await act("button", [quickAction]);
  const pressed = Date.now();
  const textBlock = () => out.result.blocks.find((b) => b.id === block);
  // Pressing the quick action locks the block in the AI edit mode at once; the plugin leaves it without
  // asking to confirm when the generation failed (it logs "[Generate]: <reason>" to the console).
  const AI_MODE = "ly.img.ai.editMode";
  await poll(() => out.result.editMode !== AI_MODE || textBlock()?.ai === "confirmation", "no text to apply");
  if (out.result.editMode !== AI_MODE) out.error = "the generation ended without a text to apply (see console)";
  else if (!failed()) {
    out.result.generated_ms = Date.now() - pressed;
    await act('button[name*="ly.img.ai.text.confirmation.apply"]', [""]);
    await poll(() => out.result.editMode !== AI_MODE, "the AI edit mode did not end");
    const text = textBlock()?.text;
    out.ok = !failed() && Boolean(text) && text !== out.editor.text;
  }
  out.notifications = out.result.notifications;
}
