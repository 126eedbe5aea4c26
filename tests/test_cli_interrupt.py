"""Ctrl-C during `daclip restore`: exit 130, no traceback, no partial file, inputs intact, and a rerun
gives exactly the files of an uninterrupted run. Run as a real subprocess, since SIGINT is the point."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest

from daclip.cli import main, save_atomically

# The first image is small and the second larger (9× its pixels), so that the second is still being sampled when the first
# file appears and SIGINT lands mid-sampling even on a fast, idle machine; few steps enough to keep the test short.
# The third is never reached before the signal: small again (of its own size, so a mix-up shows), since the
# uninterrupted run and the rerun both sample it.
STEPS = "60"
SIZES = [(32, 40), (96, 120), (36, 44)]  # (height, width)


def _restore_args(inputs, out, tiny_model_args):
    return ["restore", str(inputs), "-o", str(out), "--steps", STEPS, "--seed", "3", "--device", "cpu", *tiny_model_args]


def _run_cli(args):
    # A child started from a non-interactive shell's background job inherits SIGINT as ignored, and Python
    # then never raises KeyboardInterrupt; restore the default so Ctrl-C reaches the CLI as in a terminal.
    return subprocess.Popen(
        [sys.executable, "-m", "daclip.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _pixels(path):
    with PIL.Image.open(path) as image:
        image.load()
        return np.asarray(image)


@pytest.fixture()
def inputs(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate(SIZES):
        PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    return folder


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process (POSIX)")
def test_ctrl_c_leaves_only_complete_files_and_a_rerun_matches_a_fresh_run(inputs, tmp_path, tiny_model_args):
    out = tmp_path / "out"
    args = _restore_args(inputs, out, tiny_model_args)
    inputs_before = _digests(inputs)

    process = _run_cli(args)
    try:
        deadline = time.monotonic() + 300
        while not (out.is_dir() and list(out.glob("*.png"))):
            assert process.poll() is None, f"finished before it could be interrupted: {process.communicate()}"
            assert time.monotonic() < deadline, "no output appeared"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "interrupted" in stderr.splitlines()[-1]
    assert _digests(inputs) == inputs_before

    written = sorted(os.listdir(out))  # listdir also shows hidden temporaries (".img1.xxxx.png.part")
    assert written and len(written) < len(SIZES), f"expected an interrupted run, found {written}"
    assert all(name.endswith(".png") and not name.startswith(".") for name in written), written
    for name in written:
        height, width = SIZES[int(name[len("img"):-len(".png")])]
        assert _pixels(out / name).shape == (height, width, 3), name

    # An uninterrupted run into a fresh folder (in process: the same code, minus the startup cost).
    fresh = tmp_path / "fresh"
    assert main(_restore_args(inputs, fresh, tiny_model_args)) == 0
    for name in written:
        np.testing.assert_array_equal(_pixels(out / name), _pixels(fresh / name), err_msg=f"{name}, before Ctrl-C")

    # Rerun the same command over what the interrupted run left: it finishes the rest, the finished files count as done.
    rerun = _run_cli(args)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert stdout.count("done already") == len(written), stdout
    assert sorted(os.listdir(out)) == sorted(os.listdir(fresh)) == [f"img{i}.png" for i in range(len(SIZES))]
    for name in os.listdir(fresh):
        np.testing.assert_array_equal(_pixels(out / name), _pixels(fresh / name), err_msg=name)
    assert _digests(inputs) == inputs_before


def test_ctrl_c_while_a_file_is_written_keeps_the_old_file_and_no_temporary(tmp_path):
    class HalfWritten:
        def save(self, path, format):
            with open(path, "wb") as handle:
                handle.write(b"\x89PNG half")
            raise KeyboardInterrupt

    target = tmp_path / "photo.png"
    target.write_bytes(b"the earlier result")
    with pytest.raises(KeyboardInterrupt):
        save_atomically(HalfWritten(), target)
    assert os.listdir(tmp_path) == ["photo.png"]
    assert target.read_bytes() == b"the earlier result"
