"""The loopback device's filesystem: a host directory standing in for the phone's.

Device paths under a few well-known prefixes (``/data``, ``/sdcard``, ``/sys``,
``/proc/cpuinfo``, ``/system``, ...) are mapped into the sandbox ``root`` by
rewriting them in shell commands and sync paths; everything else (``/bin/sh``,
``/dev/null``) stays the host's. Shims for ``getprop`` and ``taskset`` live in
the sandbox's ``/system/bin``, which comes first on ``PATH``, and
``/data/local/tmp/benchmark_model`` runs the LiteRT stand-in on the host.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Device path prefixes that live inside the sandbox root.
MAPPED_PREFIXES = ("/data", "/sdcard", "/storage", "/sys", "/proc/cpuinfo", "/system",
                   "/vendor", "/mnt/sdcard")
# A prefix counts only at the start of a path: not preceded by a path or word char.
_PREFIX_RE = re.compile(
    r"(?<![\w./-])(" + "|".join(re.escape(p) for p in sorted(MAPPED_PREFIXES, key=len,
                                                            reverse=True)) + r")(?=/|\b|$)")

STATE_DIR = ".loopback"  # server/stand-in bookkeeping inside root, not a device path
ENV_ROOT = "LATKIT_LOOPBACK_ROOT"


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


def to_host(root: Path, device_path: str) -> Path:
    """The host path of a device path (absolute paths outside the mapped prefixes

    are taken relative to root as well, so a push can never escape the sandbox).
    """
    clean = os.path.normpath("/" + device_path.lstrip("/"))
    return Path(root) / clean.lstrip("/")


def rewrite_command(root: Path, command: str) -> str:
    """Rewrite mapped device path prefixes in a shell command into sandbox paths."""
    prefix = str(Path(root))
    return _PREFIX_RE.sub(lambda m: prefix + m.group(1), command)


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
    """Environment for device commands: sandbox shims first on PATH."""
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
