// The flame graph panel: d3-flame-graph with per-thread colours, a CPU/wall
// toggle, a search box that reports how much of the total it matches, and a
// legend of threads. Used by the live viewer and by the embedded page.

import flamegraph from "d3-flame-graph";
import { select } from "d3-selection";
import { frameColor, HIGHLIGHT_COLOR, ROOT_COLOR, threadColor } from "./colors.js";
import { clear, debounce, h } from "./dom.js";
import { fmtNs, fmtPct, functionName } from "./format.js";

const VALUE_LABEL = { cpu: "CPU", wall: "wall" };
const LEGEND_MAX = 10; // thread chips shown before "+N more"

/** Thread name of a hierarchy node: its own "thread" field, else its first-level ancestor's. */
function threadOf(d) {
  if (d.data.thread) return d.data.thread;
  let n = d;
  while (n.depth > 1) n = n.parent;
  return n.depth === 1 ? n.data.thread || n.data.name.replace(/^thread /, "") : null;
}

/** Distinct function names (without "(file:line)") and thread names of a flame tree. */
export function treeInventory(tree) {
  const functions = new Set();
  const threads = new Set();
  const stack = (tree && tree.children ? tree.children : []).map((c) => [c, 1]);
  while (stack.length) {
    const [node, depth] = stack.pop();
    if (depth === 1) threads.add(node.thread || node.name.replace(/^thread /, ""));
    else functions.add(functionName(node.name));
    for (const c of node.children || []) stack.push([c, depth + 1]);
  }
  return { functions: [...functions].sort(), threads: [...threads].sort() };
}

/** Forget zoom state that d3-flame-graph leaves on the data objects. */
function resetFlags(tree) {
  const stack = [tree];
  while (stack.length) {
    const n = stack.pop();
    delete n.fade;
    delete n.hide;
    for (const c of n.children || []) stack.push(c);
  }
}

export class FlamePanel {
  /**
   * @param {HTMLElement} host where the panel is built
   * @param {{embedded?: boolean, onValueChange?: (v: string) => void}} opts
   */
  constructor(host, { embedded = false, onValueChange = null } = {}) {
    this.embedded = embedded;
    this.onValueChange = onValueChange;
    this.value = "cpu";
    this.tree = null;
    this.chart = null;
    this.searchTerm = "";

    this.titleEl = h("h2", { class: "flame-title" }, "Flame graph");
    this.subtitleEl = h("span", { class: "muted flame-subtitle" });
    this.toggle = h(
      "button",
      {
        type: "button",
        class: "toggle",
        "data-testid": "value-toggle",
        "data-value": this.value,
        title: "Switch between sampled CPU time and wall time",
        onclick: () => this.setValue(this.value === "cpu" ? "wall" : "cpu", true),
      },
      h("span", { class: "toggle-opt", "data-opt": "cpu" }, "CPU"),
      h("span", { class: "toggle-opt", "data-opt": "wall" }, "Wall"),
    );
    this.valueBadge = h("span", { class: "badge value-badge" });
    this.searchBox = h("input", {
      type: "search",
      class: "search-box",
      "data-testid": "search-box",
      placeholder: "Search function…",
      spellcheck: "false",
      autocomplete: "off",
    });
    const runSearch = debounce(() => this.search(this.searchBox.value), 120);
    this.searchBox.addEventListener("input", runSearch);
    this.searchBox.addEventListener("keydown", (e) => {
      if (e.key === "Enter") this.search(this.searchBox.value);
      if (e.key === "Escape") {
        this.searchBox.value = "";
        this.search("");
      }
    });
    this.searchResult = h("span", { class: "search-result", "data-testid": "search-result" });
    this.resetBtn = h(
      "button",
      { type: "button", class: "btn small", onclick: () => this.chart && this.chart.resetZoom() },
      "Reset zoom",
    );
    this.legend = h("div", { class: "legend" });
    this.container = h("div", { class: "flamegraph", "data-testid": "flamegraph", "data-ready": "0" });
    this.details = h("div", { class: "details muted" }, "\u00a0");

    this.el = h(
      "section",
      { class: "panel flame-panel" },
      h(
        "div",
        { class: "panel-head" },
        h("div", { class: "head-title" }, this.titleEl, this.subtitleEl),
        h(
          "div",
          { class: "head-tools" },
          embedded ? this.valueBadge : this.toggle,
          this.searchBox,
          this.resetBtn,
        ),
      ),
      h("div", { class: "flame-meta" }, this.searchResult, this.legend),
      this.container,
      this.details,
    );
    host.append(this.el);
    this.setValue(this.value, false);
    this.showMessage("Select a trace, a span, an endpoint or the whole process.");

    let lastWidth = 0;
    window.addEventListener(
      "resize",
      debounce(() => {
        const w = this.container.clientWidth;
        if (this.tree && Math.abs(w - lastWidth) > 8) {
          lastWidth = w;
          this.draw();
        }
      }, 200),
    );
  }

