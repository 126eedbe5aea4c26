"""What the Restore node's step previews cost, against the sampling they accompany (same process, same run).

The node sends about `comfy_adapter.PREVIEWS_PER_RUN` previews a run (every `steps // 20` steps); each is one
`comfy_adapter.preview_image` call on x̂₀ (shrink to ComfyUI's preview size, copy to the CPU, to PIL). This
restores with the bundled demo model through the node, once without previews and once with a preview at every
step (the worst case), alternating, and times the preview calls themselves.

    python benchmarks/benchmark_previews.py --size 512 384 --steps 20 --repeats 3

Prints the median sampling time per step, the median preview time, and the share previews take of sampling
at the node's rate and at every step.
"""
import argparse
import statistics
import time

import numpy as np
import torch

from daclip import demo_model_path
from daclip.daclip_nodes import comfy_adapter, nodes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[512, 384], metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "default"])
    args = parser.parse_args()

    comfy_adapter.set_model_folders([str(demo_model_path().parent)])
    (daclip,) = nodes.DACLIPLoader().load("demo-model/", args.device)
    (unet,) = nodes.DACLIPRestorationModelLoader().load("demo-model/", args.device)
    width, height = args.size
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random((1, height, width, 3), dtype=np.float32))
    (embeds,) = nodes.DACLIPEncodeImage().encode(daclip, image)

    preview_times = []
    original_preview = comfy_adapter.preview_image

    def timed_preview(images, max_size=None):
        started = time.perf_counter()
        result = original_preview(images, max_size)
        preview_times.append(time.perf_counter() - started)
        return result

    comfy_adapter.preview_image = timed_preview
    per_step = {"off": [], "every step": []}
    for _ in range(args.repeats):
        for mode in per_step:
            comfy_adapter.preview_interval = (lambda steps: None) if mode == "off" else (lambda steps: 1)
            started = time.perf_counter()
            nodes.DACLIPRestore().restore(unet, image, embeds, "posterior", args.steps, 0)
            per_step[mode].append((time.perf_counter() - started) / args.steps)

    step = statistics.median(per_step["off"])
    preview = statistics.median(preview_times)
    node_rate = max(1, 100 // comfy_adapter.PREVIEWS_PER_RUN)  # the node's rate in a run of the authors' 100 steps
    print(f"{width}x{height}, {args.steps} steps, demo model, {args.device}")
    print(f"sampling per step, no previews:        {step * 1000:8.1f} ms (median of {args.repeats})")
    print(f"sampling per step, preview every step: {statistics.median(per_step['every step']) * 1000:8.1f} ms")
    print(f"one preview (x̂₀ -> JPEG-ready PIL):    {preview * 1000:8.2f} ms (median of {len(preview_times)})")
    print(f"previews' share of sampling at the node's rate in 100 steps (1 per {node_rate}): {preview / node_rate / step:.2%}")
    print(f"previews' share of sampling with one every step:          {preview / step:.2%}")


if __name__ == "__main__":
    main()
