#!/usr/bin/env python
"""Speed and memory of DA-CLIP restoration at real model sizes, beside a reference path measured in the same run.

What it measures (random weights of the released sizes: DA-CLIP ViT-B/32, UNet nf 64, ch_mult 1-2-4-8, context 512):

- **UNet step**: one noise prediction at 256², 512², 1024² (batch 1), float32 and bfloat16. Ours and the reference
  run alternately in one child process, so a busy machine slows both alike: read the ratio. Also the largest
  difference between the two outputs (parity at the real size).
- **Restoration**: a short restoration through `DACLIPPipeline` (DA-CLIP encode + `--steps` sampling steps): total
  time, time per step inside the loop, and peak memory, each in a fresh child process (peak RSS = the child's
  VmHWM; on CUDA also `torch.cuda.max_memory_allocated`). Includes a tiled 2048² restoration (`tile_size=512`).
- **Precision**: bfloat16 (and float16 where it runs) against float32: max abs error of one UNet forward, PSNR of a
  few-step restoration with the same noise, and DA-CLIP embedding cosine similarity.
- **Batch throughput** (images/s, batch 1 vs 4 at 256²) and, with `--compile`, `torch.compile` of the UNet.

Reference path: the authors' `ConditionalUNet` loaded with the same weights, from `--authors-code DIR` (a folder
holding `DenoisingUNet_arch.py`, `module_util.py` and `attention.py` from daclip-uir's
`universal-image-restoration/config/daclip-sde/models/modules/`; needs `einops`). Without it, our own model with
its speed paths off (NCHW maps, out-of-place ops) stands in. Runs the reference cannot survive (the authors'
1024² self-attention needs tens of GiB) are skipped and reported as skipped.

    python benchmarks/benchmark_restoration.py --authors-code /tmp/authors          # CPU (or CUDA if present)
    python benchmarks/benchmark_restoration.py --quick --authors-code /tmp/authors  # 256² and 512² only

Results go to `benchmarks/RESULTS.md` (`--output`) and, as JSON, beside it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
GIB = 1024**3

# The authors' self-attention materialises heads × N² scores (N = (size / 8)² tokens at the deepest level, 16 heads
# of float32 in the middle block) plus their softmax: at 1024² that is 2 × 16 GiB. Skip what cannot fit.
def authors_attention_bytes(size: int, dtype_bytes: int) -> int:
    tokens = (size // 8) ** 2
    return 2 * 16 * tokens * tokens * dtype_bytes


# ---------------------------------------------------------------------------------------------------------------
# Child side: build models, run one job, print one JSON line
# ---------------------------------------------------------------------------------------------------------------


def peak_rss_bytes() -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def load_authors_unet_module(folder: str):
    """Import the authors' three files as a package (they use relative imports among themselves)."""
    name = "daclip_authors_modules"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [os.path.abspath(folder)]
        sys.modules[name] = package
    return importlib.import_module(f"{name}.DenoisingUNet_arch")


def make_unet(dtype, device, seed: int = 0):
    import torch

    from daclip import DACLIPUNet2DModel

    torch.manual_seed(seed)
    unet = DACLIPUNet2DModel()
    with torch.no_grad():
        # proj_out starts at zero (the SpatialTransformers are identities at init); give them weight so that the
        # content embedding matters, as in a trained model.
        for name, parameter in unet.named_parameters():
            if "proj_out" in name:
                parameter.normal_(0.0, 0.02)
    return torch.nn.Module.to(unet, device=device, dtype=dtype).eval().requires_grad_(False)


