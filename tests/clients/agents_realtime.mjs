#!/usr/bin/env node
// Runs an @openai/agents-realtime voice agent (browser/agents_realtime.js) in Debian's headless Chromium
// against keyrelay, and prints ONE JSON line: the page's window.__results plus what the browser reported on
// the side. Exit code 0 when results.ok is true, 1 otherwise (2 on bad usage).
//
// The page module is bundled for the browser with esbuild (the SDK's `browser` build, its native WebSocket)
// and served with its HTML from http://localhost:PAGE_PORT/, an origin of its own.
//
// Environment:
//   PAGE_PORT   (required) the port the page is served on (keyrelay's rules allow that origin)
//   PAGE_QUERY  (required) the page's query string (see browser/agents_realtime.js: url, token, text, turns)
//   CHROMIUM    browser executable (default /usr/bin/chromium)
//   TIMEOUT_MS  time allowed for window.__results to appear (default 30000)
import { createServer } from "node:http";
import { build } from "esbuild";
import { withChromium } from "./lib/chromium.mjs";
import { emit, env, packageLabel } from "./lib/driver.mjs";

const timeoutMs = Number(env.TIMEOUT_MS || 30000);
const out = {
  ok: false,
  client: packageLabel("@openai/agents-realtime"),
  browser: null,
  results: null,
  console: [],
  page_errors: [],
};
async function bundle() {
  const result = await build({
    entryPoints: [new URL("./browser/agents_realtime.js", import.meta.url).pathname],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    logLevel: "warning",
  });
  return result.outputFiles[0].text;
}

function serve(port, script) {
  const html = `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body><script type="module">${script.replaceAll("</script", "<\\/script")}</script></body></html>`;
  const server = createServer((request, response) => {
    if (new URL(request.url, "http://localhost").pathname !== "/") {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

if (!env.PAGE_PORT || !env.PAGE_QUERY) {
  out.error = "PAGE_PORT and PAGE_QUERY must be set";
  emit(out, 2);
} else {
  let server;
  try {
    server = await serve(Number(env.PAGE_PORT), await bundle());
    await withChromium({ timeoutMs }, async (context, page) => {
      out.browser = context.browser()?.version() ?? null;
      page.on("console", (m) => out.console.push(`${m.type()}: ${m.text()}`));
      page.on("pageerror", (e) => out.page_errors.push(String(e)));
      const pageUrl = `http://localhost:${env.PAGE_PORT}/?${env.PAGE_QUERY}`;
      const response = await page.goto(pageUrl, { timeout: timeoutMs });
      if (!response?.ok()) throw new Error(`loading the page answered ${response?.status()}`);
      await page.waitForFunction(() => window.__results !== undefined, null, { timeout: timeoutMs, polling: 100 });
      out.results = await page.evaluate(() => window.__results);
      out.ok = out.results?.ok === true;
    });
  } catch (error) {
    out.error = String(error?.message ?? error).split("\n")[0];
  } finally {
    server?.close();
  }
  emit(out, out.ok ? 0 : 1);
}
