"""Compile, cache and load the small C++ kernels in `_kernels/` (C ABI, loaded with ctypes).

The library is built at first use with `g++ -O3 -march=native -ffp-contract=off -fopenmp -shared -fPIC` (about a
second; if the compiler rejects those flags, again without OpenMP and -march=native: one thread) into a cache
folder: $LABELFIELD_CACHE, else $XDG_CACHE_HOME/labelfield/kernels, else ~/.cache/labelfield/kernels (a temporary
folder when none is writable). The file name holds a hash of the source, the compiler (path and
`--version`), the flags and the CPU's model/flags (so a home folder shared by different machines never loads
code built for another CPU with -march=native). Builds take a file lock (`filelock`) and write to a temporary name, then
rename atomically, so concurrent processes never see a half-written library.

OpenMP: the library links libgomp.so.1; with torch's wheel imported first, the loader reuses torch's bundled
libgomp (same soname), so the kernel and torch share one OpenMP runtime and thread pool (checked in
/proc/self/maps), and OMP_WAIT_POLICY etc. apply to both.

`COMPILER` (default $CXX or "g++") is a module attribute so tests can point it at a missing binary.
$LABELFIELD_CXXFLAGS adds flags to both attempts (part of the cache key): `-mno-avx512f` builds the AVX2 code
path on an AVX-512 machine, to measure what an AVX2-only CPU gets.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

COMPILER: str = os.environ.get("CXX", "g++")
# -ffp-contract=off: no fused multiply-adds, so the kernel rounds exactly like the PyTorch reference (an FMA in
# frac = x * N - floor(x * N) would change the weights by up to 1e-4 at N = 2048).
FLAGS: tuple[str, ...] = ("-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
FALLBACK_FLAGS: tuple[str, ...] = ("-O3", "-ffp-contract=off", "-shared", "-fPIC", "-std=c++17")  # one thread
KERNEL_DIR = Path(__file__).parent / "_kernels"
log = logging.getLogger(__name__)


class KernelBuildError(RuntimeError):
    """The C++ kernel could not be compiled or loaded (no compiler, compile error, unwritable cache...)."""


# name -> loaded library, or the error of the failed attempt (so a failure is not retried in every call).
_LOADED: dict[str, ctypes.CDLL | KernelBuildError] = {}


def cache_dir() -> Path:
    """Folder that holds the compiled libraries (created on demand)."""
    if os.environ.get("LABELFIELD_CACHE"):
        return Path(os.environ["LABELFIELD_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "labelfield" / "kernels"


def _cpu_id() -> str:
    """Machine, CPU model and feature flags: -march=native code is only valid on the same kind of CPU."""
    ident = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    ident.append(line.strip())
                elif not line.strip() and len(ident) > 2:
                    break  # first processor block is enough
    except OSError:
        ident.append(platform.processor())
    return "\n".join(ident)


def _writable_cache() -> Path:
    """The cache folder, or a per-user temporary one when it cannot be created."""
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    d = Path(tempfile.gettempdir()) / f"labelfield-kernels-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _compile(compiler: str, flags: tuple[str, ...], src: Path, out: Path) -> None:
    """Run the compiler into a temporary name beside `out`, then rename it into place (atomic)."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        res = subprocess.run([compiler, *flags, str(src), "-o", str(tmp)], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise KernelBuildError(f"compiling {src.name} failed: {' | '.join(msg[:5])}")
        os.replace(tmp, out)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"compiling {src.name} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def build_library(name: str) -> Path:
    """Compile `_kernels/<name>.cpp` unless a matching build is cached; return the library's path.

    Tries FLAGS, then FALLBACK_FLAGS (for compilers without OpenMP or -march=native, e.g. Apple clang).
    """
    src = KERNEL_DIR / f"{name}.cpp"
    try:
        source = src.read_bytes()
    except OSError as e:
        raise KernelBuildError(f"kernel source missing: {src}") from e
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise KernelBuildError(f"C++ compiler {COMPILER!r} not found")
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"C++ compiler {compiler!r} does not run: {e}") from e
    cache = _writable_cache()
    ext = ".dll" if os.name == "nt" else ".so"
    first_error: KernelBuildError | None = None
    extra = tuple(os.environ.get("LABELFIELD_CXXFLAGS", "").split())  # e.g. -mno-avx512f: an AVX2-only build
    for flags in (FLAGS, FALLBACK_FLAGS):
        fallback = flags is FALLBACK_FLAGS
        flags = flags + extra
        h = hashlib.sha256()
        for part in (source, compiler.encode(), version, " ".join(flags).encode(), _cpu_id().encode()):
            h.update(part)
            h.update(b"\0")
        out = cache / f"{name}-{h.hexdigest()[:16]}{ext}"
        failed = out.with_suffix(".failed")  # remembers a failed build, so later runs skip straight on
        if out.exists():
            return out
        if failed.exists():
            first_error = first_error or KernelBuildError(failed.read_text(errors="replace").strip())
            continue
        with FileLock(out.with_suffix(".lock")):  # one build per library, across processes
            if out.exists():  # another process built it while we waited
                return out
            try:
                _compile(compiler, flags, src, out)
            except KernelBuildError as e:
                first_error = first_error or e
                failed.write_text(str(e) + "\n")
                continue
        if fallback:
            log.info("built the %s kernel without OpenMP/-march=native (%s)", name, first_error)
        return out
    assert first_error is not None
    raise first_error


def load_library(name: str) -> ctypes.CDLL:
    """Build (if needed) and load `_kernels/<name>.cpp`; the result, or the failure, is cached per process."""
    cached = _LOADED.get(name)
    if isinstance(cached, KernelBuildError):
        raise cached
    if cached is not None:
        return cached
    try:
        lib = ctypes.CDLL(str(build_library(name)))
    except OSError as e:
        err = KernelBuildError(f"loading the {name} kernel failed: {e}")
        _LOADED[name] = err
        raise err from e
    except KernelBuildError as e:
        _LOADED[name] = e
        raise
    _LOADED[name] = lib
    return lib


def kernel_available(typed_loader: Callable[[], ctypes.CDLL], env_var: str) -> bool:
    """True when `typed_loader()` (a module's load-and-set-signatures function) succeeds and $env_var is not
    "torch" (the switch that makes a kernel's caller take its PyTorch reference, e.g. for benchmarks)."""
    if os.environ.get(env_var, "").lower() == "torch":
        return False
    try:
        typed_loader()
    except KernelBuildError:
        return False
    return True


def reset_cache() -> None:
    """Forget loaded libraries and cached failures (tests)."""
    _LOADED.clear()
