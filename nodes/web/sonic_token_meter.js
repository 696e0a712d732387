// Sonic Token Meter: shows the graph's token total, predicted time and peak memory on the node itself.
//  - before queueing: whenever the graph changes (checked every second, debounced), the API-format graph
//    (app.graphToPrompt) is priced by POST /sonic/estimate; nothing is queued or run;
//  - after a run: the node's own ui payload ("sonic_cost") from the `executed` message.
// Only the frontend's public extension API is used: `app` and `api` (scripts/app.js, scripts/api.js),
// app.registerExtension and the node's addDOMWidget / computeSize / setSize.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "SonicTokenMeter";
const WIDGET_NAME = "cost";
const POLL_MS = 1000;
const UI_KEY = "sonic_cost";
const FONT = "12px monospace";
const LINE_PX = 16;
const PAD_PX = 6;
const MARGIN_PX = 6; // the DOM widget's margin inside the node, on each side
const NODE_SIDE_PX = 2 * MARGIN_PX + 8; // widget margins plus room for the node's border
const GIB = 1024 ** 3;

function jobLines(job) {
  const head = `  node ${job.node_id}: ${job.tokens} tokens (${job.duration.toFixed(2)} s of audio, ` +
    `${job.resolution} px, ${job.steps} steps)`;
  if (job.predicted_seconds == null) {
    return [head, `    no time: the cost model has no ${job.predicted_profile} profile`];
  }
  const peak = job.predicted_peak_bytes != null ? `, peak ${(job.predicted_peak_bytes / GIB).toFixed(1)} GiB` : "";
  return [head, `    ~${Math.round(job.predicted_seconds)} s${peak} (${job.predicted_profile})`];
}

function costLines(cost) {
  const lines = [cost.summary];
  for (const job of cost.jobs || []) lines.push(...jobLines(job));
  if (cost.device) lines.push(`device: ${cost.device}`);
  if (cost.available_tokens != null) lines.push(`balance: ${cost.available_tokens} tokens available`);
  return lines.join("\n");
}

let measuringContext = null;

function textWidth(lines) {
  measuringContext ??= document.createElement("canvas").getContext("2d");
  measuringContext.font = FONT;
  return Math.max(0, ...lines.map((line) => measuringContext.measureText(line).width));
}

function lineCount(text) {
  return Math.max(1, String(text ?? "").split("\n").length);
}

function display(node) {
  if (node.sonicDisplay) return node.sonicDisplay;
  const area = document.createElement("textarea");
  area.readOnly = true;
  area.wrap = "off"; // one line of text per line on screen: the height below is exact
  area.spellcheck = false;
  Object.assign(area.style, {
    font: FONT, lineHeight: `${LINE_PX}px`, padding: `${PAD_PX / 2}px`, boxSizing: "border-box",
    whiteSpace: "pre", overflow: "hidden", resize: "none", opacity: 0.9,
  });
  const textHeight = () => lineCount(area.value) * LINE_PX + PAD_PX + 2 + 2 * MARGIN_PX;
  const widget = node.addDOMWidget(WIDGET_NAME, "sonic_cost_text", area, {
    serialize: false, // not a node input: kept out of the prompt and of widgets_values
    hideOnZoom: false,
    margin: MARGIN_PX,
    getValue: () => area.value,
    setValue: (value) => { area.value = value; },
    getMinHeight: textHeight,
    getMaxHeight: textHeight,
  });
  widget.serialize = false;
  node.sonicDisplay = widget;
  return widget;
}

// Grow the node (never shrink it) so that every line of the text is shown whole.
function fit(node) {
  const lines = String(display(node).value).split("\n");
  const [width, height] = node.computeSize();
  const wanted = [Math.max(node.size[0], width, Math.ceil(textWidth(lines)) + PAD_PX + 2 + NODE_SIDE_PX),
                  Math.max(node.size[1], height)];
  if (wanted[0] !== node.size[0] || wanted[1] !== node.size[1]) node.setSize(wanted);
}

function show(node, text) {
  display(node).value = text;
  fit(node);
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

function meterNodes() {
  return (app.graph?.nodes || []).filter((node) => node.comfyClass === NODE_TYPE);
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

function tierOf(node) {
  return node.widgets?.find((w) => w.name === "tier")?.value;
}

async function refresh() {
  const nodes = meterNodes();
  if (!nodes.length || inFlight) return;
  inFlight = true;
  try {
    const { output } = await app.graphToPrompt();
    const key = JSON.stringify([output, nodes.map(tierOf)]);
    if (key === lastGraph) return;
    lastGraph = key;
    for (const node of nodes) {
      // Shown only when the price changes: a run can change the API graph without changing what it costs (a
      // preview widget the frontend adds), and the "last run" figures stay until the estimate says otherwise.
      const text = await estimate(output, tierOf(node));
      if (text !== node.sonicEstimate) show(node, text);
      node.sonicEstimate = text;
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