class ReferenceUNet:
    """The reference path behind our UNet's call signature; returns the noise tensor.

    The authors' network keeps float32 weights and runs a lower `dtype` under `torch.autocast` (cast to bfloat16
    outright it fails: its timestep embedding stays float32; autocast is also how their code uses reduced
    precision). Our stand-in runs in the model's dtype with its speed paths off.
    """

    def __init__(self, ours, authors_code: Optional[str], share_weights: bool = False):

        self.dtype = ours.dtype
        self.authors = authors_code is not None
        if self.authors:
            module = load_authors_unet_module(authors_code)
            config = ours.config
            net = module.ConditionalUNet(
                in_nc=config.in_channels,
                out_nc=config.out_channels,
                nf=config.base_channels,
                ch_mult=list(config.channel_mult),
                context_dim=config.context_dim,
                use_degra_context=config.use_degradation_context,
                use_image_context=config.use_image_context,
            )
            net.load_state_dict({key: value.float() for key, value in ours.state_dict().items()}, strict=True)
            self.net = net.to(device=ours.device).eval().requires_grad_(False)
        else:
            import copy

            self.net = ours if share_weights else copy.deepcopy(ours)
            self.net.channels_last = False

    def __call__(self, sample, timestep, condition, degradation_embeds, content_embeds):
        import torch

        if self.authors:
            if isinstance(timestep, torch.Tensor) and timestep.ndim == 0:
                timestep = float(timestep)  # their samplers pass a Python float; a 0-d tensor breaks their embedding
            low = self.dtype != torch.float32
            with torch.no_grad(), torch.autocast(sample.device.type, dtype=self.dtype, enabled=low):
                inputs = (t.float() for t in (sample, condition, degradation_embeds, content_embeds))
                sample, condition, degradation_embeds, content_embeds = inputs
                return self.net(sample, condition, timestep, degradation_embeds, content_embeds).to(self.dtype)
        # Grad mode on (no parameter or input needs a gradient, so nothing is recorded): our out-of-place forms.
        with torch.enable_grad():
            return self.net(sample, timestep, condition, degradation_embeds, content_embeds).sample


def unet_inputs(size: int, batch: int, dtype, device, seed: int = 1):
    import torch

    generator = torch.Generator().manual_seed(seed)
    condition = torch.rand(batch, 3, size, size, generator=generator)
    sample = condition + 0.2 * torch.randn(batch, 3, size, size, generator=generator)
    degradation = torch.randn(batch, 512, generator=generator)
    content = torch.randn(batch, 512, generator=generator)
    move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return move(sample), 50.0, move(condition), move(degradation), move(content)


