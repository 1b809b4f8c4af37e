"""Phone delegates and precision over the loopback ADB device: the URI's delegate and
threads reach benchmark_model as its real flags, the int8 file is what gets pushed and
run, and the delegation summary lands in each measurement's provenance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from latkit.devices.android import AndroidDevice
from latkit.devices.base import open_device
from latkit.devices.precision import Precision, check_precision
from latkit.core.errors import MeasurementError, UsageError
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.protocol import ProtocolConfig, measure_many

pytestmark = pytest.mark.slow

server = pytest.importorskip("latkit.devices.loopback.server")
loopback_tool = pytest.importorskip("latkit.devices.loopback.benchmark_model")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

FIX = Path(__file__).parent / "fixtures"
QUICK = ProtocolConfig(warmup_runs=1, warmup_s=0.0, min_samples=2, max_samples=2)
CONV = OpSpec(OpType.HEAD_CONV, (8, 8, 16), (8, 8, 32), act=Act.RELU)


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    root = tmp_path_factory.mktemp("phone")
    with server.LoopbackDevice(root / "root", auth="accept") as dev:
        dev.key = root / "adbkey"
        yield dev


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same op built at fp32 and at int8 (exported, then quantized by latkit)."""
    from latkit.profiler.export import BuiltModel

    cache = tmp_path_factory.mktemp("export")
    return {p: BuiltModel(CONV, cache_dir=cache, precision=Precision(p)) for p in ("fp32", "int8")}


def _uri(phone, options: str = "") -> str:
    return f"adb+tcp://127.0.0.1:{phone.port}" + (f"?{options}" if options else "")


def _device(phone, options: str = "", **kw) -> AndroidDevice:
    kw.setdefault("backoff_s", 0.05)
    return open_device(_uri(phone, options), key_path=phone.key, **kw)


def _runs_since(phone, before: int) -> list[dict]:
    return loopback_tool.received_runs(phone.root)[before:]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- the URI


def test_uri_options_are_checked_and_canonical(phone):
    d = _device(phone, "threads=2&delegate=gpu")
    assert d.uri == _uri(phone, "delegate=gpu&threads=2")  # one spelling per configuration
    assert (d.delegate, d.threads) == ("gpu", 2)
    assert d.flags["use_gpu"] and not d.flags["use_xnnpack"] and not d.flags["use_nnapi"]
    assert _device(phone).delegate == "xnnpack" and _device(phone).uri == _uri(phone)
    assert check_precision(d, Precision.INT8) is Precision.INT8 and AndroidDevice.precisions == (
        "fp32", "fp16", "int8")
    assert open_device("adb:R58M12?delegate=nnapi").uri == "adb:R58M12?delegate=nnapi"


@pytest.mark.parametrize("options, words", [
    ("delegate=tpu", ["unknown delegate 'tpu'", "none, xnnpack, gpu, nnapi"]),
    ("delegate=GPU", ["unknown delegate 'GPU'"]),
    ("use_gpu=true", ["unknown option 'use_gpu=true'", "delegate=none|xnnpack|gpu|nnapi, threads=N"]),
    ("threads=0", ["bad threads value '0'", "1-256"]),
    ("threads=two", ["bad threads value 'two'"]),
    ("delegate=gpu&delegate=nnapi", ["option delegate given twice"]),
    ("delegate", ["unknown option 'delegate'"]),
])
def test_bad_uri_option_is_one_line(phone, options, words):
    with pytest.raises(UsageError) as e:
        _device(phone, options)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    with pytest.raises(UsageError):
        open_device(f"adb:SERIAL?{options}")  # the serial form is checked the same way


def test_threads_given_twice_must_agree(phone):
    assert _device(phone, "threads=3", threads=3).threads == 3
    with pytest.raises(UsageError, match="threads=2 disagrees"):
        _device(phone, "threads=3", threads=2)


# ---------------------------------------------------------------- end to end


