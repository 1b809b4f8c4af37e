"""The new surfaces with bad input (issue 28): each class of problem, reproduced, then refused.

Security: names that leave the output folder, device text with control
characters. Hangs: files that are not regular files (a FIFO with no writer,
``/dev/zero``) are refused before anything opens them. In-process CLI runs go
through ``cli_checks``; a hang is run in a subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import one_error_line, run
from latkit.core.errors import StoreError, UsageError

ARCH = json.dumps({"space": "proxyless_mobile_w05", "resolution": 32,
                   "arch": ["3x3_MBConv3"] * 21})  # fmt: skip


def _latkit(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``latkit ARGV`` in a child; a hang fails the test instead of stalling the suite."""
    return subprocess.run([sys.executable, "-m", "latkit", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})  # fmt: skip


@pytest.fixture()
def fifo(tmp_path) -> Path:
    path = tmp_path / "model.onnx"
    os.mkfifo(path)
    return path


# --- security -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute", "a/b", "..", "", "bad\nname"])
def test_export_name_must_stay_inside_the_folder(tmp_path, name):
    import latkit

    arch = tmp_path / "arch.json"
    arch.write_text(ARCH)
    with pytest.raises(UsageError, match="not a plain file name"):
        latkit.export(arch, None, "onnx", tmp_path / "out", random_weights=True, name=name)
    assert not (tmp_path / "escaped.onnx").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("field", ["model", "serial", "product"])
def test_loopback_profile_text_cannot_spoof_a_property(field):
    from latkit.devices.loopback.sandbox import DeviceProfile

    with pytest.raises(UsageError, match=f"loopback device {field}"):
        DeviceProfile(**{field: "Pixel\nro.build.fingerprint=spoofed"})
    with pytest.raises(UsageError, match="printable"):
        DeviceProfile(**{field: ""})


def test_device_text_reaches_the_terminal_with_its_controls_shown(monkeypatch, capsys):
    from latkit.cli import ops

    evil = "Pixel\x1b]0;pwned\x07\x1b[2J\x9b31m"
    monkeypatch.setattr(ops, "_phones", lambda uris: [{"uri": "adb:x", "model": evil}])
    code, out, _ = run(capsys, "devices")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "Pixel\\x1b]0;pwned\\x07" in out


# --- hangs: special files -------------------------------------------------------------------


def test_measure_refuses_a_fifo_without_opening_it(fifo):
    proc = _latkit("measure", str(fifo))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "not a regular file" in lines[0], proc.stderr


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom"])
def test_measure_refuses_endless_devices(special, capsys):
    if not Path(special).exists():
        pytest.skip(f"no {special} here")
    code, _, err = run(capsys, "measure", special)
    one_error_line(code, err, special, "not a regular file")


def test_export_refuses_fifo_weights(tmp_path, fifo):
    from latkit.deploy.export_weights import read_weights, weights_file

    with pytest.raises(StoreError, match="not a regular file"):
        weights_file(fifo)
    with pytest.raises(StoreError, match="not a regular file"):
        read_weights(fifo)


def test_export_refuses_weights_and_random_weights_together(tmp_path):
    import latkit

    arch = tmp_path / "arch.json"
    arch.write_text(ARCH)
    (tmp_path / "w.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(UsageError, match="not both"):
        latkit.export(arch, tmp_path / "w.safetensors", "onnx", tmp_path / "out", random_weights=True)
    with pytest.raises(UsageError, match="on_progress"):
        latkit.export(arch, None, "onnx", tmp_path / "out", random_weights=True, on_progress="verbose")


# --- hangs and tracebacks: farm addresses ---------------------------------------------------


def test_farm_address_that_never_answers_is_refused_in_time():
    import socket

    from latkit.core.errors import DeviceError
    from latkit.profiler.farm.cluster import _reachable

    with socket.socket() as listener:  # accepts (the kernel does), never speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(DeviceError, match="answered nothing in 0.2 s"):
            _reachable(f"127.0.0.1:{port}", timeout_s=0.2)


@pytest.mark.parametrize("address", ["127.0.0.1:\u0661\u0662\u0663", "127.0.0.1:99999", "127.0.0.1:0"])
def test_farm_address_port_must_be_an_ascii_port_number(address, capsys):
    code, _, err = run(capsys, "farm", "devices", "--address", address)
    one_error_line(code, err, "bad cluster address", "1-65535")


# --- tracebacks: unwritable standard output -------------------------------------------------


@pytest.mark.parametrize("argv", [["spaces"], ["spaces", "--json"]])
def test_stdout_on_a_full_disk_is_one_line(argv):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "latkit", *argv], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot write the output") and "No space left" in lines[0]


