// Debian's Chromium driven by playwright-core (no browser is ever downloaded), as the browser drivers (browser.mjs,
// cesdk/editor.mjs) run it: headless, in a fresh profile directory that is removed afterwards.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // CE.SDK's engine is 25 MB of WebAssembly: V8 compiles it quickly (Liftoff), then again, optimised, on
  // background threads, which a test's few seconds never use. The same code runs; two editor runs took
  // 55 s instead of 69 s here.
  "--js-flags=--no-wasm-tier-up",
];

/** Runs `use(context, page)` in a persistent context of the CHROMIUM executable (default /usr/bin/chromium). */
export async function withChromium({ timeoutMs, viewport }, use) {
  const userDataDir = mkdtempSync(join(tmpdir(), "keyrelay-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: FLAGS,
      timeout: timeoutMs,
      ...(viewport ? { viewport } : {}),
    });
    return await use(context, context.pages()[0] ?? (await context.newPage()));
  } finally {
    await context?.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
}
