// fal's own server proxy on Express, the way fal's docs set it up, as a benchmark peer.
// Every fal host is sent to the benchmark upstream (BENCH_UPSTREAM=host:port), with TLS still
// checked for the fal host name against BENCH_CA: the same trick as keyrelay's connect_to.
import { readFileSync } from "node:fs";
import express from "express";
import * as falProxy from "@fal-ai/server-proxy/express";
import { Agent, buildConnector, setGlobalDispatcher } from "undici";

const [upstreamHost, upstreamPort] = process.env.BENCH_UPSTREAM.split(":");
const connector = buildConnector({ ca: readFileSync(process.env.BENCH_CA) });
setGlobalDispatcher(
  new Agent({
    connect: (opts, callback) =>
      connector(
        {
          ...opts,
          hostname: upstreamHost,
          host: upstreamHost,
          port: upstreamPort,
          servername: opts.servername || opts.hostname,
        },
        callback,
      ),
  }),
);

const app = express();
app.use(express.json({ limit: "128mb" }));
app.all(falProxy.route, falProxy.createHandler());
app.listen(Number(process.env.PORT), "127.0.0.1");