# --- hangs and tracebacks: models that never end or cannot be fed ---------------------------


def _onnx(path: Path, dims: list[int], loop: bool = False) -> Path:
    """A one-input float model: a Relu, or a Loop whose condition stays true (it never ends)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    if loop:
        body = helper.make_graph(
            [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Relu", ["v"], ["v_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("c", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, dims)])  # fmt: skip
        nodes = [helper.make_node("Constant", [], ["t"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
                 helper.make_node("Loop", ["", "t", "x"], ["y"], body=body)]  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_model_that_never_ends_is_stopped_at_the_run_limit(tmp_path):
    from latkit.core.errors import MeasurementError
    from latkit.devices.base import open_device
    from latkit.profiler.model_file import ModelFile

    dev = open_device("cpu:onnxruntime")
    dev.run_limit_s = 0.3
    with pytest.raises(MeasurementError, match="longer than 0.3 s"):
        dev.open(ModelFile(_onnx(tmp_path / "loop.onnx", [1, 4], loop=True)))
    session = dev.open(ModelFile(_onnx(tmp_path / "relu.onnx", [1, 4])))  # a finite model runs as before
    assert session.time(5) > 0


def test_the_run_limit_follows_the_protocol_budget():
    from latkit.profiler.protocol import ProtocolConfig, run_limit_s

    assert run_limit_s(ProtocolConfig(max_seconds_per_op=20.0, warmup_s=0.5)) == pytest.approx(61.5)
    assert run_limit_s(ProtocolConfig(max_seconds_per_op=0.5, warmup_s=0.1)) == 10.0


@pytest.mark.parametrize("dims", [[1, 3, 2**31, 2**31], [1, 3, 2**40, 4], [1, 64, 8192, 8192]])
def test_measure_refuses_an_input_too_large_to_feed(dims, tmp_path, capsys):
    code, _, err = run(capsys, "measure", _onnx(tmp_path / "huge.onnx", dims))
    one_error_line(code, err, "GiB", "smaller input size")


@pytest.mark.parametrize("threads", ["100000", "257"])
def test_measure_refuses_more_threads_than_any_cpu_has(threads, tmp_path, capsys):
    code, _, err = run(capsys, "measure", _onnx(tmp_path / "m.onnx", [1, 4]), "--threads", threads)
    one_error_line(code, err, "threads", "1..256")


# --- silent accepts: phones and serials -----------------------------------------------------


@pytest.mark.parametrize("adb, needle", [
    (["adb+tcp://127.0.0.1:6555", "adb+tcp://localhost:6555"], "same phone"),
    (["adb+tcp://127.0.0.1:6555", "adb+tcp://127.0.0.1:06555"], "same phone"),
    (["adb+tcp://127.0.0.1:99999"], "1-65535"),
    (["adb+tcp://127.0.0.1:6555?delegate=bogus"], "unknown delegate"),
    (["adb:SERIAL"], "must be a phone"),
])  # fmt: skip
def test_farm_phones_are_checked_and_never_given_twice(adb, needle):
    from latkit.profiler.farm.cluster import distinct_phones

    with pytest.raises(UsageError, match=needle):
        distinct_phones(adb)


def test_farm_phones_are_written_one_way():
    from latkit.profiler.farm.cluster import distinct_phones

    assert distinct_phones(["adb+tcp://127.0.0.1:6555", "adb+tcp://127.0.0.1:6556"]) == (
        "adb+tcp://127.0.0.1:6555", "adb+tcp://127.0.0.1:6556")


@pytest.mark.parametrize("uri", ["adb:", "adb:\n", "adb:ab cd", "adb:x\x1b[2J"])
def test_a_serial_must_be_printable_and_not_empty(uri):
    from latkit.devices.adb_transport import parse_adb_uri

    with pytest.raises(UsageError, match="serial"):
        parse_adb_uri(uri)
    assert parse_adb_uri("adb:emulator-5554") == ("serial", "emulator-5554", None)


# --- misleading: the content decides a model file's format, not its suffix ------------------


@pytest.mark.parametrize("name", ["model.tflite", "model", "model.bin"])
def test_a_valid_onnx_model_is_measured_whatever_its_suffix(name, tmp_path, capsys):
    code, out, err = run(capsys, "measure", _onnx(tmp_path / name, [1, 4]), "--quick")
    assert code == 0, err
    assert "onnx file" in out and name in out


# --- misleading and tracebacks: weights the exporter cannot use -----------------------------


def _arch_and_module(tmp_path):
    from latkit.deploy.export import read_arch
    from latkit.deploy.export_weights import standalone_module

    arch = tmp_path / "arch.json"
    arch.write_text(ARCH)
    network = read_arch(arch).network
    return arch, network, standalone_module(network)[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_diverged_weights_are_blamed_on_the_training_not_the_exporter(value, tmp_path):
    from safetensors.torch import save_file

    from latkit.deploy.export_weights import standalone_module

    _, network, module = _arch_and_module(tmp_path)
    state = {k: v.clone().fill_(value) if v.is_floating_point() else v for k, v in module.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(StoreError, match="NaN or infinite.*training diverged"):
        standalone_module(network, tmp_path / "w.safetensors")


def test_a_checkpoint_key_without_a_layer_number_is_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    from latkit.deploy.export_weights import SUPERNET_PREFIX, standalone_module

    _, network, _ = _arch_and_module(tmp_path)
    save_file({f"{SUPERNET_PREFIX}x.candidates.3x3.weight": torch.zeros(2)}, str(tmp_path / "ck.safetensors"))
    with pytest.raises(StoreError, match="names no layer number"):
        standalone_module(network, tmp_path / "ck.safetensors")


# --- misleading: the option at fault is named ------------------------------------------------


def test_a_garbage_adb_key_is_named_not_reported_as_no_device(tmp_path, capsys):
    key = tmp_path / "adbkey"
    key.write_text("garbage")
    (tmp_path / "adbkey.pub").write_text("garbage")
    code, _, err = run(capsys, "farm", "devices", "--key", key)
    one_error_line(code, err, "ADB key", "not an RSA private key")


def test_train_names_the_resolution_option(tmp_path, capsys):
    arch = tmp_path / "arch.json"
    arch.write_text(ARCH)
    code, _, err = run(capsys, "train", "--arch", arch, "--resolution", "100000", "--out", tmp_path / "t")
    one_error_line(code, err, "--resolution", "4096")


# --- misleading: a full disk is not a corrupt LUT -------------------------------------------


class _FullDisk:
    """A SQLite connection on a full disk: every statement fails as SQLite reports it."""

    in_transaction = False

    def rollback(self):
        pass

    def execute(self, *args):
        import sqlite3

        raise sqlite3.OperationalError("database or disk is full")


@pytest.mark.parametrize("step", ["_quick_check", "_prepare"])
def test_a_full_disk_is_not_called_a_corrupt_lut(step, tmp_path):
    from latkit.lut.store import LUT

    check = getattr(LUT, step)
    with pytest.raises(StoreError) as info:
        check(_FullDisk(), tmp_path / "ok.db") if step == "_quick_check" else check(
            _FullDisk(), tmp_path / "ok.db", False)
    assert "disk is full" in str(info.value) and "corrupt" not in str(info.value)
    assert "restore" not in str(info.value)
