// Sonic Token Meter: shows the graph's token total on the node itself.
//  - before queueing: whenever the graph changes (checked every second, debounced), the API-format graph
//    (app.graphToPrompt) is priced by POST /sonic/estimate; nothing is queued or run;
//  - after a run: the node's own ui payload ("sonic_cost") from the `executed` message.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE_TYPE = "SonicTokenMeter";
const POLL_MS = 1000;
const UI_KEY = "sonic_cost";

function costLines(cost) {
  const lines = [cost.summary];
  for (const job of cost.jobs || []) {
    let line = `  node ${job.node_id}: ${job.tokens} tokens (${job.duration.toFixed(2)} s, ${job.resolution} px, ` +
      `${job.steps} steps)`;
    if (job.predicted_seconds != null) line += `, ~${Math.round(job.predicted_seconds)} s`;
    lines.push(line);
  }
  if (cost.available_tokens != null) lines.push(`balance: ${cost.available_tokens} tokens available`);
  return lines.join("\n");
}

function display(node) {
  if (!node.sonicDisplay) {
    const widget = ComfyWidgets.STRING(node, "cost", ["STRING", { multiline: true }], app).widget;
    widget.serialize = false; // not a node input: keep it out of the prompt and of widgets_values
    if (widget.options) widget.options.serialize = false;
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.opacity = 0.85;
    }
    node.sonicDisplay = widget;
  }
  return node.sonicDisplay;
}

function show(node, text) {
  display(node).value = text;
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

function meterNodes() {
  return (app.graph?._nodes || []).filter((node) => node.comfyClass === NODE_TYPE);
}

async function estimate(graph, tier) {
  const response = await api.fetchApi("/sonic/estimate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: graph, tier }),
  });
  const body = await response.json();
  if (!response.ok) return `estimate: ${body?.error?.message || response.statusText}`;
  return `estimate: ${costLines(body)}`;
}

let lastGraph = null;
let inFlight = false;

async function refresh() {
  const nodes = meterNodes();
  if (!nodes.length || inFlight) return;
  inFlight = true;
  try {
    const { output } = await app.graphToPrompt();
    const tiers = nodes.map((node) => node.widgets?.find((w) => w.name === "tier")?.value);
    const key = JSON.stringify([output, tiers]);
    if (key === lastGraph) return;
    lastGraph = key;
    for (const node of nodes) {
      const tier = node.widgets?.find((w) => w.name === "tier")?.value;
      show(node, await estimate(output, tier));
    }
  } catch (error) {
    for (const node of nodes) show(node, `estimate unavailable: ${error.message || error}`);
  } finally {
    inFlight = false;
  }
}

app.registerExtension({
  name: "sonic.TokenMeter",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const cost = message?.[UI_KEY]?.[0];
      if (cost) show(this, `last run: ${costLines(cost)}`);
    };
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      display(this);
      lastGraph = null;
    };
  },
  async setup() {
    setInterval(refresh, POLL_MS);
  },
});