def test_gpu_int8_profile_sends_the_flags_and_the_int8_file(phone, built):
    from latkit.profiler.quantize import model_precision

    int8_file = built["int8"].file("tflite")
    assert model_precision(int8_file) is Precision.INT8  # quantized for real, not renamed
    d = _device(phone, "delegate=gpu&threads=2")
    before = len(loopback_tool.received_runs(phone.root))
    [m] = measure_many(d, [built["int8"]], QUICK)
    runs = _runs_since(phone, before)
    assert runs, "benchmark_model never ran"
    for run in runs:  # what the phone's benchmark_model itself received
        assert "--use_gpu=true" in run["argv"] and "--use_xnnpack=false" in run["argv"]
        assert "--use_nnapi=false" in run["argv"] and "--num_threads=2" in run["argv"]
        assert run["flags"]["use_gpu"] is True and run["flags"]["num_threads"] == 2
        assert run["graph_sha256"] == _sha256(int8_file) != _sha256(built["fp32"].file("tflite"))
        assert run["graph"].startswith("/data/local/tmp/latkit/") and run["unconsumed"] == []
        assert run["delegation"]["int8"] is True
    # the loopback's rule: an int8 graph keeps its first and last node on the CPU
    nodes = runs[-1]["delegation"]["nodes"]
    assert runs[-1]["delegation"]["taken"] == nodes - 2 >= 1
    prov = m.provenance
    assert prov["delegation"] == {
        "delegate": "gpu", "applied": True, "delegated_kernels": 1, "fully_delegated": False,
        "summary": "Explicitly applied GPU delegate, and the model graph will be partially "
                   "executed by the delegate w/ 1 delegate kernels."}
    assert prov["delegation_warning"] == ("the gpu delegate ran only part of the graph "
                                          "(1 delegate kernels); the rest ran on the CPU")
    assert prov["precision"] == "int8" and prov["device"]["extra"]["delegate"] == "gpu"
    assert prov["device"]["uri"] == _uri(phone, "delegate=gpu&threads=2")
    assert m.latency_ms > 0 and m.n_samples == 2
    d.close()


def test_fp32_on_gpu_is_fully_delegated_and_unflagged(phone, built):
    d = _device(phone, "delegate=gpu")
    [m] = measure_many(d, [built["fp32"]], QUICK)
    assert m.provenance["delegation"]["fully_delegated"] is True
    assert m.provenance["delegation"]["delegated_kernels"] == 1
    assert "delegation_warning" not in m.provenance
    d.close()


def test_nnapi_that_takes_nothing_is_flagged(phone, built):
    d = _device(phone, "delegate=nnapi")
    before = len(loopback_tool.received_runs(phone.root))
    [fp32] = measure_many(d, [built["fp32"]], QUICK)
    assert all("--use_nnapi=true" in r["argv"] for r in _runs_since(phone, before))
    assert fp32.provenance["delegation"]["applied"] is False
    assert fp32.provenance["delegation"]["delegated_kernels"] == 0
    assert "took no part of the graph" in fp32.provenance["delegation_warning"]
    [int8] = measure_many(d, [built["int8"]], QUICK)  # an NPU runs int8 whole
    assert int8.provenance["delegation"]["fully_delegated"] is True
    assert "delegation_warning" not in int8.provenance
    d.close()


def test_no_delegate_turns_the_default_xnnpack_off(phone, built):
    d = _device(phone, "delegate=none")
    before = len(loopback_tool.received_runs(phone.root))
    [m] = measure_many(d, [built["fp32"]], QUICK)
    for run in _runs_since(phone, before):
        assert "--use_xnnpack=false" in run["argv"] and "--use_gpu=false" in run["argv"]
        assert run["delegation"]["taken"] == 0
    assert m.provenance["delegation"]["delegate"] == "none"
    assert m.provenance["delegation"]["applied"] is False
    assert "delegation_warning" not in m.provenance
    d.close()


def test_binary_that_ignores_the_delegate_flag_is_refused(phone, built, tmp_path):
    # an old benchmark_model without --use_gpu warns "Unconsumed cmdline flags" and
    # times the CPU: that is not what adb...?delegate=gpu means
    fake = tmp_path / "benchmark_model"
    fake.write_text("#!/bin/sh\ncat <<'EOF'\n" + (FIX / "bm_unconsumed_delegate_flag.txt").read_text()
                    + "EOF\n")
    d = _device(phone, "delegate=gpu", benchmark_binary=fake, retries=1)
    with pytest.raises(MeasurementError) as e:
        measure_many(d, [built["fp32"]], QUICK)
    msg = str(e.value)
    assert "\n" not in msg and "does not know --use_gpu=true" in msg and "newer benchmark_model" in msg
    d.close()


# ---------------------------------------------------------------- the CLI


def test_measure_a_user_int8_file_on_the_phone_with_a_delegate(phone, built, capsys, tmp_path):
    import json
    import shutil

    from cli_checks import one_error_line, run

    user_file = shutil.copy(built["int8"].file("tflite"), tmp_path / "my_model.tflite")
    before = len(loopback_tool.received_runs(phone.root))
    code, out, err = run(capsys, "measure", user_file, "--device", _uri(phone, "delegate=nnapi"),
                         "--quick", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["precision"] == "int8" and data["sha256"] == _sha256(user_file)
    assert data["provenance"]["delegation"]["delegate"] == "nnapi"
    assert data["provenance"]["delegation"]["fully_delegated"] is True
    runs = _runs_since(phone, before)
    assert runs and all(r["graph_sha256"] == _sha256(user_file) for r in runs)
    assert all("--use_nnapi=true" in r["argv"] for r in runs)
    code, _, err = run(capsys, "measure", user_file, "--device", _uri(phone, "delegate=tpu"))
    one_error_line(code, err, "unknown delegate 'tpu'", "none, xnnpack, gpu, nnapi")