def synchronize(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device):
    """(wall seconds, process CPU seconds) of one call."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def job_unet_step(job: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    device, dtype = torch.device(job["device"]), getattr(torch, job["dtype"])
    ours = make_unet(dtype, device)
    sample, timestep, condition, degradation, content = unet_inputs(job["size"], job["batch"], dtype, device)
    paths = {"ours": lambda: ours(sample, timestep, condition, degradation, content).sample}
    if job["reference"]:
        reference = ReferenceUNet(ours, job.get("authors_code"))
        paths["reference"] = lambda: reference(sample, timestep, condition, degradation, content)
    results: Dict[str, Any] = {name: {"wall": [], "cpu": []} for name in paths}
    outputs = {}
    with torch.no_grad():
        for repeat in range(job["warmup"] + job["repeats"]):
            for name, function in paths.items():
                if "error" in results[name]:
                    continue
                try:
                    wall, cpu, output = timed(function, device)
                except (RuntimeError, MemoryError) as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
                    message = str(error).splitlines()[0] if str(error) else type(error).__name__
                    if "memory" not in message.lower() and "allocate" not in message.lower():
                        raise
                    results[name]["error"] = f"out of memory ({message[:100]})"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                outputs[name] = output
                if repeat >= job["warmup"]:
                    results[name]["wall"].append(wall)
                    results[name]["cpu"].append(cpu)
    if "ours" in outputs and "reference" in outputs:
        difference = (outputs["ours"].float() - outputs["reference"].float()).abs().max().item()
        results["max_abs_difference"] = difference
        results["output_max_abs"] = outputs["reference"].float().abs().max().item()
    if device.type == "cuda":
        results["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    return results


def make_pipeline(dtype, device, reference: bool = False, authors_code: Optional[str] = None):
    import torch

    from daclip import DACLIPModel, DACLIPPipeline, IRSDEPosteriorScheduler
    from daclip.pipelines.daclip.unet_daclip import DACLIPUNet2DOutput

    torch.manual_seed(0)
    daclip = DACLIPModel().eval().requires_grad_(False)
    with torch.no_grad():
        # At init the controller is a copy of the image tower and its zero modules are zero, so both embeddings
        # would be equal; move it away (as the parity fixtures do) so that they differ, as in a trained model.
        for name, parameter in daclip.visual_control.named_parameters():
            if "zero_modules" in name:
                parameter.normal_(0.0, 0.3 / parameter.shape[-1] ** 0.5)
            else:
                parameter.add_(0.01 * torch.randn_like(parameter))
    unet = make_unet(torch.float32, torch.device("cpu"))
    pipe = DACLIPPipeline(daclip=daclip, unet=unet, scheduler=IRSDEPosteriorScheduler())
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if reference:
        stand_in = ReferenceUNet(pipe.unet, authors_code, share_weights=True)

        def forward(sample, timestep, condition, degradation_embeds=None, content_embeds=None, return_dict=True):
            return DACLIPUNet2DOutput(sample=stand_in(sample, timestep, condition, degradation_embeds, content_embeds))

        if stand_in.net is not pipe.unet:
            pipe.unet.forward = forward
        else:
            original_forward = pipe.unet.forward
            pipe.unet.forward = lambda *a, **k: torch.enable_grad()(original_forward)(*a, **k)
        if stand_in.authors:
            # Free our copy of the weights (the pipeline still reads the UNet's config and dtype).
            for parameter in pipe.unet.parameters():
                parameter.data = parameter.data.new_empty(0)
    return pipe


def test_image(size: int):
    """A smooth synthetic photo-like image `[3, size, size]` in [0, 1] (content does not matter to the timing)."""
    import torch

    generator = torch.Generator().manual_seed(3)
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    return (image + 0.05 * torch.randn(3, size, size, generator=generator)).clamp(0, 1)


def job_restore(job: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    device, dtype = torch.device(job["device"]), getattr(torch, job["dtype"])
    pipe = make_pipeline(dtype, device, reference=job["path"] == "reference", authors_code=job.get("authors_code"))
    rss_models = peak_rss_bytes()
    image = test_image(job["size"])
    marks: List[float] = []

    def mark(pipe, step_index, timestep, tensors):
        synchronize(device)
        marks.append(time.perf_counter())
        return tensors

    synchronize(device)
    start = time.perf_counter()
    output = pipe(
        image,
        num_inference_steps=job["steps"],
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        callback_on_step_end=mark,
        tile_size=job.get("tile_size"),
    )
    synchronize(device)
    total = time.perf_counter() - start
    steps = [b - a for a, b in zip(marks, marks[1:])]
    result = {
        "total_s": total,
        "first_step_with_encode_s": marks[0] - start,
        "step_s": steps,
        "rss_after_loading_bytes": rss_models,
        "finite": bool(torch.isfinite(output.images).all()),
    }
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    return result


def psnr(a, b) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


PRECISION_VARIANTS = {
    # name: (dtype, channel LayerNorm eps override; None = the authors' rule, 1e-5 in float32 and 1e-3 otherwise)
    "bfloat16": ("bfloat16", None),
    "bfloat16, eps 1e-5": ("bfloat16", 1e-5),
    "float16": ("float16", None),
    "float32, eps 1e-3": ("float32", 1e-3),
}


def job_precision(job: Dict[str, Any]) -> Dict[str, Any]:
    """Each variant against float32: one UNet forward, a few-step restoration (same noise), DA-CLIP embeddings."""
    import torch

    device = torch.device(job["device"])
    size, steps = job["size"], job["steps"]
    image = test_image(size)

    def run(dtype, eps):
        unet = make_unet(dtype, device)
        pipe = make_pipeline(dtype, device)
        if eps is not None:
            unet.set_channel_norm_eps(eps)
            pipe.unet.set_channel_norm_eps(eps)
        final = {}

        def keep_final_state(pipe, step_index, timestep, tensors):
            final["state"] = tensors["latents"].float().clone()  # x_0 before clamping
            return tensors

        with torch.no_grad():
            inputs = unet_inputs(size, 1, dtype, device)
            unet(*inputs)  # warm-up: the timing below is a steady-state step
            wall, _, noise = timed(lambda: unet(*inputs).sample.float(), device)
            restored = pipe(image, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                            output_type="pt", callback_on_step_end=keep_final_state).images.float()
            pixel_values = pipe.daclip.preprocess(image[None]).to(device=device, dtype=dtype)
            content, degradation = (t.float() for t in pipe.daclip.encode_image(pixel_values))
        return dict(noise=noise, restored=restored, state=final["state"], content=content,
                    degradation=degradation, wall=wall)

    reference = run(torch.float32, None)
    results: Dict[str, Any] = {"size": size, "steps": steps}
    cosine = torch.nn.functional.cosine_similarity
    for name in job["variants"]:
        dtype_name, eps = PRECISION_VARIANTS[name]
        try:
            got = run(getattr(torch, dtype_name), eps)
        except Exception as error:  # noqa: BLE001 - a dtype the device cannot run is a result, not a crash
            results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"}
            continue
        error = (got["noise"] - reference["noise"]).abs()
        results[name] = {
            "unet_max_abs_error": error.max().item(),
            "unet_mean_abs_error": error.mean().item(),
            "unet_output_max_abs": reference["noise"].abs().max().item(),
            "unet_forward_s": got["wall"],
            "unet_forward_float32_s": reference["wall"],
            "restored_psnr_db": psnr(got["restored"], reference["restored"]),
            "final_state_max_abs_error": (got["state"] - reference["state"]).abs().max().item(),
            "daclip_content_cosine": cosine(got["content"], reference["content"]).min().item(),
            "daclip_degradation_cosine": cosine(got["degradation"], reference["degradation"]).min().item(),
        }
    return results


def job_batch(job: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    device, dtype = torch.device(job["device"]), getattr(torch, job["dtype"])
    unet = make_unet(dtype, device)
    results = {}
    with torch.no_grad():
        for batch in job["batches"]:
            inputs = unet_inputs(job["size"], batch, dtype, device)
            unet(*inputs)  # warm-up
            walls = [timed(lambda: unet(*inputs), device)[0] for _ in range(job["repeats"])]
            results[str(batch)] = {"wall": walls, "images_per_s": batch / min(walls)}
    return results


def job_compile(job: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    device, dtype = torch.device(job["device"]), getattr(torch, job["dtype"])
    unet = make_unet(dtype, device)
    inputs = unet_inputs(job["size"], 1, dtype, device)
    results: Dict[str, Any] = {}
    with torch.no_grad():
        unet(*inputs)
        results["eager_wall"] = [timed(lambda: unet(*inputs), device)[0] for _ in range(job["repeats"])]
        try:
            if job.get("freezing"):
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True  # fold weights into the graph (lets inductor pre-pack conv weights)
            compiled = torch.compile(unet)
            wall, _, _ = timed(lambda: compiled(*inputs), device)
            results["compile_and_first_call_s"] = wall
            results["compiled_wall"] = [timed(lambda: compiled(*inputs), device)[0] for _ in range(job["repeats"])]
            difference = (compiled(*inputs).sample - unet(*inputs).sample).abs().max().item()
            results["max_abs_difference"] = difference
        except Exception as error:  # noqa: BLE001
            results["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return results


JOBS = {
    "unet_step": job_unet_step,
    "restore": job_restore,
    "precision": job_precision,
    "batch": job_batch,
    "compile": job_compile,
}


def run_child(job: Dict[str, Any]) -> None:
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    result = JOBS[job["kind"]](job)
    result["peak_rss_bytes"] = peak_rss_bytes()
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# Parent side: plan, launch children, write the report
# ---------------------------------------------------------------------------------------------------------------


def launch(job: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    started = time.perf_counter()
    description = " ".join(f"{k}={v}" for k, v in job.items() if k not in ("authors_code", "device", "threads"))
    print(f"[{time.strftime('%H:%M:%S')}] {description}", flush=True)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        killed = completed.returncode in (-9, 137)
        return {"error": ("killed (out of memory?)" if killed else f"exit {completed.returncode}") + ": " + " | ".join(tail)}
    result = json.loads(lines[-1][len("RESULT "):])
    result["child_wall_s"] = time.perf_counter() - started
    return result


def machine_info(device: str) -> Dict[str, Any]:
    import torch

    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
        info["cpu_model"] = names[0] if names else platform.processor()
        info["cpu_flags"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile") if f in flags]
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        info["memory_gib"] = round(int(meminfo[0].split()[1]) / 1024**2, 1)
    except (OSError, IndexError, ValueError):
        info["cpu_model"] = platform.processor()
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    info["environment"] = {
        key: value for key, value in sorted(os.environ.items())
        if key.startswith(("MALLOC_", "THP_", "OMP_", "MKL_", "GLIBC_TUNABLES", "LD_PRELOAD"))
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def plan(args) -> List[Dict[str, Any]]:
    cuda = args.device.startswith("cuda")
    sizes = args.sizes or ([256, 512] if args.quick else [256, 512, 1024])
    dtypes = ["float32", "bfloat16"] + (["float16"] if cuda else [])
    common = {"device": args.device, "threads": args.threads, "authors_code": args.authors_code}
    jobs: List[Dict[str, Any]] = []
    for dtype in dtypes:
        for size in sizes:
            if cuda and size < 512 and dtype != "float32":
                continue
            # A 1024² CPU step takes about half a minute: time it once, without a warm-up call.
            repeats, warmup = (args.repeats, 1) if size <= 512 or cuda else (1, 0)
            element = 4 if dtype == "float32" else 2
            reference = True
            if args.authors_code and authors_attention_bytes(size, element) > args.reference_memory_limit * GIB:
                reference = False
            jobs.append(dict(common, kind="unet_step", size=size, batch=1, dtype=dtype, warmup=warmup,
                             repeats=repeats, reference=reference))
    for dtype in ["float32", "bfloat16"]:
        for size in sizes:
            for path in ("ours", "reference"):
                if path == "reference" and args.authors_code and (
                    authors_attention_bytes(size, 4 if dtype == "float32" else 2) > args.reference_memory_limit * GIB
                ):
                    continue
                if path == "reference" and size > 512 and not args.authors_code:
                    continue
                jobs.append(dict(common, kind="restore", size=size, dtype=dtype, path=path, steps=args.steps))
        if not args.quick and args.tiled_size:
            jobs.append(dict(common, kind="restore", size=args.tiled_size, dtype=dtype, path="ours",
                             steps=args.tiled_steps, tile_size=args.tile_size))
    jobs.append(dict(common, kind="precision", size=args.precision_size, steps=args.precision_steps,
                     variants=list(PRECISION_VARIANTS)))
    jobs.append(dict(common, kind="batch", size=256, dtype="float32", batches=[1, 4], repeats=2))
    if args.compile:
        jobs.append(dict(common, kind="compile", size=256, dtype="float32", repeats=3, freezing=args.compile_freezing))
    if args.kinds:
        jobs = [job for job in jobs if job["kind"] in args.kinds]
    if args.dtypes:
        jobs = [job for job in jobs if job.get("dtype", args.dtypes[0]) in args.dtypes]
    return jobs


def fmt_ms(seconds: Optional[float]) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.0f}"


def fmt_gib(value: Optional[int]) -> str:
    return "–" if value is None else f"{value / GIB:.2f}"


def best(values: List[float]) -> Optional[float]:
    return min(values) if values else None


def report(info: Dict[str, Any], jobs: List[Dict[str, Any]], results: List[Dict[str, Any]], args) -> str:
    reference_name = "authors' ConditionalUNet" if args.authors_code else "our UNet, speed paths off (NCHW, out of place)"
    lines = [
        f"## Measured: {'CUDA' if info['device'].startswith('cuda') else 'CPU'}",
        "",
        f"Written by `benchmarks/benchmark_restoration.py` on {time.strftime('%Y-%m-%d %H:%M')}. Random weights of the "
        "released sizes (DA-CLIP ViT-B/32; UNet nf 64, ch_mult 1-2-4-8, context 512), batch 1.",
        "",
        f"- CPU: {info.get('cpu_model')} ({info.get('usable_cpus')} usable of {info.get('logical_cpus')} logical CPUs; "
        f"flags {', '.join(info.get('cpu_flags', [])) or '–'}), {info.get('memory_gib', '?')} GiB memory",
        f"- torch {info['torch']} ({args.threads or info['torch_threads']} threads), Python {info['python']}, "
        f"{info['platform']}",
        f"- device: {info['device']}" + (f" ({info['gpu']}, CUDA {info['cuda']})" if "gpu" in info else ""),
        f"- reference path: {reference_name}",
        f"- environment: {' '.join(f'{k}={v}' for k, v in info.get('environment', {}).items()) or 'defaults'}",
        f"- load average at start / end: {info.get('load_average_at_start')} / {info.get('load_average_at_end')}",
        "",
        "### UNet step (one noise prediction)",
        "",
        "Best of the timed repeats; ours and the reference alternate in one process. CPU s = process CPU time "
        "(less sensitive to other load on the machine than wall time).",
        "",
        "| size | dtype | ours ms | reference ms | ours / reference (wall) | ours / reference (CPU s) | max abs diff |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for job, result in zip(jobs, results):
        if job["kind"] != "unet_step":
            continue
        ours, reference = result.get("ours", {}), result.get("reference", {})
        ours_wall, reference_wall = best(ours.get("wall", [])), best(reference.get("wall", []))
        ours_cpu, reference_cpu = best(ours.get("cpu", [])), best(reference.get("cpu", []))
        if "error" in result:
            reference_text, ratio, ratio_cpu = result["error"], "–", "–"
        elif not job["reference"]:
            needed = authors_attention_bytes(job["size"], 4 if job["dtype"] == "float32" else 2) / GIB
            reference_text, ratio, ratio_cpu = f"skipped (attention needs ~{needed:.0f} GiB)", "–", "–"
        elif "error" in reference:
            reference_text, ratio, ratio_cpu = reference["error"], "–", "–"
        else:
            reference_text = fmt_ms(reference_wall)
            ratio = f"{ours_wall / reference_wall:.2f}" if ours_wall and reference_wall else "–"
            ratio_cpu = f"{ours_cpu / reference_cpu:.2f}" if ours_cpu and reference_cpu else "–"
        difference = result.get("max_abs_difference")
        difference_text = "–" if difference is None else f"{difference:.1e} (of {result['output_max_abs']:.2f})"
        lines.append(
            f"| {job['size']}² | {job['dtype']} | {fmt_ms(ours_wall)} | {reference_text} | {ratio} | {ratio_cpu} | "
            f"{difference_text} |"
        )
    lines += [
        "",
        f"### Restoration ({args.steps} steps; tiled {args.tiled_size}²: {args.tiled_steps} step(s), tile "
        f"{args.tile_size}, overlap 32)",
        "",
        "Each row is a fresh process: peak RSS is its high-water mark (models included: DA-CLIP ViT-B/32 is "
        "~0.6 GiB of float32 weights plus the UNet's 0.2 GiB). Step = mean time of a sampling step inside the loop "
        "(after the first, which also encodes with DA-CLIP).",
        "",
        "| size | dtype | path | total s | step ms | peak RSS GiB | CUDA peak GiB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for job, result in zip(jobs, results):
        if job["kind"] != "restore":
            continue
        size = f"{job['size']}²" + (" tiled" if job.get("tile_size") else "")
        if "error" in result:
            lines.append(f"| {size} | {job['dtype']} | {job['path']} | {result['error']} | | | |")
            continue
        steps = result["step_s"]
        step = sum(steps) / len(steps) if steps else result["first_step_with_encode_s"]
        lines.append(
            f"| {size} | {job['dtype']} | {job['path']} | {result['total_s']:.1f} | {fmt_ms(step)} | "
            f"{fmt_gib(result.get('peak_rss_bytes'))} | {fmt_gib(result.get('cuda_peak_bytes'))} |"
        )
    for job, result in zip(jobs, results):
        if job["kind"] == "precision":
            lines += [
                "",
                f"### Reduced precision against float32 ({job['size']}², {job['steps']}-step posterior restoration, "
                "same noise)",
                "",
                "eps: the channel LayerNorm's; the authors' rule is 1e-5 in float32 and 1e-3 in other dtypes, "
                "`unet.set_channel_norm_eps(1e-5)` keeps 1e-5. Restored PSNR compares the clamped output images; "
                "the final state is x_0 before clamping.",
                "",
                "| variant | UNet max abs error (output max) | UNet mean abs error | final state max abs error | "
                "restored PSNR vs fp32 dB | DA-CLIP content 1 − cos | DA-CLIP degradation 1 − cos | "
                "UNet forward ms (fp32) |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for name in job["variants"]:
                entry = result.get(name, {}) if "error" not in result else {"error": result["error"]}
                if "error" in entry:
                    lines.append(f"| {name} | {entry['error']} | | | | | | |")
                    continue
                lines.append(
                    f"| {name} | {entry['unet_max_abs_error']:.3g} ({entry['unet_output_max_abs']:.2f}) | "
                    f"{entry['unet_mean_abs_error']:.3g} | {entry['final_state_max_abs_error']:.3g} | "
                    f"{entry['restored_psnr_db']:.1f} | {1 - entry['daclip_content_cosine']:.1e} | "
                    f"{1 - entry['daclip_degradation_cosine']:.1e} | {fmt_ms(entry['unet_forward_s'])} "
                    f"({fmt_ms(entry['unet_forward_float32_s'])}) |"
                )
        elif job["kind"] == "batch":
            lines += ["", f"### Batch throughput ({job['size']}², {job['dtype']}, ours)", ""]
            if "error" in result:
                lines.append(result["error"])
            else:
                for batch in job["batches"]:
                    entry = result[str(batch)]
                    lines.append(f"- batch {batch}: {entry['images_per_s']:.2f} images/s "
                                 f"({fmt_ms(best(entry['wall']))} ms per call)")
        elif job["kind"] == "compile":
            lines += ["", f"### torch.compile ({job['size']}², {job['dtype']}, freezing={job.get('freezing', False)})", ""]
            if "error" in result:
                lines.append(f"- failed: {result['error']}")
            else:
                eager, compiled = best(result["eager_wall"]), best(result["compiled_wall"])
                lines.append(f"- eager {fmt_ms(eager)} ms, compiled {fmt_ms(compiled)} ms "
                             f"(ratio {compiled / eager:.2f}); compile + first call {result['compile_and_first_call_s']:.0f} s; "
                             f"max abs difference {result['max_abs_difference']:.1e}")
    return "\n".join(lines) + "\n"


def write_section(path: Path, device_kind: str, text: str) -> None:
    """Replace this device's generated section of the results file, keeping everything else (notes, other device)."""
    start, end = f"<!-- benchmark:{device_kind}:start -->", f"<!-- benchmark:{device_kind}:end -->"
    section = f"{start}\n{text}{end}"
    existing = path.read_text() if path.exists() else ""
    if start in existing and end in existing:
        before, rest = existing.split(start, 1)
        after = rest.split(end, 1)[1]
        path.write_text(before + section + after)
    else:
        path.write_text((existing.rstrip() + "\n\n" if existing else "# Restoration benchmark results\n\n") + section + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors-code", help="folder with the authors' DenoisingUNet_arch.py, module_util.py, attention.py")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--threads", type=int, help="torch threads in each child (default: torch's default)")
    parser.add_argument("--quick", action="store_true", help="256² and 512² only, no tiled run")
    parser.add_argument("--sizes", type=int, nargs="+", help="image sizes (default 256 512 1024)")
    parser.add_argument("--tiled-size", type=int, default=2048, help="size of the tiled restoration (0: none)")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of a UNet step at ≤512² (default 2)")
    parser.add_argument("--steps", type=int, default=2, help="sampling steps of the short restorations (default 2)")
    parser.add_argument("--tiled-steps", type=int, default=1, help="sampling steps of the tiled 2048² run (default 1)")
    parser.add_argument("--precision-steps", type=int, default=4, help="steps of the precision restorations")
    parser.add_argument("--precision-size", type=int, default=256)
    parser.add_argument("--kinds", nargs="+", choices=sorted(JOBS), help="run only these measurements")
    parser.add_argument("--dtypes", nargs="+", help="run only these dtypes (e.g. float32)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the UNet at 256²")
    parser.add_argument("--compile-freezing", action="store_true", help="with --compile: inductor freezing")
    parser.add_argument("--reference-memory-limit", type=float, default=None,
                        help="GiB the authors' attention may take; larger sizes are skipped (default: 60%% of memory)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return 0

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.reference_memory_limit is None:
        if args.device.startswith("cuda"):
            total = torch.cuda.get_device_properties(0).total_memory
        else:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        args.reference_memory_limit = 0.6 * total / GIB
    if args.authors_code and not (Path(args.authors_code) / "DenoisingUNet_arch.py").is_file():
        parser.error(f"{args.authors_code} has no DenoisingUNet_arch.py")
    info = machine_info(args.device)
    jobs = plan(args)
    results = []
    started = time.perf_counter()
    for job in jobs:
        result = launch(job, args.timeout)
        if "error" in result:
            print(f"    {result['error']}", flush=True)
        results.append(result)
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    info["benchmark_wall_s"] = time.perf_counter() - started
    text = report(info, jobs, results, args)
    text += f"\nWhole benchmark: {info['benchmark_wall_s'] / 60:.1f} min.\n"
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    device_kind = "cuda" if args.device.startswith("cuda") else "cpu"
    output.with_name(f"{output.stem}_{device_kind}.json").write_text(
        json.dumps({"machine": info, "jobs": jobs, "results": results}, indent=1)
    )
    write_section(output, device_kind, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
