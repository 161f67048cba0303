"""What the wheel holds (the runtime, and nothing of the benchmark suite or the tests), what it
is called (``trio-stereo`` on the package index: "stereo" there is an unrelated project), and
that installing it gives the ``stereo`` command and ``import stereo``; ``stereo --version``.

The wheel is built from a copy of the checkout as git sees it, so leftovers of earlier in-tree
builds (``build/lib``, a stale ``*.egg-info``), which setuptools would package, do not count, and
the checkout gets no build artefacts. No build isolation: the build uses this environment's
setuptools (the ``test`` extra asks for one with ``bdist_wheel``), and needs no network.
"""

from __future__ import annotations

import email.parser
import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import stereo
from stereo.version import DISTRIBUTION, stereo_version

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
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip install .`` would build and install from a clone."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_ignored_by_git())
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
    (built,) = tmp.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel installed; its dependencies are this environment's, reached
    through a .pth file, so that nothing is downloaded or installed twice."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", python, "install"),
            *("--no-deps", "--no-index", "-q", wheel),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert install.returncode == 0, install.stderr
    return venv


def run_installed(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a program of ``venv`` outside the checkout, so that nothing is imported from it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [venv / "bin" / args[0], *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=venv,
        env=env,
    )


def test_the_wheel_holds_no_benchmark_code(wheel_names: list[str]) -> None:
    assert [name for name in wheel_names if "bench" in name.lower()] == []


def test_the_wheel_holds_the_runtime_packages(wheel_names: list[str]) -> None:
    for package in ("stereo", "stereo/wire", "stereo/worker"):
        assert f"{package}/__init__.py" in wheel_names
    assert "stereo/py.typed" in wheel_names
    assert {name.split("/")[0] for name in wheel_names if ".dist-info/" not in name} == {"stereo"}


def test_the_distribution_is_trio_stereo(wheel: Path, wheel_names: list[str]) -> None:
    assert wheel.name.startswith("trio_stereo-")
    (metadata_name,) = [name for name in wheel_names if name.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.parser.BytesParser().parsebytes(archive.read(metadata_name))
    assert metadata["Name"] == DISTRIBUTION == "trio-stereo"
    assert metadata["Version"] == stereo.__version__


def test_the_installed_wheel_gives_the_stereo_command_and_package(installed: Path) -> None:
    imported = run_installed(installed, "python", "-c", "import stereo; print(stereo.__file__)")
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(installed)
    for flag in ("--version", "-V"):
        shown = run_installed(installed, "stereo", flag)
        assert (shown.returncode, shown.stdout, shown.stderr) == (
            0,
            f"stereo {stereo.__version__}\n",
            "",
        )
    usage = run_installed(installed, "stereo", "run", "--help")
    assert usage.returncode == 0, usage.stderr
    assert "MODULE:ATTR" in usage.stdout


def test_version_of_this_environment() -> None:
    """The version of the installed distribution (the editable install of the tests' venv)."""
    shown = subprocess.run(
        [sys.executable, "-m", "stereo", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (shown.returncode, shown.stdout) == (0, f"stereo {stereo_version()}\n"), shown.stderr


def test_version_without_an_installed_distribution() -> None:
    """A checkout run without being installed has no metadata: its own ``__version__``."""
    assert stereo_version("trio-stereo-never-installed") == stereo.__version__
