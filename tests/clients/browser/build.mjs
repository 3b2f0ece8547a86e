// Builds browser/fal-client.js: the unmodified @fal-ai/client (published as CommonJS only) bundled
// as one ES module for the browser test page. Run by scripts/_setup_clients.sh; output is not committed.
import { build } from "esbuild";

await build({
  stdin: {
    contents: 'export { fal, createFalClient, ApiError } from "@fal-ai/client";',
    resolveDir: new URL("..", import.meta.url).pathname,
    sourcefile: "fal-entry.js",
  },
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  outfile: new URL("./fal-client.js", import.meta.url).pathname,
  legalComments: "inline",
  logLevel: "warning",
});
