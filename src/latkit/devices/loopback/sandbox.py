"""The loopback device's filesystem: a host directory standing in for the phone's.

Device paths under a few well-known prefixes (``/data``, ``/sdcard``, ``/sys``,
``/proc/cpuinfo``, ``/system``, ...) are mapped into the sandbox ``root`` by
rewriting them in shell commands and sync paths; everything else (``/bin/sh``,
``/dev/null``) stays the host's. Shims for ``getprop`` and ``taskset`` live in
the sandbox's ``/system/bin``, which comes first on ``PATH``, and
``/data/local/tmp/benchmark_model`` runs the LiteRT stand-in on the host.

Commands never contain the root's own path: the root may hold spaces or shell
syntax (``r $(touch pwned);y``), and a textual rewrite cannot quote it for every
context it lands in (bare, in single quotes for a nested ``sh -c``, in double
quotes). Device paths are rewritten to an *alias* instead, a symlink to the root
at a path made only of ``[A-Za-z0-9_./-]`` (:func:`make_alias`), which needs no
quoting anywhere. File transfers resolve symlinks and refuse a path whose real
location is outside the root (:func:`contained`), so a link planted on the
device (``ln -s /home /data/local/tmp/esc``) cannot carry a push or pull out.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Device path prefixes that live inside the sandbox root.
MAPPED_PREFIXES = ("/data", "/sdcard", "/storage", "/sys", "/proc/cpuinfo", "/system",
                   "/vendor", "/mnt/sdcard")
# A prefix counts only at the start of a path: not preceded by a path or word char.
_PREFIX_RE = re.compile(
    r"(?<![\w./-])(" + "|".join(re.escape(p) for p in sorted(MAPPED_PREFIXES, key=len,
                                                            reverse=True)) + r")(?=/|\b|$)")

STATE_DIR = ".loopback"  # server/stand-in bookkeeping inside root, not a device path
ENV_ROOT = "LATKIT_LOOPBACK_ROOT"
# Characters that need no shell quoting in any context (the alias is built from them).
_SAFE_PATH_RE = re.compile(r"[A-Za-z0-9_./-]+")
# Where a mapped device path ends inside a shell command line.
_PATH_END = " \t\n;|&<>()`'\"$"


def cache_dir() -> Path:
    """latkit's cache folder for the loopback device: ``$LATKIT_CACHE/loopback``

    (or ``~/.cache/latkit/loopback``), the same root the model cache uses.
    """
    from latkit.core.cache import loopback_dir

    return loopback_dir()


def default_root(port: int) -> Path:
    """The sandbox of the device on ``port`` when no root is given: one per port, in the cache."""
    return cache_dir() / f"port-{port}"


@dataclass(frozen=True)
class CpuCluster:
    """A group of cores sharing one frequency domain."""

    name: str
    cpus: tuple[int, ...]
    max_freq_khz: int
    min_freq_khz: int = 300000


@dataclass(frozen=True)
class DeviceProfile:
    """Identity and hardware layout the loopback device pretends to have."""

    serial: str = "loopback"
    model: str = "Loopback Pixel"
    product: str = "loopback_pixel"
    device: str = "loopback"
    manufacturer: str = "latkit"
    platform: str = "loopback"
    soc_model: str = "LB8000"
    android_release: str = "14"
    sdk: str = "34"
    abi: str = "arm64-v8a"
    clusters: tuple[CpuCluster, ...] = field(default_factory=lambda: (
        CpuCluster("little", (0, 1, 2, 3), 1804800),
        CpuCluster("big", (4, 5, 6, 7), 2841600),
    ))

    def __post_init__(self) -> None:
        """Every text field becomes a system property line: no control characters, at most 91 chars."""
        from latkit.core.errors import UsageError

        for name in ("serial", "model", "product", "device", "manufacturer", "platform", "soc_model",
                     "android_release", "sdk", "abi"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 91 or re.search(
                    r"[\x00-\x1f\x7f]", value):  # fmt: skip
                raise UsageError(f"loopback device {name} {value!r} must be 1 to 91 printable characters "
                                 "(it becomes an Android system property); give another")

    def props(self) -> dict[str, str]:
        """System properties served by the ``getprop`` shim."""
        return {
            "ro.serialno": self.serial,
            "ro.product.model": self.model,
            "ro.product.name": self.product,
            "ro.product.device": self.device,
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.brand": self.manufacturer,
            "ro.board.platform": self.platform,
            "ro.soc.model": self.soc_model,
            "ro.soc.manufacturer": self.manufacturer,
            "ro.hardware": self.platform,
            "ro.build.version.release": self.android_release,
            "ro.build.version.sdk": self.sdk,
            "ro.build.fingerprint": f"latkit/{self.product}/{self.device}:{self.android_release}"
                                    "/LOOPBACK/1:user/release-keys",
            "ro.product.cpu.abi": self.abi,
            "ro.product.cpu.abilist": self.abi,
            "ro.kernel.qemu": "0",
        }

    @property
    def ncpus(self) -> int:
        """Total number of emulated cores."""
        return sum(len(c.cpus) for c in self.clusters)


def contained(root: Path, host_path: Path | str) -> bool:
    """True when ``host_path``, symlinks resolved, lies inside ``root`` (resolved too)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(host_path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def make_alias(root: Path) -> Path:
    """A private temporary symlink to ``root`` whose path needs no shell quoting.

    Raises:
        OSError: no temporary folder with a plain path is writable.
    """
    bases = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
    for base in dict.fromkeys(bases):
        if not _SAFE_PATH_RE.fullmatch(base) or not os.path.isdir(base):
            continue
        try:
            folder = tempfile.mkdtemp(prefix="latkit-loopback-", dir=base)  # mode 0700
        except OSError:
            continue
        if not _SAFE_PATH_RE.fullmatch(folder):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        alias = Path(folder) / "root"
        try:
            alias.symlink_to(Path(root).resolve(), target_is_directory=True)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return alias
    raise OSError("no writable temporary folder with a plain path (set TMPDIR to one, e.g. /tmp)")


def remove_alias(alias: Path) -> None:
    """Remove what :func:`make_alias` created (the link and its private folder)."""
    try:
        alias.unlink()
        alias.parent.rmdir()
    except OSError:
        pass


def to_host(root: Path, device_path: str) -> Path:
    """The host path of a device path (absolute paths outside the mapped prefixes

    are taken relative to root as well, so a push can never escape the sandbox).
    """
    clean = os.path.normpath("/" + device_path.lstrip("/"))
    return Path(root) / clean.lstrip("/")


def rewrite_command(alias: Path, command: str, root: Path | None = None) -> str:
    """Rewrite mapped device path prefixes in a shell command into sandbox paths.

    With ``root``, a device path whose real location (symlinks resolved) is outside
    the root is rewritten to a path that does not exist (under ``/.loopback/outside``),
    so the command fails on it as on a missing file. That is a guard against links
    planted on the device, not a boundary: the shell runs as the server's user, and
    authentication is what keeps strangers out.

    Raises:
        ValueError: ``alias`` would need quoting (use :func:`make_alias`).
    """
    prefix = str(Path(alias))
    if not _SAFE_PATH_RE.fullmatch(prefix):
        raise ValueError(f"sandbox path {prefix!r} needs shell quoting; use make_alias()")
    out, last = [], 0
    for m in _PREFIX_RE.finditer(command):
        end = m.end()
        while end < len(command) and command[end] not in _PATH_END:
            end += 1
        device_path = command[m.start():end]
        host = prefix
        if root is not None and not contained(root, prefix + device_path):
            log.warning("loopback shell: %s leads outside the sandbox; hiding it", device_path)
            host = f"{prefix}/{STATE_DIR}/outside"
        out.append(command[last:m.start()] + host + device_path)
        last = end
    out.append(command[last:])
    return "".join(out)


def to_device(root: Path, text: str) -> str:
    """Turn sandbox paths in ``text`` back into device paths (for messages)."""
    return text.replace(str(Path(root)), "")


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's content atomically, so a concurrent ``cat`` never sees it empty."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _shim(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)


def build(root: Path, profile: DeviceProfile) -> None:
    """Create (or refresh) the sandbox tree: directories, props, /proc, /sys, shims."""
    root = Path(root)
    for d in ("data/local/tmp", "sdcard", "system/bin", "data/misc/adb",
              f"{STATE_DIR}/running", "proc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    props = profile.props()
    (root / "system/build.prop").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    _write_cpuinfo(root, profile)
    _shim(root / "system/bin/getprop", _GETPROP)
    _shim(root / "system/bin/taskset", _TASKSET)
    _shim(root / "data/local/tmp/benchmark_model",
          f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m "
          "latkit.devices.loopback.benchmark_model \"$@\"\n")


def _write_cpuinfo(root: Path, profile: DeviceProfile) -> None:
    blocks = []
    for cluster in profile.clusters:
        part = "0xd05" if cluster.name == "little" else "0xd44"
        for cpu in cluster.cpus:
            blocks.append(f"processor\t: {cpu}\nBogoMIPS\t: 38.40\n"
                          "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
                          f"CPU implementer\t: 0x41\nCPU part\t: {part}\n")
    blocks.append(f"Hardware\t: {profile.soc_model}\n")
    (root / "proc/cpuinfo").write_text("\n".join(blocks))


def shell_env(root: Path) -> dict[str, str]:
    """Environment for device commands: sandbox shims first on PATH (pass the alias:

    a root holding ``:`` would split PATH).
    """
    env = dict(os.environ)
    root = Path(root)
    env["PATH"] = os.pathsep.join([str(root / "system/bin"), str(root / "data/local/tmp"),
                                   env.get("PATH", "/usr/bin:/bin")])
    env[ENV_ROOT] = str(root)
    env["HOME"] = str(root / "data/local/tmp")
    env["TMPDIR"] = str(root / "data/local/tmp")
    env["ANDROID_DATA"] = str(root / "data")
    return env


# getprop: one key (with optional default) or every property as "[k]: [v]".
_GETPROP = r"""#!/bin/sh
props="$LATKIT_LOOPBACK_ROOT/system/build.prop"
if [ $# -eq 0 ]; then
  awk -F= '{k=$1; sub(/^[^=]*=/, ""); printf "[%s]: [%s]\n", k, $0}' "$props"
  exit 0
fi
v=$(awk -F= -v k="$1" '$1==k {sub(/^[^=]*=/, ""); print; exit}' "$props")
if [ -z "$v" ] && [ $# -ge 2 ]; then v="$2"; fi
echo "$v"
"""

# taskset: records the requested affinity mask and runs the command unpinned. The host
# has too few cores for the emulated 8 (real pinning is impossible); the mask is passed
# to benchmark_model so it can emulate the cluster's clock speed.
_TASKSET = r"""#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -a|--all-tasks) shift ;;
    -*) echo "taskset: unsupported option $1 on the loopback device" >&2; exit 1 ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then echo "usage: taskset [-a] MASK COMMAND [ARG]..." >&2; exit 1; fi
mask="$1"; shift
case "$mask" in *[!0-9a-fA-FxX]*) echo "taskset: bad mask $mask" >&2; exit 1 ;; esac
echo "$mask $*" >> "$LATKIT_LOOPBACK_ROOT/.loopback/taskset.log"
LATKIT_LOOPBACK_CPU_MASK="$mask" exec "$@"
"""
