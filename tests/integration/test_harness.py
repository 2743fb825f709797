"""Smoke tests of the test harness and of ``python -m parley.local``.

They need no service code: Redis is real, and the launcher tests run it against a
stand-in Procfile whose web process only answers /readyz.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
import yaml

from parley.local import parse_procfile, procfile_argv
from parley.local.processes import Process
from tests.harness import ServiceProcess, child_env, free_port, procfile
from tests.redis_server import RedisServer, redis_answers


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# -- Redis -----------------------------------------------------------------------------


FAKE_WORKER = (
    "import os, time; "
    "print('fake worker', os.environ['PARLEY_LLM'], os.environ['PARLEY_AGENTS_FILE'], flush=True); "
    "time.sleep(600)"
)


def test_session_redis_is_a_real_server(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_answers(redis_server.url, timeout_s=1)
    with redis.Redis.from_url(redis_server.url) as client:
        info = client.info("server")
    assert info.get("redis_version") or info.get("valkey_version")
    if _in_ci():
        assert redis_server.binary == Path(str(shutil.which("redis-server")))


def test_redis_restart_keeps_data_via_aof(redis_server: RedisServer) -> None:
    url_before, pid_before = redis_server.url, redis_server.pid
    with redis.Redis.from_url(redis_server.url) as client:
        client.set("harness:survivor", "still here")
        client.rpush("harness:list", "a", "b", "c")

    redis_server.restart()

    assert redis_server.url == url_before
    assert redis_server.pid != pid_before
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.get("harness:survivor") == b"still here"
        assert client.lrange("harness:list", 0, -1) == [b"a", b"b", b"c"]
        client.delete("harness:survivor", "harness:list")
    assert list(redis_server.dir.glob("**/*.aof")), "no AOF file in the data dir"


def test_redis_sigkill_keeps_acknowledged_writes(tmp_path: Path) -> None:
    with RedisServer(dir=tmp_path / "data") as server:
        with redis.Redis.from_url(server.url) as client:
            for i in range(200):
                client.set(f"k{i}", i)
        server.wait_aof_written()
        server.kill()
        assert not server.running
        assert not redis_answers(server.url, timeout_s=0)
        server.start()
        with redis.Redis.from_url(server.url) as client:
            assert client.dbsize() == 200
            assert client.get("k199") == b"199"
    assert not server.running


def test_redis_answers_is_false_when_nothing_listens() -> None:
    started = time.monotonic()
    assert not redis_answers(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.3)
    assert time.monotonic() - started < 3


# -- processes -----------------------------------------------------------------------------


def test_procfile_is_the_deploy_contract() -> None:
    assert procfile() == {
        "web": "uvicorn parley.api.main:app --host 0.0.0.0 --port ${PORT:-8000}",
        "worker": "python -m parley.worker",
    }
    assert parse_procfile("# comment\n\nweb: a b\nworker:c\n") == {"web": "a b", "worker": "c"}
    with pytest.raises(ValueError):
        parse_procfile("not a process line\n")


def test_service_process_kill_restart_terminate(tmp_path: Path) -> None:
    port = free_port()
    proc = ServiceProcess(
        "http",
        procfile_argv("python -m http.server ${PORT:-1} --bind 127.0.0.1"),
        child_env({"PORT": port}),
        tmp_path,
        cwd=tmp_path,
        url=f"http://127.0.0.1:{port}",
        ready=lambda p: p.wait_http(f"{p.url}/", timeout=20),
    )
    proc.start()
    try:
        first = proc.pid
        assert proc.alive
        proc.kill()
        assert not proc.alive and proc.returncode == -signal.SIGKILL
        proc.restart()
        assert proc.alive and proc.pid != first
        proc.wait_http(f"{proc.url}/", timeout=5)
        assert proc.terminate(timeout=10) is not None
        assert not proc.alive
        log = proc.read_log()
        assert "start #1" in log and "start #2" in log
    finally:
        proc.kill()


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_process_pumps_prefixed_lines_and_terminate_kills_the_whole_group() -> None:
    """parley.local's supervisor: output copied line by line after a prefix; a child that ignores SIGTERM
    is SIGKILLed after the timeout, and so is what it started (its process group)."""
    script = "trap '' TERM; sleep 600 & echo \"grandchild $!\"; echo second line; wait"
    lines: list[str] = []
    proc = Process("stubborn", ["/bin/bash", "-c", script], child_env())
    proc.start()
    proc.pump("stubborn | ", lines.append)
    try:
        deadline = time.monotonic() + 10
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines[1] == "stubborn | second line", lines
        grandchild = int(lines[0].removeprefix("stubborn | grandchild "))
        assert not _gone(grandchild)
        assert proc.terminate(timeout=1) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while not _gone(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(grandchild), "the child's own child outlived terminate()"
    finally:
        proc.kill()


# -- the launcher: python -m parley.local ------------------------------------------------------

FAKE_WEB = """\
import http.server, os, sys
port = int(sys.argv[1])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path in ("/healthz", "/readyz") else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

