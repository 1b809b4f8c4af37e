"""The Android device's ADB waits and shortest sample: given, else from LATKIT_ADB_* variables, else the defaults."""

from __future__ import annotations

import pytest

from latkit.core.errors import UsageError
from latkit.devices.android import ADB_ENV, AndroidDevice

URI = "adb+tcp://127.0.0.1:6555"


@pytest.fixture(autouse=True)
def no_wait_env(monkeypatch):
    for var, _ in ADB_ENV.values():
        monkeypatch.delenv(var, raising=False)


def test_defaults_without_the_variables():
    d = AndroidDevice(URI)
    assert (d.connect_wait_s, d.connect_timeout_s, d.shell_timeout_s) == (20.0, 10.0, 20.0)


def test_variables_set_the_waits_and_arguments_win(monkeypatch):
    monkeypatch.setenv("LATKIT_ADB_CONNECT_WAIT_S", "4")
    monkeypatch.setenv("LATKIT_ADB_CONNECT_TIMEOUT_S", " 2.5 ")
    monkeypatch.setenv("LATKIT_ADB_SHELL_TIMEOUT_S", "0")
    d = AndroidDevice(URI)
    assert (d.connect_wait_s, d.connect_timeout_s, d.shell_timeout_s) == (4.0, 2.5, 0.0)
    assert d._transport().connect_timeout_s == 2.5  # reaches the transport (which connects lazily)
    given = AndroidDevice(URI, connect_wait_s=7.0, connect_timeout_s=1.0, shell_timeout_s=9.0)
    assert (given.connect_wait_s, given.connect_timeout_s, given.shell_timeout_s) == (7.0, 1.0, 9.0)


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_variable_is_one_line_naming_it(monkeypatch, value):
    monkeypatch.setenv("LATKIT_ADB_SHELL_TIMEOUT_S", value)
    with pytest.raises(UsageError) as e:
        AndroidDevice(URI)
    assert str(e.value) == f"LATKIT_ADB_SHELL_TIMEOUT_S must be a number of seconds >= 0, got {value!r}"


def test_the_shortest_sample_comes_from_the_argument_the_variable_or_200_ms(monkeypatch):
    from latkit.profiler.protocol import ProtocolConfig

    quick = ProtocolConfig.quick()
    assert AndroidDevice(URI).adapt_protocol(quick).target_sample_ms == 200.0
    monkeypatch.setenv("LATKIT_ADB_SAMPLE_MS", "25")
    assert AndroidDevice(URI).adapt_protocol(quick).target_sample_ms == 25.0
    assert AndroidDevice(URI, sample_ms=50.0).adapt_protocol(quick).target_sample_ms == 50.0
    # a protocol that asks for longer samples keeps them
    assert AndroidDevice(URI).adapt_protocol(ProtocolConfig.quick(target_sample_ms=400.0)).target_sample_ms == 400.0


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_sample_variable_is_one_line_naming_it(monkeypatch, value):
    monkeypatch.setenv("LATKIT_ADB_SAMPLE_MS", value)
    with pytest.raises(UsageError) as e:
        AndroidDevice(URI)
    assert str(e.value) == f"LATKIT_ADB_SAMPLE_MS must be a number of milliseconds > 0, got {value!r}"
    with pytest.raises(UsageError, match="sample_ms must be a number of milliseconds > 0, got 0"):
        AndroidDevice(URI, sample_ms=0)
