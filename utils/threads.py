"""CPU threads per process: one place that decides how many threads torch may use.

Two processes that each run torch's default (one thread per core) on the same cores oversubscribe them: on a
2-core CPU one demo UNet pass at 256² took 6.8 s with 2 threads against 0.46 s with 1 while another process was
busy (0.27 s with 2 threads when idle). Spinning OpenMP threads, not arithmetic, then dominate.
"""
from __future__ import annotations

import os
from typing import Optional

# The value torchrun and accelerate give OMP_NUM_THREADS when the user set none (accelerate: unless
# --num_cpu_threads_per_process); under a launcher we read it as "not chosen".
LAUNCHER_DEFAULT_OMP_THREADS = "1"


def available_cores() -> int:
    """Physical cores this process may run on (CPU affinity and hyper-threads taken into account), at least 1."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        logical = os.cpu_count() or 1
    try:
        import psutil  # an accelerate dependency

        total_logical = psutil.cpu_count(logical=True) or logical
        physical = psutil.cpu_count(logical=False) or total_logical
        logical = max(1, logical * physical // total_logical)
    except ImportError:
        pass
    return max(1, logical)


def local_process_count(default: int = 1) -> int:
    """How many processes of this job share this machine: LOCAL_WORLD_SIZE (set by torchrun and accelerate launch),
    else `default`."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else max(1, default)


def default_cpu_threads(local_processes: int = 1) -> Optional[int]:
    """The thread count daclip picks when the user chose none, or None to keep torch's own.

    - OMP_NUM_THREADS set by the user: kept (None).
    - several local processes (accelerate launch / torchrun, whose own default OMP_NUM_THREADS=1 leaves all but one
      core idle per process on a big machine): cores ÷ local processes, at least 1.
    - a single process: torch's default (one thread per core), None.
    """
    omp = os.environ.get("OMP_NUM_THREADS")
    if local_processes > 1 and omp in (None, LAUNCHER_DEFAULT_OMP_THREADS):
        return max(1, available_cores() // local_processes)
    return None


def configure_cpu_threads(threads: Optional[int] = None, local_processes: Optional[int] = None) -> int:
    """Set torch's intra-op thread count for this process and return the count in effect.

    Args:
        threads: an explicit count (e.g. `--threads`), ≥ 1; wins over everything else.
        local_processes: processes of this job on this machine; default from LOCAL_WORLD_SIZE.
    Raises:
        ValueError: `threads` < 1.
    """
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}.")
    if threads is None:
        threads = default_cpu_threads(local_process_count(local_processes or 1))
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
