"""Both ways in: the installed package `daclip`, and the cloned folder imported by file path as ComfyUI does."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO_ROOT

PUBLIC_NAMES = [
    "DACLIPPipeline",
    "DACLIPModel",
    "DACLIPUNet2DModel",
    "IRSDEScheduler",
    "IRSDEPosteriorScheduler",
    "MRSamplerScheduler",
    "DEGRADATIONS",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
]


def _package_sources():
    skip = {"tests", "scripts", "benchmarks", ".ci", ".venv", "build", "assets", "workflows"}
    for path in REPO_ROOT.rglob("*.py"):
        relative = path.relative_to(REPO_ROOT)
        if relative.parts[0] in skip or any(part.startswith(".") or part.endswith(".egg-info") for part in relative.parts):
            continue
        yield path


def test_installed_package_exposes_public_api():
    import daclip

    assert Path(daclip.__file__).resolve() == (REPO_ROOT / "__init__.py").resolve()
    for name in PUBLIC_NAMES:
        assert hasattr(daclip, name), name
    assert len(daclip.DEGRADATIONS) == 10


def test_package_uses_only_relative_imports_of_itself():
    """Absolute imports of our own modules would break the ComfyUI way in (and `pipelines` exists on PyPI)."""
    own_top_level = {"daclip", "pipelines", "schedulers", "daclip_nodes", "utils", "cli"}
    offenders = []
    for path in _package_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {name}" for name in names if name in own_top_level]
    # hub.py writes `from daclip import ...` into shim *files* as a string; strings are not imports.
    assert offenders == []


def test_folder_imports_by_file_path_under_a_hyphenated_name(tmp_path):
    """ComfyUI imports `custom_nodes/<folder>/__init__.py` under a module name of its own choosing."""
    clone = tmp_path / "ComfyUI-DA-CLIP-main"
    clone.symlink_to(REPO_ROOT, target_is_directory=True)
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.path = [p for p in sys.path if p not in ("", {str(REPO_ROOT)!r})]
        # make sure the installed package cannot be what answers
        sys.modules["daclip"] = None
        name = "ComfyUI-DA-CLIP-main"
        spec = importlib.util.spec_from_file_location(name, {str(clone / "__init__.py")!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        assert module.DACLIPPipeline.__module__.startswith(name + "."), module.DACLIPPipeline.__module__
        for attr in {PUBLIC_NAMES!r}:
            assert hasattr(module, attr), attr
        assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
        print("ok", len(module.NODE_CLASS_MAPPINGS))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_wheel_maps_the_repository_root_to_the_package(tmp_path):
    """A regular (non-editable) build ships the root as `daclip/` with its subpackages and no tests."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(REPO_ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import zipfile

    (wheel,) = tmp_path.glob("daclip-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "daclip/__init__.py",
        "daclip/cli.py",
        "daclip/pipelines/daclip/modeling_daclip.py",
        "daclip/pipelines/daclip/unet_daclip.py",
        "daclip/pipelines/daclip/pipeline_daclip.py",
        "daclip/schedulers/scheduling_irsde.py",
        "daclip/schedulers/scheduling_mrs.py",
        "daclip/schedulers/samplers.py",
        "daclip/utils/threads.py",
        "daclip/assets/demo-model/scheduler/scheduling_mrs.py",
        "daclip/daclip_nodes/__init__.py",
        "daclip/utils/checkpoint_io.py",
        "daclip/demo.py",
        # what the CLI uses with no model given, and README's examples
        "daclip/assets/demo-model/model_index.json",
        "daclip/assets/demo-model/daclip/diffusion_pytorch_model.safetensors",
        "daclip/assets/demo-model/unet/diffusion_pytorch_model.safetensors",
        "daclip/assets/demo-model/scheduler/scheduler_config.json",
        "daclip/assets/examples/hazy_real.jpg",
    ]:
        assert expected in names, expected
    assert not any(name.startswith("daclip/tests/") for name in names)
