"""deploy/Dockerfile, checked without a Docker daemon: hadolint finds nothing, the build is multi-stage
and ends as a non-root user, every package directory setup.py installs is copied and not
excluded by .dockerignore, and the entry point runs the Procfile's process types with `exec`."""

from __future__ import annotations

import fnmatch
import os
import re
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .validators import DEPLOY, REPO_ROOT, hadolint

DOCKERFILE = DEPLOY / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]  # fmt: skip


def final_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    last_from = max(index for index, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last matching pattern wins, a pattern
    matches a path or any of its parent directories (a close reading of Docker's rules)."""
    excluded = False
    parents = [str(Path(*Path(path).parts[:n])) for n in range(1, len(Path(path).parts) + 1)]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw.lstrip("!"))
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in parents):
            excluded = not negate
    return excluded


def dockerignore() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_hadolint_finds_nothing() -> None:
    assert hadolint(DOCKERFILE.read_text()) == []


def test_hadolint_refuses_a_worse_dockerfile() -> None:
    worse = DOCKERFILE.read_text().replace("USER 10001:10001", "USER root")
    assert any("DL3002" in finding for finding in hadolint(worse)), "running as root must be flagged"


def test_multi_stage_and_non_root() -> None:
    text = DOCKERFILE.read_text()
    assert sum(op == "FROM" for op, _ in instructions(text)) >= 2
    last = final_stage(text)
    users = [args for op, args in last if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "numeric, so runAsNonRoot can check it"
    copies = [args for op, args in last if op == "COPY"]
    assert any(args.startswith("--from=build /opt/venv") for args in copies)
    assert not any(re.search(r"\b(api|worker|shared)\b", args) for args in copies if "--from" not in args), \
        "the runtime stage gets the installed package, not the sources"
    assert ("ENTRYPOINT", '["parley-entrypoint"]') in last and ("CMD", '["web"]') in last


def test_build_context_has_what_the_build_copies() -> None:
    packages = runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="setup")["PACKAGE_DIR"]
    copied = {origin for op, args in instructions(DOCKERFILE.read_text())
              if op == "COPY" and not args.startswith("--from") for origin in args.split()[:-1]}  # fmt: skip
    top_level = {directory.split("/")[0] for directory in packages.values()}
    assert top_level | {"setup.py", "pyproject.toml"} <= copied, "every package directory setup.py installs is copied"
    patterns = dockerignore()
    for source in copied:
        assert (REPO_ROOT / source).exists(), source
        assert not dockerignore_excludes(source, patterns), f".dockerignore leaves out {source}"
        if (REPO_ROOT / source).is_dir():
            assert not dockerignore_excludes(f"{source}/__init__.py", patterns)
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/harness.py", "api/__pycache__/main.cpython-311.pyc"):
        assert dockerignore_excludes(unwanted, patterns), unwanted


