// The live viewer: traces table -> waterfall of a trace's spans -> flame graph
// of a span, a trace, an endpoint or the whole process. State is mirrored in
// the URL hash (#trace=…&flame=span:…&value=wall) so a view can be reloaded.

import { api } from "./api.js";
import { threadColor } from "./colors.js";
import { clear, debounce, h } from "./dom.js";
import { FlamePanel } from "./flame.js";
import { fmtClock, fmtDateTime, fmtNs, shortId } from "./format.js";

const TRACE_LIMIT = 200;

function numCell(ns, extraClass = "") {
  return h("td", { class: `num ${ns ? "" : "zero"} ${extraClass}`.trim() }, fmtNs(ns));
}

/** Spans in tree order (children after their parent, by start), each with its depth. */
export function spanTree(spans) {
  const byId = new Map(spans.map((s) => [s.span_id, s]));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    const p = s.parent_span_id;
    if (p && byId.has(p) && p !== s.span_id) {
      if (!children.has(p)) children.set(p, []);
      children.get(p).push(s);
    } else {
      roots.push(s);
    }
  }
  const byStart = (a, b) => a.start_ns - b.start_ns;
  const out = [];
  const seen = new Set();
  const visit = (s, depth) => {
    if (seen.has(s.span_id)) return;
    seen.add(s.span_id);
    out.push({ span: s, depth });
    for (const c of (children.get(s.span_id) || []).sort(byStart)) visit(c, depth + 1);
  };
  for (const r of roots.sort(byStart)) visit(r, 0);
  for (const s of spans) if (!seen.has(s.span_id)) visit(s, 0); // cycles: show anyway
  return out;
}

export class App {
  constructor(root) {
    this.root = root;
    this.traces = [];
    this.endpoints = [];
    this.traceId = null; // the open (or opening) trace
    this.trace = null; // {trace_id, spans}, once loaded
    this.traceMeta = null; // the row of the traces table
    this.flameReq = 0;
    this.traceReq = 0;
    this.listReq = 0;
    this.flame = null; // {kind, id}
  }

  start() {
    this.build();
    this.loadTraces();
    this.applyHash();
    window.addEventListener("hashchange", () => {
      if (location.hash !== this.lastHash) this.applyHash();
    });
  }

  /** Restore the view named in the URL hash (on load, or when the user edits it). */
  applyHash() {
    const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    this.flamePanel.setValue(hash.get("value") === "wall" ? "wall" : "cpu", false);
    const traceId = hash.get("trace");
    const flame = hash.get("flame") || "";
    const sep = flame.indexOf(":");
    const kind = sep < 0 ? flame : flame.slice(0, sep);
    const id = sep < 0 ? "" : flame.slice(sep + 1);
    if (traceId && traceId !== this.traceId) this.openTrace(traceId, { flame: false });
    if (["span", "trace", "endpoint"].includes(kind) && id) this.showFlame(kind, id);
    else if (kind === "process") this.showFlame("process", "");
    else if (traceId) this.showFlame("trace", traceId);
  }

  build() {
    this.processBtn = h(
      "button",
      {
        type: "button",
        class: "btn",
        "data-testid": "process-flame",
        title: "Flame graph of every sample of the process",
        onclick: () => this.showFlame("process", ""),
      },
      "Whole-process flame graph",
    );
    this.textFilter = h("input", {
      type: "search",
      "data-testid": "text-filter",
      placeholder: "Filter: endpoint, span, trace id",
      spellcheck: "false",
      autocomplete: "off",
    });
    this.textFilter.addEventListener("input", debounce(() => this.loadTraces(), 250));
    this.textFilter.addEventListener("keydown", (e) => e.key === "Enter" && this.loadTraces());
    this.endpointFilter = h(
      "select",
      { "data-testid": "endpoint-filter", title: "Endpoint" },
      h("option", { value: "" }, "All endpoints"),
    );
    this.endpointFilter.addEventListener("change", () => {
      this.updateEndpointButton();
      this.loadTraces();
    });
    this.endpointBtn = h(
      "button",
      {
        type: "button",
        class: "btn",
        "data-testid": "endpoint-flame",
        onclick: () => {
          const ep = this.currentEndpoint();
          if (ep) this.showFlame("endpoint", ep);
        },
      },
      "Endpoint flame graph",
    );
    this.traceCount = h("span", { class: "muted" });
    this.tracesBody = h("tbody");
    this.tracesTable = h(
      "table",
      { class: "grid traces", "data-testid": "traces-table" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", null, "Start"),
          h("th", null, "Endpoint"),
          h("th", null, "Type"),
          h("th", { class: "num" }, "Duration"),
          h("th", { class: "num", title: "Sampled CPU time, all threads" }, "CPU"),
          h("th", { class: "num", title: "Sampled wall time, all threads" }, "Wall"),
          h("th", { class: "num" }, "Spans"),
          h("th", null, "Trace"),
        ),
      ),
      this.tracesBody,
    );
    this.tracesStatus = h("div", { class: "status muted" });

