#!/usr/bin/env python
"""Check the node pack in ComfyUI's real frontend, in headless Chromium driven over the DevTools protocol
(outside CI: it needs a running ComfyUI with this repository in `custom_nodes/`, Chromium, and
`websocket-client`).

    python main.py --cpu --listen 127.0.0.1 --preview-method auto --disable-api-nodes    # in ComfyUI
    python scripts/comfyui_frontend_check.py --out /tmp/daclip-frontend --image small.jpg --steps 10

What it checks, printing one line per check and saving screenshots into --out:
1. the templates browser lists the pack's workflows (`/workflow_templates`), each thumbnail is served as a
   JPEG, and the browser dialog shows them (screenshot `templates.png`);
2. loading `daclip_restore.json` on a server without the released weights opens the missing-models dialog
   naming them (`missing_models.png`);
3. every shipped UI workflow loads with no missing node types and no combo widget holding a value its list
   lacks (model names aside, which depend on the user's files), and the frontend's own `graphToPrompt()`
   gives exactly the shipped API workflow;
4. `daclip_restore_demo.json` runs from the page (Queue), the Restore node shows step previews while it
   samples (`running.png`) and the Save node the result (`done.png`).
Exit code 0 when every check passed.
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket  # websocket-client

REPOSITORY = Path(__file__).resolve().parents[1]
WORKFLOWS = REPOSITORY / "workflows"


class Page:
    """One Chromium tab over the DevTools protocol: evaluate JavaScript, take screenshots."""

    def __init__(self, ws_url: str):
        self.socket = websocket.create_connection(ws_url, timeout=600, suppress_origin=True)
        self.next_id = 0

    def send(self, method: str, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, every: float = 0.5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(every)
        return None

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))


def start_chromium(binary: str, port: int, profile: str):
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}", "--window-size=1600,1000", "about:blank",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [target for target in json.load(response) if target["type"] == "page"]
            if pages:
                return process, pages[0]["webSocketDebuggerUrl"]
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("Chromium did not start")


LOAD = "(async () => { await app.loadGraphData(%s, true, true, %s); return true })()"
CLOSE_DIALOGS = "document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click()); true"

GRAPH_PROBLEMS = """(() => {
  const problems = [];
  for (const node of app.graph._nodes) {
    if (!LiteGraph.registered_node_types[node.type]) problems.push(`missing node type ${node.type}`);
    for (const widget of node.widgets || []) {
      const values = widget.options && widget.options.values;
      if (Array.isArray(values) && widget.name !== 'model_name' && widget.name !== 'image'
          && !values.includes(widget.value)) problems.push(`${node.type}.${widget.name} = ${widget.value}`);
      if (widget.type === 'number' && (widget.value < widget.options.min || widget.value > widget.options.max))
        problems.push(`${node.type}.${widget.name} = ${widget.value} out of range`);
    }
  }
  return problems;
})()"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--port", type=int, default=9222)
    parser.add_argument("--image", help="LoadImage's image for the run (a file in ComfyUI/input)")
    parser.add_argument("--steps", type=int, help="the Restore node's steps for the run")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    failures = []

    def check(ok: bool, message: str):
        print(("PASS " if ok else "FAIL ") + message, flush=True)
        if not ok:
            failures.append(message)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that Chromium is stopped below on `kill` too
    profile = tempfile.mkdtemp(prefix="daclip-chromium-")
    process, ws_url = start_chromium(args.chromium, args.port, profile)
    try:
        page = Page(ws_url)
        page.send("Page.enable")
        page.send("Page.navigate", url=args.url)
        ready = page.wait_for("!!(window.app && app.graph && window.LiteGraph && LiteGraph.registered_node_types.DACLIPRestore)", 180)
        check(bool(ready), "frontend loaded, DA-CLIP node types registered")
        if not ready:
            page.screenshot(args.out / "not_ready.png")
            return 1
        page.js(CLOSE_DIALOGS)

        # 1. Templates browser.
        names = sorted(path.stem for path in WORKFLOWS.glob("*.json"))
        listed = page.js("fetch('/workflow_templates').then(r => r.json())")
        pack = next((key for key, value in listed.items() if "daclip_restore" in value), None)
        check(pack is not None and sorted(listed[pack]) == names, f"/workflow_templates lists {listed.get(pack)}")
        thumbnails = page.js("Promise.all(%s.map(n => fetch('/api/workflow_templates/%s/' + n + '.jpg')"
                             ".then(r => [n, r.status, r.headers.get('content-type')])))" % (json.dumps(names), pack))
        check(all(status == 200 and kind == "image/jpeg" for _, status, kind in thumbnails),
              f"thumbnails served: {thumbnails}")
        page.js("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        time.sleep(3)
        page.js("""(() => { for (const e of document.querySelectorAll('*'))
                 if (e.children.length === 0 && e.textContent.trim() === '%s') { e.click(); return true } return false })()""" % pack)
        # The dialog's cards: one per workflow, titled with its name, showing its thumbnail (a blob: image the
        # frontend made from the .jpg it fetched).
        shown = page.wait_for("[...document.querySelectorAll('.template-card')].filter(card => {"
                              " const title = card.querySelector('h3'); const img = card.querySelector('img');"
                              " return title && %s.includes(title.textContent.trim()) && img && img.complete"
                              " && img.naturalWidth > 0 }).length" % json.dumps(names), 20)
        page.screenshot(args.out / "templates.png")
        check(shown == len(names), f"templates dialog shows {shown} of {len(names)} DA-CLIP workflows with their thumbnail")
        page.js(CLOSE_DIALOGS)
        time.sleep(1)

        # 2. Missing models.
        restore = json.loads((WORKFLOWS / "daclip_restore.json").read_text())
        page.js(LOAD % (json.dumps(restore), "null"))
        text = page.wait_for("(() => { const d = [...document.querySelectorAll('.p-dialog')].map(d => d.innerText).join('\\n');"
                             " return d.includes('daclip_ViT-B-32.pt') ? d : '' })()", 20)
        page.screenshot(args.out / "missing_models.png")
        check(bool(text) and "universal-ir.pth" in text,
              "missing-models dialog names daclip / daclip_ViT-B-32.pt and daclip / universal-ir.pth: "
              + " | ".join((text or "").split("\n")[:8]))
        page.js(CLOSE_DIALOGS)

        # 3. Every workflow loads cleanly and converts to the shipped API graph.
        definitions = page.js("fetch('/object_info').then(r => r.json())")
        for name in names:
            ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
            page.js(LOAD % (json.dumps(ui), json.dumps(name)))
            page.js(CLOSE_DIALOGS)
            problems = page.js(GRAPH_PROBLEMS)
            check(not problems, f"{name}: loads with no missing nodes or widget errors {problems or ''}")
            prompt = page.js("app.graphToPrompt().then(p => p.output)")
            # Inputs a node does not define are ignored by the server; the core Preview Any node's display
            # widget sends one ("preview").
            ignored = []
            for node_id, entry in prompt.items():
                known = definitions.get(entry["class_type"], {}).get("input", {})
                names = set(known.get("required", {})) | set(known.get("optional", {}))
                for input_name in [key for key in entry["inputs"] if key not in names]:
                    ignored.append(f"{entry['class_type']}.{input_name}")
                    del entry["inputs"][input_name]
            api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
            check(prompt == api, f"{name}: graphToPrompt() equals workflows/api/{name}.json"
                  + (f" (less inputs the nodes do not define: {ignored})" if ignored else ""))

        # 4. Run the demo workflow from the page and watch the previews.
        demo = json.loads((WORKFLOWS / "daclip_restore_demo.json").read_text())
        page.js(LOAD % (json.dumps(demo), json.dumps("daclip_restore_demo")))
        page.js(CLOSE_DIALOGS)
        if args.image:
            page.js("app.graph._nodes.find(n => n.type === 'LoadImage').widgets.find(w => w.name === 'image').value = %s"
                    % json.dumps(args.image))
        if args.steps:
            page.js("app.graph._nodes.find(n => n.type === 'DACLIPRestore').widgets.find(w => w.name === 'steps').value = %d"
                    % args.steps)
        restore_id = page.js("String(app.graph._nodes.find(n => n.type === 'DACLIPRestore').id)")
        page.js("app.queuePrompt(0, 1).then(() => true)")
        started = time.time()
        preview = page.wait_for("(() => { const p = app.nodePreviewImages && app.nodePreviewImages[%s];"
                                " if (p && p.length) return p[0];"
                                " const n = app.graph.getNodeById(%s); return n && n.imgs && n.imgs.length ? n.imgs[0].src : '' })()"
                                % (json.dumps(restore_id), json.dumps(restore_id)), args.timeout, every=1)
        if preview:
            time.sleep(1)
            page.screenshot(args.out / "running.png")
        check(bool(preview), f"the Restore node shows a step preview while it samples ({preview})")
        done = page.wait_for("(() => { const n = app.graph._nodes.find(n => n.type === 'SaveImage');"
                             " return !!((app.nodeOutputs && app.nodeOutputs[String(n.id)]) || (n.imgs && n.imgs.length)) })()",
                             args.timeout, every=2)
        time.sleep(2)
        page.screenshot(args.out / "done.png")
        check(bool(done), f"the run finished from the page with a saved image ({time.time() - started:.0f} s)")
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
    print("ALL PASSED" if not failures else f"{len(failures)} FAILED")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
