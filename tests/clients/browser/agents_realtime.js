// The page agents_realtime.mjs opens: an unmodified @openai/agents-realtime voice agent (RealtimeAgent +
// RealtimeSession over its WebSocket transport) given keyrelay's token as its apiKey and keyrelay's
// address as its URL. Bundled for the browser by agents_realtime.mjs (esbuild); not served alone.
//
// Query parameters:
//   url       keyrelay's realtime address, ws://HOST:PORT/api/openai/realtime?model=gpt-realtime (required)
//   token     keyrelay's token, the session's apiKey (required)
//   text      what the user says each turn (default "hi")
//   first     what the user says on the first turn instead, `repeat` times (default: text, once)
//   turns     how many turns to take, each `session.sendMessage(text)` (default 1)
// window.__results = {ok, origin, protocol, turns: [{done: {id, status, usage}} | {error} | {closed}],
//                     errors, session_errors, close: {code, reason}, events} once every turn has ended (or the session has).
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession } from "@openai/agents-realtime";

const params = new URLSearchParams(location.search);
const text = params.get("text") || "hi";
const first = (params.get("first") || text).repeat(Number(params.get("repeat") || 1));
const turns = Number(params.get("turns") || 1);
const out = { ok: false, origin: location.origin, protocol: null, turns: [], errors: [], session_errors: [], close: null, events: [] };

// What ends a turn: the response's `response.done`, an `error` event, or the socket's close.
let waiting = null;
const settle = (outcome) => {
  const resolve = waiting;
  waiting = null;
  resolve?.(outcome);
};
const nextOutcome = () => new Promise((resolve) => (waiting = resolve));

try {
  const agent = new RealtimeAgent({ name: "Greeter", instructions: "Greet the user in one word." });
  // In a browser the SDK sends a key that is not ephemeral (`ek_…`) only when told to; it then
  // offers it as the `openai-insecure-api-key.<key>` subprotocol, which keyrelay reads as its token.
  const transport = new OpenAIRealtimeWebSocket({ useInsecureApiKey: true });
  const session = new RealtimeSession(agent, {
    transport,
    model: "gpt-realtime",
    // The SDK's default turns input transcription on, billed apart from responses: keyrelay refuses
    // it under a budget (`unpriced`), so this agent does without.
    config: { audio: { input: { transcription: null } } },
  });
  // What an app sees: the session's `error` events (keyrelay's refusal among them).
  session.on("error", (event) => out.session_errors.push(event.error?.error?.code ?? String(event.error)));
  transport.on("*", (event) => {
    out.events.push(event.type);
    if (event.type === "response.done") {
      const { id, status, usage } = event.response;
      settle({ done: { id, status, usage } });
    } else if (event.type === "error") {
      out.errors.push(event.error);
      settle({ error: event.error });
    }
  });
  await session.connect({ apiKey: params.get("token"), url: params.get("url") });
  const ws = transport.connectionState.websocket;
  out.protocol = ws.protocol;
  const closed = new Promise((resolve) =>
    ws.addEventListener("close", (event) => {
      out.close = { code: event.code, reason: event.reason };
      settle({ closed: out.close });
      resolve();
    }),
  );
  for (let i = 0; i < turns && !out.close; i++) {
    const outcome = nextOutcome();
    session.sendMessage(i === 0 ? first : text);
    out.turns.push(await outcome);
  }
  const closedWithin = () => Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 10000))]);
  if (out.errors.length && !out.close) await closedWithin(); // keyrelay refused a response: its close follows
  if (!out.close) {
    session.close();
    await closedWithin();
  }
  out.ok = out.turns.length === turns && out.turns.every((t) => t.done?.status === "completed");
} catch (error) {
  out.error = String(error?.message ?? error);
}
window.__results = out;
