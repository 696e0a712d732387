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
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

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


# Builds an API-format prompt as a LiteGraph graph: one column per depth, widgets set by name, links by input name.
_GRAPH_FROM_API_JS = """(prompt) => {
  const graph = window.app.graph;
  graph.clear();
  const ids = Object.keys(prompt).sort((a, b) => Number(a) - Number(b));
  const depth = {};
  const depthOf = (id) => depth[id] ?? (depth[id] = Math.max(0, ...Object.values(prompt[id].inputs)
      .filter((v) => Array.isArray(v)).map((v) => depthOf(String(v[0])) + 1)));
  ids.forEach(depthOf);
  const nodes = {}, columnHeight = {};
  for (const id of ids) {
    const node = LiteGraph.createNode(prompt[id].class_type);
    if (!node) throw new Error(`unknown node type ${prompt[id].class_type}`);
    node.id = Number(id);
    const column = depth[id];
    node.pos = [40 + column * 400, 60 + (columnHeight[column] ?? 0)];
    columnHeight[column] = (columnHeight[column] ?? 0) + node.size[1] + 90;
    graph.add(node);
    nodes[id] = node;
    for (const [name, value] of Object.entries(prompt[id].inputs)) {
      const widget = Array.isArray(value) ? null : node.widgets?.find((w) => w.name === name);
      if (widget) widget.value = value;
    }
    const seedControl = node.widgets?.find((w) => w.name === "control_after_generate");
    if (seedControl) seedControl.value = "fixed";  // a template reproduces its run: no new seed after queueing
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

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        for folder in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir / "default"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.user_dir / "default" / "comfy.settings.json").write_text(json.dumps(FRESH_USER_SETTINGS))
        self.link_packs()
        env = {**os.environ, "PYTHONPATH": str(self.install.stubs), "HF_HUB_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        cmd = [str(self.install.python), "main.py", "--cpu", "--disable-api-nodes", "--listen", "127.0.0.1",
               "--port", str(self.port), "--input-directory", str(self.input_dir), "--output-directory",
               str(self.output_dir), "--user-directory", str(self.user_dir), "--temp-directory",
               str(self.temp_dir), "--database-url", f"sqlite:///{self.base / 'comfyui.db'}"]
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
        self.page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))

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

    def load_workflow(self, workflow: dict) -> list[str]:
        """Load a UI-format workflow as drag-and-drop would; returns the dialogs it raised (expect none)."""
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(1000)
        return self.visible_dialogs()

    def node_types_in_graph(self) -> list[str]:
        return self.page.evaluate("() => window.app.graph._nodes.map(n => n.type)")

    def api_prompt(self) -> dict:
        """The loaded graph as the API-format prompt the Queue button would send."""
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")

    def ui_workflow_from_api(self, prompt: dict) -> dict:
        """Build an API-format prompt as a graph in the page (laid out by depth) and return its UI JSON."""
        return self.page.evaluate(_GRAPH_FROM_API_JS, prompt)

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
def comfyui_server_v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """A second server whose Sonic nodes are built in the V1 shape (``SONIC_NODE_SCHEMA=v1``)."""
    server = ComfyServer(ensure_comfyui(), tmp_path_factory.mktemp("comfyui-v1"))
    try:
        server.start(extra_env={"SONIC_NODE_SCHEMA": "v1"})
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
    """For each ``workflows/api/NAME.json``, build it in the real UI and save the UI JSON as ``workflows/NAME.json``.

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
                target = REPO / "workflows" / api_file.name
                target.write_text(json.dumps(workflow, indent=1) + "\n")
                print(f"wrote {target.relative_to(REPO)}")
        finally:
            if browser is not None:
                browser.close()
            server.stop()


if __name__ == "__main__":
    # python tests/comfyui/comfyui_harness.py workflows/api/NAME.json ...  → regenerates workflows/NAME.json
    write_ui_workflows([Path(arg).resolve() for arg in sys.argv[1:]])
