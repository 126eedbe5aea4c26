#!/usr/bin/env python
"""Check the node pack in a running ComfyUI server, the way a user's workflow reaches it (outside CI).

Needs a ComfyUI started with this repository in `custom_nodes/` and `daclip_example_hazy.jpg` (from `assets/`)
in `ComfyUI/input/`, e.g.

    python main.py --cpu --listen 127.0.0.1 --preview-method auto --disable-api-nodes
    python scripts/comfyui_server_check.py --url http://127.0.0.1:8188 --out /tmp/daclip-check

and `websocket-client` (pip install websocket-client) in the Python that runs this script. It checks that the
six nodes are listed by `/object_info`; runs each given API workflow through `POST /prompt`, counting the
progress and preview messages of the Restore node over the websocket and saving the results; then asks the
server to unload models and free its node cache (`POST /free`, what the "Unload Models" and "Free model and
node cache" buttons send) and runs the first workflow again, which must load the models afresh and succeed.
Exit code 0 when everything passed.

`--demo-model` runs the workflows with the bundled demo model in both loaders (for a machine without the
released weights), `--image`/`--steps` make the runs smaller, and `--thumbnails DIR` writes each workflow's
templates-browser thumbnail (`<name>.jpg`: the input's left half beside the result's right half, or the
input with the detection report) from what the server returned (needs Pillow).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import websocket  # websocket-client

REPOSITORY = Path(__file__).resolve().parents[1]
NODE_TYPES = [
    "DACLIPLoader",
    "DACLIPRestorationModelLoader",
    "DACLIPDetectDegradation",
    "DACLIPEncodeImage",
    "DACLIPDegradationFromText",
    "DACLIPRestore",
]
# ComfyUI's binary websocket message types (server.py: BinaryEventTypes).
PREVIEW_IMAGE, UNENCODED_PREVIEW_IMAGE = 1, 2


def request(url: str, data=None):
    body = None if data is None else json.dumps(data).encode()
    headers = {"Content-Type": "application/json"} if body else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=60) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def run_prompt(base: str, graph: dict, out: Path, label: str, timeout: float, overrides: dict) -> dict:
    graph = json.loads(json.dumps(graph))
    for node in graph.values():
        node["inputs"].update(overrides.get(node["class_type"], {}))
    client_id = uuid.uuid4().hex
    ws_url = base.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    socket = websocket.create_connection(ws_url, timeout=timeout)
    started = time.time()
    reply = request(base + "/prompt", {"prompt": graph, "client_id": client_id})
    prompt_id = reply["prompt_id"]
    progress, previews, errors, executed = [], [], [], {}
    inputs = [node["inputs"]["image"] for node in graph.values() if node["class_type"] == "LoadImage"]
    try:
        while True:
            message = socket.recv()
            if isinstance(message, bytes):
                kind = int.from_bytes(message[:4], "big")
                if kind in (PREVIEW_IMAGE, UNENCODED_PREVIEW_IMAGE):
                    previews.append(len(message))
                    if len(previews) == 1:  # keep one, to look at
                        (out / f"{label}_first_preview.jpg").write_bytes(message[8:])
                continue
            event = json.loads(message)
            data = event.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if event["type"] == "progress":
                progress.append((data["value"], data["max"]))
            elif event["type"] == "executed":
                executed[data["node"]] = data["output"]
            elif event["type"] == "execution_error":
                errors.append(f"{data.get('node_type')}: {data.get('exception_message')}")
            elif event["type"] == "executing" and data.get("node") is None:
                break
            elif event["type"] == "execution_success":
                break
    finally:
        socket.close()
    seconds = time.time() - started
    history = request(base + f"/history/{prompt_id}")[prompt_id]
    status = history["status"]["status_str"]
    images = []
    for node_output in history["outputs"].values():
        for image in node_output.get("images", []):
            query = urllib.parse.urlencode(image)
            path = out / f"{label}_{image['filename']}"
            with urllib.request.urlopen(f"{base}/view?{query}", timeout=60) as response:
                path.write_bytes(response.read())
            images.append(str(path))
    texts = [text for output in executed.values() for text in output.get("text", [])]
    return {
        "status": status, "seconds": round(seconds, 1), "errors": errors, "progress_messages": len(progress),
        "last_progress": progress[-1] if progress else None, "previews": len(previews), "images": images,
        "text": texts, "inputs": inputs,
    }


def write_thumbnail(base: str, result: dict, path: Path, width: int = 512) -> None:
    """Before | after (or the input with the detection report), `width` pixels wide, as JPEG."""
    import io

    from PIL import Image, ImageDraw

    query = urllib.parse.urlencode({"filename": result["inputs"][0], "type": "input"})
    with urllib.request.urlopen(f"{base}/view?{query}", timeout=60) as response:
        before = Image.open(io.BytesIO(response.read())).convert("RGB")
    if result["images"]:
        after = Image.open(result["images"][0]).convert("RGB").resize(before.size)
        picture = before.copy()
        half = before.width // 2
        picture.paste(after.crop((half, 0, before.width, before.height)), (half, 0))
        ImageDraw.Draw(picture).line([(half, 0), (half, before.height)], fill=(255, 255, 255), width=2)
    else:
        picture = before.copy()
        report = result["text"][0] if result["text"] else ""
        lines = report.splitlines()[:6]
        draw = ImageDraw.Draw(picture)
        draw.rectangle([0, 0, picture.width, 14 * len(lines) + 10], fill=(0, 0, 0))
        for index, line in enumerate(lines):
            draw.text((8, 5 + 14 * index), line, fill=(255, 255, 255))
    height = round(picture.height * width / picture.width)
    picture.resize((width, height), Image.LANCZOS).save(path, "JPEG", quality=88)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results and previews")
    parser.add_argument("--workflow", action="append", type=Path,
                        help="API workflow(s) to run (default: workflows/api/daclip_restore_demo.json)")
    parser.add_argument("--steps", type=int, help="override the Restore node's steps (faster checks)")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--demo-model", action="store_true", help="use the bundled demo-model/ in both loaders")
    parser.add_argument("--image", help="override LoadImage's image (a file in ComfyUI/input)")
    parser.add_argument("--thumbnails", type=Path, help="write <workflow name>.jpg thumbnails into this folder")
    parser.add_argument("--set", action="append", default=[], metavar="CLASS.INPUT=JSON",
                        help="override an input of every node of a class, e.g. DACLIPRestore.tile_size=256")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    workflows = args.workflow or [REPOSITORY / "workflows" / "api" / "daclip_restore_demo.json"]
    overrides = {"DACLIPRestore": {"steps": args.steps}} if args.steps else {}
    if args.demo_model:
        overrides["DACLIPLoader"] = overrides["DACLIPRestorationModelLoader"] = {"model_name": "demo-model/"}
    if args.image:
        overrides["LoadImage"] = {"image": args.image}
    for setting in args.set:
        target, value = setting.split("=", 1)
        class_type, input_name = target.split(".", 1)
        overrides.setdefault(class_type, {})[input_name] = json.loads(value)
    failures = []

    info = request(args.url + "/object_info")
    missing = [name for name in NODE_TYPES if name not in info]
    print(f"object_info: {len([n for n in NODE_TYPES if n in info])}/{len(NODE_TYPES)} DA-CLIP nodes listed"
          + (f"; MISSING {missing}" if missing else ""))
    print(f"  loader choices: {info['DACLIPLoader']['input']['required']['model_name'][0]}" if not missing else "")
    failures += [f"node {name} not listed" for name in missing]

    def run(path: Path, label: str):
        result = run_prompt(args.url, json.loads(path.read_text()), args.out, label, args.timeout, overrides)
        print(f"{label}: {path.name}: {json.dumps(result)}")
        if args.thumbnails and label == "run" and result["status"] == "success":
            args.thumbnails.mkdir(parents=True, exist_ok=True)
            write_thumbnail(args.url, result, args.thumbnails / f"{path.stem}.jpg")
        if result["status"] != "success" or result["errors"]:
            failures.append(f"{label} {path.name}: {result['status']} {result['errors']}")
        return result

    for path in workflows:
        run(path, "run")
    stats = request(args.url + "/system_stats")
    print(f"before /free: ram_free {stats['system']['ram_free'] / 2**20:.0f} MiB")
    request(args.url + "/free", {"unload_models": True, "free_memory": True})
    time.sleep(3)
    stats = request(args.url + "/system_stats")
    print(f"after /free:  ram_free {stats['system']['ram_free'] / 2**20:.0f} MiB")
    run(workflows[0], "after_free")
    print("PASS" if not failures else "FAIL:\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
