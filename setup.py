"""Which directory is which `parley.*` package: each room below is found, never listed by hand.

The repository keeps the layout the architecture asks for (api/, worker/, shared/ ... at the top),
and installs it as one `parley` namespace. The tool framework lives in shared/tools/ and is
installed as `parley.tools`, the name tool authors import (docs/tools.md).
Everything else about the distribution is in pyproject.toml.
"""

from pathlib import Path

from setuptools import find_packages, setup

#: public package name (under `parley.`) -> its directory, and the subdirectories it leaves to another room
ROOMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "api": ("api", ()),
    "worker": ("worker", ()),
    "shared": ("shared", ("tools", "tools.*")),
    "tools": ("shared/tools", ()),
    "local": ("local", ()),
    "client": ("client", ()),
    "cli": ("cli", ()),
}


def packages() -> tuple[list[str], dict[str, str]]:
    names: list[str] = []
    dirs: dict[str, str] = {}
    for name, (directory, elsewhere) in ROOMS.items():
        root = f"parley.{name}"
        names.append(root)
        dirs[root] = directory
        names += [f"{root}.{sub}" for sub in find_packages(where=directory, exclude=elsewhere)]
    return names, dirs


def package_directory(package: str, package_dir: dict[str, str]) -> str:
    """The directory that holds `package` (`parley.tools.x` -> shared/tools/x), as setuptools maps it."""
    root = ".".join(package.split(".")[:2])
    return "/".join([package_dir[root], *package.split(".")[2:]])


def modules(base: str = ".") -> dict[str, str]:
    """Every module the distribution installs, by its import name, and its source file under `base`.

    Each file appears once, under its installed name (shared/tools/ as parley.tools only). `make lint`
    hands this to mypy, which cannot follow the editable install's import hook.
    """
    found: dict[str, str] = {}
    for package in PACKAGES:
        directory = Path(base, package_directory(package, PACKAGE_DIR))
        for path in sorted(directory.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = str(path)
    return found


PACKAGES, PACKAGE_DIR = packages()

if __name__ == "__main__":  # as the build backend runs it; tests read PACKAGES with runpy
    setup(packages=PACKAGES, package_dir=PACKAGE_DIR)