print(f"fake web on {port} with REDIS_URL={os.environ['REDIS_URL']}", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def _launcher_env() -> dict[str, str]:
    return child_env()  # no REDIS_URL, PARLEY_*, OPENAI_*


def _start_launcher(workdir: Path, procfile_text: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    (workdir / "Procfile.test").write_text(procfile_text)
    out = workdir / f"launcher-{time.monotonic_ns()}.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.local", "--procfile", "Procfile.test", *args],
            cwd=workdir,
            env=_launcher_env(),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return proc, out


def _wait_output(proc: subprocess.Popen[str], out: Path, pattern: str, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, out.read_text())
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"launcher never printed {pattern!r}; output:\n{out.read_text()}")


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_launcher_runs_procfile_and_keeps_state_across_restarts(tmp_path: Path) -> None:
    (tmp_path / "fake_web.py").write_text(FAKE_WEB)
    procfile_text = textwrap.dedent(
        """\
        web: python fake_web.py ${{PORT:-8000}}
        worker: python -c "{FAKE_WORKER}"
        """
    ).format(FAKE_WORKER=FAKE_WORKER)
    port = free_port()

    proc, out = _start_launcher(tmp_path, procfile_text, "--port", str(port), "--workers", "2")
    try:
        _wait_output(proc, out, r"Parley is running")
        _wait_output(proc, out, r"worker\.2\s+\| fake worker demo")
        text = out.read_text()
        key = (tmp_path / ".parley-data" / "api_key").read_text().strip()
        assert f"URL:      http://127.0.0.1:{port}" in text
        assert f"API key:  {key}" in text
        assert f"Authorization: Bearer {key}" in text
        assert '{"message": "Hello!", "session_id": "first-session"}' in text
        assert "the built-in demo model is serving" in text
        assert f"fake web on {port}" in text
        agents = yaml.safe_load((tmp_path / ".parley-data" / "agents.yaml").read_text())
        assert [a["name"] for a in agents] == ["Parley Guide", "Trip Planner"]
        assert all(agents[0].get(f) for f in ("description", "context", "first_message", "instructions"))
        redis_url = _wait_output(proc, out, r"Redis:\s+(redis://\S+)").group(1)
        with redis.Redis.from_url(redis_url) as client:
            client.set("remember", "me")
    finally:
        code = _stop(proc)
    assert code == 0, out.read_text()
    assert not redis_answers(redis_url, timeout_s=0), "the launcher left its Redis running"
    assert "worker.1" in out.read_text() and "stopping" in out.read_text()

    # Second run: same key, same agents file, and Redis data survived.
    proc, out = _start_launcher(tmp_path, procfile_text, "--port", str(port))
    try:
        _wait_output(proc, out, r"Parley is running")
        assert f"API key:  {key}" in out.read_text()
        redis_url = _wait_output(proc, out, r"Redis:\s+(redis://\S+)").group(1)
        with redis.Redis.from_url(redis_url) as client:
            assert client.get("remember") == b"me"
    finally:
        assert _stop(proc) == 0, out.read_text()


def test_launcher_fails_clearly_when_a_process_dies_at_start(tmp_path: Path) -> None:
    procfile_text = textwrap.dedent(
        """\
        web: python -c "import sys; print('web cannot start'); sys.exit(3)"
        worker: python -c "import time; time.sleep(600)"
        """
    )
    proc, out = _start_launcher(tmp_path, procfile_text, "--port", str(free_port()))
    try:
        code = proc.wait(timeout=60)
    finally:
        _stop(proc)
    text = out.read_text()
    assert code == 1, text
    assert re.search(r"^web\.1 +\| web cannot start$", text, re.MULTILINE)
    assert "web.1 exited with code 3 during start-up" in text
