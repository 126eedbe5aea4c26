"""`daclip restore` split across processes by accelerate: each process restores its share, the files are those of a
single-process run.

accelerate 1.x starts several CPU processes through its torchrun launcher (`--multi_gpu`, which on a machine
without GPUs runs CPU processes that join through gloo). Note that `accelerate launch --cpu --num_processes K`
without an MPI host file starts a single process (which then restores every input).
"""
import os
import re
import shutil
import subprocess

import numpy as np
import PIL.Image
import pytest

from conftest import decompression_bomb
from daclip.cli import main

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate command is not installed")

NAMES = ["a", "b", "c", "d", "e"]


@pytest.fixture()
def photos(tmp_path, reference):
    folder = tmp_path / "photos"
    folder.mkdir()
    base = reference["preproc.lq_37x53.uint8_hwc_rgb"]
    for index, name in enumerate(NAMES):
        # different contents and sizes, so that a mix-up between images or seeds would show
        image = np.roll(base, 5 * index, axis=1)[: 34 + index, : 45 + 2 * index]
        PIL.Image.fromarray(image).save(folder / f"{name}.png")
    return folder


@pytest.fixture()
def model_args(tiny_model_args):
    return [*tiny_model_args, "--steps", "2", "--seed", "3", "--device", "cpu"]


def launch(launcher_args, photos, out, model_args, python_path=()):
    command = [
        "accelerate", "launch", *launcher_args, "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "daclip.cli", "restore", str(photos), "-o", str(out), *model_args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([*map(str, python_path), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)


# Imported by every Python process of the launch (a `sitecustomize` on PYTHONPATH): the pipeline runs out of memory
# on images 53 pixels wide, as a real one would on a large image.
OUT_OF_MEMORY_ON_53_WIDE = """
from daclip import DACLIPPipeline
_call = DACLIPPipeline.__call__
def _call_or_run_out(self, image, *args, **kwargs):
    if getattr(image, "size", None) == (53, 37):
        raise MemoryError("simulated")
    return _call(self, image, *args, **kwargs)
DACLIPPipeline.__call__ = _call_or_run_out
"""


def pixels(folder):
    return {path.name: np.asarray(PIL.Image.open(path)) for path in sorted(folder.glob("*.png"))}


def test_two_processes_write_what_one_process_writes(photos, tmp_path, model_args):
    assert main(["restore", str(photos), "-o", str(tmp_path / "single"), *model_args]) == 0
    single = pixels(tmp_path / "single")
    assert sorted(single) == [f"{name}.png" for name in NAMES]

    result = launch(["--multi_gpu", "--num_processes", "2"], photos, tmp_path / "split", model_args)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each process restored its own share: inputs 0, 2, 4 and 1, 3, each exactly once.
    log = result.stdout + result.stderr
    for position, name in enumerate(NAMES):
        lines = [line for line in log.splitlines() if f"{name}.png ->" in line]
        assert len(lines) == 1, (name, log[-3000:])
        assert lines[0].lstrip().startswith(f"[{position % 2 + 1}/2]"), lines[0]
    split = pixels(tmp_path / "split")
    assert sorted(split) == sorted(single)
    for name, image in single.items():
        np.testing.assert_array_equal(split[name], image, err_msg=name)
    assert not list((tmp_path / "split").glob("*.part"))


def test_a_failing_share_does_not_cut_the_other_short(photos, tmp_path, model_args):
    """Every image of process 1 fails, so it is done at once, with an error: one is damaged, one a decompression bomb,
    one runs out of memory. Each is one line, no traceback. The launcher stops every process when one exits with an
    error, so it must wait: process 2 still writes its whole share; the launch fails."""
    (photos / "a.png").write_bytes(b"\x89PNG not really")  # inputs 0, 2, 4: process 1's share
    decompression_bomb(photos / "c.png")
    assert PIL.Image.open(photos / "e.png").size == (53, 37)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(OUT_OF_MEMORY_ON_53_WIDE)
    for name in ("b", "d"):  # process 2's share: seconds of work after process 1 is done
        PIL.Image.open(photos / f"{name}.png").resize((192, 192)).save(photos / f"{name}.png")
    model_args = [*model_args, "--steps", "12"]
    result = launch(["--multi_gpu", "--num_processes", "2"], photos, tmp_path / "out", model_args, [hooks])
    assert result.returncode != 0
    failures = re.findall(r"failed \S+\.png: [^\r\n]*", result.stderr)
    assert len(failures) == 3, result.stderr[-3000:]
    for name, reason in (("a", "cannot read"), ("c", "decompression bomb"), ("e", "out of memory")):
        assert any(f"{name}.png" in line and reason in line for line in failures), (name, failures)
    # The launcher prints its own traceback for the failed process; none comes from daclip's code.
    assert "--tile-size" in result.stderr and not re.search(r'File "[^"]*daclip[^"]*"', result.stderr)
    assert sorted(pixels(tmp_path / "out")) == ["b.png", "d.png"]
