// Node module resolve hook: lets @inferencesh/sdk 0.6.54 load in plain Node.
// Its dist/ ES modules import each other without file extensions ('./http/client'), which Node's ESM
// resolver refuses (ERR_MODULE_NOT_FOUND / ERR_UNSUPPORTED_DIR_IMPORT); browsers' bundlers accept them.
// Registered with module.register() from inference.mjs. Only relative specifiers inside that package are touched.
const RETRY = new Set(["ERR_MODULE_NOT_FOUND", "ERR_UNSUPPORTED_DIR_IMPORT"]);

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    const relative = specifier.startsWith("./") || specifier.startsWith("../");
    if (!relative || !RETRY.has(error?.code) || !context.parentURL?.includes("/node_modules/@inferencesh/sdk/")) {
      throw error;
    }
    for (const candidate of [`${specifier}.js`, `${specifier}/index.js`]) {
      try {
        return await nextResolve(candidate, context);
      } catch {
        // try the next candidate
      }
    }
    throw error;
  }
}