def run_entrypoint(args: list[str], procfile: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = subprocess.Popen(["sh", str(ENTRYPOINT), *args], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PARLEY_PROCFILE": str(procfile), **(env or {})})  # fmt: skip
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    return process.pid, out


def test_entrypoint_runs_procfile_lines_in_place_of_itself(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text('web: echo "web $$ port=${PORT:-8000}"\nworker: echo "worker $$"\n')
    pid, out = run_entrypoint(["web"], procfile, {"PORT": "9123"})
    assert out.split() == ["web", str(pid), "port=9123"], "exec'd (same pid, so SIGTERM reaches it), PORT expanded"
    pid, out = run_entrypoint(["worker"], procfile)
    assert out.split() == ["worker", str(pid)]
    _, out = run_entrypoint(["echo", "any", "command"], procfile)
    assert out.strip() == "any command"


def test_entrypoint_knows_the_real_procfile() -> None:
    procfile = (REPO_ROOT / "Procfile").read_text()
    for name in ("web", "worker"):
        line = re.search(rf"^{name}:\s*(.+)$", procfile, re.M)
        assert line, f"the Procfile has no {name} line for the image to run"
    assert "COPY Procfile ./" in DOCKERFILE.read_text() and "WORKDIR /app" in DOCKERFILE.read_text()
    assert "/app/Procfile" in ENTRYPOINT.read_text()


@pytest.mark.parametrize("path", [ENTRYPOINT, DEPLOY / "healthcheck.py"])
def test_scripts_are_executable(path: Path) -> None:
    assert os.access(path, os.X_OK), f"{path} must be committed executable (the image runs it directly)"


def build_context(destination: Path) -> list[str]:
    """Copy what Docker would send for this build (the repository less .dockerignore) to `destination`."""
    patterns = dockerignore()
    sent = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [name for name in dirs if name not in {".git", ".venv", "node_modules", "__pycache__"}]
        for name in files:
            relative = (Path(root) / name).relative_to(REPO_ROOT).as_posix()
            if not dockerignore_excludes(relative, patterns):
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(root) / name, destination / relative)
                sent.append(relative)
    return sent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's `pip install "/src[server]"`, without Docker: a wheel built from only the files
    the Dockerfile copies out of the build context."""
    tmp_path = tmp_path_factory.mktemp("image-build")
    context, source, wheels = tmp_path / "context", tmp_path / "src", tmp_path / "wheels"
    sent = build_context(context)
    assert "deploy/healthcheck.py" in sent and not any(name.startswith("tests/") for name in sent)
    source.mkdir()
    steps = build_stage()
    assert steps[0][1].endswith(" AS build") and ("WORKDIR", "/src") in steps
    for op, args in steps:
        if op == "COPY":
            *origins, target = args.split()
            if target.startswith("./"):  # into WORKDIR /src
                for origin in origins:
                    copy = shutil.copytree if (context / origin).is_dir() else shutil.copy
                    copy(context / origin, source / (origin if target == "./" else target))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                             "--wheel-dir", str(wheels), str(source)], capture_output=True, text=True, timeout=300,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = wheels.glob("parley-*.whl")
    return built


def build_stage() -> list[tuple[str, str]]:
    """The instructions of the first stage (FROM ... AS build up to the next FROM)."""
    steps = instructions(DOCKERFILE.read_text())
    froms = [index for index, (op, _) in enumerate(steps) if op == "FROM"]
    return steps[froms[0] : froms[1]]


def test_the_build_stage_installs_from_the_context_alone(wheel: Path) -> None:
    """The wheel built from the build context holds every package setup.py finds."""
    names = zipfile.ZipFile(wheel).namelist()
    packages = runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="setup")["PACKAGES"]
    assert "parley.tools" in packages and "parley.shared.store" in packages
    for package in packages:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package


def requirements(wheel: Path) -> list[tuple[str, str]]:
    """(distribution, marker) for each Requires-Dist of the wheel's metadata; marker "" for the base install."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    found = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement, _, marker = line.removeprefix("Requires-Dist:").partition(";")
            name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
            assert name, line
            found.append((re.sub(r"[-_.]+", "-", name.group(1)).lower(), marker.strip().replace("'", '"')))
    return found


def test_the_wheel_brings_the_server_only_with_its_extra(wheel: Path) -> None:
    """`pip install parley` (the SDK and CLI) pulls none of the service's dependencies; `parley[server]`,
    which the image installs, pulls them all (tests/unit/test_packaging.py checks pyproject.toml)."""
    from tests.unit.test_packaging import SERVER_DISTRIBUTIONS

    listed = requirements(wheel)
    base = {name for name, marker in listed if not marker}
    server = {name for name, marker in listed if marker.endswith('extra == "server"')}  # uvloop: not on Windows
    assert base and base & set(SERVER_DISTRIBUTIONS) == set(), "server dependencies in the base install"
    assert server == set(SERVER_DISTRIBUTIONS)
    assert ("parley", 'extra == "test"') in listed and ("parley", 'extra == "local"') in listed, "parley[server]"


def test_the_image_installs_the_server() -> None:
    """The build stage installs the `server` extra, and checks the web and the worker import."""
    runs = " ".join(args for op, args in build_stage() if op == "RUN")
    assert re.search(r"pip install [^&]*\"/src\[server\]\"", runs), runs
    assert "import parley.api.main, parley.worker.engine" in runs
