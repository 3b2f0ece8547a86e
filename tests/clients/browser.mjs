#!/usr/bin/env node
// Opens the browser test page in Debian's Chromium (driven by playwright-core; no browser is ever downloaded)
// and prints ONE JSON line: the page's window.__results plus what the browser reported on the side.
// Exit code 0 when results.ok is true, 1 otherwise (2 on bad usage).
//
// Usage: PAGE_URL='http://127.0.0.1:PORT/index.html?proxy=http://127.0.0.1:8080&steps=anthropic,fal' node browser.mjs
// Environment:
//   PAGE_URL    (required) the page (tests/clients/browser/index.html served from its own origin), with its
//               query parameters (see index.html: proxy, fal_path, steps, endpoint, model)
//   CHROMIUM    browser executable (default /usr/bin/chromium)
//   TIMEOUT_MS  time allowed for window.__results to appear (default 30000)
import { withChromium } from "./lib/chromium.mjs";
import { emit } from "./lib/driver.mjs";

const env = process.env;
const pageUrl = env.PAGE_URL || process.argv[2];
const timeoutMs = Number(env.TIMEOUT_MS || 30000);
const out = { ok: false, page_url: pageUrl, browser: null, results: null, console: [], page_errors: [], failed_requests: [] };
if (!pageUrl) {
  out.error = "PAGE_URL is not set";
  emit(out, 2);
} else {
  try {
    await withChromium({ timeoutMs }, async (context, page) => {
      out.browser = context.browser()?.version() ?? null;
      page.on("console", (m) => out.console.push(`${m.type()}: ${m.text()}`));
      page.on("pageerror", (e) => out.page_errors.push(String(e)));
      page.on("requestfailed", (r) => out.failed_requests.push({ method: r.method(), url: r.url(), error: r.failure()?.errorText }));
      const response = await page.goto(pageUrl, { timeout: timeoutMs });
      if (!response?.ok()) throw new Error(`loading ${pageUrl} answered ${response?.status()}`);
      await page.waitForFunction(() => window.__results !== undefined, null, { timeout: timeoutMs, polling: 100 });
      out.results = await page.evaluate(() => window.__results);
      out.ok = out.results?.ok === true;
    });
  } catch (error) {
    out.error = String(error?.message ?? error).split("\n")[0];
  }
  emit(out, out.ok ? 0 : 1);
}
