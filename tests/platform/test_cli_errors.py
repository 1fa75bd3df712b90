"""The `thaw` CLI fails as a person needs: one line on stderr saying what went wrong and what to
do next, a non-zero exit, no traceback, and within seconds. Each test is a failure a user
reported. The gateway is the real one (`thaw up` as a person runs it) where the failure is the
gateway's; a small HTTP server of the test's own stands in only where the failure is the CLI's
(a 413 sent before the body is read, a reader that closes the pipe)."""

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from thaw.cli import MAKE_KEY
from thaw.supervisor import STOP_BOUND_S
from thaw_core.ports import free_port

THAW = str(Path(sys.executable).parent / "thaw")  # the command a person runs


def one_line(text: str) -> str:
    assert text.strip() and "\n" not in text.strip(), f"expected one line, got:\n{text}"
    assert "Traceback" not in text, text
    return text.strip()


class Cli:
    """`thaw` as a person runs it, from a directory of its own, with its own $XDG_STATE_HOME
    (never the developer's) and no $THAW_URL / $THAW_API_KEY unless a test gives them."""

    def __init__(self, root: Path):
        self.xdg = root / "xdg"
        self.env = {k: v for k, v in os.environ.items() if k not in ("THAW_URL", "THAW_API_KEY")}
        self.env["XDG_STATE_HOME"] = str(self.xdg)

    def run(self, *args: str, cwd: Path, stdin: bytes = b"", env: dict | None = None,
            timeout_s: float = 30) -> subprocess.CompletedProcess:
        cwd.mkdir(parents=True, exist_ok=True)
        return subprocess.run([THAW, *args], input=stdin, capture_output=True, cwd=cwd, timeout=timeout_s,
                              env={**self.env, **(env or {})})


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


# -- a stand-in server for failures on the CLI's side

FUNCTIONS = [{"name": f"fn-{i}", "resources": {"vram_mib": 1024, "gpu_count": 1},
              "scaling": {"min_pods": 0, "max_pods": 2, "concurrency": 4, "idle_timeout_s": 600}}
             for i in range(3000)]  # `thaw ls` then prints far more than a pipe holds
LIMIT = 4096


