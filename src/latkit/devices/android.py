"""Android phones over ADB, timing TFLite models with LiteRT's ``benchmark_model``.

``adb+tcp://HOST:PORT`` reaches adbd over TCP; ``adb:SERIAL`` a USB device (or,
with ``adb_server=True``, any device the host's adb server lists). Opening a
model pushes it to ``/data/local/tmp/latkit``; each :meth:`AndroidSession.time`
call runs ``benchmark_model`` once with explicit flags, pinned with ``taskset``
to the big cluster, after waiting for the phone to cool to its baseline, with
the big cluster's clock sampled during the run; a throttled run is measured
again after a cooldown. Everything (waits, clocks, re-measures and why) is kept
in the session log and in :meth:`AndroidDevice.state`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

from latkit.devices.adb_transport import (
    DEFAULT_DELEGATE,
    AdbTransport,
    canonical_adb_uri,
    getprops,
    open_transport,
    parse_adb_uri,
    split_adb_options,
)
from latkit.devices.android_state import (
    Baseline,
    Cluster,
    ThermalPolicy,
    big_cluster,
    judge_samples,
    read_clusters,
    read_snapshot,
    take_baseline,
    wait_for_baseline,
)
from latkit.devices.base import Device, DeviceInfo, ModelFormat, ModelSource, Session, register_device
from latkit.devices.benchmark_parser import MAX_OUTPUT_BYTES, BenchmarkResult, parse_benchmark_output
from latkit.devices.layers import LayerProfile, benchmark_layer_profile, check_runs
from latkit.devices.delegation import Delegation, summarize_delegation
from latkit.devices.precision import Precision
from latkit.core.errors import (
    DeviceAbsentError,
    DeviceError,
    DeviceUnreachableError,
    MeasurementError,
    ParseError,
    UsageError,
)

log = logging.getLogger(__name__)

WORK_DIR = "/data/local/tmp/latkit"
DEVICE_BINARY = "/data/local/tmp/benchmark_model"
_FREQ_MARK = "__LATKIT_FREQ_SAMPLES__"
_SIZE_MARK = "__LATKIT_OUTPUT_BYTES__"
# benchmark_model's flags for each delegate a URI can name: exactly one delegate is
# on, so the device string says what ran; ops it does not take run on TFLite's
# built-in CPU kernels. --use_xnnpack=false is given explicitly because only an
# explicit false stops the runtime's default XNNPACK delegate (GetOpResolver in
# tensorflow/lite/tools/benchmark/benchmark_tflite_model.cc).
_DELEGATE_FLAGS = {
    "none": {"use_xnnpack": False, "use_gpu": False, "use_nnapi": False},
    "xnnpack": {"use_xnnpack": True, "use_gpu": False, "use_nnapi": False},
    "gpu": {"use_xnnpack": False, "use_gpu": True, "use_nnapi": False},
    "nnapi": {"use_xnnpack": False, "use_gpu": False, "use_nnapi": True},
}
# ADB waits and the shortest sample a caller does not give take these environment
# variables, then the built-in default: a phone on a slow link may need longer waits, a
# test of one that never answers shorter ones, and neither can pass constructor
# arguments through the CLI.
ADB_ENV = {"connect_wait_s": ("LATKIT_ADB_CONNECT_WAIT_S", 20.0),
           "connect_timeout_s": ("LATKIT_ADB_CONNECT_TIMEOUT_S", 10.0),
           "shell_timeout_s": ("LATKIT_ADB_SHELL_TIMEOUT_S", 20.0),
           "sample_ms": ("LATKIT_ADB_SAMPLE_MS", 200.0)}


def adb_setting(name: str, given: float | None) -> float:
    """The setting ``name`` of :data:`ADB_ENV`: ``given``, else its environment variable, else its default.

    Raises:
        UsageError: the variable is not a number of seconds >= 0 (a wait) or of
            milliseconds > 0 (``sample_ms``).
    """
    if given is not None:
        return given
    var, default = ADB_ENV[name]
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    positive = name == "sample_ms"  # a wait may be 0 (give up at once), a sample may not
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        unit = "milliseconds > 0" if positive else "seconds >= 0"
        raise UsageError(f"{var} must be a number of {unit}, got {text[:40]!r}")
    return value


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "model"


@register_device("adb")
@register_device("adb+tcp")
class AndroidDevice(Device):
    """An Android device reached over ADB, timing models with ``benchmark_model``.

    The URI may end in options, ``adb:SERIAL?delegate=gpu&threads=4``:
    ``delegate=none|xnnpack|gpu|nnapi`` (default xnnpack, benchmark_model's own
    default) and ``threads=N``. They are part of the device string, so of a LUT
    row's identity; :attr:`uri` holds them in one canonical order.

    Args:
        uri: ``adb+tcp://HOST:PORT`` or ``adb:SERIAL``, with options after ``?``.
        threads: ``--num_threads`` (a URI's ``threads=N`` sets it; both must agree).
        benchmark_binary: a local ``benchmark_model`` to push (default: the one on
            the device at /data/local/tmp/benchmark_model or on its PATH).
        adb_server: use the host's adb server instead of latkit's ADB client.
        key_path: ADB key (default ``~/.android/adbkey`` or latkit's own).
        cpu_mask: ``"big"`` (default: the fastest cluster), ``"all"`` (no taskset)
            or a hex mask.
        warmup_runs, warmup_min_secs, min_secs: ``benchmark_model`` phase lengths;
            ``--num_runs`` is the ``iterations`` the caller asks for.
        thermal: cooldown and throttle policy.
        retries: attempts per shell call or run before giving up.
        connect_wait_s: how long the first connection keeps trying (doubling,
            logged waits) before the device counts as unreachable.
        backoff_s: first wait between attempts (doubles each time).
        shell_timeout_s, run_timeout_s: limits for a plain command and for a run.
        connect_timeout_s: limit for one connection and authentication attempt.
        sample_ms: the shortest sample: each is one ``benchmark_model`` process,
            whose start and model load a short sample would mostly time.

    ``connect_wait_s``, ``connect_timeout_s``, ``shell_timeout_s`` and ``sample_ms`` left
    out take ``LATKIT_ADB_CONNECT_WAIT_S``, ``LATKIT_ADB_CONNECT_TIMEOUT_S``,
    ``LATKIT_ADB_SHELL_TIMEOUT_S`` (seconds) and ``LATKIT_ADB_SAMPLE_MS`` when set
    (see :data:`ADB_ENV`), else 20, 10 and 20 s and 200 ms.
    """

    model_format = ModelFormat.TFLITE
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)

    def __init__(self, uri: str, threads: int = 1, *, benchmark_binary: str | Path | None = None,
                 adb_server: bool = False, key_path: str | Path | None = None, cpu_mask: str = "big",
                 warmup_runs: int = 1, warmup_min_secs: float = 0.0, min_secs: float = 0.0,
                 thermal: ThermalPolicy | None = None, retries: int = 3, backoff_s: float = 0.5,
                 shell_timeout_s: float | None = None, run_timeout_s: float = 300.0,
                 connect_wait_s: float | None = None, connect_timeout_s: float | None = None,
                 sample_ms: float | None = None) -> None:
        parse_adb_uri(uri)  # a malformed address is refused here, not at the first call that connects
        _, options = split_adb_options(uri)
        uri_threads = int(options.get("threads", threads))
        if threads not in (1, uri_threads):
            raise UsageError(f"threads={threads} disagrees with the device URI {uri!r} "
                             f"(threads={uri_threads}); give it once")
        super().__init__(canonical_adb_uri(uri), uri_threads)
        self.delegate = str(options.get("delegate", DEFAULT_DELEGATE))
        if retries < 1:
            raise UsageError(f"retries must be >= 1, got {retries}")
        if cpu_mask not in ("big", "all") and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", cpu_mask):
            raise UsageError(f"cpu_mask must be 'big', 'all' or a hex mask, got {cpu_mask!r}")
        self.benchmark_binary = Path(benchmark_binary) if benchmark_binary else None
        if self.benchmark_binary and not self.benchmark_binary.is_file():
            raise UsageError(f"benchmark_model binary {self.benchmark_binary} does not exist")
        self.adb_server, self.key_path, self.cpu_mask = adb_server, key_path, cpu_mask
        self.flags = {**_DELEGATE_FLAGS[self.delegate],
                      "warmup_runs": warmup_runs, "warmup_min_secs": warmup_min_secs, "min_secs": min_secs}
        self.thermal = thermal or ThermalPolicy()
        self.retries, self.backoff_s = retries, backoff_s
        self.shell_timeout_s, self.run_timeout_s = adb_setting("shell_timeout_s", shell_timeout_s), run_timeout_s
        connect_wait_s = adb_setting("connect_wait_s", connect_wait_s)
        if not connect_wait_s >= 0:
            raise UsageError(f"connect_wait_s must be >= 0, got {connect_wait_s}")
        self.connect_wait_s = connect_wait_s
        self.connect_timeout_s = adb_setting("connect_timeout_s", connect_timeout_s)
        self.sample_ms = adb_setting("sample_ms", sample_ms)
        if not (math.isfinite(self.sample_ms) and self.sample_ms > 0):
            raise UsageError(f"sample_ms must be a number of milliseconds > 0, got {self.sample_ms}")
        self._t: AdbTransport | None = None
        self.props: dict[str, str] = {}
        self.clusters: list[Cluster] = []
        self.big: Cluster | None = None
        self.mask = ""
        self.baseline: Baseline | None = None
        self.binary = ""
        self.runtime_version = ""
        self.last_run: dict[str, Any] = {}
        self._warned: set[str] = set()  # models whose delegation warning was logged ("": flags)
        self.counters = {"runs": 0, "remeasures": 0, "retries": 0, "reconnects": 0, "waited_s": 0.0}

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Usable when adb_shell (latkit[android]) is installed."""
        try:
            import adb_shell  # noqa: F401
        except ImportError:
            return False, "adb_shell is missing: pip install 'latkit[android]'"
        return True, ""

    # ------------------------------------------------------------ connection

    def _transport(self) -> AdbTransport:
        if self._t is None:
            self._t = open_transport(self.uri, use_server=self.adb_server, key_path=self.key_path,
                                     connect_timeout_s=self.connect_timeout_s)
        return self._t

    def _retrying(self, what: str, fn: Any) -> Any:
        """Call ``fn(transport)``, reconnecting with backoff on device errors."""
        last: DeviceError | None = None
        for attempt in range(self.retries):
            if attempt:
                self.counters["retries"] += 1
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.info("retrying %s on %s in %.1f s (attempt %d/%d): %s",
                         what, self.uri, delay, attempt + 1, self.retries, last)
                time.sleep(delay)
            try:
                return fn(self._transport())
            except DeviceError as exc:
                last = exc
                self._drop_connection()
        raise DeviceUnreachableError(f"{what} on {self.uri} failed {self.retries} times; last error: {last}") from last

    def _first_connection(self, fn: Any) -> Any:
        """``fn(transport)`` (the first call that needs the device), waiting out a
        device that is briefly away: attempts go on, the waits between them doubling,
        until ``connect_wait_s`` has passed since the first one (the last wait is cut to
        end there). A device the host does not list at all (a USB serial not plugged in)
        is not waited for. The error says how long it really tried and names the
        loopback phones that do run here, if any."""
        start = time.monotonic()
        delay = self.backoff_s
        tries = 0
        while True:  # bounded: ends by connect_wait_s
            try:
                tries += 1
                return self._retrying("connecting", fn)
            except DeviceUnreachableError as exc:
                left = self.connect_wait_s - (time.monotonic() - start)
                if left <= 0 or isinstance(exc.__cause__, DeviceAbsentError):
                    raise DeviceUnreachableError(self._unreachable(exc, tries, time.monotonic() - start)) from exc
                log.warning("%s is not answering; trying again in %.1f s (waited %.0f of %.0f s)",
                            self.uri, min(delay, left), time.monotonic() - start, self.connect_wait_s)
                time.sleep(min(delay, left))
                delay = min(2 * delay, 8.0)

    def _unreachable(self, exc: DeviceUnreachableError, rounds: int, waited_s: float) -> str:
        """The one line for a device that never answered: the last error, how long and how often it
        was tried, what to check, and the loopback phones running here."""
        from latkit.devices.loopback.running import loopback_hint

        last = str(exc.__cause__) if isinstance(exc.__cause__, DeviceError) else str(exc)
        return (f"{last.rstrip('.')} (tried {rounds * self.retries} times over {waited_s:.0f} s)"
                f"{loopback_hint(self.uri)}")

    def _drop_connection(self) -> None:
        if self._t is not None:
            self._t.close()
            self._t = None
            self.counters["reconnects"] += 1

    def shell(self, argv: list[str] | str, timeout_s: float | None = None, check: bool = True) -> str:
        """Run a command on the device (argv items are quoted); return its stdout.

        Raises:
            DeviceError: unreachable after the retries, or (``check``) a non-zero exit.
        """
        res = self._retrying("shell command", lambda t: t.shell(argv, timeout_s or self.shell_timeout_s))
        if check and res.rc != 0:
            shown = argv if isinstance(argv, str) else shlex.join(argv)
            raise DeviceError(f"`{shown[:80]}` failed on {self.uri} (exit {res.rc}): "
                              f"{(res.stderr or res.stdout).strip()[:200]}")
        return res.stdout

    def connect(self) -> None:
        """Connect, read the device's layout and take the thermal baseline (once)."""
        if self.baseline is not None:
            return
        tmo = self.shell_timeout_s
        self.props = self._first_connection(lambda t: getprops(t, tmo))
        t = self._transport()
        self.clusters = self._retrying("reading clusters", lambda t: read_clusters(t, tmo))
        self.big = big_cluster(self.clusters)
        self.mask = self._choose_mask()
        self.binary = self._locate_binary()
        self.shell(["mkdir", "-p", WORK_DIR])
        snap = self._retrying("reading state", lambda t: read_snapshot(t, tmo))
        self.baseline = take_baseline(snap, self.big)
        log.info("connected to %s (%s, %s): big cluster cpus %s at %d MHz, %s C",
                 t.serial, self.props.get("model"), self.props.get("soc"), list(self.big.cpus),
                 self.big.max_freq_khz // 1000, self.baseline.temp_c)

    def _choose_mask(self) -> str:
        if self.cpu_mask == "all":
            return ""
        if self.cpu_mask != "big":
            return self.cpu_mask.lower().removeprefix("0x")
        chosen: list[int] = []
        for cl in sorted(self.clusters, key=lambda c: -c.max_freq_khz):
            chosen += cl.cpus
            if len(chosen) >= self.threads:
                break
        if len(chosen) > len(self.big.cpus):  # type: ignore[union-attr]
            log.warning("%d threads exceed the big cluster's %d cores; pinning to cpus %s",
                        self.threads, len(self.big.cpus), chosen)  # type: ignore[union-attr]
        return format(sum(1 << c for c in chosen), "x")

    def _locate_binary(self) -> str:
        if self.benchmark_binary is not None:
            remote = f"{WORK_DIR}/benchmark_model"
            self.shell(["mkdir", "-p", WORK_DIR])
            self._retrying("pushing benchmark_model",
                           lambda t: t.push(self.benchmark_binary, remote, self.run_timeout_s))
            self.shell(["chmod", "755", remote])
            return remote
        found = self.shell(f"if [ -x {shlex.quote(DEVICE_BINARY)} ]; then echo __DEFAULT__; "
                           "else command -v benchmark_model; fi", check=False).strip()
        if found == "__DEFAULT__":
            return DEVICE_BINARY
        if not found:
            raise DeviceError(f"no benchmark_model on {self.uri} (looked in {DEVICE_BINARY} and PATH); "
                              "pass benchmark_binary=PATH to a LiteRT android_aarch64 benchmark_model")
        return found.splitlines()[-1]

    # ------------------------------------------------------------ Device API

    def info(self) -> DeviceInfo:
        """Model, SoC, Android version, clusters and the big-core mask."""
        self.connect()
        return DeviceInfo(
            uri=self.uri, kind="android", runtime="benchmark_model",
            runtime_version=self.runtime_version or "unknown", threads=self.threads,
            model=self.props.get("model", ""),
            extra={"soc": self.props.get("soc", ""), "android": self.props.get("android", ""),
                   "sdk": self.props.get("sdk", ""), "abi": self.props.get("abi", ""),
                   "clusters": [{"cpus": list(c.cpus), "max_freq_khz": c.max_freq_khz} for c in self.clusters],
                   "big_core_mask": self.mask, "serial": self._transport().serial,
                   "binary": self.binary, "flags": dict(self.flags), "delegate": self.delegate},
        )

    def open(self, model: ModelSource) -> AndroidSession:
        """Push ``model`` as TFLite and return a session that runs ``benchmark_model`` on it."""
        self.connect()
        local = Path(model.file(ModelFormat.TFLITE))
        digest = hashlib.sha256(local.read_bytes()).hexdigest()[:12]
        remote = f"{WORK_DIR}/{_safe_name(model.key)}-{digest}.tflite"
        self._retrying(f"pushing {local.name}", lambda t: t.push(local, remote, self.run_timeout_s))
        return AndroidSession(self, model.key, remote)

    def adapt_protocol(self, config: Any) -> Any:
        """Few, long samples (at least :attr:`sample_ms`): every sample is a ``benchmark_model``
        process on the phone, which does its own warmup and averages its own runs."""
        return dataclasses.replace(
            config, warmup_runs=min(config.warmup_runs, 1), warmup_s=0.0,
            target_sample_ms=max(config.target_sample_ms, self.sample_ms), min_samples=min(config.min_samples, 5),
            max_samples=min(config.max_samples, 20), samples_per_round=1, touch_runs=0,
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        """Clocks and temperatures now, the baseline, and the last run's record."""
        self.connect()
        snap = self._retrying("reading state", lambda t: read_snapshot(t, self.shell_timeout_s))
        return {
            "snapshot": snap.to_dict(),
            "baseline": {"temp_c": self.baseline.temp_c,  # type: ignore[union-attr]
                         "big_max_freq_khz": self.baseline.big_max_freq_khz},  # type: ignore[union-attr]
            "big_core_mask": self.mask,
            "counters": dict(self.counters),
            "last_run": self.last_run,
        }

    def close(self) -> None:
        """Drop the ADB connection."""
        if self._t is not None:
            self._t.close()
            self._t = None

    # ------------------------------------------------------------ running

    def benchmark_argv(self, remote_model: str, num_runs: int, op_profiling: bool = False,
                       peak_memory: bool = False) -> list[str]:
        """The full ``benchmark_model`` command line (under ``taskset`` unless mask is all)."""
        f = self.flags

        def b(x: bool) -> str:
            return "true" if x else "false"

        argv = [self.binary, f"--graph={remote_model}", f"--num_threads={self.threads}",
                f"--use_xnnpack={b(f['use_xnnpack'])}", f"--use_gpu={b(f['use_gpu'])}",
                f"--use_nnapi={b(f['use_nnapi'])}", f"--warmup_runs={f['warmup_runs']}",
                f"--warmup_min_secs={f['warmup_min_secs']}", f"--num_runs={num_runs}",
                f"--min_secs={f['min_secs']}", f"--enable_op_profiling={b(op_profiling)}",
                f"--report_peak_memory_footprint={b(peak_memory)}"]
        return (["taskset", self.mask] + argv) if self.mask else argv

    def _sampled_script(self, argv: list[str]) -> str:
        # sample the big cluster's clock in the background while the tool runs,
        # in the same round trip; samples follow a marker line after the output.
        # The tool's output goes to a file on the phone and at most MAX_OUTPUT_BYTES
        # of it cross ADB (its full size follows a marker, to tell a cut); old
        # toolbox builds without `head -c` use dd.
        big_cpu = self.big.cpus[0]  # type: ignore[union-attr]
        freq = shlex.quote(f"/sys/devices/system/cpu/cpu{big_cpu}/cpufreq/scaling_cur_freq")
        stamp = time.monotonic_ns()
        tmp = shlex.quote(f"{WORK_DIR}/.freq_{stamp}")
        out = shlex.quote(f"{WORK_DIR}/.out_{stamp}")
        return (f"(while :; do cat {freq}; sleep {self.thermal.sample_s}; done) >{tmp} 2>/dev/null & "
                f"__s=$!; {shlex.join(argv)} >{out} 2>&1; __rc=$?; kill $__s 2>/dev/null; "
                f"wait $__s 2>/dev/null; head -c {MAX_OUTPUT_BYTES} {out} 2>/dev/null "
                f"|| dd if={out} bs={MAX_OUTPUT_BYTES} count=1 2>/dev/null; echo; "
                f"echo {_SIZE_MARK}$(wc -c <{out}); echo {_FREQ_MARK}; cat {tmp}; "
                f"rm -f {tmp} {out}; exit $__rc")

    def _run_once(self, key: str, argv: list[str]) -> tuple[BenchmarkResult, list[int]]:
        """One benchmark run, retried (reconnecting) on faults, crashes and bad output.

        Raises:
            DeviceUnreachableError: every attempt failed to reach the device.
            MeasurementError: the tool kept crashing or printing what cannot be
                parsed, or printed more than ``MAX_OUTPUT_BYTES``.
        """
        script = self._sampled_script(argv)
        last, unreachable = "", 0
        for attempt in range(self.retries):
            if attempt:
                self.counters["retries"] += 1
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.info("retrying benchmark of %s in %.1f s (attempt %d/%d): %s",
                         key, delay, attempt + 1, self.retries, last)
                time.sleep(delay)
            try:
                res = self._transport().shell(script, self.run_timeout_s)
            except DeviceError as exc:
                last = str(exc)
                unreachable += 1
                self._drop_connection()
                continue
            out, _, tail = res.stdout.partition(_SIZE_MARK)
            size_txt, _, samples_txt = tail.partition(_FREQ_MARK)
            samples = [int(s) for s in samples_txt.split()[:100_000] if s.isdigit() and len(s) < 12]
            size = int(size_txt.strip()) if size_txt.strip().isdigit() and len(size_txt.strip()) < 16 else 0
            if max(size, len(out)) > MAX_OUTPUT_BYTES:
                # the same run prints as much again: no retry
                raise MeasurementError(
                    f"benchmark_model printed {max(size, len(out))} bytes for {key} on {self.uri}, "
                    f"more than the {MAX_OUTPUT_BYTES} latkit reads; check the binary and its flags"
                )
            if res.rc != 0:
                last = f"benchmark_model exited {res.rc}: {(out.strip().splitlines() or [''])[-1][:160]}"
                continue
            try:
                return parse_benchmark_output(out), samples
            except ParseError as exc:
                last = str(exc)
        if unreachable == self.retries:
            raise DeviceUnreachableError(f"benchmark of {key} on {self.uri} could not reach the device "
                                         f"{self.retries} times; last: {last}")
        raise MeasurementError(f"benchmark of {key} on {self.uri} failed {self.retries} times; last: {last}")

    def _delegation(self, key: str, result: BenchmarkResult) -> Delegation:
        """What the run says about this device's delegate (warned once per model).

        Raises:
            MeasurementError: the binary did not know a delegate or thread flag, so
                it timed some other configuration than the device string says.
        """
        ours = [f for f in result.unconsumed_flags
                if f.split("=")[0].lstrip("-") in ("use_xnnpack", "use_gpu", "use_nnapi", "num_threads")]
        if ours:
            raise MeasurementError(
                f"benchmark_model on {self.uri} does not know {' '.join(ours)[:120]} (it ignored "
                f"them), so it did not run {key} as {self.uri} asks; use a newer benchmark_model"
            )
        if result.unconsumed_flags and "" not in self._warned:
            self._warned.add("")  # once per device: the binary does not change
            log.warning("benchmark_model on %s ignored %s", self.uri, " ".join(result.unconsumed_flags))
        delegation = summarize_delegation(result, self.delegate)
        if delegation.warning and key not in self._warned:
            self._warned.add(key)
            log.warning("%s on %s: %s", key, self.uri, delegation.warning)
        return delegation

    def run_benchmark(self, key: str, remote_model: str, num_runs: int, op_profiling: bool = False,
                      peak_memory: bool = False) -> BenchmarkResult:
        """Run ``benchmark_model`` after a cooldown; re-measure if the run was throttled.

        Raises:
            MeasurementError: the run kept failing, or stayed throttled after
                ``thermal.max_remeasures`` re-measures.
        """
        self.connect()
        if num_runs < 1:
            raise UsageError(f"num_runs must be >= 1, got {num_runs}")
        argv = self.benchmark_argv(remote_model, num_runs, op_profiling, peak_memory)
        record: dict[str, Any] = {"key": key, "argv": argv, "attempts": [], "remeasure_reasons": []}
        self.last_run = record
        for attempt in range(self.thermal.max_remeasures + 1):
            limit = self.thermal.pre_wait_s if attempt == 0 else self.thermal.throttle_wait_s
            wait = self._retrying("cooldown", lambda t: wait_for_baseline(
                t, self.baseline, self.big, self.thermal, limit, self.shell_timeout_s))  # type: ignore[arg-type]
            self.counters["waited_s"] = round(self.counters["waited_s"] + wait["waited_s"], 3)
            result, samples = self._run_once(key, argv)
            verdict = judge_samples(samples, self.baseline, self.thermal)  # type: ignore[arg-type]
            self.counters["runs"] += 1
            record["attempts"].append({
                "wait": wait, "inference_avg_us": result.inference_avg_us,
                "count": result.inference_count, "throttled": verdict.throttled,
                "min_big_freq_khz": verdict.min_held_khz, "median_big_freq_khz": verdict.median_khz,
                "freq_samples": verdict.n_samples, "reason": verdict.reason,
            })
            self.runtime_version = self.runtime_version or result.runtime_version
            delegation = self._delegation(key, result)
            record["delegation"] = delegation.to_dict()
            if delegation.warning:
                record["delegation_warning"] = delegation.warning
            if not verdict.throttled:
                record.update(remeasured=attempt > 0, result_us=result.inference_avg_us)
                return result
            record["remeasure_reasons"].append(verdict.reason)
            if attempt < self.thermal.max_remeasures:
                self.counters["remeasures"] += 1
                log.info("re-measuring %s: %s", key, verdict.reason)
        raise MeasurementError(
            f"{key} on {self.uri} stayed throttled over {self.thermal.max_remeasures + 1} runs "
            f"({record['remeasure_reasons'][-1]}); cool the phone or lengthen thermal.throttle_wait_s"
        )


class AndroidSession(Session):
    """A model pushed to the phone; each :meth:`time` is one ``benchmark_model`` run."""

    def __init__(self, device: AndroidDevice, key: str, remote_model: str) -> None:
        self.device, self.key, self.remote_model = device, key, remote_model
        self.log: list[dict[str, Any]] = []

    def run_benchmark(self, num_runs: int = 50, op_profiling: bool = False,
                      peak_memory: bool = False) -> BenchmarkResult:
        """One full ``benchmark_model`` run, with everything it printed parsed."""
        result = self.device.run_benchmark(self.key, self.remote_model, num_runs, op_profiling, peak_memory)
        self.log.append(self.device.last_run)
        return result

    def profile_layers(self, runs: int, quantile: float = 0.5) -> LayerProfile:
        """One ``benchmark_model`` run of ``runs`` runs with ``--enable_op_profiling`` and
        ``--report_peak_memory_footprint``: its per-operator table, its average and memory
        (the tool reports means, so ``quantile`` is not used)."""
        check_runs(runs)
        return benchmark_layer_profile(self.run_benchmark(runs, op_profiling=True, peak_memory=True), runs)

    def time(self, iterations: int) -> float:
        """Mean seconds per run as ``benchmark_model`` measured it (its run phase's avg)."""
        return self.run_benchmark(iterations).inference_avg_us / 1e6

    def provenance(self) -> dict[str, Any]:
        """The last run's delegation summary (``delegation``) and, when the graph did not
        run wholly on the asked-for delegate, one ``delegation_warning`` line."""
        last = next((r for r in reversed(self.log) if "delegation" in r), None)
        if last is None:
            return {}
        out: dict[str, Any] = {"delegation": dict(last["delegation"])}
        if last.get("delegation_warning"):
            out["delegation_warning"] = last["delegation_warning"]
        return out

    def close(self) -> None:
        """Remove the pushed model from the device (best effort)."""
        try:
            self.device.shell(["rm", "-f", self.remote_model], check=False)
        except DeviceError as exc:
            log.debug("could not remove %s: %s", self.remote_model, exc)
