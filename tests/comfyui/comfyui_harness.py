"""A real ComfyUI server (and its web UI in headless Chromium) for the tests.

``scripts/setup_comfyui.sh`` fetches ComfyUI 0.3.75 into ``.cache/comfyui/`` (git-ignored) the first time; then
:class:`ComfyServer` starts it on 127.0.0.1 with this pack linked into ``custom_nodes/`` and private
input/output/user/temp folders, and :class:`ComfyBrowser` drives its UI. The pytest fixtures ``comfyui_server``
(session) and ``comfyui_browser`` are defined here and imported by comfyui/conftest.py; tests that use them carry the
``comfyui`` / ``browser`` markers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from sonic_testing import template_ui_path

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "comfyui-sonic"  # the pack's folder name inside custom_nodes/ (also its key in /workflow_templates)
PROBE_PACK = Path(__file__).resolve().parent / "comfy_probe_pack"  # test-only nodes, see its docstring
PROBE_PACK_NAME = "sonic-test-probe"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("SONIC_CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT_S = 180
# Settings of a fresh user folder: no Templates dialog at start-up, no new-user tour.
FRESH_USER_SETTINGS = {"Comfy.TutorialCompleted": True}
DEMO_INPUTS = ("portrait.jpg", "speech.wav")  # bundled in sonic_core/assets; the templates load them


# Height a node's preview takes below its widgets once it shows one (Load Image's picture, a saved video), and the
# room kept free under it; a node's title bar sits above its ``pos``.
PREVIEW_HEIGHTS = {"LoadImage": 260, "SonicVideoCombine": 300, "SaveAnimatedWEBP": 300, "SaveVideo": 300,
                   "PreviewImage": 300}
TITLE_HEIGHT = 30
NODE_GAP = 40
MAX_COLUMNS = 5  # columns of a template side by side; a longer chain goes on below
# Nodes whose saved size must hold more than their widgets: the Token Meter's whole text after a run.
TEMPLATE_NODE_SIZES = {"SonicTokenMeter": [600, 200]}


# Sets frontend settings through the public extension API; returns the values they had.
_SET_SETTINGS_JS = """async (settings) => {
  const store = window.app.extensionManager.setting, before = {};
  for (const [id, value] of Object.entries(settings)) {
    before[id] = store.get(id);
    await store.set(id, value);
  }
  return before;
}"""
# Zooms and pans the canvas so that the whole graph (title bars and previews included) sits centred in a square of
# ``side`` px 100 px in from the canvas's top-left corner; returns that square as a screenshot clip.
_CENTRE_GRAPH_JS = """([side, margin, previews]) => {
  const canvas = window.app.canvas, nodes = window.app.graph.nodes, title = LiteGraph.NODE_TITLE_HEIGHT;
  const left = Math.min(...nodes.map((n) => n.pos[0])), top = Math.min(...nodes.map((n) => n.pos[1] - title));
  const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
  const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1] + (previews[n.type] ?? 0)));
  const scale = Math.min(1, (side - 2 * margin) / (right - left), (side - 2 * margin) / (bottom - top));
  const inset = 100;
  canvas.ds.scale = scale;
  canvas.ds.offset = [(inset + (side - (right - left) * scale) / 2) / scale - left,
                      (inset + (side - (bottom - top) * scale) / 2) / scale - top];
  canvas.setDirty(true, true);
  const rect = canvas.canvas.getBoundingClientRect();
  return {x: rect.left + inset, y: rect.top + inset, width: side, height: side};
}"""


# Builds an API-format prompt as a LiteGraph graph: one column per depth (as wide as its widest node), nodes
# stacked with room for their title bar and preview, at most ``maxColumns`` columns side by side (a longer chain
# goes on in bands below), widgets set by name, links by input name.
_GRAPH_FROM_API_JS = """([prompt, previews, sizes, title, gap, maxColumns]) => {
  const graph = window.app.graph;
  graph.clear();
  const ids = Object.keys(prompt).sort((a, b) => Number(a) - Number(b));
  const depth = {};
  const depthOf = (id) => depth[id] ?? (depth[id] = Math.max(0, ...Object.values(prompt[id].inputs)
      .filter((v) => Array.isArray(v)).map((v) => depthOf(String(v[0])) + 1)));
  ids.forEach(depthOf);
  const sources = new Set(ids.flatMap((id) => Object.values(prompt[id].inputs).filter(Array.isArray)
      .map((v) => String(v[0]))));
  const last = Math.max(...Object.values(depth));
  for (const id of ids) {  // a node with no links at all (the Token Meter) goes under the graph's last column
    if (depth[id] === 0 && !sources.has(id)) depth[id] = last;
  }
  const nodes = {};
  for (const id of ids) {
    const node = LiteGraph.createNode(prompt[id].class_type);
    if (!node) throw new Error(`unknown node type ${prompt[id].class_type}`);
    node.id = Number(id);
    graph.add(node);
    nodes[id] = node;
    for (const [name, value] of Object.entries(prompt[id].inputs)) {
      const widget = Array.isArray(value) ? null : node.widgets?.find((w) => w.name === name);
      if (widget) widget.value = value;
    }
    const seedControl = node.widgets?.find((w) => w.name === "control_after_generate");
    if (seedControl) seedControl.value = "fixed";  // a template reproduces its run: no new seed after queueing
    const size = sizes[prompt[id].class_type];
    if (size) node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  }
  const columns = Math.max(...Object.values(depth)) + 1;
  const perBand = Math.ceil(columns / Math.ceil(columns / maxColumns));  // bands as even as they can be
  let x = 40, top = 20 + title, bottom = top;
  for (let column = 0; column < columns; column++) {
    if (column > 0 && column % perBand === 0) {  // a long chain goes on in a band below: a squarer graph
      [x, top] = [40, bottom + gap];
    }
    let y = top;
    const members = ids.filter((id) => depth[id] === column);
    for (const id of members) {
      const node = nodes[id];
      node.pos = [x, y];
      y += node.size[1] + (previews[node.type] ?? 0) + gap + title;
    }
    bottom = Math.max(bottom, y);
    x += Math.ceil(Math.max(...members.map((id) => nodes[id].size[0]))) + 2 * gap;
  }
  for (const id of ids) {
    for (const [name, value] of Object.entries(prompt[id].inputs)) {
      if (Array.isArray(value)) nodes[String(value[0])].connect(value[1], nodes[id], nodes[id].findInputSlot(name));
    }
  }
  graph.setDirtyCanvas(true, true);
  return JSON.parse(JSON.stringify(graph.serialize()));  // as saved to a file: undefined fields dropped
}"""


@dataclass(frozen=True)
class ComfyInstall:
    tree: Path
    python: Path
    stubs: Path


def ensure_comfyui() -> ComfyInstall:
    """Run the (idempotent, cached) set-up script with this interpreter as the base venv."""
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup_comfyui.sh"), sys.executable], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/setup_comfyui.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")
    cache = REPO / ".cache" / "comfyui"
    return ComfyInstall(cache / "ComfyUI", Path(result.stdout.strip().splitlines()[-1]), cache / "stubs")


def _own_session_dying_with_parent() -> None:
    """Child set-up: its own process group (stop() kills it whole), and SIGTERM if pytest itself dies (Linux)."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """One ComfyUI process; ``start()`` waits for ``/object_info``, ``stop()`` ends its whole process group."""

    def __init__(self, install: ComfyInstall, base: Path) -> None:
        self.install = install
        self.base = base
        self.input_dir, self.output_dir = base / "input", base / "output"
        self.user_dir, self.temp_dir = base / "user", base / "temp"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0

    def link_packs(self) -> None:
        """Link this pack and the test-only probe pack into ComfyUI's custom_nodes/."""
        for name, target in ((PACK_NAME, REPO), (PROBE_PACK_NAME, PROBE_PACK)):
            link = self.install.tree / "custom_nodes" / name
            if link.is_symlink() and link.resolve() == target:
                continue
            if link.is_symlink() or link.exists():
                link.unlink() if link.is_symlink() else shutil.rmtree(link)
            link.symlink_to(target, target_is_directory=True)

    def start(self, extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> None:
        for folder in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir / "default"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.user_dir / "default" / "comfy.settings.json").write_text(json.dumps(FRESH_USER_SETTINGS))
        self.link_packs()
        env = {**os.environ, "PYTHONPATH": str(self.install.stubs), "HF_HUB_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        cmd = [str(self.install.python), "main.py", "--cpu", "--disable-api-nodes", "--listen", "127.0.0.1",
               "--port", str(self.port), "--input-directory", str(self.input_dir), "--output-directory",
               str(self.output_dir), "--user-directory", str(self.user_dir), "--temp-directory",
               str(self.temp_dir), "--database-url", f"sqlite:///{self.base / 'comfyui.db'}", *extra_args]
        began = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, cwd=self.install.tree, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=_own_session_dying_with_parent)
        while time.monotonic() - began < START_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/object_info", timeout=5) as response:
                    if response.status == 200:
                        self.startup_seconds = time.monotonic() - began
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer /object_info within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def cpu_seconds(self) -> float:
        """CPU seconds the server has used so far (its threads, and its children once they ended), from Linux's
        /proc: unlike wall time, other jobs on a shared machine barely change it."""
        fields = (Path("/proc") / str(self.process.pid) / "stat").read_text().rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")

    def peak_rss_bytes(self) -> int:
        """The server process's resident-memory high-water mark (Linux ``VmHWM``) since start or the last
        :meth:`reset_peak_rss`."""
        assert self.process is not None, "the server is not running"
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/PID/status: peak memory needs Linux")

    def reset_peak_rss(self) -> None:
        """Restart the high-water mark at the current resident size (Linux: ``5`` written to clear_refs)."""
        assert self.process is not None, "the server is not running"
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash or the OOM killer would: nothing gets to clean up."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # --- HTTP API -------------------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def run_prompt(self, prompt: dict, timeout: float = 300,
                   on_message: Callable[[dict], None] | None = None) -> tuple[str, list[dict]]:
        """Queue an API-format graph, follow ``/ws`` until it ends; returns (prompt_id, websocket messages).

        ``on_message`` sees each message as it arrives (e.g. to press Cancel once a node starts).
        """
        import websocket

        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            status, answer = self.post("/prompt", {"prompt": prompt, "client_id": client_id})
            if status != 200:
                raise AssertionError(f"POST /prompt refused ({status}): {json.dumps(answer)[:3000]}")
            prompt_id = answer["prompt_id"]
            messages: list[dict] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = ws.recv()
                if not isinstance(raw, str):
                    continue  # binary preview frames
                message = json.loads(raw)
                messages.append(message)
                if on_message is not None:
                    on_message(message)
                data = message.get("data", {})
                if data.get("prompt_id") == prompt_id and message["type"] in (
                        "execution_success", "execution_error", "execution_interrupted"):
                    return prompt_id, messages
            raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s")
        finally:
            ws.close()

    def forget_outputs(self) -> None:
        """Empty the server's node output cache, so that the next prompt runs every node (a measured run would
        otherwise reuse a previous template's Sampler output). ``POST /free`` only sets a flag that the prompt worker
        reads after its next wait or prompt, so a one-node prompt is run after it: the cache is empty once it ends."""
        status, answer = self.post("/free", {"free_memory": True})
        assert status == 200, answer
        prompt_id, messages = self.run_prompt({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 0}},
                                               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
        assert messages[-1]["type"] == "execution_success", messages[-1]
        self.history(prompt_id)  # recorded just after execution_success: a later "new in /history" must not see it

    def history(self, prompt_id: str, timeout: float = 15) -> dict:
        """The prompt's ``/history`` entry (the server records it just after it sends execution_success)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None:
                return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} has no /history entry after {timeout} s")


class ComfyBrowser:
    """The ComfyUI web page in headless Debian Chromium, driven by Playwright (no bundled browser download)."""

    FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]

    def __init__(self, server: ComfyServer, profile: Path) -> None:
        from playwright.sync_api import sync_playwright

        self.server = server
        self._playwright = sync_playwright().start()
        self._context = self._playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=self.FLAGS,
            viewport={"width": 1400, "height": 900})
        self.page = self._context.pages[0] if self._context.pages else self._context.new_page()
        self.console_errors: list[str] = []
        self.console_warnings: list[str] = []
        self.responses: list[tuple[int, str]] = []  # (status, decoded URL) of every answer the page got
        self.page.on("console", self._on_console)
        self.page.on("response", lambda r: self.responses.append((r.status, urllib.parse.unquote(r.url))))

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)
        elif message.type == "warning":
            self.console_warnings.append(message.text)

    def close(self) -> None:
        self._context.close()
        self._playwright.stop()

    def open(self) -> None:
        """Load the UI, wait until the app and its node definitions are ready, close any dialog it opened."""
        self.page.goto(self.server.url + "/", wait_until="domcontentloaded", timeout=120_000)
        self.page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph "
                                    "&& Object.keys(LiteGraph.registered_node_types).length > 100",
                                    timeout=120_000)
        self.close_dialogs()

    def visible_dialogs(self) -> list[str]:
        """Texts of the dialogs and alert toasts now shown (PrimeVue widgets of the ComfyUI frontend)."""
        return self.page.eval_on_selector_all(
            ".p-dialog, .p-toast-message", "els => els.filter(e => e.offsetParent !== null).map(e => e.innerText)")

    def close_dialogs(self) -> None:
        for _ in range(3):
            if not self.visible_dialogs():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(300)

    def open_template(self, title: str) -> dict:
        """Open the template browser (Workflow > Browse Templates), wait for the card titled ``title`` and its
        thumbnail, then click it as a user would; returns what the card showed (title, description, thumbnail)."""
        self.page.evaluate("async () => { await window.app.extensionManager.command.execute("
                           "'Comfy.BrowseTemplates'); }")
        card = self.page.locator(f'[data-testid="template-workflow-{title}"]')
        card.wait_for(state="visible", timeout=60_000)
        image = card.locator("img").first
        image.wait_for(state="visible", timeout=60_000)
        self.page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle(),
                                    timeout=60_000)
        shown = {"title": card.locator("h3").inner_text(), "description": card.locator("p").first.inner_text(),
                 "thumbnail": image.evaluate("img => ({src: img.currentSrc || img.src, width: img.naturalWidth, "
                                             "height: img.naturalHeight})")}
        card.click()
        self.page.wait_for_function("() => window.app.graph.nodes.length > 0", timeout=60_000)
        card.wait_for(state="detached", timeout=60_000)
        self.page.wait_for_timeout(1000)
        return shown

    def estimate(self) -> dict:
        """What the Token Meter shows before queueing: ``POST /sonic/estimate`` on the loaded graph."""
        return self.page.evaluate("""async () => {
          const { output } = await window.app.graphToPrompt();
          const response = await window.app.api.fetchApi("/sonic/estimate", {method: "POST",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify({prompt: output})});
          return await response.json();
        }""")

    def node_types_in_graph(self) -> list[str]:
        return self.page.evaluate("() => window.app.graph._nodes.map(n => n.type)")

    def api_prompt(self) -> dict:
        """The loaded graph as the API-format prompt the Queue button would send."""
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")

    def ui_workflow_from_api(self, prompt: dict) -> dict:
        """Build an API-format prompt as a graph in the page (laid out by depth) and return its UI JSON."""
        return self.page.evaluate(_GRAPH_FROM_API_JS, [prompt, PREVIEW_HEIGHTS, TEMPLATE_NODE_SIZES, TITLE_HEIGHT,
                                                        NODE_GAP, MAX_COLUMNS])

    def queue_and_wait(self, timeout: float = 300) -> dict:
        """Press Queue (``app.queuePrompt``), then wait for that prompt's entry in ``/history``."""
        before = set(self.server.get("/history"))
        self.page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dialogs = self.visible_dialogs()
            if dialogs:
                raise AssertionError(f"the UI raised a dialog after queueing: {dialogs}")
            new = {k: v for k, v in self.server.get("/history").items() if k not in before}
            done = [v for v in new.values() if v.get("status", {}).get("completed") is not None
                    and v["status"].get("status_str") in ("success", "error")]
            if done:
                self.page.wait_for_timeout(800)  # let the preview render before a screenshot
                return done[0]
            time.sleep(0.5)
        raise AssertionError(f"no finished prompt in /history within {timeout} s")

    def fit_view(self, left_margin: float = 90.0, top_margin: float = 170.0, margin: float = 40.0) -> None:
        """Zoom and pan the canvas so that every node is in view below the page's bars and beside its side bar
        (screen = (graph + offset) · scale)."""
        self.page.evaluate("""([leftMargin, topMargin, margin]) => {
          const canvas = window.app.canvas, nodes = window.app.graph._nodes;
          if (!nodes.length) return;
          const title = LiteGraph.NODE_TITLE_HEIGHT;
          const left = Math.min(...nodes.map((n) => n.pos[0])), top = Math.min(...nodes.map((n) => n.pos[1] - title));
          const right = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
          const bottom = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
          const width = canvas.canvas.width / (window.devicePixelRatio || 1);
          const height = canvas.canvas.height / (window.devicePixelRatio || 1);
          const scale = Math.min(1, (width - leftMargin - margin) / (right - left),
                                 (height - topMargin - margin) / (bottom - top));
          canvas.ds.scale = scale;
          canvas.ds.offset = [leftMargin / scale - left, topMargin / scale - top];
          canvas.setDirty(true, true);
        }""", [left_margin, top_margin, margin])
        self.page.wait_for_timeout(500)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def thumbnail(self, path: Path, side: int = 900, margin: float = 24.0) -> Path:
        """A square JPEG of the whole graph as it is now (the template browser shows square cards): the graph
        centred and drawn in full detail, with nothing of the page over it but the nodes' own DOM widgets."""
        viewport = self.page.viewport_size
        self.page.set_viewport_size({"width": side + 200, "height": side + 200})
        settings = {"Comfy.Minimap.Visible": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0}
        saved = self.page.evaluate(_SET_SETTINGS_JS, settings)
        style = self.page.add_style_tag(content="* { visibility: hidden !important; } #graph-canvas, .dom-widget, "
                                                ".dom-widget * { visibility: visible !important; }")
        try:
            clip = self.page.evaluate(_CENTRE_GRAPH_JS, [side, margin, PREVIEW_HEIGHTS])
            self.page.wait_for_timeout(800)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(path), type="jpeg", quality=85, clip=clip)
        finally:
            style.evaluate("element => element.remove()")
            self.page.evaluate(_SET_SETTINGS_JS, saved)
            self.page.set_viewport_size(viewport)
            self.fit_view()
        return path

    def node_screenshot(self, node_type: str, path: Path, margin: float = 12.0) -> dict:
        """A PNG of the first node of ``node_type`` at 100 % zoom; returns its DOM widget's text metrics (a
        textarea's scroll size beside its client size: equal when the text is shown whole)."""
        box = self.page.evaluate("""([nodeType, margin]) => {
          const canvas = window.app.canvas, node = window.app.graph.nodes.find((n) => n.type === nodeType);
          canvas.ds.scale = 1;
          canvas.ds.offset = [120 - node.pos[0], 160 - node.pos[1]];
          canvas.setDirty(true, true);
          const rect = canvas.canvas.getBoundingClientRect(), title = LiteGraph.NODE_TITLE_HEIGHT;
          return {x: rect.left + 120 - margin, y: rect.top + 160 - title - margin,
                  width: node.size[0] + 2 * margin, height: node.size[1] + title + 2 * margin};
        }""", [node_type, margin])
        self.page.wait_for_timeout(800)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip=box)
        return self.page.evaluate("""(nodeType) => {
          const node = window.app.graph.nodes.find((n) => n.type === nodeType);
          const area = node.widgets.map((w) => w.element).find((e) => e instanceof HTMLTextAreaElement);
          return {text: area.value, scrollHeight: area.scrollHeight, clientHeight: area.clientHeight,
                  scrollWidth: area.scrollWidth, clientWidth: area.clientWidth};
        }""", node_type)


