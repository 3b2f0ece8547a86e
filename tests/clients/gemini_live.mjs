#!/usr/bin/env node
// Drives the real, unmodified @google/genai's Live client (`ai.live.connect`) against keyrelay, with keyrelay as its
// base URL (`httpOptions.baseUrl`: the SDK opens ws://<base>/ws/...BidiGenerateContent?key=<apiKey>).
// One session: the setup (model, responseModalities AUDIO, maxOutputTokens 4000), then each text of LIVE_TURNS as a
// client turn (`sendClientContent` with turnComplete), waiting for the turn's usageMetadata before the next.
// Prints ONE JSON line: {ok, client, proxy_url, model, usage: [usageMetadata per turn], go_away, close: {code,
// reason}, error}; exit code 0 when it ran to the end (keyrelay ending the session counts: `close` says how).
// Environment: PROXY_URL (required), GEMINI_MODEL, GEMINI_CLIENT_CREDENTIAL (the apiKey the client holds),
// KEYRELAY_TOKEN (sent as `Authorization: Bearer`), LIVE_TURNS (a JSON list of texts), TIMEOUT_MS (default 30000).
import { GoogleGenAI, Modality } from "@google/genai";
import { env, packageLabel, startDriver } from "./lib/driver.mjs";

const model = env.GEMINI_MODEL || "gemini-live-2.5-flash-preview";
const driver = startDriver({
  client: packageLabel("@google/genai"),
  allSteps: ["live"],
  stepsVar: "GEMINI_LIVE_STEPS",
  defaultSteps: "live",
  fields: { model },
});
const { proxyUrl, out, finish } = driver;
const turns = JSON.parse(env.LIVE_TURNS || '["Hello"]');
Object.assign(out, { usage: [], go_away: false, close: null });

// keyrelay's own credential, when it asks for one: a header the SDK sends on the handshake.
const headers = env.KEYRELAY_TOKEN ? { authorization: `Bearer ${env.KEYRELAY_TOKEN}` } : undefined;
const ai = new GoogleGenAI({
  apiKey: env.GEMINI_CLIENT_CREDENTIAL || "client-side-dummy",
  httpOptions: { baseUrl: proxyUrl, headers },
});

let turnEnded = () => {};
let closedResolve = () => {};
const closed = new Promise((resolve) => (closedResolve = resolve));
const callbacks = {
  onmessage(message) {
    if (message.goAway) out.go_away = true;
    if (message.usageMetadata) {
      out.usage.push(message.usageMetadata);
      turnEnded();
    }
  },
  onerror(e) {
    out.error = String(e?.message ?? e);
  },
  onclose(e) {
    out.close = { code: e.code, reason: e.reason };
    closedResolve();
    turnEnded();
  },
};

try {
  const session = await ai.live.connect({
    model,
    config: { responseModalities: [Modality.AUDIO], maxOutputTokens: 4000 },
    callbacks,
  });
  for (const text of turns) {
    if (out.close) break;
    const ended = new Promise((resolve) => (turnEnded = resolve));
    session.sendClientContent({ turns: text, turnComplete: true });
    await ended;
  }
  if (!out.close) session.close();
  await closed;
  out.ok = true;
} catch (e) {
  out.error = String(e?.message ?? e);
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2000))]);
  out.ok = out.close !== null; // keyrelay ended the session before the setup completed
}
finish(out.ok ? 0 : 1);
