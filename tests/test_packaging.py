"""A wheel (non-editable install) carries every package and every non-Python file the packages read
at run time: search.deploy's C templates and vendored CMSIS-DSP sources, the default search space,
the FSDD manifest. pyproject.toml's package discovery and package-data against the source tree,
and (slow) the file list of a wheel built from a copy of it."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("fsdd", "search")


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def source_packages() -> list[str]:
    """Every package of the source tree (a folder with __init__.py), dotted."""
    return sorted(".".join(p.parent.relative_to(ROOT).parts) for top in TOP for p in (ROOT / top).rglob("__init__.py"))


def data_files(package: str) -> set[str]:
    """The package's files that are not Python: under its folder, outside its subpackages and caches,
    relative to the folder."""
    folder = ROOT / package.replace(".", "/")
    subpackages = [ROOT / p.replace(".", "/") for p in source_packages() if p.startswith(package + ".")]
    out = set()
    for f in folder.rglob("*"):
        if not f.is_file() or f.suffix in (".py", ".pyc") or "__pycache__" in f.parts:
            continue
        if any(sub in f.parents for sub in subpackages):
            continue
        out.add(f.relative_to(folder).as_posix())
    return out


def test_every_package_is_discovered() -> None:
    config = setuptools_config()["packages"]
    # An explicit list names each package (a subpackage is not implied); find's include is fnmatch patterns.
    patterns = config if isinstance(config, list) else config["find"]["include"]
    packages = source_packages()
    assert "search.deploy" in packages
    missing = [p for p in packages if not any(fnmatch.fnmatchcase(p, pattern) for pattern in patterns)]
    assert missing == [], f"packages left out of pyproject.toml's [tool.setuptools] packages: {missing}"


def test_package_data_covers_every_data_file() -> None:
    """Each package's non-Python files match its package-data globs (setuptools expands them with
    recursive glob, as pathlib does here), and every glob matches something."""
    globs = setuptools_config()["package-data"]
    for package in source_packages():
        folder = ROOT / package.replace(".", "/")
        have = data_files(package)
        covered: set[str] = set()
        for pattern in globs.get(package, []):
            matched = {f.relative_to(folder).as_posix() for f in folder.glob(pattern) if f.is_file()}
            assert matched, f"package-data of {package}: {pattern!r} matches no file"
            covered |= matched
        assert have - covered == set(), f"{package}: files left out of [tool.setuptools.package-data]: {sorted(have - covered)}"


def test_deploy_reads_only_package_files() -> None:
    """What search.deploy copies into a library lies under its package folder (so package-data can carry it)."""
    from search.deploy import library, vendor

    deploy_dir = ROOT / "search" / "deploy"
    assert library.TEMPLATES.parent == deploy_dir and library.CMSIS.parent == deploy_dir
    files = data_files("search.deploy")
    for name in library.LIBRARY_FILES + library.HARNESS_FILES:
        assert f"templates/{name}" in files
    assert {f"cmsis/{f}" for f in (*vendor.FILES, vendor.EXTRACT, "README.md")} <= files


@pytest.mark.slow
def test_wheel_carries_the_data_files(tmp_path: Path) -> None:
    """Build a wheel from a copy of the project (no network: --no-build-isolation) and compare its
    files with the source tree's packages and data files."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for top in TOP:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "-w", str(tmp_path / "dist"), "--no-deps", "--no-build-isolation", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in source_packages():
        prefix = package.replace(".", "/") + "/"
        assert prefix + "__init__.py" in names
        assert {prefix + f for f in data_files(package)} <= names, package
