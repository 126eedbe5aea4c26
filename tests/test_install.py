"""Installing the pack into a ComfyUI-like environment never breaks the host (needs PyPI, as CI has).

The test builds a fresh virtual environment in the test's tmp folder that sees this test's own torch and
torchvision (linked in through a `.pth` file, so nothing big is downloaded), installs the host's transformers
first (ComfyUI's requirement; many environments pin `transformers<5`, and with it `huggingface_hub<1`), then
installs the pack the two documented ways, one after the other:

- ComfyUI-Manager: a clone in `custom_nodes/`, then `pip install <line>` for each line of `requirements.txt`;
- README: `pip install -r requirements.txt -e .` from the clone (the nodes plus the `daclip` command).

It then asserts `pip check` is clean, the host's transformers is the one it had (and its huggingface_hub too,
under transformers<5), and the nodes import the way ComfyUI imports a custom node folder. pip's cache lives in
the tmp folder too. pip does not byte-compile what it installs here (`--no-compile`): compiling changes neither what
is installed nor whether it imports, and for transformers' thousands of files it was a large share of the test's time.
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
# Copied into the fake clone: what the pack needs to install and import (not the tests, not the parity data).
CLONE_ITEMS = ["__init__.py", "cli.py", "demo.py", "pyproject.toml", "requirements.txt", "README.md", "daclip_nodes",
               "pipelines", "schedulers", "utils", "data", "workflows", "assets"]


def _closure(names):
    """The installed distributions `names` need (their requirements, recursively, without extras)."""
    found, pending = {}, list(names)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional platform package this machine does not have
        found[name] = distribution
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


@pytest.fixture(scope="module")
def shared_torch(tmp_path_factory):
    """A folder of links to this environment's torch, torchvision and what they need, for other venvs' .pth."""
    folder = tmp_path_factory.mktemp("shared-torch")
    for distribution in _closure(["torch", "torchvision"]).values():
        base = Path(distribution.locate_file(""))
        tops = {Path(str(path)).parts[0] for path in distribution.files or [] if not str(path).startswith("..")}
        for top in tops:
            if not (folder / top).exists() and (base / top).exists():
                os.symlink(base / top, folder / top)
    return folder


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pip-cache")


def _run(command, cwd=None, env=None):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _venv(path: Path, shared_torch: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)])
    python = path / "bin" / "python"
    site_packages = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    (Path(site_packages) / "shared_torch.pth").write_text(str(shared_torch) + "\n")
    return python


HOST_VERSIONS = "import transformers, huggingface_hub; print(transformers.__version__, huggingface_hub.__version__)"


# One process (an import of torch and transformers costs seconds): the nodes as ComfyUI imports them, then the host's
# versions as HOST_VERSIONS prints them, then the node names as JSON.
IMPORT_AS_COMFYUI = textwrap.dedent("""
    import importlib.util, json, sys
    folder = sys.argv[1]
    # As ComfyUI's load_custom_node: the folder's __init__.py under a module name of its own.
    spec = importlib.util.spec_from_file_location(folder.replace(".", "_x_"), folder + "/__init__.py",
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    import transformers
    from transformers import CLIPTokenizer  # what ComfyUI's own comfy/sd1_clip.py imports
""") + HOST_VERSIONS + textwrap.dedent("""
    print(json.dumps(sorted(module.NODE_CLASS_MAPPINGS)))
""")


def _assert_host_intact(python, env, before, clone, tmp_path):
    _run([str(python), "-m", "pip", "check"], env=env)
    after, nodes = _run([str(python), "-c", IMPORT_AS_COMFYUI, str(clone)], cwd=tmp_path, env=env).splitlines()[-2:]
    # Under transformers<5 neither transformers nor its huggingface_hub (0.x) may move.
    assert after == before.strip(), f"the install changed the host's transformers/huggingface_hub: {before} -> {after}"
    nodes = json.loads(nodes)
    assert "DACLIPRestore" in nodes and len(nodes) >= 6


def test_installing_the_pack_keeps_the_host_working(tmp_path, shared_torch, pip_cache):
    """One `transformers<5` host, installed into the Manager way and then the README way (each checked): one
    environment keeps the suite short on CI. The `transformers>=5` host was checked by hand (README)."""
    env = {**os.environ, "PIP_CACHE_DIR": str(pip_cache), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)  # the venv must find the pack only the way the install put it there
    clone = tmp_path / "custom_nodes" / "daclip"
    clone.mkdir(parents=True)
    for item in CLONE_ITEMS:
        source = REPO_ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, clone / item)
    python = _venv(tmp_path / "venv", shared_torch)
    pip = [str(python), "-m", "pip", "install", "-q", "--no-compile"]  # no .pyc: see the module's docstring
    _run([*pip, "transformers<5"], env=env)  # the host environment, before the pack
    before = _run([str(python), "-c", HOST_VERSIONS], env=env)

    # ComfyUI-Manager: `pip install <line>` for each line of requirements.txt.
    for line in (clone / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            _run([*pip, line.strip()], cwd=clone, env=env)
    _assert_host_intact(python, env, before, clone, tmp_path)

    # README: `pip install -r requirements.txt -e .` from the clone (adds the `daclip` command).
    _run([*pip, "-r", "requirements.txt", "-e", "."], cwd=clone, env=env)
    _assert_host_intact(python, env, before, clone, tmp_path)
    assert "download" in _run([str(tmp_path / "venv" / "bin" / "daclip"), "--help"], env=env)
