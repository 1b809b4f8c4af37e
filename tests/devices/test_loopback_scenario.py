"""Scenarios (/sys files that change for real) and the benchmark_model stand-in."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time

import pytest

from latkit.devices.loopback import sandbox
from latkit.devices.loopback.scenario import Scenario, ScenarioPlayer, cpufreq_dir
from latkit.devices.loopback.server import LoopbackDevice

pytestmark = pytest.mark.slow

BIG_MAX = 2841600
LITTLE_MAX = 1804800


def _read_int(path) -> int:
    return int(path.read_text())


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory):
    """A small real conv model exported with litert_torch (a few seconds, once)."""
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 32, 3, padding=1)).eval()
    path = tmp_path_factory.mktemp("model") / "conv.tflite"
    litert_torch.convert(model, (torch.randn(1, 8, 48, 48),)).export(str(path))
    return path


def _player(tmp_path, scenario: Scenario) -> ScenarioPlayer:
    profile = sandbox.DeviceProfile()
    sandbox.build(tmp_path, profile)
    player = ScenarioPlayer(tmp_path, profile, scenario)
    player.build()
    return player


def test_throttle_scenario_heats_throttles_and_recovers(tmp_path):
    player = _player(tmp_path, Scenario.named("throttle"))
    big = cpufreq_dir(tmp_path, 4) / "scaling_cur_freq"
    little = cpufreq_dir(tmp_path, 0) / "scaling_cur_freq"
    zone = tmp_path / "sys/class/thermal/thermal_zone1/temp"
    assert _read_int(zone) == 30000 and _read_int(big) == BIG_MAX
    pidfile = tmp_path / ".loopback/running" / str(os.getpid())  # a live "benchmark"
    pidfile.touch()
    temps = []
    for _ in range(40):
        player.step(0.1)
        temps.append(_read_int(zone))
        if player.throttled:
            break
    assert all(b > a for a, b in zip(temps, temps[1:]))  # heats monotonically under load
    assert player.throttled and temps[-1] >= 45000
    assert _read_int(big) == int(BIG_MAX * 0.6)
    assert _read_int(little) == LITTLE_MAX  # only the big cluster throttles
    assert _read_int(tmp_path / "sys/class/power_supply/battery/temp") > 300
    pidfile.unlink()
    for _ in range(100):
        player.step(0.1)
        if not player.throttled:
            break
    assert not player.throttled and _read_int(zone) <= 40000
    assert _read_int(big) == BIG_MAX


def test_cool_scenario_stays_put_and_stale_pids_are_ignored(tmp_path):
    player = _player(tmp_path, Scenario.named("cool"))
    (tmp_path / ".loopback/running/999999999").touch()  # no such process
    for _ in range(20):
        player.step(0.5)
    assert player.running_benchmarks() == 0
    assert _read_int(tmp_path / "sys/class/thermal/thermal_zone1/temp") == 30000


def _shell_v2(dev, command: str) -> tuple[int, str, str]:
    """Run a command with the v2 shell protocol through a real ADB stream."""
    from test_loopback_protocol import RawHost  # sibling test module (rootdir on sys.path)

    host = RawHost(dev.port)
    try:
        remote = host.open("shell,v2,raw:" + command)
        data = host.read_stream(1, remote)
    finally:
        host.close()
    out, err, code, i = b"", b"", None, 0
    while i < len(data):
        pid, n = struct.unpack_from("<BI", data, i)
        payload = data[i + 5:i + 5 + n]
        i += 5 + n
        if pid == 1:
            out += payload
        elif pid == 2:
            err += payload
        elif pid == 3:
            code = payload[0]
    assert code is not None
    return code, out.decode(), err.decode()


def _field(text: str, name: str) -> float:
    match = re.search(rf"Inference timings in us: .*{name}: ([0-9.e+]+)", text)
    assert match, text
    return float(match.group(1))


def test_benchmark_model_over_shell(tmp_path, tflite_model):
    with LoopbackDevice(tmp_path / "dev", auth="off") as dev:
        target = dev.root / "data/local/tmp/conv.tflite"
        target.write_bytes(tflite_model.read_bytes())
        code, out, err = _shell_v2(
            dev, "/data/local/tmp/benchmark_model --graph=/data/local/tmp/conv.tflite "
                 "--num_threads=1 --warmup_runs=2 --warmup_min_secs=0 --num_runs=15 "
                 "--min_secs=0 --enable_op_profiling=true --report_peak_memory_footprint=true")
        assert code == 0, err
        assert "INFO: Graph: [/data/local/tmp/conv.tflite]" in out  # device path, not host
        assert "INFO: Loaded model /data/local/tmp/conv.tflite" in out
        counts = re.findall(r"count=(\d+) first=(\d+) curr=(\d+) min=(\d+) max=(\d+) "
                            r"avg=([0-9.e+]+) std=(\d+)", out)
        assert len(counts) >= 2
        warm, runs = counts[0], counts[1]
        assert int(warm[0]) == 2 and int(runs[0]) == 15
        assert 0 < int(runs[3]) <= float(runs[5]) <= int(runs[4])
        assert _field(out, "Inference \\(avg\\)") == pytest.approx(float(runs[5]))
        assert "Operator-wise Profiling Info for Regular Benchmark Runs:" in out
        assert "Overall peak memory footprint (MB)" in out

        code, out, err = _shell_v2(dev, "/data/local/tmp/benchmark_model "
                                        "--graph=/data/local/tmp/missing.tflite")
        assert code == 1 and "ERROR:" in err and "/data/local/tmp/missing.tflite" in err
        # no GPU or NPU here: their placement is simulated and said so; one at a time
        code, out, err = _shell_v2(dev, "/data/local/tmp/benchmark_model --graph=/data/local/tmp/"
                                        "conv.tflite --use_gpu=true --num_runs=2 --min_secs=0")
        assert code == 0, err
        assert "SIMULATED GPU delegate" in out
        assert "Explicitly applied GPU delegate, and the model graph will be completely" in out
        code, _, err = _shell_v2(dev, "/data/local/tmp/benchmark_model --graph=/data/local/tmp/"
                                      "conv.tflite --use_gpu=true --use_nnapi=true")
        assert code == 1 and "one delegate per run" in err


def _min_us(root, model, mask: str | None) -> int:
    env = sandbox.shell_env(root)
    if mask:
        env["LATKIT_LOOPBACK_CPU_MASK"] = mask
    out = subprocess.run(
        [sys.executable, "-m", "latkit.devices.loopback.benchmark_model", f"--graph={model}",
         "--num_threads=1", "--warmup_runs=3", "--warmup_min_secs=0", "--num_runs=20",
         "--min_secs=0"], env=env, cwd=root, capture_output=True, text=True, timeout=60,
        check=True).stdout
    return int(re.findall(r"min=(\d+)", out)[-1])


def test_throttled_cluster_really_runs_slower(tmp_path, tflite_model):
    player = _player(tmp_path, Scenario.named("cool"))
    del player
    for cpu in range(4, 8):
        (cpufreq_dir(tmp_path, cpu) / "scaling_cur_freq").write_text(f"{BIG_MAX // 2}\n")
    # the baseline runs in a second, cool sandbox; the runs alternate and each side keeps
    # its best, so one loaded moment on a shared host cannot decide the ratio (a working
    # emulation gives about 2x, a broken one about 1x in every round). Thread CPU time of
    # one process can run 1.3-1.5x another's on a loaded host (a busy hyperthread sibling),
    # so a slow round is retried: up to 8 rounds, stopping as soon as both ratios show.
    cool = tmp_path / "cool"
    _player(cool, Scenario.named("cool"))
    base = slow = little = 10**9
    for _ in range(8):
        base = min(base, _min_us(cool, tflite_model, None))
        slow = min(slow, _min_us(tmp_path, tflite_model, "f0"))
        little = min(little, _min_us(tmp_path, tflite_model, "0f"))
        if slow / base > 1.5 and little / base > 1.2:
            break
    assert slow / base > 1.5  # f = 0.5 -> about 2x, measured
    assert little / base > 1.2  # little cluster: 1.8 / 2.84 GHz


def test_heat_scenario_live_over_shell(tmp_path, tflite_model):
    fast = Scenario.named("throttle").with_(heat_c_per_s=150.0, cool_per_s=3.0, tick_s=0.02)
    with LoopbackDevice(tmp_path / "dev", scenario=fast, auth="off") as dev:
        (dev.root / "data/local/tmp/m.tflite").write_bytes(tflite_model.read_bytes())
        zone = "/sys/class/thermal/thermal_zone1/temp"
        big = "/sys/devices/system/cpu/cpu7/cpufreq/scaling_cur_freq"
        _, before, _ = _shell_v2(dev, f"cat {zone} {big}")
        code, out, _ = _shell_v2(
            dev, "/data/local/tmp/benchmark_model --graph=/data/local/tmp/m.tflite "
                 "--num_threads=1 --warmup_min_secs=0.2 --min_secs=1.5 --num_runs=1 & "
                 f"for i in $(seq 100); do [ $(cat {zone}) -gt 46000 ] && break; sleep 0.05; "
                 f"done; cat {zone} {big}; wait")
        assert code == 0
        temp_before, freq_before = map(int, before.split())
        tail = [ln for ln in out.splitlines() if ln.strip().isdigit()]
        temp_hot, freq_hot = map(int, tail[-2:])
        assert temp_before == 30000 and freq_before == BIG_MAX
        assert temp_hot > 45000 and freq_hot == int(BIG_MAX * 0.6)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, now, _ = _shell_v2(dev, f"cat {zone} {big}")
            temp_now, freq_now = map(int, now.split())
            if freq_now == BIG_MAX:
                break
            time.sleep(0.1)
        assert freq_now == BIG_MAX and temp_now < temp_hot