def write_synthetic_svd_xt(path: Path, install: ComfyInstall) -> dict[str, int]:
    """An ``svd_xt.safetensors`` that ComfyUI's Image Only Checkpoint Loader loads as SVD img2vid: the full-size VAE
    (temporal decoder) and ViT-H/14 image encoder under the Stability names, small random fp16 values, and a zero
    UNet of SVD's layout at 320 channels on every level (:mod:`svd_unet_shapes`; never run). Returns the parameter
    count of each part (``vae``, ``clip``, ``unet``)."""
    import math

    import torch
    from safetensors.torch import save_file

    from sonic_core.models.bundle import ModelConfigs
    from sonic_core.weights.svd_single_file import CLIP_PREFIX, CLIP_RULES, VAE_PREFIX, VAE_RULES, to_stability

    script = Path(__file__).resolve().parent / "svd_unet_shapes.py"
    result = subprocess.run([str(install.python), str(script)], cwd=install.tree, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": f"{install.stubs}{os.pathsep}{install.tree}"},
                            timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    shapes = {"unet": {name: tuple(shape) for name, shape in json.loads(result.stdout).items()}}
    build = ModelConfigs.official().factories()
    for part, prefix, rules, skip in (("vae", VAE_PREFIX, VAE_RULES, "quant_conv."),
                                      ("clip", CLIP_PREFIX, CLIP_RULES, "vision_model.embeddings.position_ids")):
        with torch.device("meta"):
            ours = {k: v for k, v in build["vae" if part == "vae" else "image_encoder"]().state_dict().items()
                    if not k.startswith(skip)}
        shapes[part] = {prefix + k: tuple(v.shape) for k, v in to_stability(ours, rules).items()}
    generator = torch.Generator().manual_seed(0)
    tensors = {name: torch.zeros(shape, dtype=torch.float16) for name, shape in shapes["unet"].items()}
    for part in ("vae", "clip"):
        tensors |= {name: (torch.randn(shape, generator=generator) * 0.02).half()
                    for name, shape in shapes[part].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path)
    return {part: sum(math.prod(shape) for shape in found.values()) for part, found in shapes.items()}


def copy_demo_inputs(server: ComfyServer) -> None:
    """The bundled portrait and speech, which the templates load, into the server's input folder."""
    for name in DEMO_INPUTS:
        shutil.copy(REPO / "sonic_core" / "assets" / name, server.input_dir / name)


@pytest.fixture(scope="session")
def comfyui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A running ComfyUI with this pack, shared by the session; stopped (process group killed) at the end."""
    server = ComfyServer(ensure_comfyui(), tmp_path_factory.mktemp("comfyui"))
    try:
        server.start()
        copy_demo_inputs(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fresh_comfyui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A server of the module's own, for measurements that other tests' runs must not touch (host memory peaks)."""
    server = ComfyServer(ensure_comfyui(), tmp_path_factory.mktemp("comfyui-fresh"))
    try:
        server.start()
        copy_demo_inputs(server)
        yield server
    finally:
        server.stop()


@pytest.fixture()
def comfyui_browser(comfyui_server: ComfyServer, tmp_path: Path) -> Iterator[ComfyBrowser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/apt-packages.txt)")
    browser = ComfyBrowser(comfyui_server, tmp_path / "chromium-profile")
    try:
        browser.open()
        yield browser
    finally:
        browser.close()


def write_ui_workflows(api_files: list[Path]) -> None:
    """For each ``workflows/api/NAME.json``, build it in the real UI and save the UI JSON as its UI twin
    (:func:`template_ui_path`).

    The UI files are generated, never hand-written, so that they carry exactly what this ComfyUI's frontend
    saves (widget values, slot types, layout); the view is reset to the top-left corner.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sonic-ui-workflows-") as base:
        server = ComfyServer(ensure_comfyui(), Path(base))
        server.start()
        copy_demo_inputs(server)
        browser = None
        try:
            browser = ComfyBrowser(server, Path(base) / "chromium-profile")
            browser.open()
            for api_file in api_files:
                workflow = browser.ui_workflow_from_api(json.loads(api_file.read_text()))
                workflow.setdefault("extra", {})["ds"] = {"scale": 1.0, "offset": [70, 90]}
                target = template_ui_path(api_file)
                target.write_text(json.dumps(workflow, indent=1) + "\n")
                print(f"wrote {target.relative_to(REPO)}")
        finally:
            if browser is not None:
                browser.close()
            server.stop()


if __name__ == "__main__":
    # PYTHONPATH=tests python tests/comfyui/comfyui_harness.py workflows/api/NAME.json ...  → their UI twins
    write_ui_workflows([Path(arg).resolve() for arg in sys.argv[1:]])
