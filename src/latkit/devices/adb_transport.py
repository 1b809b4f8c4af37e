"""Ways to talk to an Android device over ADB, behind one small interface.

* :class:`AdbShellTransport`: latkit speaks ADB itself through the ``adb_shell``
  package, over TCP (``adb+tcp://HOST:PORT``) or USB (``adb:SERIAL``, needs
  libusb1). Two fixes over plain ``adb_shell``: TCP_NODELAY on the socket (without
  it a small message waits for the peer's delayed ACK, tens of milliseconds) and
  writes that send every byte (upstream ``bulk_write`` ignores short sends, which
  stalls large pushes). ``benchmarks/adb_overhead.py`` times both clients.
* :class:`AdbServerTransport`: goes through the host's running ``adb`` server
  (port 5037 or ``ANDROID_ADB_SERVER_PORT``), for users who already use ``adb``.

Both run ``shell:`` v1, which carries no exit status, so every command is
wrapped: its stderr goes to a temp file and a unique marker line carries ``$?``;
:func:`_split_marked` takes the three parts apart again.
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from latkit.core.errors import DeviceAbsentError, DeviceError, MissingExtraError, UsageError
from latkit.core.files import check_input_file, one_line

log = logging.getLogger(__name__)

DEFAULT_SERVER_PORT = 5037
DEVICE_TMP = "/data/local/tmp"


class ShellResult(NamedTuple):
    """What one shell command returned."""

    rc: int
    stdout: str
    stderr: str


def quote_cmd(cmd: str | Sequence[str]) -> str:
    """A device shell command line: an argv list is quoted, a string is taken as-is."""
    if isinstance(cmd, str):
        return cmd
    return shlex.join(str(a) for a in cmd)


# one stderr file per latkit process (overwritten by each command, so no `rm` per call)
_ERR_TAG = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"


def _wrap(cmd: str, marker: str) -> str:
    # the subshell keeps an `exit` in cmd from skipping the marker; the blank echo
    # guarantees the marker starts a line even if cmd's output has no final newline;
    # `[` and `echo` are builtins, so an empty stderr costs no extra process
    err = shlex.quote(f"{DEVICE_TMP}/.latkit_err_{_ERR_TAG}")
    return f"( {cmd}\n) 2>{err}; __rc=$?; echo; echo {marker}$__rc; [ -s {err} ] && cat {err}"


def _split_marked(out: str, marker: str) -> ShellResult:
    idx = out.rfind(marker)
    if idx < 0:
        raise DeviceError(
            "device shell output ended before the exit-status marker (connection cut or "
            "command killed); check the device connection and retry"
        )
    stdout = out[:idx]
    if stdout.endswith("\n"):
        stdout = stdout[:-1]
    rest = out[idx + len(marker):]
    rc_text, _, stderr = rest.partition("\n")
    try:
        rc = int(rc_text.strip())
    except ValueError as exc:
        raise DeviceError(f"unreadable exit status {rc_text[:20]!r} from the device shell; retry") from exc
    return ShellResult(rc, stdout, stderr)


class AdbTransport(ABC):
    """Run commands on, and move files to and from, one Android device."""

    serial: str = ""
    kind: str = ""

    def shell(self, cmd: str | Sequence[str], timeout_s: float = 60.0) -> ShellResult:
        """Run ``cmd`` in the device shell and wait for it.

        Args:
            cmd: an argv list (each item is quoted) or a ready shell command line
                (the caller quotes every argument in it).
            timeout_s: how long the whole command may take.

        Returns:
            The exit status, stdout and stderr.

        Raises:
            DeviceError: the device cannot be reached or the command timed out.
        """
        marker = f"__LATKIT_RC_{uuid.uuid4().hex[:16]}__"
        out = self._raw_shell(_wrap(quote_cmd(cmd), marker), timeout_s)
        return _split_marked(out, marker)

    @abstractmethod
    def _raw_shell(self, line: str, timeout_s: float) -> str:
        """Run a shell line over ``shell:`` v1; return everything it printed."""

    @abstractmethod
    def push(self, local: str | Path, remote: str, timeout_s: float = 120.0) -> None:
        """Copy a local file to ``remote`` on the device."""

    @abstractmethod
    def pull(self, remote: str, local: str | Path, timeout_s: float = 120.0) -> None:
        """Copy ``remote`` from the device to a local file."""

    @abstractmethod
    def close(self) -> None:
        """Drop the connection (a later call reconnects)."""

    def __enter__(self) -> AdbTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- keys


def default_key_path() -> Path:
    """The ADB key to sign with: the user's ``~/.android/adbkey`` or latkit's own."""
    user = Path.home() / ".android" / "adbkey"
    if user.is_file():
        return user
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "latkit" / "adbkey"


def loopback_key_path() -> Path:
    """The key of ``latkit loopback-device`` (in latkit's cache; it accepts only that key)."""
    from latkit.devices.loopback.auth import device_key_path

    return device_key_path()


def load_signers(key_path: str | Path | None = None) -> list[Any]:
    """The ``adb_shell`` signers to authenticate with, in order.

    An explicit ``key_path`` is the only key. Otherwise the user's key
    (:func:`default_key_path`, generated if missing) comes first, then the loopback
    device's key when this user has one: adbd answers a wrong signature with a new
    token, so a phone is offered the user's key and a loopback device finds its own.
    """
    if key_path:
        return [load_signer(key_path)]
    signers = [load_signer(None)]
    loopback = loopback_key_path()
    if loopback.is_file() and loopback.resolve() != default_key_path().resolve():
        try:
            signers.append(load_signer(loopback))
        except (OSError, ValueError) as exc:  # an unreadable stand-in key never blocks a phone
            log.warning("ignoring the loopback device key %s: %s", loopback, exc)
    return signers


def load_signer(key_path: str | Path | None = None) -> Any:
    """An ``adb_shell`` signer for ``key_path``, generating the key pair if missing.

    Raises:
        UsageError: the file is not an RSA private key (a phone would otherwise
            just refuse the connection, and the key would go unnamed).
    """
    path = Path(key_path) if key_path else default_key_path()
    if path.exists():
        check_input_file(path, "ADB key")
    try:
        return _signer(path)
    except (OSError, ValueError, TypeError, IndexError, KeyError, UnicodeError) as exc:
        raise UsageError(f"ADB key {path} is not an RSA private key in PEM form with its .pub beside it "
                         f"({one_line(exc)}); give the key adb uses (~/.android/adbkey), or leave out --key") from exc


def _signer(path: Path) -> Any:
    try:
        from adb_shell.auth.keygen import keygen
    except ImportError as exc:
        raise MissingExtraError("talking to Android devices", "android", exc) from exc
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("generating an ADB key pair at %s", path)
        keygen(str(path))
    try:
        from adb_shell.auth.sign_pythonrsa import PythonRSASigner

        return PythonRSASigner.FromRSAKeyPath(str(path))
    except ImportError:
        from adb_shell.auth.sign_cryptography import CryptographySigner

        return CryptographySigner(str(path))


# ------------------------------------------------------------------- adb-shell


def _fixed_tcp_transport_class() -> type:
    """adb_shell's TcpTransport with TCP_NODELAY and complete writes (built lazily)."""
    from adb_shell.exceptions import TcpTimeoutException
    from adb_shell.transport.tcp_transport import TcpTransport

    class NoDelayTcpTransport(TcpTransport):
        """TcpTransport that disables Nagle and never drops part of a write."""

        def connect(self, transport_timeout_s: float | None) -> None:
            super().connect(transport_timeout_s)
            # adb sends small header + payload messages: Nagle + delayed ACK would
            # stall each one ~40 ms
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            # upstream returns b"" forever once the device hangs up, so adb_shell
            # spins until its read timeout; a closed socket is an error right away
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
            return data

        def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
            # the socket is non-blocking, so send() may take only part of data;
            # upstream returns that count and adb_shell never sends the rest
            view = memoryview(data)
            while view:
                _, writable, _ = select.select([], [self._connection], [], transport_timeout_s)
                if not writable:
                    raise TcpTimeoutException(
                        f"sending to {self._host}:{self._port} timed out after {transport_timeout_s} s"
                    )
                try:
                    sent = self._connection.send(view)
                except BlockingIOError:
                    continue
                view = view[sent:]
            return len(data)

    return NoDelayTcpTransport


class AdbShellTransport(AdbTransport):
    """latkit's own ADB client (``adb_shell``) over TCP or USB.

    Args:
        host, port: the device's adbd over TCP (``adb tcpip`` / an emulator).
        serial: a USB serial (used when ``host`` is None; needs libusb1).
        key_path: ADB private key (default: see :func:`load_signers`).
        connect_timeout_s: connect + authentication time limit (a phone shows a
            prompt on first use: accept it within this time).
    """

    kind = "adb-shell"

    def __init__(self, host: str | None = None, port: int = 5555, serial: str | None = None,
                 key_path: str | Path | None = None, connect_timeout_s: float = 10.0) -> None:
        if host is None and not serial:
            raise UsageError("AdbShellTransport needs a host (TCP) or a USB serial")
        self.host, self.port = host, port
        self.serial = f"{host}:{port}" if host else str(serial)
        self.key_path = key_path
        self.connect_timeout_s = connect_timeout_s
        self._dev: Any = None

    def _connect(self) -> Any:
        if self._dev is not None:
            return self._dev
        try:
            from adb_shell.adb_device import AdbDevice
            from adb_shell.exceptions import AdbTimeoutError, DeviceAuthError, TcpTimeoutException
        except ImportError as exc:
            raise MissingExtraError("talking to Android devices", "android", exc) from exc
        if self.host is not None:
            transport = _fixed_tcp_transport_class()(self.host, self.port)
        else:
            transport = self._usb_transport()
        dev = AdbDevice(transport, default_transport_timeout_s=self.connect_timeout_s)
        try:
            dev.connect(rsa_keys=load_signers(self.key_path), auth_timeout_s=self.connect_timeout_s,
                        transport_timeout_s=self.connect_timeout_s, read_timeout_s=self.connect_timeout_s)
        except (DeviceAuthError, AdbTimeoutError, TcpTimeoutException) as exc:
            # a phone that does not (yet) trust the key just stays silent
            dev.close()
            if self.host in ("127.0.0.1", "localhost", "::1"):
                hint = (f"a latkit loopback-device accepts only its own key ({loopback_key_path()}): "
                        "start it as this user with the same LATKIT_CACHE, or with --auth off")
            else:
                hint = "accept the USB debugging prompt on the phone (tick 'always allow') and retry"
            raise DeviceError(
                f"device {self.serial} did not accept latkit's ADB key within "
                f"{self.connect_timeout_s:.0f} s; {hint}"
            ) from exc
        except Exception as exc:  # adb_shell raises many unrelated types
            dev.close()
            raise DeviceError(f"cannot connect to Android device {self.serial}: {exc}; "
                              "check that it is reachable and adbd runs") from exc
        self._dev = dev
        return dev

    def _usb_transport(self) -> Any:
        port = adb_server_port()
        if adb_server_version(port=port) is not None:
            raise DeviceError(
                f"an adb server runs on port {port} and holds the USB devices; use the server "
                "transport (--adb-server) or stop it with `adb kill-server`"
            )
        try:
            from adb_shell.transport.usb_transport import UsbTransport
        except (ImportError, OSError) as exc:  # usb1 missing, or its libusb-1.0 library
            raise MissingExtraError(f"adb:{self.serial} with no adb server running (port {port}) is looked for "
                                    "on USB, and USB access to Android devices (libusb1)", "android", exc,
                                    hint=_not_on_usb_hint(self.serial)) from exc
        from adb_shell.exceptions import UsbDeviceNotFoundError

        try:
            return UsbTransport.find_adb(serial=self.serial, default_transport_timeout_s=self.connect_timeout_s)
        except UsbDeviceNotFoundError as exc:
            raise DeviceAbsentError(f"no USB Android device with serial {self.serial} is plugged in; check the "
                                    f"cable and the serial (`adb devices` lists them){_not_on_usb_hint(self.serial)}"
                                    ) from exc
        except Exception as exc:  # adb_shell's USB lookup raises its own and libusb's errors
            raise DeviceError(f"no USB Android device with serial {self.serial}: {exc}"
                              f"{_not_on_usb_hint(self.serial)}") from exc

    def _call(self, what: str, fn: Any, timeout_s: float) -> Any:
        dev = self._connect()
        try:
            return fn(dev)
        except Exception as exc:  # any failure leaves the ADB stream state unknown
            self.close()
            raise DeviceError(f"{what} on {self.serial} failed after at most {timeout_s:.0f} s: "
                              f"{type(exc).__name__}: {exc}; check the device and retry") from exc

    def _raw_shell(self, line: str, timeout_s: float) -> str:
        def run(dev: Any) -> str:
            raw = dev.shell(line, transport_timeout_s=timeout_s, read_timeout_s=timeout_s,
                            timeout_s=timeout_s, decode=False)
            return raw.decode("utf-8", errors="replace")

        return self._call("shell command", run, timeout_s)

    def push(self, local: str | Path, remote: str, timeout_s: float = 120.0) -> None:
        """Copy a local file to ``remote`` on the device."""
        if not Path(local).is_file():
            raise UsageError(f"cannot push {local}: no such file")
        self._call(f"push of {local}", lambda d: d.push(str(local), remote, transport_timeout_s=timeout_s,
                                                          read_timeout_s=timeout_s), timeout_s)

    def pull(self, remote: str, local: str | Path, timeout_s: float = 120.0) -> None:
        """Copy ``remote`` from the device to a local file."""
        self._call(f"pull of {remote}", lambda d: d.pull(remote, str(local), transport_timeout_s=timeout_s,
                                                           read_timeout_s=timeout_s), timeout_s)

    def close(self) -> None:
        """Drop the connection (a later call reconnects)."""
        if self._dev is not None:
            try:
                self._dev.close()
            except OSError:
                pass
            self._dev = None

    def socket(self) -> socket.socket | None:
        """The TCP socket in use (None before connecting or over USB)."""
        if self._dev is None or self.host is None:
            return None
        return self._dev._io_manager._transport._connection  # adb_shell keeps it there


# ---------------------------------------------------------------- adb server


def _not_on_usb_hint(serial: str) -> str:
    """Where a device that latkit looked for on USB may be instead: an emulator's TCP port, the running
    loopback phones."""
    from latkit.devices.loopback.running import loopback_hint

    hint = ""
    if serial.startswith("emulator-") and serial[9:].isdigit():  # adb's name for the emulator on PORT-1
        hint = f"; an emulator is reached without adb as adb+tcp://127.0.0.1:{int(serial[9:]) + 1}"
    return hint + loopback_hint()


def adb_server_port() -> int:
    """The adb server port: ``ANDROID_ADB_SERVER_PORT`` or 5037."""
    try:
        return int(os.environ.get("ANDROID_ADB_SERVER_PORT", DEFAULT_SERVER_PORT))
    except ValueError as exc:
        raise UsageError("ANDROID_ADB_SERVER_PORT must be a port number") from exc


def adb_server_version(host: str = "127.0.0.1", port: int | None = None,
                       timeout_s: float = 0.5) -> int | None:
    """The running adb server's protocol version, or None if none answers."""
    port = adb_server_port() if port is None else port
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            req = b"host:version"
            s.sendall(b"%04x%s" % (len(req), req))
            reply = b""
            while len(reply) < 12:
                chunk = s.recv(12 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    if reply[:4] != b"OKAY" or len(reply) < 12:
        return None
    try:
        return int(reply[8:12], 16)
    except ValueError:
        return None


class AdbServerTransport(AdbTransport):
    """The host's adb server (via ``adbutils``), for a device it already knows."""

    kind = "adb-server"

    def __init__(self, serial: str | None = None, host: str = "127.0.0.1", port: int | None = None) -> None:
        try:
            import adbutils
        except ImportError as exc:
            raise MissingExtraError("the adb server transport (adbutils)", "android", exc) from exc
        self._adbutils = adbutils
        self.server = (host, adb_server_port() if port is None else port)
        if adb_server_version(host, self.server[1]) is None:
            raise DeviceError(f"no adb server answers on {host}:{self.server[1]}; start one with "
                              "`adb start-server` or use the adb-shell transport")
        self._client = adbutils.AdbClient(host=host, port=self.server[1])
        serials = [d.serial for d in self._client.device_list()]
        if serial is None:
            if len(serials) != 1:
                raise DeviceError(f"the adb server lists {len(serials)} devices ({', '.join(serials)}); "
                                  "name one: adb:SERIAL")
            serial = serials[0]
        elif serial not in serials:
            raise DeviceError(f"the adb server does not list {serial} (it has: {', '.join(serials) or 'none'}); "
                              "check `adb devices`")
        self.serial = serial
        self._dev = self._client.device(serial)

    def _raw_shell(self, line: str, timeout_s: float) -> str:
        try:
            out = self._dev.shell(line, timeout=timeout_s, encoding=None)
        except Exception as exc:  # adbutils raises AdbError, AdbTimeout and socket errors
            raise DeviceError(f"shell command on {self.serial} via the adb server failed: {exc}") from exc
        return out.decode("utf-8", errors="replace") if isinstance(out, bytes) else out

    def push(self, local: str | Path, remote: str, timeout_s: float = 120.0) -> None:
        """Copy a local file to ``remote`` on the device."""
        try:
            self._dev.sync.push(str(local), remote)
        except Exception as exc:  # see _raw_shell
            raise DeviceError(f"push of {local} to {self.serial} failed: {exc}") from exc

    def pull(self, remote: str, local: str | Path, timeout_s: float = 120.0) -> None:
        """Copy ``remote`` from the device to a local file."""
        try:
            self._dev.sync.pull(remote, str(local))
        except Exception as exc:  # see _raw_shell
            raise DeviceError(f"pull of {remote} from {self.serial} failed: {exc}") from exc

    def close(self) -> None:
        """Nothing held: adbutils opens a connection per call."""


# ---------------------------------------------------------------- URIs


#: the delegates a phone URI can ask ``benchmark_model`` for (``?delegate=...``)
DELEGATES: tuple[str, ...] = ("none", "xnnpack", "gpu", "nnapi")
DEFAULT_DELEGATE = "xnnpack"  # what benchmark_model applies when no delegate is named
_OPTIONS_HELP = f"delegate={'|'.join(DELEGATES)}, threads=N"
_MAX_THREADS = 256


def split_adb_options(uri: str) -> tuple[str, dict[str, str | int]]:
    """``adb:SERIAL?delegate=gpu&threads=4`` -> (``adb:SERIAL``, {"delegate": "gpu", "threads": 4}).

    Options may come in any order; each at most once. A URI without ``?`` has none.

    Raises:
        UsageError: an unknown option, a repeated one, or a value not allowed.
    """
    base, sep, query = uri.partition("?")
    options: dict[str, str | int] = {}
    if not sep:
        return base, options
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if name not in ("delegate", "threads") or not eq:
            raise UsageError(f"unknown option {item[:40]!r} in device URI {uri[:120]!r}; "
                             f"valid options: {_OPTIONS_HELP}")
        if name in options:
            raise UsageError(f"option {name} given twice in device URI {uri[:120]!r}")
        if name == "delegate":
            if value not in DELEGATES:
                raise UsageError(f"unknown delegate {value[:40]!r} in device URI {uri[:120]!r}; "
                                 f"use one of {', '.join(DELEGATES)}")
            options[name] = value
        else:
            if not (value.isascii() and value.isdigit() and 1 <= int(value[:6]) <= _MAX_THREADS):
                raise UsageError(f"bad threads value {value[:40]!r} in device URI {uri[:120]!r}; "
                                 f"use threads=N with N in 1-{_MAX_THREADS}")
            options[name] = int(value)
    return base, options


def canonical_adb_uri(uri: str) -> str:
    """``uri`` with its options checked and in one order (delegate, then threads).

    The URI is a LUT row's device identity, so two spellings of one configuration
    must give one string. Options the user did not write are not added.

    Raises:
        UsageError: see :func:`split_adb_options`.
    """
    base, options = split_adb_options(uri)
    if not options:
        return base
    return base + "?" + "&".join(f"{k}={options[k]}" for k in ("delegate", "threads") if k in options)


def parse_adb_uri(uri: str) -> tuple[str, str, int | None]:
    """Split a device URI into (kind, host-or-serial, port); options after ``?`` are checked
    (:func:`split_adb_options`) and left out.

    ``adb+tcp://HOST:PORT`` -> ("tcp", HOST, PORT); ``adb:SERIAL`` -> ("serial", SERIAL, None);
    ``adb`` -> ("serial", "", None) (the only device the server knows).
    """
    uri, _ = split_adb_options(uri)
    if uri.startswith("adb+tcp:"):
        rest = uri[len("adb+tcp:"):].lstrip("/")
        host, sep, port = rest.rpartition(":")
        if host.startswith("[") and host.endswith("]"):  # an IPv6 literal: [::1]:PORT
            host = host[1:-1]
        elif ":" in host:
            host = ""  # an IPv6 address needs its brackets
        bad_host = not host or any(c.isspace() or c in "[]/@" for c in host)
        if not sep or bad_host or not (port.isascii() and port.isdigit() and len(port) <= 5):
            raise UsageError(f"bad device URI {uri!r}; write adb+tcp://HOST:PORT ([ADDR]:PORT for IPv6)")
        if not 1 <= int(port) <= 65535:
            raise UsageError(f"bad device URI {uri!r}: port {int(port)} is not in 1-65535")
        return "tcp", host, int(port)
    if uri == "adb":
        return "serial", "", None
    if uri.startswith("adb:"):
        serial = uri[4:]
        if not serial or any(c.isspace() or not c.isprintable() for c in serial):
            raise UsageError(f"bad device URI {uri!r}: the serial is empty or holds spaces or control characters; "
                             "write adb:SERIAL as `adb devices` lists it, or adb for the only phone")
        return "serial", serial, None
    raise UsageError(f"bad Android device URI {uri!r}; write adb:SERIAL or adb+tcp://HOST:PORT")


def open_transport(uri: str, use_server: bool = False, key_path: str | Path | None = None,
                   connect_timeout_s: float = 10.0) -> AdbTransport:
    """The transport for a device URI.

    Args:
        uri: ``adb+tcp://HOST:PORT`` (adb-shell over TCP) or ``adb:SERIAL``
            (USB through adb-shell, or the adb server when ``use_server``).
        use_server: go through the host's adb server.
        key_path: ADB key for adb-shell.
        connect_timeout_s: connect/authentication limit.
    """
    kind, where, port = parse_adb_uri(uri)
    if use_server:
        serial = f"{where}:{port}" if kind == "tcp" else (where or None)
        return AdbServerTransport(serial)
    if kind == "tcp":
        return AdbShellTransport(host=where, port=port or 5555, key_path=key_path,
                                 connect_timeout_s=connect_timeout_s)
    if not where:
        raise UsageError("name the device: adb:SERIAL (see `latkit devices`), or use --adb-server")
    return AdbShellTransport(serial=where, key_path=key_path, connect_timeout_s=connect_timeout_s)


_PROPS = {
    "model": "ro.product.model",
    "soc": "ro.soc.model",
    "board": "ro.board.platform",
    "android": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
    "abi": "ro.product.cpu.abi",
}


def getprops(t: AdbTransport, timeout_s: float = 10.0) -> dict[str, str]:
    """The handful of system properties latkit records (one round trip)."""
    script = "; ".join(f"echo \"$(getprop {shlex.quote(p)})\"" for p in _PROPS.values())
    res = t.shell(script, timeout_s)
    lines = res.stdout.split("\n")
    props = {k: (lines[i].strip() if i < len(lines) else "") for i, k in enumerate(_PROPS)}
    if not props["soc"]:
        props["soc"] = props["board"]
    return props


def list_android_devices(uris: Sequence[str] = (), use_server: bool | None = None,
                         key_path: str | Path | None = None) -> list[dict[str, str]]:
    """Android devices reachable now, with model, SoC, Android version and ABI.

    Args:
        uris: device URIs to probe explicitly (``adb+tcp://...``).
        use_server: also list what the adb server knows (default: if one runs).
        key_path: ADB key for adb-shell.
    """
    rows: list[dict[str, str]] = []
    if use_server is None:
        use_server = adb_server_version() is not None
    targets: list[str] = []
    if use_server:
        import adbutils

        client = adbutils.AdbClient(host="127.0.0.1", port=adb_server_port())
        targets += [f"adb:{d.serial}" for d in client.device_list()]
    targets += list(uris)
    for uri in targets:
        started = time.perf_counter()
        try:
            with open_transport(uri, use_server=use_server and uri.startswith("adb:"), key_path=key_path) as t:
                props = getprops(t)
                rows.append({"uri": uri, "serial": t.serial, "transport": t.kind, **props})
        except DeviceError as exc:
            log.warning("skipping %s: %s", uri, exc)
        log.debug("probed %s in %.0f ms", uri, (time.perf_counter() - started) * 1e3)
    return rows
