// Human units for nanosecond values, and small text helpers.

/** 3 significant digits, no trailing noise: 1.23, 12.3, 123. */
function sig3(x) {
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** Format a duration given in nanoseconds: "850 µs", "12.3 ms", "1.25 s", "2 min 5 s". */
export function fmtNs(ns) {
  if (ns == null || !Number.isFinite(ns)) return "–";
  const a = Math.abs(ns);
  if (a === 0) return "0";
  if (a < 1e3) return `${Math.round(ns)} ns`;
  if (a < 1e6) return `${sig3(ns / 1e3)} µs`;
  if (a < 1e9) return `${sig3(ns / 1e6)} ms`;
  if (a < 60e9) return `${sig3(ns / 1e9)} s`;
  const min = Math.floor(a / 60e9);
  const sec = Math.round((a - min * 60e9) / 1e9);
  return `${ns < 0 ? "-" : ""}${min} min ${sec} s`;
}

/** Format a fraction (0..1) as a percentage. */
export function fmtPct(frac) {
  if (!Number.isFinite(frac)) return "–";
  const p = frac * 100;
  if (p === 0) return "0%";
  if (p < 0.1) return "<0.1%";
  return `${p >= 10 ? p.toFixed(0) : p.toFixed(1)}%`;
}

function pad(n, w = 2) {
  return String(n).padStart(w, "0");
}

/** Local wall-clock time of a Unix-epoch nanosecond timestamp: "14:03:27.412". */
export function fmtClock(ns) {
  if (!Number.isFinite(ns)) return "–";
  const d = new Date(ns / 1e6);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** Local date and time, for tooltips: "2024-05-01 14:03:27.412". */
export function fmtDateTime(ns) {
  if (!Number.isFinite(ns)) return "";
  const d = new Date(ns / 1e6);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(ns)}`;
}

/** "4bf92f35…" for long hex ids. */
export function shortId(id, n = 8) {
  return id && id.length > n ? `${id.slice(0, n)}…` : id || "";
}

/** Strip the " (file.py:LINE)" suffix of a flame frame name. */
export function functionName(frameName) {
  const m = /^(.*) \([^()]*:\d+\)$/.exec(frameName);
  return m ? m[1] : frameName;
}
