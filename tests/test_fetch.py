"""`facecue fetch` and `facecue check-thesis` end to end against a real HTTP server on 127.0.0.1 that serves,
in the real hosts' URL layouts, random-weight files in the published formats (Hugging Face's resolve endpoint
for PE-Core, GitHub's LFS media paths for the checkpoint, raw paths for the demo files). Faults are made for
real: a corrupted byte, a connection dropped mid-file, a 404, no server at all."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("huggingface_hub")

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "models" / "pe-core-test-tiny.yaml"
GITHUB, COMMIT = "thesis-owner/PE_TEST", "abc1234"
HF_REPO, HF_FILE = "facebook/PE-Core-Tiny", "PE-Core-Tiny.pt"


class Files(BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}
    faults: dict[str, str] = {}  # url path → "corrupt" | "drop" | "404"
    ranges: list[str] = []

    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        path = self.path.split("?")[0]
        data, fault = self.routes.get(path), self.faults.get(path)
        if data is None or fault == "404":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        sha256 = hashlib.sha256(data).hexdigest()  # of the published file, also when the bytes sent are corrupt
        if fault == "corrupt":
            data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
        start = 0
        if self.headers.get("Range"):
            self.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        if "/resolve/" in path:  # what huggingface_hub reads from the Hub's resolve endpoint
            self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("X-Linked-Etag", f'"{sha256}"')  # an LFS file: the Hub's etag is its sha256
            self.send_header("X-Linked-Size", str(len(data)))
        self.end_headers()
        if not body:
            return
        if fault == "drop":  # half the file, then the connection goes
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(data[start:])


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Random tiny files in the published layouts, the pins that describe them, and the server."""
    from export.random_checkpoint import write_random_checkpoint

    root = tmp_path_factory.mktemp("published")
    weights, adapters = write_random_checkpoint(str(TINY), root, rank=4)
    routes = {f"/{HF_REPO}/resolve/main/{HF_FILE}": weights.read_bytes()}
    files = []
    for name in ("adapter_model.safetensors", "adapter_config.json", "custom_layers.pt"):
        data = (adapters / name).read_bytes()
        path = f"checkpoints/mtl_dora_ckpt/{name}"
        routes[f"/media/{GITHUB}/{COMMIT}/{path}"] = data
        files.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    release = {"backbone": str(TINY), "weights_repo": HF_REPO, "weights_file": HF_FILE, "weights_revision": "main",
               "github_repo": GITHUB, "commit": COMMIT, "files": files}
    pins = root / "pins.json"
    pins.write_text(json.dumps({"releases": {"thesis-dora": release}, "github_repo": GITHUB, "commit": COMMIT,
                                "demo_images": [{"image": "demo_images/pair.png",
                                                 "labels": "predicted/annotated/labels/pair.txt"}]}))
    Files.routes = routes
    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield {"pins": pins, "url": f"http://127.0.0.1:{server.server_address[1]}", "root": root}
    finally:
        server.shutdown()
        server.server_close()


