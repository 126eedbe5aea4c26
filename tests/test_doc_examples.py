"""The shell examples of README.md and scripts/README.md run as written, from the root of a clone.

A fenced ```bash block preceded by `<!-- doc-test -->` is run; `<!-- doc-test: --flag value ... -->` first sets
each listed option of the block's commands to that value (tiny settings: a few steps instead of a thousand), and
each listed option must occur in the block, so a marker cannot silently stop applying. The marked blocks of a file
run in order, in one folder that looks like a fresh clone (the repository's top-level entries linked into a
temporary folder), so a later example may use what an earlier one wrote, as a reader following the page would.
`pip install` lines are skipped: installing is the CI's job (`.ci/run`), and the test environment has the package
and its `test` extra.
"""
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

MARKER = re.compile(r"<!--\s*doc-test(?::(?P<options>[^>]*))?\s*-->\s*\n+```(?:bash|sh)\n(?P<code>.*?)\n```", re.S)


def doc_examples(markdown: Path):
    """[(options to set, code)] for each marked block of `markdown`, in order."""
    examples = []
    for match in MARKER.finditer(markdown.read_text(encoding="utf-8")):
        words = shlex.split(match.group("options") or "")
        assert len(words) % 2 == 0 and all(word.startswith("--") for word in words[::2]), match.group(0)[:200]
        examples.append((dict(zip(words[::2], words[1::2])), match.group("code")))
    return examples


def tiny(code: str, options: dict) -> str:
    """`code` with each `--option value` of `options` set, and without `pip install` lines."""
    for option, value in options.items():
        code, count = re.subn(rf"(?<!\S){re.escape(option)}\s+\S+", f"{option} {value}", code)
        assert count, f"{option} is not in the example:\n{code}"
    return "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("pip install"))


def fresh_clone(folder: Path) -> Path:
    """A folder that looks like the repository's root (its entries linked in) where examples can write."""
    for entry in REPO_ROOT.iterdir():
        if entry.name not in {".git", ".venv", "__pycache__", ".pytest_cache"}:
            (folder / entry.name).symlink_to(entry)
    return folder


# What each page's examples leave behind (checked after they all ran): the files the text promises.
PROMISED = {
    "README.md": ["my_pairs/hazy/LQ", "my_pairs/noisy/GT", "my-restorer/model_index.json", "my-restorer/training_recipe.json",
                  "restored/coffee_hazy_synthetic.png", "my-daclip/config.json", "my-restorer-2/model_index.json"],
    "scripts/README.md": ["tiny-demo/model_index.json", "tiny-restored/coffee_noisy_synthetic.png"],
}


def run_page(markdown: str, folder: Path) -> Path:
    """Run the marked examples of `markdown`, in order, in `folder` made a fresh clone; returns the clone."""
    examples = doc_examples(REPO_ROOT / markdown)
    assert examples, f"no <!-- doc-test --> blocks in {markdown}"
    clone = fresh_clone(folder)
    # The console scripts of this environment (`daclip`, `accelerate`) first on PATH; one thread per process.
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "1",
    }
    for options, code in examples:
        script = tiny(code, options)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{markdown} example failed:\n{script}\n{(result.stdout + result.stderr)[-6000:]}"
    return clone


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    """{page: a future of `run_page`}, all pages started at once, each in a thread of its own: an example runs one
    single-threaded process at a time, so two pages side by side use both cores of a 2-core CI machine."""
    with concurrent.futures.ThreadPoolExecutor(len(PROMISED)) as pool:
        yield {markdown: pool.submit(run_page, markdown, tmp_path_factory.mktemp("clone")) for markdown in sorted(PROMISED)}


@pytest.mark.parametrize("markdown", sorted(PROMISED))
def test_marked_examples_run_as_written(markdown, page_runs):
    clone = page_runs[markdown].result()
    missing = [path for path in PROMISED[markdown] if not (clone / path).exists()]
    assert not missing, missing
    if markdown == "README.md":
        # Fine-tuning the demo model kept its recipe (objective x0, clean-image prediction, EMA).
        recipe = json.loads((clone / "my-restorer" / "training_recipe.json").read_text())
        assert (recipe["objective"], recipe["prediction_type"], recipe["use_ema"]) == ("x0", "sample", True)
