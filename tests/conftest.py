import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

# The suite runs on pytest-xdist workers, one per logical CPU (tests/pytest.ini's addopts). Each worker gets its share of
# the CPUs as torch threads, and so do the processes it starts (OMP_NUM_THREADS, unless already set): on CI's
# 2 cores, two workers of one thread each. The fixtures' models are tiny: a second thread per worker would only
# compete with the other worker, and idle OpenMP threads can spin on a shared CPU.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    import torch

    _CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _WORKER_THREADS = max(1, _CPUS // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_WORKER_THREADS))
    torch.set_num_threads(_WORKER_THREADS)

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI lays the project's shared folder beside the checkout; DACLIP_SHARED overrides.
SHARED = Path(os.environ.get("DACLIP_SHARED", REPO_ROOT.parent / "shared"))
PARITY = SHARED / "parity"
WEIGHTS = PARITY / "weights"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def reference():
    """The authors' outputs on the tiny fixtures, as a dict of numpy arrays."""
    with np.load(PARITY / "reference_tiny.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def parity_dir():
    return PARITY


@pytest.fixture(scope="session")
def weights_dir():
    return WEIGHTS


@pytest.fixture(scope="session")
def tiny_model_args():
    """The CLI's model arguments for the tiny fixture pair (authors' formats)."""
    return [
        "--daclip", str(WEIGHTS / "daclip_tiny.pt"),
        "--unet", str(WEIGHTS / "universal-ir_tiny.pth"),
        "--daclip-config", str(PARITY / "daclip_tiny.json"),
    ]


@pytest.fixture(scope="session")
def tiny_pipeline():
    """The tiny fixture pair (authors' formats) as a DACLIPPipeline with the authors' posterior scheduler; build your
    own `DACLIPPipeline(tiny_pipeline.daclip, tiny_pipeline.unet, scheduler)` to change the scheduler."""
    from daclip import DACLIPPipeline

    pipe = DACLIPPipeline.from_original_checkpoints(
        WEIGHTS / "daclip_tiny.pt", WEIGHTS / "universal-ir_tiny.pth", daclip_config=PARITY / "daclip_tiny.json"
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def decompression_bomb(path):
    """A PNG of ~70 bytes whose header says 13,400 × 13,400 pixels (over Pillow's 2 × MAX_IMAGE_PIXELS)."""
    buffer = io.BytesIO()
    PIL.Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">II", data, 16, 13400, 13400)  # IHDR width, height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