  setValue(value, notify) {
    this.value = value === "wall" ? "wall" : "cpu";
    this.toggle.dataset.value = this.value;
    for (const opt of this.toggle.querySelectorAll(".toggle-opt")) {
      opt.classList.toggle("on", opt.dataset.opt === this.value);
    }
    this.valueBadge.textContent = this.value === "wall" ? "Wall time" : "CPU time";
    if (notify && this.onValueChange) this.onValueChange(this.value);
  }

  setTitle(title, subtitle = "") {
    this.titleEl.textContent = title;
    this.subtitleEl.textContent = subtitle;
  }

  /** Mark the panel as loading `kind`/`id`: tests wait for data-ready="1". */
  setLoading(kind, id) {
    const c = this.container;
    c.dataset.ready = "0";
    c.dataset.flameKind = kind;
    c.dataset.flameId = id || "";
    c.dataset.value = this.value;
    delete c.dataset.error;
    c.classList.add("loading");
  }

  showMessage(text, cls = "empty") {
    this.destroyChart();
    clear(this.container);
    this.container.append(h("div", { class: cls }, text));
  }

  showError(message) {
    this.tree = null;
    this.showMessage(message, "error");
    clear(this.legend);
    this.searchResult.textContent = "";
    this.container.dataset.frames = "[]";
    this.container.dataset.threads = "[]";
    this.container.dataset.error = message;
    this.container.classList.remove("loading");
    this.container.dataset.ready = "1";
  }

  /** Render a d3-flame-graph tree ({name, value, children}). */
  render(tree) {
    this.tree = tree;
    const inv = treeInventory(tree);
    this.container.dataset.frames = JSON.stringify(inv.functions);
    this.container.dataset.threads = JSON.stringify(inv.threads);
    this.container.dataset.total = String(tree && tree.value ? tree.value : 0);
    this.container.dataset.value = this.value;
    this.draw();
    this.container.classList.remove("loading");
    this.container.dataset.ready = "1";
  }

  destroyChart() {
    if (this.chart) {
      this.chart.destroy();
      this.chart = null;
    }
  }

