#!/usr/bin/env python
"""MRSamplerScheduler against the MR Sampler's own code on 120 settings beyond the parity fixture.

Runs the authors' `MRSampler` (GitHub grrrute/mr-sampler, `universal-image-restoration/utils/sampler.py`, from a
local checkout you give; nothing of it is shipped here) and our scheduler side by side with a cheap nonlinear
stand-in for the UNet, over every solver × order × parameterization × fit target × time grid, with random θ
schedule, max_sigma, eps, T, step count, lambda_min, thresholding and denoise_last; SDE noise is replayed.
Prints the worst relative state error per solver/order/parameterization; exits 1 on any error above 1e-5.

    git clone https://github.com/grrrute/mr-sampler /tmp/mr-sampler
    python benchmarks/mrs_reference_check.py --mr-sampler /tmp/mr-sampler
"""
import argparse, importlib.util, itertools, sys, tempfile, types, random
import numpy as np, torch

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--mr-sampler", required=True, help="a checkout of github.com/grrrute/mr-sampler")
args = parser.parse_args()
np.int = int  # their annotation NDArray[np.int] predates numpy 1.24
sys.modules["cv2"] = types.SimpleNamespace(imwrite=lambda *a, **k: None, cvtColor=lambda x, c: x, COLOR_RGB2BGR=0)
root = f"{args.mr_sampler}/universal-image-restoration/utils/"
utils = types.ModuleType("utils"); utils.__path__ = []; sys.modules["utils"] = utils
def load(name):
    spec = importlib.util.spec_from_file_location(f"utils.{name}", root + f"{name}.py")
    module = importlib.util.module_from_spec(spec); sys.modules[f"utils.{name}"] = module; spec.loader.exec_module(module)
    setattr(utils, name, module); return module
sde_utils = load("sde_utils"); sampler = load("sampler")
from daclip import MRSamplerScheduler

def fake(x, mu, t, **kwargs):
    t = float(t)
    return 0.5 * torch.tanh(3 * (x - mu)) + 0.1 * np.sin(t / 10) * x + 0.05 * mu

worst = {}
cases = []
rng = random.Random(0)
for solver, order, param, fit, spacing in itertools.product(["ode", "sde"], [1, 2, 3], ["data", "noise"], ["noise", "data"],
        ["linspace", "leading", "trailing", "karras-n", "karras-t", "linear-lambda"]):
    if solver == "sde" and order == 3: continue
    cases.append(dict(solver=solver, order=order, param=param, fit=fit, spacing=spacing,
        schedule=rng.choice(["cosine", "linear"]), max_sigma=rng.choice([50, 10, 0.1]), eps=rng.choice([0.005, 0.01]),
        T=rng.choice([100, 50]), steps=rng.choice([3, 5, 9, 12, 25]), lambda_min=rng.choice([-5.0, -3.0, -2.0, float("-inf")]),
        thr=param == "data" and rng.random() < 0.3, last=param == "data" and rng.random() < 0.3))
failures = 0
for c in cases:
    if c["spacing"] == "leading" and c["T"] // (c["steps"] + 1) < 1: continue
    opt = {"sde": {"max_sigma": c["max_sigma"], "T": c["T"], "schedule": c["schedule"], "eps": c["eps"]}}
    dev = torch.device("cpu")
    base = types.SimpleNamespace(device=dev, T=c["T"], max_sigma=(c["max_sigma"] / 255 if c["max_sigma"] >= 1 else c["max_sigma"]), model=fake)
    theirs = sampler.MRSampler(base, opt, c["steps"], solver_type=c["solver"], parameterization=c["param"], order=c["order"],
        fit_target=c["fit"], lambda_min=c["lambda_min"], time_schedule=c["spacing"], thresholding=c["thr"], denoise_last=c["last"])
    M = len(theirs.timesteps) - 1
    if M < c["order"]: continue  # their loop repeats a step there
    ours = MRSamplerScheduler(num_train_timesteps=c["T"], max_sigma=c["max_sigma"], schedule=c["schedule"], eps=c["eps"],
        prediction_type="epsilon" if c["fit"] == "noise" else "sample", solver=c["solver"], solver_order=c["order"],
        parameterization=c["param"], timestep_spacing=c["spacing"], lambda_min=c["lambda_min"], thresholding=c["thr"], denoise_last=c["last"])
    try:
        ours.set_timesteps(c["steps"])
    except ValueError as e:
        print("refused", c, e); continue
    g = torch.Generator().manual_seed(1)
    mu = torch.rand(1, 3, 9, 11, generator=g)
    start = mu + torch.randn(mu.shape, generator=g) * base.max_sigma
    draws = []
    real = torch.randn_like
    def recording(x, *a, **k):
        z = real(x, *a, **k); draws.append(z.clone()); return z
    sampler.torch.randn_like = recording
    torch.manual_seed(5)
    out, _, states = theirs.sampling(mu, noisy_state=start.clone(), savedir=tempfile.gettempdir())  # savedir: return the states
    sampler.torch.randn_like = real
    if c["solver"] == "sde" and len(draws) != len(ours.timesteps) - (1 if c["last"] else 0):
        print("draws", len(draws), "steps", len(ours.timesteps), c, theirs.timesteps); continue
    x = start.clone(); k = 0
    grid_err = float((ours.time_grid - torch.tensor(theirs.timesteps)).abs().max()) if len(ours.time_grid) == len(theirs.timesteps) else float("inf")
    for t in ours.timesteps:
        z = draws[k] if c["solver"] == "sde" and k < len(draws) else None; k += c["solver"] == "sde"
        x = ours.step(fake(x, mu, t), t, x, mu=mu, variance_noise=z).prev_sample
    ref = states[-1]
    err = float(((x - ref).abs() / ref.abs().clamp(min=1)).max())
    key = (c["solver"], c["order"], c["param"])
    worst[key] = max(worst.get(key, 0), err, grid_err)
    if err > 1e-5 or grid_err > 1e-5:
        failures += 1; print("MISMATCH", c, err, grid_err)
print(len(cases), "cases; failures", failures)
for key, value in sorted(worst.items()): print(key, f"{value:.2e}")
sys.exit(1 if failures else 0)
