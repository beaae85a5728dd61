"""The compiled build of the hot path: the same Python source, compiled with mypyc.

Why: ``kpi-engine report`` must read ≥ 200,000 events/s on one core, and the live worker
applies hundreds of thousands of events per second. Interpreted, the decoder and the core
reach about half of that. mypyc compiles these very modules — typed, ordinary Python — to C
extensions, so there is still one source of truth for the KPI rules: the ``.py`` files.

How it stays safe:

- The build goes to ``engine/_native/`` (never beside the sources) with a manifest holding a
  digest of the compiled sources. :func:`activate` (run by ``import engine``) loads a compiled
  module only while that digest matches the sources on disk; after any edit the sources are
  imported as they are, until ``kpi-engine native build`` (``scripts/setup.sh`` runs it)
  rebuilds. A stale build can slow the engine down, never change what it computes.
- ``KPI_ENGINE_PURE=1`` ignores the build (the tests compare both ways of running).
- Without a C compiler or mypy, or on another Python, everything runs interpreted.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# The decoder, the core and what the report needs per event or per window: compiled together
# (mypyc calls between them natively). Not the I/O around them, nor Faust-facing code.
MODULES = (
    "engine.event",
    "engine.measures",
    "engine.calendar",
    "engine.routing",
    "engine.lifecycle",
    "engine.core",
    "engine.decode",
    "engine.jsonl",
    "engine.replay",
    "engine.view",
    "engine.pipeline",
    "engine.catalog",
    "engine.kpis",
    "engine.components",
    "engine.report",
)
PURE_ENV = "KPI_ENGINE_PURE"
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
BUILD_DIR = PACKAGE_DIR / "_native"
MANIFEST = "manifest.json"


def source_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def source_digest() -> str:
    """A digest of the compiled modules' sources (names and bytes)."""
    digest = hashlib.sha256()
    for module in MODULES:
        digest.update(module.encode() + b"\0")
        digest.update(source_path(module).read_bytes() + b"\0")
    return digest.hexdigest()


def _abi() -> str:
    return f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')}"


def read_manifest(build_dir: Path = BUILD_DIR) -> dict | None:
    try:
        return json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def status(build_dir: Path = BUILD_DIR, honour_env: bool = True) -> tuple[bool, str]:
    """(usable, why): whether the build in ``build_dir`` matches this source and this Python
    (and, with ``honour_env``, whether :data:`PURE_ENV` allows it)."""
    manifest, why = _usable_manifest(build_dir, honour_env)
    return manifest is not None, why


def _usable_manifest(build_dir: Path, honour_env: bool) -> tuple[dict | None, str]:
    """The build's manifest if the build can be used, else None; and why."""
    if honour_env and os.environ.get(PURE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return None, f"{PURE_ENV} is set"
    manifest = read_manifest(build_dir)
    if manifest is None:
        return None, "not built (kpi-engine native build)"
    if manifest.get("abi") != _abi():
        return None, f"built for another Python ({manifest.get('abi')})"
    try:
        current = source_digest()
    except OSError as exc:
        return None, f"sources not readable: {exc}"
    if manifest.get("digest") != current:
        return None, "sources changed since the build (kpi-engine native build)"
    files = manifest.get("files", {})
    missing = [name for name, rel in files.items() if not (build_dir / rel).is_file()]
    if set(MODULES) - set(files) or missing:
        return None, "build incomplete (kpi-engine native build)"
    return manifest, f"compiled ({len(MODULES)} modules, mypy {manifest.get('mypy', '?')})"


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules (and mypyc's shared runtime module) in the build directory."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, str(file), loader=loader)


_active: _Finder | None = None


def activate(build_dir: Path = BUILD_DIR) -> bool:
    """Import the compiled modules from now on, if the build is current; True if it is."""
    global _active
    if _active is not None:
        return True
    if any(name in sys.modules for name in MODULES):
        return False  # already imported interpreted: mixing both in one process is not allowed
    manifest, _ = _usable_manifest(build_dir, honour_env=True)
    if manifest is None:
        return False
    files = {name: build_dir / rel for name, rel in manifest["files"].items()}
    _active = _Finder(files)
    sys.meta_path.insert(0, _active)
    return True


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from the compiled build."""
    return not str(getattr(module, "__file__", "")).endswith(".py")


# --- building ------------------------------------------------------------------------------------

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
paths, build_lib, build_temp = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
setup(name="kpi-engine-native", py_modules=[],
      ext_modules=mypycify(paths, opt_level="3", target_dir=build_temp),
      script_args=["-q", "build_ext", "--build-lib", build_lib, "--build-temp", build_temp])
"""


class BuildError(RuntimeError):
    pass


def build(force: bool = False, build_dir: Path = BUILD_DIR, log=sys.stderr) -> bool:
    """Compile :data:`MODULES` into ``build_dir``; False if it was already current."""
    if not force and status(build_dir, honour_env=False)[0]:
        return False
    try:
        import mypy.version
    except ImportError as exc:
        raise BuildError("mypy is not installed (pip install -e '.[native]')") from exc
    digest = source_digest()
    paths = [str(source_path(m).relative_to(ROOT)) for m in MODULES]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kpi-native-") as tmp:
        # Compiled from a copy of the package: mypy must see it as the only user code, which
        # it would not be where it is installed (site-packages, among other packages).
        src, out, temp = Path(tmp) / "src", Path(tmp) / "lib", Path(tmp) / "temp"
        shutil.copytree(PACKAGE_DIR, src / "engine", ignore=shutil.ignore_patterns(
            "_native*", "__pycache__", "*.so", "wallboard"))
        result = subprocess.run(
            [sys.executable, "-c", _SETUP, ",".join(paths), str(out), str(temp)],
            cwd=src, capture_output=True, text=True,
            env={**os.environ, PURE_ENV: "1"})
        if result.returncode != 0:
            raise BuildError(f"mypyc failed (exit {result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        files: dict[str, str] = {}
        for module in MODULES:
            rel = Path(*module.split(".")).with_suffix("")
            built = out / f"{rel}{suffix}"
            if not built.is_file():
                raise BuildError(f"mypyc produced no {built.name} for {module}")
            files[module] = f"{rel}{suffix}"
        for runtime in out.glob(f"*__mypyc{suffix}"):  # mypyc's shared library for the group
            files[runtime.name[: -len(suffix)]] = runtime.name
        staging = build_dir.with_name(build_dir.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(out, staging)
        (staging / MANIFEST).write_text(json.dumps({
            "digest": digest, "abi": _abi(), "mypy": mypy.version.__version__,
            "files": files, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2) + "\n")
        old = build_dir.with_name(build_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if build_dir.exists():
            build_dir.rename(old)
        staging.rename(build_dir)
        shutil.rmtree(old, ignore_errors=True)
    print(f"compiled {len(MODULES)} modules with mypyc in {time.monotonic() - started:.0f} s "
          f"into {build_dir}", file=log)
    return True