def one_error(stderr: str) -> str:
    """The run's only error line (progress lines may precede it); no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def fetch(published, out: Path, hf_home: Path, *extra, env_extra=None, command="export.fetch"):
    env = {**os.environ, "FACECUE_PINS_FILE": str(published["pins"]), "HF_ENDPOINT": published["url"],
           "HF_HOME": str(hf_home), "FACECUE_LFS_URL": published["url"] + "/media",
           "FACECUE_RAW_URL": published["url"] + "/raw", "PYTHONPATH": str(REPO), **(env_extra or {})}
    args = [sys.executable, "-m", command, *extra] if command != "export.fetch" else \
        [sys.executable, "-m", command, "thesis-dora", "--out", str(out), *extra]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


@pytest.fixture(autouse=True)
def clean_faults():
    Files.faults, Files.ranges = {}, []
    yield
    Files.faults = {}


def _lfs(name: str) -> str:
    return f"/media/{GITHUB}/{COMMIT}/checkpoints/mtl_dora_ckpt/{name}"


@pytest.mark.slow
def test_fetch_exports_verifies_and_then_check_thesis_passes(published, tmp_path):
    done = fetch(published, tmp_path / "model", tmp_path / "hf", "--int8")
    assert done.returncode == 0, done.stderr
    model = tmp_path / "model" / "model.onnx"
    assert (tmp_path / "model" / "model.int8.onnx").is_file()  # calibrated on faces from the bundled clips
    assert model.is_file() and (tmp_path / "model" / "facecue-fetch.json").is_file()
    assert f"facecue run --source 0 --model {model}" in done.stdout
    manifest = json.loads((tmp_path / "model" / "facecue-fetch.json").read_text())
    assert manifest["verification"]["faces"] > 0  # face crops from the bundled clips
    assert not list((tmp_path / "model").rglob("*.partial"))
    again = fetch(published, tmp_path / "model", tmp_path / "hf", "--int8")
    assert again.returncode == 0 and "everything is in place" in again.stdout

    # the demo: a real frame with two faces, one square partly outside the image; the label file is what the
    # thesis demo would write, computed here with PIL's own crop (zero fill) and bilinear resize
    import onnxruntime as ort
    from PIL import Image

    from helpers_faces import TWO_PEOPLE_CLIP, clip_frame_rgb
    from runtime.metadata import read_model_info

    rgb = clip_frame_rgb(TWO_PEOPLE_CLIP)
    info = read_model_info(model)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    lines = []
    for x, y, side in [(56, 70, 76), (-20, 60, 90)]:
        crop = np.asarray(Image.fromarray(rgb).crop((x, y, x + side, y + side)).resize((info.input_size,) * 2, Image.BILINEAR))
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": crop[None]})))
        fields = []
        for task in ("age", "gender", "emotion"):
            logits = outputs[task][0]
            p = np.exp(logits - logits.max()); p /= p.sum()
            labels = next(t.labels for t in info.tasks if t.name == task)
            first, second = np.argsort(p)[::-1][:2]
            fields += [labels[first], f"{p[first]:.4f}", labels[second], f"{p[second]:.4f}"]
        lines.append(";".join(fields + [f"{x},{y},{side},{side}"]))
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    Files.routes[f"/raw/{GITHUB}/{COMMIT}/demo_images/pair.png"] = png.tobytes()
    Files.routes[f"/raw/{GITHUB}/{COMMIT}/predicted/annotated/labels/pair.txt"] = "\n".join(lines).encode()
    checked = fetch(published, None, tmp_path / "hf", str(model), command="export.check_thesis")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PASS" in checked.stdout and checked.stdout.count(" ok") == 6

    tampered = lines[0].split(";")
    tampered[1] = f"{float(tampered[1]) - 0.1:.4f}"  # the published top-1 probability moved by 0.1
    Files.routes[f"/raw/{GITHUB}/{COMMIT}/predicted/annotated/labels/pair.txt"] = "\n".join([";".join(tampered), lines[1]]).encode()
    failed = fetch(published, None, tmp_path / "hf", str(model), command="export.check_thesis")
    assert failed.returncode == 1 and "FAIL" in failed.stdout and "PROBABILITY" in failed.stdout


def test_corrupted_byte_is_refused_and_nothing_is_kept(published, tmp_path):
    Files.faults = {_lfs("custom_layers.pt"): "corrupt"}
    done = fetch(published, tmp_path / "model", tmp_path / "hf")
    assert done.returncode == 2
    error = one_error(done.stderr)
    assert "sha256" in error and "does not match" in error
    assert not (tmp_path / "model" / "checkpoint" / "custom_layers.pt").exists()
    assert not (tmp_path / "model" / "checkpoint" / "custom_layers.pt.partial").exists()
    assert not (tmp_path / "model" / "model.onnx").exists()


def test_corrupt_pe_core_weights_are_refused_and_removed_from_the_cache(published, tmp_path):
    Files.faults = {f"/{HF_REPO}/resolve/main/{HF_FILE}": "corrupt"}
    done = fetch(published, tmp_path / "model", tmp_path / "hf")
    assert done.returncode == 2
    error = one_error(done.stderr)
    assert "PE-Core" in error and "sha256" in error and "does not match" in error
    blobs = [p for p in (tmp_path / "hf").rglob("*") if p.is_file() and "blobs" in p.parts]
    assert blobs == [], blobs  # a later run downloads it again instead of trusting the cache
    assert not (tmp_path / "model" / "model.onnx").exists()


def test_dropped_connection_is_resumed_by_the_next_call(published, tmp_path):
    Files.faults = {_lfs("adapter_model.safetensors"): "drop"}
    from export.download import DownloadError, PinnedFile, download

    pin = json.loads(published["pins"].read_text())["releases"]["thesis-dora"]["files"][0]
    dest = tmp_path / "adapter_model.safetensors"
    url = published["url"] + _lfs("adapter_model.safetensors")
    with pytest.raises(DownloadError, match="interrupted.*resume"):
        download(url, dest, PinnedFile(**pin), progress=False)
    partial = dest.with_name(dest.name + ".partial")
    assert partial.is_file() and 0 < partial.stat().st_size < pin["size"] and not dest.exists()
    Files.faults = {}
    download(url, dest, PinnedFile(**pin), progress=False)
    assert Files.ranges == [f"bytes={partial_size}-" for partial_size in [pin["size"] // 2]]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == pin["sha256"] and not partial.exists()


def test_missing_file_is_one_line(published, tmp_path):
    Files.faults = {_lfs("adapter_config.json"): "404"}
    done = fetch(published, tmp_path / "model", tmp_path / "hf")
    assert done.returncode == 2 and "HTTP 404" in one_error(done.stderr)


@pytest.mark.parametrize("offline", [False, True])
def test_no_network_is_one_line(published, tmp_path, offline):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {"HF_ENDPOINT": closed, "FACECUE_LFS_URL": closed + "/media"} | ({"HF_HUB_OFFLINE": "1"} if offline else {})
    done = fetch(published, tmp_path / "model", tmp_path / "hf", env_extra=env)
    assert done.returncode == 2
    error = one_error(done.stderr)
    assert "PE-Core weights" in error and ("HF_HUB_OFFLINE is set" in error) == offline
    assert not (tmp_path / "model" / "model.onnx").exists()


def test_a_full_disk_is_one_line_and_leaves_nothing_complete(published, tmp_path):
    """A real full filesystem: a 16 KiB tmpfs as --out (needs root; skipped where mounting is not allowed)."""
    full = tmp_path / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        done = fetch(published, full / "model", tmp_path / "hf")
        assert done.returncode == 2
        assert "no space left" in one_error(done.stderr).lower()
        assert not (full / "model" / "model.onnx").exists() and not (full / "model" / "facecue-fetch.json").exists()
        finals = [p for p in (full / "model" / "checkpoint").glob("*") if not p.name.endswith(".partial")]
        pins = {Path(f["path"]).name: f["size"] for f in json.loads(published["pins"].read_text())["releases"]["thesis-dora"]["files"]}
        assert all(p.stat().st_size == pins[p.name] for p in finals)  # whatever has a final name is complete
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
