"""`daclip download` and `download_original_checkpoints(local_dir=...)` against a local stand-in for the Hub.

The stand-in answers the two requests huggingface_hub and the downloader make on huggingface.co: HEAD
`/<repo>/resolve/<revision>/<file>` (size, ETag = sha256 for LFS files, commit) and GET with or without a
Range header. It can be told to cut a response short, as a dropped connection would.
"""
import hashlib
import http.server
import os
import threading

import pytest

from daclip.cli import main
from daclip.pipelines.daclip.hub import ORIGINAL_CHECKPOINTS, ORIGINAL_REPO_ID, download_original_checkpoints

COMMIT = "0" * 40


class StandInHub:
    def __init__(self, files):
        self.files = files  # filename -> bytes
        self.requests = []  # (method, filename, Range header or None)
        self.cut_next_get_at = None  # send only this many bytes of the next GET, then close
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _file(self):
                prefix = f"/{ORIGINAL_REPO_ID}/resolve/main/"
                name = self.path[len(prefix):] if self.path.startswith(prefix) else None
                return name, stand_in.files.get(name)

            def _head(self, name, data, status=200, length=None, extra=()):
                self.send_response(status)
                self.send_header("Content-Length", str(len(data) if length is None else length))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Accept-Ranges", "bytes")
                for key, value in extra:
                    self.send_header(key, value)
                self.end_headers()

            def do_HEAD(self):
                name, data = self._file()
                stand_in.requests.append(("HEAD", name, None))
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._head(name, data)

            def do_GET(self):
                name, data = self._file()
                byte_range = self.headers.get("Range")
                stand_in.requests.append(("GET", name, byte_range))
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(byte_range.split("=")[1].split("-")[0]) if byte_range else 0
                body = data[start:]
                extra = [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")] if byte_range else []
                self._head(name, data, 206 if byte_range else 200, len(body), extra)
                cut, stand_in.cut_next_get_at = stand_in.cut_next_get_at, None
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def gets(self, name):
        return [request for request in self.requests if request[0] == "GET" and request[1] == name]


@pytest.fixture()
def hub():
    # Distinct, incompressible-looking contents, big enough for several read chunks.
    files = {
        name: hashlib.sha256(name.encode()).digest() * (70_000 + index)
        for index, name in enumerate(name for pair in ORIGINAL_CHECKPOINTS.values() for name in pair)
    }
    stand_in = StandInHub(files)
    stand_in.thread.start()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def test_download_writes_the_released_files_into_the_folder(hub, tmp_path):
    paths = download_original_checkpoints("universal", local_dir=tmp_path / "daclip", endpoint=hub.endpoint, progress=False)
    assert [os.path.basename(path) for path in paths] == list(ORIGINAL_CHECKPOINTS["universal"])
    for path in paths:
        with open(path, "rb") as file:
            assert file.read() == hub.files[os.path.basename(path)]
    assert sorted(os.listdir(tmp_path / "daclip")) == sorted(ORIGINAL_CHECKPOINTS["universal"]), "no partial files left"


def test_download_never_overwrites_and_skips_what_is_there(hub, tmp_path):
    folder = tmp_path / "daclip"
    folder.mkdir()
    mine = folder / "daclip_ViT-B-32.pt"
    mine.write_bytes(b"my own file")
    download_original_checkpoints("universal", local_dir=folder, endpoint=hub.endpoint, progress=False)
    assert mine.read_bytes() == b"my own file"
    assert hub.gets("daclip_ViT-B-32.pt") == [], "an existing file is not even fetched"
    assert (folder / "universal-ir.pth").read_bytes() == hub.files["universal-ir.pth"]


def test_an_interrupted_download_leaves_no_file_and_resumes(hub, tmp_path):
    folder = tmp_path / "daclip"
    name = "wild-ir.pth"
    hub.cut_next_get_at = 300_000
    with pytest.raises(OSError, match="resume"):
        download_original_checkpoints("wild", local_dir=folder, endpoint=hub.endpoint, progress=False)
    # The first file of the pair was cut: neither target exists; the second run continues where it stopped.
    first = ORIGINAL_CHECKPOINTS["wild"][0]
    assert not (folder / first).exists() and not (folder / name).exists(), "a target appears only once complete"
    download_original_checkpoints("wild", local_dir=folder, endpoint=hub.endpoint, progress=False)
    assert (folder / first).read_bytes() == hub.files[first]
    assert (folder / name).read_bytes() == hub.files[name]
    ranges = [byte_range for _, _, byte_range in hub.gets(first)]
    assert ranges[0] is None and ranges[-1] == "bytes=300000-", ranges
    assert sorted(os.listdir(folder)) == sorted(ORIGINAL_CHECKPOINTS["wild"])


def test_a_corrupt_partial_file_is_refused_not_installed(hub, tmp_path):
    folder = tmp_path / "daclip"
    folder.mkdir()
    name = ORIGINAL_CHECKPOINTS["mix"][0]
    etag = hashlib.sha256(hub.files[name]).hexdigest()
    (folder / f".{name}.{etag}.part").write_bytes(b"x" * 1000)  # right length so far, wrong bytes
    with pytest.raises(OSError, match="sha256"):
        download_original_checkpoints("mix", local_dir=folder, endpoint=hub.endpoint, progress=False)
    assert not (folder / name).exists()
    download_original_checkpoints("mix", local_dir=folder, endpoint=hub.endpoint, progress=False)
    assert (folder / name).read_bytes() == hub.files[name]


def test_cli_download(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    folder = tmp_path / "models" / "daclip"
    assert main(["download", "universal", "--to", str(folder), "--endpoint", hub.endpoint]) == 0
    out = capsys.readouterr().out
    for name in ORIGINAL_CHECKPOINTS["universal"]:
        assert (folder / name).read_bytes() == hub.files[name]
        assert name in out
    assert main(["download", "universal", "--to", str(folder), "--endpoint", hub.endpoint]) == 0
    assert "kept" in capsys.readouterr().out


def test_cli_download_reports_a_failure_without_a_traceback(hub, tmp_path, capsys):
    code = main(["download", "universal", "--to", str(tmp_path), "--endpoint", hub.endpoint, "--repo", "nobody/nothing"])
    assert code == 1
    err = capsys.readouterr().err
    assert "daclip download: " in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_cli_download_needs_a_variant_and_a_folder(capsys):
    with pytest.raises(SystemExit):
        main(["download", "universal"])
    with pytest.raises(SystemExit):
        main(["download", "tiny", "--to", "x"])
