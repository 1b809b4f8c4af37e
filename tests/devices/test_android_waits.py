"""The Android device's ADB waits: given, else from LATKIT_ADB_* variables, else the defaults."""

from __future__ import annotations

import pytest

from latkit.core.errors import UsageError
from latkit.devices.android import WAIT_ENV, AndroidDevice

URI = "adb+tcp://127.0.0.1:6555"


@pytest.fixture(autouse=True)
def no_wait_env(monkeypatch):
    for var, _ in WAIT_ENV.values():
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
