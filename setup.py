"""Which directory is which `parley.*` package: each room below is found, never listed by hand.

The repository keeps the layout the architecture asks for (api/, worker/, shared/ ... at the top),
and installs it as one `parley` namespace. The tool framework lives in shared/tools/ and is
installed as `parley.tools`, the name tool authors import (docs/tools.md).
Everything else about the distribution is in pyproject.toml.
"""

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


PACKAGES, PACKAGE_DIR = packages()

if __name__ == "__main__":  # as the build backend runs it; tests read PACKAGES with runpy
    setup(packages=PACKAGES, package_dir=PACKAGE_DIR)
