// Preloaded into the MCP conformance suite (node --require): the suite has no option for an
// Authorization header, so this adds `Authorization: Bearer $DTMA_CONFORMANCE_TOKEN` to every
// HTTP request it sends to $DTMA_CONFORMANCE_ORIGIN (the agent), whether through fetch() or
// undici's request(): both go through undici's global dispatcher, replaced here by one that adds
// the header. undici is the suite's own copy, found under $DTMA_CONFORMANCE_DIR.
"use strict";
const token = process.env.DTMA_CONFORMANCE_TOKEN;
const origin = process.env.DTMA_CONFORMANCE_ORIGIN;
const undici = require(require.resolve("undici", { paths: [process.env.DTMA_CONFORMANCE_DIR] }));

function withBearer(headers) {
  const value = `Bearer ${token}`;
  if (headers == null) return { authorization: value };
  if (Array.isArray(headers)) {
    const flat = headers.flat();
    for (let i = 0; i < flat.length; i += 2) {
      if (String(flat[i]).toLowerCase() === "authorization") return headers;
    }
    return [...flat, "authorization", value];
  }
  const entries = typeof headers[Symbol.iterator] === "function" ? [...headers] : Object.entries(headers);
  if (entries.some(([k]) => String(k).toLowerCase() === "authorization")) return headers;
  return Object.fromEntries([...entries, ["authorization", value]]);
}

if (token && origin) {
  const agent = new undici.Agent().compose((dispatch) => (opts, handler) => {
    const target = typeof opts.origin === "string" ? opts.origin : String(opts.origin);
    if (target.replace(/\/$/, "") !== origin) return dispatch(opts, handler);
    return dispatch({ ...opts, headers: withBearer(opts.headers) }, handler);
  });
  undici.setGlobalDispatcher(agent);
}