  draw() {
    const tree = this.tree;
    const el = this.container;
    this.destroyChart();
    clear(el);
    clear(this.legend);
    this.details.textContent = "\u00a0";
    if (!tree || !tree.value || !tree.children || !tree.children.length) {
      this.searchResult.textContent = "";
      el.append(h("div", { class: "empty" }, "No samples here."));
      return;
    }
    resetFlags(tree);
    const total = tree.value;
    const unit = VALUE_LABEL[this.value];
    const label = (d) => {
      const kids = d.children || [];
      const self = d.value - kids.reduce((s, c) => s + c.value, 0);
      const thread = d.depth > 0 ? threadOf(d) : null;
      return (
        `${d.data.name}: ${fmtNs(d.value)} ${unit} (${fmtPct(d.value / total)})` +
        (d.depth > 1 ? `, self ${fmtNs(self)}` : "") +
        (thread && d.depth > 1 ? `, thread ${thread}` : "")
      );
    };
    const chart = flamegraph()
      .width(Math.max(320, el.clientWidth || 960))
      .cellHeight(18)
      .transitionDuration(250)
      .minFrameSize(1)
      .sort(true)
      .inverted(true)
      .setLabelHandler(label)
      .setColorMapper((d) => {
        if (d.highlight) return HIGHLIGHT_COLOR;
        if (d.depth === 0) return ROOT_COLOR;
        const thread = threadOf(d);
        return d.depth === 1 ? threadColor(thread) : frameColor(thread, d.data.name);
      })
      .setSearchMatch((d, term) => {
        const name = d.data.name || "";
        return !!term && name.toLowerCase().includes(term.toLowerCase());
      })
      .setSearchHandler((results, sum, all) => this.showSearch(results, sum, all))
      .setDetailsHandler((text) => {
        this.details.textContent = text || "\u00a0";
      });
    select(el).datum(tree).call(chart);
    this.chart = chart;
    this.drawLegend(select(el).datum());
    if (this.searchTerm) chart.search(this.searchTerm);
    else this.searchResult.textContent = "";
  }

  drawLegend(root) {
    const threads = (root.children || []).slice().sort((a, b) => b.value - a.value);
    const total = root.value || 1;
    this.legend.append(h("span", { class: "muted legend-label" }, `Threads (${threads.length}):`));
    const shown = this.legendExpanded ? threads.length : LEGEND_MAX;
    for (const node of threads.slice(0, shown)) {
      const name = threadOf(node);
      this.legend.append(
        h(
          "button",
          {
            type: "button",
            class: "chip",
            "data-thread": name,
            title: `Zoom to thread ${name}`,
            onclick: () => this.chart && this.chart.zoomTo(node),
          },
          h("span", { class: "swatch", style: { background: threadColor(name) } }),
          `${name} `,
          h("span", { class: "num muted" }, `${fmtNs(node.value)} · ${fmtPct(node.value / total)}`),
        ),
      );
    }
    if (threads.length > LEGEND_MAX) {
      const more = threads.length - LEGEND_MAX;
      this.legend.append(
        h(
          "button",
          {
            type: "button",
            class: "chip more",
            onclick: () => {
              this.legendExpanded = !this.legendExpanded;
              clear(this.legend);
              this.drawLegend(root);
            },
          },
          this.legendExpanded ? "show fewer" : `+${more} more`,
        ),
      );
    }
  }

  search(term) {
    this.searchTerm = term.trim();
    const r = this.searchResult;
    if (!this.chart) return;
    if (!this.searchTerm) {
      this.chart.clear();
      r.textContent = "";
      delete r.dataset.matched;
      delete r.dataset.total;
      return;
    }
    this.chart.search(this.searchTerm);
  }

  showSearch(results, sum, total) {
    const r = this.searchResult;
    r.dataset.matched = String(sum);
    r.dataset.total = String(total);
    r.dataset.count = String(results.length);
    clear(r);
    if (!results.length) {
      r.append(h("span", { class: "nomatch" }, `“${this.searchTerm}”: no match`));
      return;
    }
    const unit = VALUE_LABEL[this.value];
    r.append(
      h("span", { class: "swatch", style: { background: HIGHLIGHT_COLOR } }),
      `“${this.searchTerm}”: `,
      h("b", { class: "num" }, fmtPct(total ? sum / total : 0)),
      " of the total — ",
      h("span", { class: "num" }, `${fmtNs(sum)} of ${fmtNs(total)} ${unit}`),
      h("span", { class: "muted" }, ` (${results.length} frame${results.length === 1 ? "" : "s"})`),
    );
  }
}