class StandIn(BaseHTTPRequestHandler):
    """Answers `thaw ls`'s reads, and refuses every POST with the gateway's 413 without reading
    the body, then closes: what a gateway or proxy guarding its memory does."""

    def do_GET(self):
        answers = {"/v1/functions": {"functions": FUNCTIONS}, "/v1/pods": {"pods": []}, "/v1/nodes": {"nodes": []}}
        self._answer(200, answers.get(self.path, {}))

    def do_POST(self):
        self._answer(413, {"error": {"code": "body_too_large", "message": f"request body is over {LIMIT} bytes; "
                                     "send less or raise the gateway's max_body_bytes"}})
        self.close_connection = True

    def _answer(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_body_refused_before_it_is_read_is_reported_as_too_large_with_the_limit_not_as_unreachable(
        cli, stand_in, tmp_path):
    done = cli.run("--url", stand_in, "--key", "k", "invoke", "echo", "-", cwd=tmp_path, stdin=b"x" * (8 << 20))
    line = one_line(done.stderr.decode())
    assert done.returncode != 0
    assert "too large" in line and f"its limit is {LIMIT} bytes" in line and str(8 << 20) in line, line
    assert "cannot reach" not in line


def test_ls_into_a_pipe_closed_early_exits_quietly_with_141(cli, stand_in, tmp_path):
    # `set -o pipefail`: the pipeline's status is thaw's, which head -1 stops early
    done = subprocess.run(["bash", "-c", f'set -o pipefail; "{THAW}" --url {stand_in} --key k ls | head -1'],
                          capture_output=True, text=True, cwd=tmp_path, env=cli.env, timeout=30)
    assert done.stdout == "FUNCTIONS\n"
    assert done.stderr == "", "no BrokenPipeError traceback"
    assert done.returncode == 141, "128 + SIGPIPE, as a shell reports for any tool a closed pipe stops"


# -- NATS, a real nats-server (no gateway needed: the failures come before a request is answered)

def test_invoke_over_a_stale_nats_url_fails_within_seconds_naming_the_url(cli, tmp_path):
    stale = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = cli.run("--key", "k", "--state-dir", str(tmp_path / "none"), "invoke", "echo", "hi", "--nats", stale,
                   cwd=tmp_path)
    took_s = time.monotonic() - started
    line = one_line(done.stderr.decode())
    assert done.returncode != 0
    assert took_s < 10, f"took {took_s:.1f}s"
    assert stale in line and "could not connect" in line and "nats-server ready at" in line, line


def test_invoke_over_nats_with_a_payload_over_max_payload_names_both_sizes(cli, nats_server, tmp_path):
    size = 2 << 20  # nats-server's max_payload is 1 MiB unless configured
    done = cli.run("--key", "k", "--state-dir", str(tmp_path / "none"), "invoke", "echo", "-",
                   "--nats", nats_server.url, cwd=tmp_path, stdin=b"x" * size)
    line = one_line(done.stderr.decode())
    assert done.returncode != 0
    assert f"{size} bytes" in line and "max_payload of 1048576 bytes" in line, line


# -- `thaw up` as a person runs it, in a project directory

class ThawUp:
    """`thaw up` started in `project` with its default state dir (./.thaw), in its own session
    like a terminal's job."""

    def __init__(self, root: Path, cli: Cli):
        self.root, self.project, self.port = root, root / "project", free_port()
        self.project.mkdir(parents=True)
        config = root / "node.toml"
        config.write_text(f'[node]\nname = "cli-{os.urandom(3).hex()}"\nforce_mock_gpus = true\n')
        self.proc = subprocess.Popen([THAW, "up", "--port", str(self.port), "--config", str(config)],
                                     cwd=self.project, env=cli.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []

    def wait_up(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.lines.append(self.proc.stdout.readline())
            if "up: HTTP" in self.lines[-1]:
                return
        raise AssertionError("thaw up did not come up:\n" + "".join(self.lines))

    def printed(self, prefix: str) -> str:
        """The word after `prefix` in what it printed, e.g. a server's URL."""
        return next(line.split(prefix, 1)[1].split()[0] for line in self.lines if prefix in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C
            try:
                self.proc.communicate(timeout=STOP_BOUND_S + 30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # on a failure, what it started (each in its own session) must not outlive the test
        left = subprocess.run(["pgrep", "-f", str(self.root)], capture_output=True, text=True).stdout.split()
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def thaw_up(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-up")
    cli = Cli(root)
    up = ThawUp(root, cli)
    try:
        up.wait_up()
        yield up, cli
    finally:
        up.stop()


def test_the_cli_finds_thaw_ups_url_and_key_from_any_directory_and_the_record_is_private(thaw_up):
    up, cli = thaw_up
    done = cli.run("ls", cwd=up.root / "elsewhere")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.startswith(b"FUNCTIONS")
    record = cli.xdg / "thaw" / "up.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600 and stat.S_IMODE(record.parent.stat().st_mode) == 0o700
    key = (up.project / ".thaw" / "credentials").read_text().strip()
    assert key not in record.read_text(), "the record says where the key is, never the key itself"


def test_an_explicit_url_or_key_still_wins_over_what_thaw_up_recorded(thaw_up):
    up, cli = thaw_up
    elsewhere = up.root / "elsewhere"
    nowhere = f"http://127.0.0.1:{free_port()}"
    by_flag = cli.run("--url", nowhere, "ls", cwd=elsewhere)
    by_env = cli.run("ls", cwd=elsewhere, env={"THAW_API_KEY": "thaw_not-a-key"})
    assert by_flag.returncode != 0 and f"cannot reach the gateway at {nowhere}" in one_line(by_flag.stderr.decode())
    assert by_env.returncode != 0 and "$THAW_API_KEY" in one_line(by_env.stderr.decode())


def test_a_refused_key_names_the_real_keys_subcommand_and_that_command_makes_one_that_works(thaw_up):
    up, cli = thaw_up
    elsewhere = up.root / "elsewhere"
    done = cli.run("--key", "thaw_not-a-key", "ls", cwd=elsewhere)
    line = one_line(done.stderr.decode())
    assert done.returncode != 0 and "HTTP 401" in line and "--key" in line, line
    assert f"`{MAKE_KEY}`" in line and "keys create" not in line, line
    made = cli.run(*MAKE_KEY.replace("REDIS_URL", up.printed("valkey-server ready at")).split()[1:], cwd=elsewhere)
    assert made.returncode == 0, made.stderr.decode()
    assert cli.run("--key", made.stdout.decode().strip(), "ls", cwd=elsewhere).returncode == 0


def test_invoke_over_nats_finds_thaw_ups_bus_credentials_from_any_directory(thaw_up):
    up, cli = thaw_up
    bus = up.printed("nats-server ready at")
    done = cli.run("invoke", "no-such-fn", "hi", "--nats", bus, cwd=up.root / "elsewhere")
    line = one_line(done.stderr.decode())
    assert done.returncode != 0 and "HTTP 404" in line and "no function named 'no-such-fn'" in line, line


def test_the_gateways_own_413_names_its_limit(thaw_up):
    up, cli = thaw_up
    done = cli.run("invoke", "echo", "-", cwd=up.root / "elsewhere", stdin=b"x" * (2 << 20))
    line = one_line(done.stderr.decode())
    assert done.returncode != 0 and "too large" in line and "its limit is 1048576 bytes" in line, line


def test_thaw_up_on_a_taken_port_says_so_before_printing_anything(cli, stand_in, tmp_path):
    port = int(stand_in.rsplit(":", 1)[1])  # a server that answers /healthz, as another gateway would
    done = cli.run("--state-dir", str(tmp_path / "state"), "up", "--port", str(port), cwd=tmp_path)
    assert done.returncode != 0
    assert done.stdout == b"", "no 'ready' and no API key"
    line = one_line(done.stderr.decode())
    assert f"port {port} is already in use" in line and "thaw up --port N" in line, line
    assert not (tmp_path / "state").exists(), "nothing started"



def function_file(folder: Path, name: str, command: str, min_pods: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\ncommand = {command}\nhealth_path = "/healthz"\n'
                    f"[resources]\ncpu_milli = 500\nmemory_mib = 256\n"
                    f"[scaling]\nmin_pods = {min_pods}\nmax_pods = 1\nstart_timeout_s = 30\n")
    return path


def test_deploy_wait_shows_the_first_worker_starting_until_it_serves(thaw_up):
    up, cli = thaw_up
    echo = Path(__file__).resolve().parents[2] / "examples" / "echo" / "worker.py"
    path = function_file(up.root / "elsewhere", "waited", f'["{{python}}", "{echo}"]')
    done = cli.run("deploy", str(path), "--wait", cwd=up.root / "elsewhere")
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "deployed waited" in out and ": starting on " in out and "waited is serving" in out, out
    lazy = function_file(up.root / "elsewhere", "lazy", f'["{{python}}", "{echo}"]', min_pods=0)
    assert "scales from zero" in cli.run("deploy", str(lazy), "--wait", cwd=up.root / "elsewhere").stdout.decode()


def test_deploy_wait_for_a_worker_that_cannot_start_fails_with_its_reason_and_where_its_output_is(thaw_up):
    up, cli = thaw_up
    crash = '["{python}", "-c", "import sys; print(\'no weights\'); sys.exit(3)"]'
    path = function_file(up.root / "elsewhere", "broken", crash)
    done = cli.run("deploy", str(path), "--wait", cwd=up.root / "elsewhere")
    line = one_line(done.stderr.decode())
    assert done.returncode != 0 and "failed to start" in line and "exit code 3" in line, line
    assert "thaw logs broken --pod broken-" in line, line
