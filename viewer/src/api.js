// The JSON API served by `spanprof view`. Paths are relative to the page, so
// the viewer also works behind a path prefix.

async function getJSON(path, params = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v != null && v !== "") qs.set(k, String(v));
  }
  const q = qs.toString();
  const url = q ? `${path}?${q}` : path;
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  if (!resp.ok) {
    let msg = `${resp.status} ${resp.statusText}`.trim();
    try {
      const body = await resp.json();
      if (body && body.error) msg += `: ${body.error}`;
    } catch {
      // not JSON: keep the status line
    }
    throw new Error(`${url}: ${msg}`);
  }
  return resp.json();
}

export const api = {
  /** {traces: [...], endpoints: [...]}, slowest first. */
  traces: ({ endpoint, q, limit }) => getJSON("api/traces", { endpoint, q, limit }),
  /** {trace_id, spans: [...]}, ordered by start. */
  trace: (traceId) => getJSON(`api/trace/${encodeURIComponent(traceId)}`),
  /** filter: {span} | {trace} | {endpoint} | {}; value: "cpu" | "wall". */
  flame: (filter, value) => getJSON("api/flame", { ...filter, value }),
};
