// What every Node client driver (fal.mjs, inference.mjs) shares: the command line and environment,
// the ONE JSON line it prints, the overall time limit, a recording fetch and the step loop.
// Each driver keeps only what is specific to its client: how it is configured and what its steps do.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

export const env = process.env;

/** Prints `out` as the driver's ONE JSON line and sets the exit code; the process ends when its work does
 * (the browser drivers: browser.mjs, cesdk/editor.mjs, agents_realtime.mjs). */
export function emit(out, code) {
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exitCode = code;
}

/** `name@version` of a package installed in tests/clients/node_modules (or in `modules`, from lib/). */
export function packageLabel(name, modules = "../node_modules/") {
  const url = new URL(`${modules}${name}/package.json`, import.meta.url);
  return `${name}@${JSON.parse(readFileSync(url, "utf8")).version}`;
}

/**
 * Reads PROXY_URL, the steps (arguments, else env[stepsVar], else defaultSteps) and TIMEOUT_MS; exits 2 on bad
 * usage and 1 when the time limit passes. `fields` go into the printed object after client and proxy_url.
 */
export function startDriver({ client, allSteps, stepsVar, defaultSteps, fields = {} }) {
  const proxyUrl = env.PROXY_URL;
  const steps = (process.argv.slice(2).join(",") || env[stepsVar] || defaultSteps).split(/[,\s]+/).filter(Boolean);
  const timeoutMs = Number(env.TIMEOUT_MS || 30000);
  const out = { ok: false, client, proxy_url: proxyUrl, ...fields, steps: {}, requests: [] };
  const finish = (code) => {
    emit(out, code);
    process.exit(code);
  };
  const bad = steps.filter((s) => !allSteps.includes(s));
  if (!proxyUrl || bad.length) {
    out.error = !proxyUrl ? "PROXY_URL is not set" : `unknown step(s) ${bad.join(", ")}; known: ${allSteps.join(", ")}`;
    finish(2);
  }
  setTimeout(() => {
    out.error = `timed out after ${timeoutMs} ms`;
    finish(1);
  }, timeoutMs).unref();
  return { proxyUrl, steps, out, finish };
}

/**
 * A pass-through fetch over `realFetch` that appends what the client sent and got to out.requests
 * (the client is configured, never modified). `targetHeader` is the provider's target-URL header (if any);
 * `extra(init)` adds driver-specific fields to each entry.
 */
export function recordingFetch(out, realFetch, targetHeader, extra = () => ({})) {
  return async (url, init = {}) => {
    const headers = new Headers(init.headers);
    if (env.PROXY_COOKIE && String(url).startsWith(env.PROXY_URL)) {
      // The app's session cookie, as a browser sends it to its own server (credentials: "include").
      headers.set("cookie", env.PROXY_COOKIE);
      init = { ...init, headers };
    }
    const entry = {
      method: (init.method || "GET").toUpperCase(),
      url: String(url),
      target: targetHeader ? headers.get(targetHeader) : undefined,
      authorization: headers.get("authorization"),
      accept: headers.get("accept"),
      ...extra(init),
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
}

/** The blob an upload step sends: UPLOAD_BYTES (default 4096) bytes of UPLOAD_CONTENT_TYPE (default image/png). */
export function uploadBlob() {
  const size = Number(env.UPLOAD_BYTES || 4096);
  const bytes = new Uint8Array(size).map((_, i) => (i * 7 + 3) % 256);
  const blob = new Blob([bytes], { type: env.UPLOAD_CONTENT_TYPE || "image/png" });
  return { blob, bytes: size, sha256: createHash("sha256").update(bytes).digest("hex") };
}

/** Where the last PUT (the upload's bytes) went, and whether it went through the proxy. */
export function lastPut(out) {
  const put = out.requests.filter((r) => r.method === "PUT").at(-1);
  return { upload_url: put?.url, upload_via_proxy: put ? put.target != null : undefined };
}

/** Runs each step's runner, timing it; prints the result and exits 0 when every step was ok, else 1. */
export async function runSteps({ steps, out, finish }, runners, describeError) {
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
}
