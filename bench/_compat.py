"""Make ``parley.local`` importable when the installed distribution does not map it.

tests/harness.py imports ``parley.local`` (the repository's ``local/`` folder).  An editable
install made from a pyproject.toml that lists only ``parley.api``, ``parley.worker`` and
``parley.shared`` does not provide it; then we load ``local/`` under that name ourselves.
Only the benchmark process needs this: web and worker never import ``parley.local``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def ensure_parley_local() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # `tests.harness`, `tests.model_server`
    try:
        import parley.local  # noqa: F401

        return
    except ModuleNotFoundError:
        pass
    folder = REPO_ROOT / "local"
    spec = importlib.util.spec_from_file_location(
        "parley.local", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load parley.local from {folder}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["parley.local"] = module
    spec.loader.exec_module(module)
    import parley

    parley.local = module  # type: ignore[attr-defined]
