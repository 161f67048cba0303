"""What the wheel holds: the runtime, and nothing of the benchmark suite or the tests.

The wheel is built from a copy of the checkout as git sees it, so leftovers of earlier in-tree
builds (``build/lib``, a stale ``*.egg-info``), which setuptools would package, do not count, and
the checkout gets no build artefacts. No build isolation: the build uses this environment's
setuptools (the ``test`` extra asks for one with ``bdist_wheel``), and needs no network.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ignored_by_git() -> Callable[[str, list[str]], set[str]]:
    """A copytree filter from .gitignore's patterns (plus .git), by name or path from the root."""
    lines = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    patterns = [".git", *(line.rstrip("/") for line in lines if line and not line.startswith("#"))]

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(ROOT)
        paths = {name: str(rel / name) for name in names}
        return {
            name
            for name, path in paths.items()
            if any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)
        }

    return ignore


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=_ignored_by_git())
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "-q", "-w", str(tmp), str(source)),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp.glob("stereo-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_no_benchmark_code(wheel_names: list[str]) -> None:
    assert [name for name in wheel_names if "bench" in name.lower()] == []


def test_the_wheel_holds_the_runtime_packages(wheel_names: list[str]) -> None:
    for package in ("stereo", "stereo/wire", "stereo/worker"):
        assert f"{package}/__init__.py" in wheel_names
    assert "stereo/py.typed" in wheel_names
    assert {name.split("/")[0] for name in wheel_names if not name.startswith("stereo-")} == {
        "stereo"
    }