    this.wfTitle = h("h2", null, "Trace");
    this.wfSubtitle = h("span", { class: "muted" });
    this.traceFlameBtn = h(
      "button",
      {
        type: "button",
        class: "btn small",
        "data-testid": "trace-flame",
        onclick: () => this.trace && this.showFlame("trace", this.trace.trace_id),
      },
      "Trace flame graph",
    );
    this.wfBody = h("tbody");
    this.wfScale = h("div", { class: "scale" });
    this.waterfall = h(
      "table",
      { class: "grid waterfall", "data-testid": "waterfall" },
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", { class: "col-name" }, "Span"),
          h("th", { class: "col-timeline" }, this.wfScale),
          h("th", { class: "num", title: "CPU samples linked to this span itself" }, "Self CPU"),
          h("th", { class: "num", title: "CPU of this span and its descendants" }, "Total CPU"),
          h("th", { class: "num", title: "Wall samples linked to this span itself" }, "Self wall"),
          h("th", { class: "num", title: "Wall of this span and its descendants" }, "Total wall"),
          h("th", { class: "col-threads" }, "Threads"),
        ),
      ),
      this.wfBody,
    );
    this.wfStatus = h("div", { class: "status muted" });
    this.wfPanel = h(
      "section",
      { class: "panel waterfall-panel", hidden: true },
      h(
        "div",
        { class: "panel-head" },
        h("div", { class: "head-title" }, this.wfTitle, this.wfSubtitle),
        h("div", { class: "head-tools" }, this.traceFlameBtn),
      ),
      h("div", { class: "table-wrap wf-wrap" }, this.waterfall),
      this.wfStatus,
    );

    this.root.append(
      h(
        "header",
        { class: "topbar" },
        h("div", { class: "brand" }, "spanprof"),
        h("div", { class: "muted tagline" }, "CPU and wall time per OpenTelemetry span"),
        h("div", { class: "spacer" }),
        this.processBtn,
      ),
      h(
        "main",
        null,
        h(
          "section",
          { class: "panel traces-panel" },
          h(
            "div",
            { class: "panel-head" },
            h("div", { class: "head-title" }, h("h2", null, "Traces"), this.traceCount),
            h(
              "div",
              { class: "head-tools" },
              this.textFilter,
              this.endpointFilter,
              this.endpointBtn,
            ),
          ),
          h("div", { class: "table-wrap traces-wrap" }, this.tracesTable),
          this.tracesStatus,
        ),
        this.wfPanel,
      ),
    );
    const main = this.root.querySelector("main");
    this.flamePanel = new FlamePanel(main, {
      onValueChange: () => this.flame && this.showFlame(this.flame.kind, this.flame.id),
    });
    this.updateEndpointButton();
  }

  // --- traces -------------------------------------------------------------

  async loadTraces() {
    const req = ++this.listReq;
    const endpoint = this.endpointFilter.value;
    const q = this.textFilter.value.trim();
    this.tracesStatus.textContent = "Loading…";
    let data;
    try {
      data = await api.traces({ endpoint, q, limit: TRACE_LIMIT });
    } catch (err) {
      if (req === this.listReq) this.tracesStatus.textContent = `Could not load traces: ${err.message}`;
      return;
    }
    if (req !== this.listReq) return;
    this.traces = data.traces || [];
    this.setEndpoints(data.endpoints || [], endpoint);
    this.renderTraces();
  }

  setEndpoints(endpoints, selected) {
    const list = [...new Set([...endpoints, ...(selected ? [selected] : [])])].sort();
    const sel = this.endpointFilter;
    clear(sel);
    sel.append(h("option", { value: "" }, "All endpoints"));
    for (const ep of list) sel.append(h("option", { value: ep }, ep));
    sel.value = selected || "";
    this.updateEndpointButton();
  }

  currentEndpoint() {
    return this.endpointFilter.value || (this.traceMeta && this.traceMeta.endpoint) || "";
  }

  updateEndpointButton() {
    const ep = this.currentEndpoint();
    this.endpointBtn.disabled = !ep;
    this.endpointBtn.textContent = ep ? `Flame graph: ${ep}` : "Endpoint flame graph";
    this.endpointBtn.title = ep
      ? `Flame graph of ${ep}, aggregated over its traces`
      : "Choose an endpoint (or open a trace) first";
  }

  renderTraces() {
    const body = clear(this.tracesBody);
    const maxDur = Math.max(1, ...this.traces.map((t) => t.duration_ns || 0));
    const selected = this.traceId;
    for (const t of this.traces) {
      const row = h(
        "tr",
        {
          class: t.trace_id === selected ? "selected" : null,
          "data-testid": "trace-row",
          "data-trace-id": t.trace_id,
          tabindex: "0",
          onclick: () => this.openTrace(t.trace_id),
          onkeydown: (e) => e.key === "Enter" && this.openTrace(t.trace_id),
        },
        h("td", { class: "mono", title: fmtDateTime(t.start_ns) }, fmtClock(t.start_ns)),
        h("td", { class: "endpoint", title: t.endpoint }, t.endpoint || "–"),
        h("td", { class: "muted" }, t.trace_type || ""),
        h(
          "td",
          { class: "num dur" },
          h("span", {
            class: "dur-bar",
            style: { width: `${(100 * (t.duration_ns || 0)) / maxDur}%` },
          }),
          h("span", { class: "dur-text" }, fmtNs(t.duration_ns)),
        ),
        numCell(t.cpu_ns),
        numCell(t.wall_ns),
        h("td", { class: "num" }, String(t.span_count ?? "")),
        h("td", { class: "mono muted", title: t.trace_id }, shortId(t.trace_id, 12)),
      );
      body.append(row);
    }
    const n = this.traces.length;
    this.traceCount.textContent =
      n >= TRACE_LIMIT ? `${n} slowest shown` : `${n} trace${n === 1 ? "" : "s"}, slowest first`;
    this.tracesStatus.textContent = n ? "" : "No traces match.";
  }

  // --- one trace ----------------------------------------------------------

  async openTrace(traceId, { flame = true } = {}) {
    const req = ++this.traceReq;
    this.trace = null;
    this.traceId = traceId;
    this.traceMeta = this.traces.find((t) => t.trace_id === traceId) || null;
    for (const tr of this.tracesBody.querySelectorAll("tr")) {
      tr.classList.toggle("selected", tr.dataset.traceId === traceId);
    }
    this.wfPanel.hidden = false;
    this.wfTitle.textContent = `Trace ${shortId(traceId, 16)}`;
    this.wfSubtitle.textContent = "";
    this.waterfall.dataset.traceId = traceId;
    this.waterfall.dataset.ready = "0";
    clear(this.wfBody);
    this.wfStatus.textContent = "Loading…";
    this.updateEndpointButton();
    if (flame) this.showFlame("trace", traceId);
    let data;
    try {
      data = await api.trace(traceId);
    } catch (err) {
      if (req === this.traceReq) this.wfStatus.textContent = `Could not load trace: ${err.message}`;
      return;
    }
    if (req !== this.traceReq) return;
    this.trace = data;
    this.renderWaterfall();
    this.writeHash();
  }

  renderWaterfall() {
    const spans = this.trace.spans || [];
    const rows = spanTree(spans);
    const t0 = Math.min(...spans.map((s) => s.start_ns));
    const t1 = Math.max(...spans.map((s) => s.end_ns));
    const span = Math.max(1, t1 - t0);
    const root = rows.length ? rows[0].span : null;
    const endpoint = (this.traceMeta && this.traceMeta.endpoint) || (root && root.name) || "";
    if (!this.traceMeta && root) this.traceMeta = { endpoint };
    this.updateEndpointButton();
    this.wfTitle.textContent = endpoint || `Trace ${shortId(this.trace.trace_id, 16)}`;
    const cpu = rows.filter((r) => r.depth === 0).reduce((s, r) => s + (r.span.total_cpu_ns || 0), 0);
    this.wfSubtitle.textContent = spans.length
      ? `trace ${this.trace.trace_id} · ${fmtNs(t1 - t0)} · ${fmtNs(cpu)} CPU · ${spans.length} span${spans.length === 1 ? "" : "s"}`
      : `trace ${this.trace.trace_id}`;
    clear(this.wfScale).append(
      h("span", null, "0"),
      h("span", null, fmtNs(span / 2)),
      h("span", null, fmtNs(span)),
    );
    const body = clear(this.wfBody);
    const selected = this.flame && this.flame.kind === "span" ? this.flame.id : null;
    for (const { span: s, depth } of rows) {
      const left = (100 * (s.start_ns - t0)) / span;
      const width = (100 * Math.max(0, s.end_ns - s.start_ns)) / span;
      const dur = fmtNs(s.end_ns - s.start_ns);
      const attrs = Object.entries(s.attributes || {})
        .map(([k, v]) => `${k} = ${typeof v === "string" ? v : JSON.stringify(v)}`)
        .join("\n");
      const threads = s.threads || [];
      const isError = s.status === "ERROR";
      body.append(
        h(
          "tr",
          {
            class: s.span_id === selected ? "selected" : null,
            "data-testid": "span-row",
            "data-span-id": s.span_id,
            "data-span-name": s.name,
            tabindex: "0",
            onclick: () => this.showFlame("span", s.span_id),
            onkeydown: (e) => e.key === "Enter" && this.showFlame("span", s.span_id),
          },
          h(
            "td",
            {
              class: "col-name",
              title: `${s.name}\nspan ${s.span_id}${s.kind ? ` · ${s.kind}` : ""} · ${s.status || "UNSET"}${attrs ? `\n\n${attrs}` : ""}`,
            },
            h(
              "div",
              { class: "span-name", style: { paddingLeft: `${depth * 14}px` } },
              depth ? h("span", { class: "tree-mark" }, "└") : null,
              isError ? h("span", { class: "err-dot", title: "status ERROR" }) : null,
              h("span", { class: "name" }, s.name),
              s.kind && s.kind !== "internal" ? h("span", { class: "badge" }, s.kind) : null,
            ),
          ),
          h(
            "td",
            { class: "col-timeline" },
            h(
              "div",
              { class: "track" },
              h("div", {
                class: `bar${isError ? " error" : ""}`,
                style: { left: `${left}%`, width: `max(2px, ${width}%)` },
                title: `+${fmtNs(s.start_ns - t0)}, ${dur}`,
              }),
              h(
                "span",
                {
                  class: `bar-label${width > 30 ? " inside" : ""}`,
                  style:
                    width > 30
                      ? { left: `calc(${left}% + 5px)` }
                      : left + width > 78
                        ? { right: `calc(${100 - left}% + 4px)` }
                        : { left: `calc(${left + width}% + 4px)` },
                },
                dur,
              ),
            ),
          ),
          numCell(s.self_cpu_ns),
          numCell(s.total_cpu_ns),
          numCell(s.self_wall_ns),
          numCell(s.total_wall_ns),
          h(
            "td",
            { class: "col-threads", title: threads.join("\n") },
            threads.map((name) =>
              h(
                "span",
                { class: "thread" },
                h("span", { class: "swatch", style: { background: threadColor(name) } }),
                name,
              ),
            ),
          ),
        ),
      );
    }
    this.wfStatus.textContent = spans.length ? "" : "This trace has no spans.";
    this.waterfall.dataset.ready = "1";
    if (this.flame && (this.flame.kind === "span" || this.flame.kind === "trace")) {
      this.flamePanel.setTitle(...this.flameTitle(this.flame.kind, this.flame.id));
    }
  }

  // --- flame graphs ---------------------------------------------------------

  flameTitle(kind, id) {
    if (kind === "span") {
      const s = this.trace && (this.trace.spans || []).find((x) => x.span_id === id);
      return [
        `Span: ${s ? s.name : shortId(id, 16)}`,
        s
          ? `${fmtNs(s.end_ns - s.start_ns)} · span ${s.span_id} · with its descendants, all threads`
          : `span ${id}`,
      ];
    }
    if (kind === "trace") {
      const ep = this.traceMeta && this.traceMeta.endpoint;
      return [`Trace: ${ep || shortId(id, 16)}`, `trace ${id} · all spans, all threads`];
    }
    if (kind === "endpoint") return [`Endpoint: ${id}`, "aggregated over its traces"];
    return ["Whole process", "every sample, in spans or not"];
  }

  async showFlame(kind, id) {
    const req = ++this.flameReq;
    this.flame = { kind, id };
    const panel = this.flamePanel;
    const [title, sub] = this.flameTitle(kind, id);
    panel.setTitle(title, sub);
    panel.setLoading(kind, id);
    for (const tr of this.wfBody.querySelectorAll("tr")) {
      tr.classList.toggle("selected", kind === "span" && tr.dataset.spanId === id);
    }
    this.processBtn.classList.toggle("active", kind === "process");
    this.writeHash();
    const filter =
      kind === "span" ? { span: id } : kind === "trace" ? { trace: id } : kind === "endpoint" ? { endpoint: id } : {};
    let tree;
    try {
      tree = await api.flame(filter, panel.value);
    } catch (err) {
      if (req === this.flameReq) panel.showError(`Could not load the flame graph: ${err.message}`);
      return;
    }
    if (req !== this.flameReq) return;
    panel.render(tree);
  }

  writeHash() {
    const p = new URLSearchParams();
    if (this.traceId) p.set("trace", this.traceId);
    if (this.flame) p.set("flame", this.flame.id ? `${this.flame.kind}:${this.flame.id}` : this.flame.kind);
    if (this.flamePanel && this.flamePanel.value === "wall") p.set("value", "wall");
    const s = p.toString();
    this.lastHash = s ? `#${s}` : "";
    history.replaceState(null, "", s ? `#${s}` : location.pathname + location.search);
  }
}
