"""The loopback ADB device server: the device side of the ADB transport over TCP.

``LoopbackDevice`` listens on 127.0.0.1, answers the host's CNXN after RSA
authentication (by default only with the device's own key, see :mod:`.auth`;
``auth="off"`` lets anyone in), and serves ``shell``, ``exec`` and ``sync``
streams against a sandbox directory standing in for the phone's filesystem. Each
connection has its own reader thread; each stream its own service thread.

Every resource a host can make the device hold is bounded: connections
(``max_connections``; extra ones are closed at once), streams per connection,
the payload of one message (refused before it is read), what a stream may queue
for its service (:mod:`.streams`), the time to finish the handshake, and the time
a started message may stall. An authenticated connection may stay idle, as with
adbd (``adb`` marks a device offline when its idle connection is cut and does not
reconnect); ``idle_timeout_s`` bounds that too, and TCP keepalive ends connections
whose host vanished.

Example:
    >>> with LoopbackDevice(tmp_path, scenario="throttle") as dev:   # doctest: +SKIP
    ...     subprocess.run(["adb", "connect", dev.serial_uri])
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from latkit.core.errors import DeviceError, UsageError

from . import running, sandbox
from .auth import KeyStore, device_key_path, ensure_key_pair
from .faults import Faults
from .protocol import (A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_WRTE, AUTH_RSAPUBLICKEY,
                       AUTH_SIGNATURE, AUTH_TOKEN, MAX_HANDSHAKE_PAYLOAD, MAX_INCOMING_PAYLOAD,
                       TOKEN_BYTES, Message, ProtocolError, negotiate, pack, read_message)
from .scenario import Scenario, ScenarioPlayer
from .shell import ShellSession, parse_service
from .streams import BacklogOverflow, Stream
from .sync import SyncSession

log = logging.getLogger(__name__)

FEATURES = ("shell_v2", "cmd", "fixed_push_mkdir")
AUTH_MODES = ("key", "accept", "refuse", "off")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
DEFAULT_PORT = running.DEFAULT_PORT
MAX_CONNECTIONS = 16
MAX_STREAMS = 64            # open streams per connection
HANDSHAKE_TIMEOUT_S = 30.0  # CNXN and authentication must finish within this
MESSAGE_TIMEOUT_S = 30.0    # a message that has started must not stall longer
IDLE_TIMEOUT_S = None       # a connection with no open stream may stay silent this long


@dataclass
class DeviceContext:
    """What a service needs from its device and connection."""

    root: Path
    alias: Path  # the root under a path that needs no shell quoting
    faults: Faults
    stopping: threading.Event
    track: Callable[[subprocess.Popen], None]
    drop_connection: Callable[[], None]


class _Connection:
    """One host connection: handshake, then message dispatch until EOF."""

    def __init__(self, device: LoopbackDevice, sock: socket.socket, peer: str):
        self.device, self.sock, self.peer = device, sock, peer
        self.version: int | None = None
        self.max_payload = 4096
        self.streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._dead = threading.Event()
        assert device.root is not None and device.alias is not None
        self.ctx = DeviceContext(device.root, device.alias, device.faults, device.stopping,
                                 device._track, self.drop)
        self._handshake_deadline = time.monotonic() + device.handshake_timeout_s
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"loopback-conn-{peer}")

    # ---------------------------------------------------------------- plumbing
    def send(self, msg: Message) -> None:
        """Write one message (thread-safe)."""
        data = pack(msg, self.version or 0x01000000)
        with self._send_lock:
            self.sock.sendall(data)

    def alive(self) -> bool:
        """False once the connection is torn down."""
        return not self._dead.is_set()

    def drop(self) -> None:
        """Abruptly close the socket (fault injection and shutdown)."""
        self._dead.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _read(self, handshake: bool = False) -> Message:
        dev = self.device
        if handshake:
            left = self._handshake_deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no handshake within {dev.handshake_timeout_s:g} s")
            return read_message(self.sock, self.version, max_payload=MAX_HANDSHAKE_PAYLOAD,
                                idle_timeout_s=left, message_timeout_s=left)
        idle = None if self.streams else dev.idle_timeout_s
        return read_message(self.sock, self.version, max_payload=MAX_INCOMING_PAYLOAD,
                            idle_timeout_s=idle, message_timeout_s=dev.message_timeout_s)

    # ---------------------------------------------------------------- lifecycle
    def _run(self) -> None:
        try:
            if self._handshake():
                self._dispatch_loop()
        except (ProtocolError, BacklogOverflow, OSError) as exc:
            log.info("loopback: connection %s ended: %s", self.peer, exc)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self._dead.set()
        for stream in list(self.streams.values()):
            stream.on_connection_lost()
        self.streams.clear()
        try:
            self.sock.close()
        except OSError:
            pass
        self.device._forget(self)

    def _send_cnxn(self) -> None:
        assert self.version is not None
        self.send(Message(A_CNXN, self.version, self.max_payload, self.device.banner()))
        log.info("loopback: %s connected (version 0x%08x, max payload %d)", self.peer,
                 self.version, self.max_payload)

    def _accept_cnxn(self, msg: Message) -> None:
        self.version, self.max_payload = negotiate(msg.arg0, msg.arg1)

    def _handshake(self) -> bool:
        msg = self._read(handshake=True)
        while msg.command != A_CNXN:
            log.info("loopback: ignoring %s before CNXN", msg.name)
            msg = self._read(handshake=True)
        self._accept_cnxn(msg)
        if self.device.auth == "off":
            self._send_cnxn()
            return True
        token = os.urandom(TOKEN_BYTES)
        self.send(Message(A_AUTH, AUTH_TOKEN, 0, token))
        while True:
            msg = self._read(handshake=True)
            if msg.command == A_CNXN:  # the host restarted the handshake
                self._accept_cnxn(msg)
                token = os.urandom(TOKEN_BYTES)
                self.send(Message(A_AUTH, AUTH_TOKEN, 0, token))
            elif msg.command == A_AUTH and msg.arg0 == AUTH_SIGNATURE:
                if self.device.keys.verify(token, msg.data):
                    self._send_cnxn()
                    return True
                token = os.urandom(TOKEN_BYTES)  # like adbd: a fresh token for the next key
                self.send(Message(A_AUTH, AUTH_TOKEN, 0, token))
            elif msg.command == A_AUTH and msg.arg0 == AUTH_RSAPUBLICKEY:
                if self.device.auth != "accept":
                    log.warning("loopback: refusing an unknown host key from %s (auth=%s)",
                                self.peer, self.device.auth)
                    continue  # never connect: the host shows the device as unauthorized
                try:
                    self.device.keys.add(msg.data.split(b"\0", 1)[0].decode("ascii"))
                except (ValueError, UnicodeDecodeError) as exc:
                    log.warning("loopback: rejecting malformed host key: %s", exc)
                    continue
                self._send_cnxn()
                return True
            else:
                log.info("loopback: ignoring %s during authentication", msg.name)

    def _dispatch_loop(self) -> None:
        while not self._dead.is_set():
            msg = self._read()
            stream = self.streams.get(msg.arg1)
            if msg.command == A_OPEN:
                self._open(msg)
            elif msg.command == A_OKAY:
                if stream is not None and stream.remote_id == msg.arg0:
                    stream.on_okay()
            elif msg.command == A_WRTE:
                if stream is None:
                    self.send(Message(A_CLSE, msg.arg1, msg.arg0))
                else:
                    stream.on_data(msg.data)
            elif msg.command == A_CLSE:
                stream = self.streams.pop(msg.arg1, None)
                if stream is not None:
                    stream.on_host_close()
            elif msg.command == A_CNXN:  # a reconnect on a live transport: start over
                for s in list(self.streams.values()):
                    s.on_connection_lost()
                self.streams.clear()
                self._accept_cnxn(msg)
                self._send_cnxn()
            else:
                log.info("loopback: ignoring %s (arg0=%d arg1=%d)", msg.name, msg.arg0,
                         msg.arg1)

    def _open(self, msg: Message) -> None:
        service = msg.data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if len(self.streams) >= MAX_STREAMS:
            log.warning("loopback: %s has %d streams open; refusing %r", self.peer,
                        len(self.streams), service)
            self.send(Message(A_CLSE, 0, msg.arg0))
            return
        runner = self._service(service)
        if runner is None:
            log.info("loopback: unknown service %r -> CLSE", service)
            self.send(Message(A_CLSE, 0, msg.arg0))
            return
        local_id = next(self._ids)
        stream = Stream(self.send, local_id, msg.arg0, self.max_payload, self.alive)
        self.streams[local_id] = stream
        self.send(Message(A_OKAY, local_id, msg.arg0))
        threading.Thread(target=self._serve, args=(runner, stream, service), daemon=True,
                         name=f"loopback-stream-{local_id}").start()

    def _serve(self, runner: Callable[[Stream], None], stream: Stream, service: str) -> None:
        try:
            runner(stream)
        except Exception:  # a service bug must not kill the connection; keep the trace
            log.exception("loopback: service %r failed", service)
            stream.close()
        finally:
            self.streams.pop(stream.local_id, None)

    def _service(self, service: str) -> Callable[[Stream], None] | None:
        if service == "sync:":
            return lambda st: SyncSession(self.ctx, st).run()
        parsed = parse_service(service)
        if parsed is None:
            return None
        mode, command = parsed
        return lambda st: ShellSession(self.ctx, st, mode, command).run()


class LoopbackDevice:
    """A phone stand-in speaking the real ADB transport protocol on 127.0.0.1.

    Args:
        root: sandbox directory standing in for the phone's filesystem (created; it
            must be new, empty or an earlier loopback sandbox). None: one per port in
            latkit's cache (:func:`~.sandbox.default_root`), chosen once listening.
        host: listening address; loopback only.
        port: TCP port, 0 for a free one (see :attr:`port` after :meth:`start`).
        auth: ``key`` (the default: verify signatures against the device's own key,
            ``key_path``, and the keys in ``accepted_keys_path``; never learn a new
            key), ``accept`` (also accept and store any new public key: any local
            user gets in), ``refuse`` (only the keys in ``accepted_keys_path``) or
            ``off`` (no authentication: any local user gets a shell).
        key_path: the device's own private key for ``auth="key"`` (generated when
            missing; default :func:`~.auth.device_key_path`, which latkit's ADB client
            also tries).
        accepted_keys_path: where accepted host keys live (default
            ``root/data/misc/adb/adb_keys``); keys listed there authenticate.
        scenario: ``cool``, ``heat``, ``throttle`` or a :class:`Scenario`.
        serial, model, product, device: identity shown by ``adb devices -l`` / getprop.
        max_connections: connections served at once; extra ones are closed at once.
        handshake_timeout_s: CNXN and authentication must finish within this.
        message_timeout_s: a started message must not stall longer (None: no limit).
        idle_timeout_s: a connection with no open stream may stay silent this long
            (None, the default: no limit).
    """

    def __init__(self, root: Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 auth: str = "key", accepted_keys_path: Path | None = None,
                 scenario: str | Scenario | None = None, serial: str = "loopback",
                 model: str = "Loopback Pixel", product: str = "loopback_pixel",
                 device: str = "loopback", key_path: Path | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
                 message_timeout_s: float | None = MESSAGE_TIMEOUT_S,
                 idle_timeout_s: float | None = IDLE_TIMEOUT_S):
        if host not in LOOPBACK_HOSTS:
            raise UsageError(f"the loopback device listens on 127.0.0.1 only, not {host!r}")
        if auth not in AUTH_MODES:
            raise UsageError(f"auth must be one of {', '.join(AUTH_MODES)}, not {auth!r}")
        if not 0 <= port < 65536:
            raise UsageError(f"port must be in 0..65535, got {port}")
        if max_connections < 1:
            raise UsageError(f"max_connections must be at least 1, got {max_connections}")
        for name, value in (("handshake_timeout_s", handshake_timeout_s),
                            ("message_timeout_s", message_timeout_s),
                            ("idle_timeout_s", idle_timeout_s)):
            if value is not None and value <= 0:
                raise UsageError(f"{name} must be positive, got {value}")
        self.host, self._requested_port, self.auth = "127.0.0.1", port, auth
        self.max_connections = max_connections
        self.handshake_timeout_s = handshake_timeout_s
        self.message_timeout_s, self.idle_timeout_s = message_timeout_s, idle_timeout_s
        self.profile = sandbox.DeviceProfile(serial=serial, model=model, product=product,
                                             device=device)
        if scenario is None or isinstance(scenario, str):
            scenario = Scenario.named(scenario or "cool")
        self.scenario = scenario
        self.key_path = Path(key_path) if key_path else device_key_path()
        self._accepted_keys_path = accepted_keys_path
        self.faults = Faults()
        self.stopping = threading.Event()
        self.root: Path | None = None
        self.alias: Path | None = None
        self.keys = KeyStore(Path(accepted_keys_path or os.devnull))
        self.player: ScenarioPlayer | None = None
        if root is not None:
            self._set_root(Path(root))
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: set[_Connection] = set()
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self.refused = 0  # connections closed because max_connections were open
        self.port = 0
        self._registration: Path | None = None  # see running.register

    def _set_root(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.keys = KeyStore(self._accepted_keys_path or self.root / "data/misc/adb/adb_keys")
        self.player = ScenarioPlayer(self.root, self.profile, self.scenario)

    @property
    def uri(self) -> str:
        """``adb+tcp://127.0.0.1:PORT``: the device URI latkit opens it by."""
        return f"adb+tcp://{self.host}:{self.port}"

    @property
    def serial_uri(self) -> str:
        """``127.0.0.1:PORT``: what ``adb connect`` takes and ``adb devices`` lists."""
        return f"{self.host}:{self.port}"

    def banner(self) -> bytes:
        """The CNXN payload: identity properties and the implemented features."""
        p = self.profile
        return (f"device::ro.product.name={p.product};ro.product.model={p.model};"
                f"ro.product.device={p.device};features={','.join(FEATURES)}").encode()

    def start(self) -> LoopbackDevice:
        """Listen, build the sandbox and start the scenario. Returns self.

        Raises:
            DeviceError: the port is taken, or the sandbox or key cannot be written.
            UsageError: the root is a folder of other files.
        """
        listener = self._listen()
        try:
            if self.root is None:
                self._set_root(sandbox.default_root(self.port))
            self._prepare()
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        assert self.player is not None
        self.player.start()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"loopback-accept-{self.port}")
        self._accept_thread.start()
        self._registration = running.register(self.port, self.profile.serial, self.root)
        log.info("loopback device %s listening on %s (auth=%s, scenario=%s, root=%s)",
                 self.profile.serial, self.serial_uri, self.auth, self.scenario.name, self.root)
        return self

    def _prepare(self) -> None:
        """Create the sandbox, its shell alias and (auth=key) the device key."""
        assert self.root is not None and self.player is not None
        root = self.root
        if root.is_dir() and not (root / sandbox.STATE_DIR).is_dir() and any(root.iterdir()):
            raise UsageError(f"{root} holds other files and is no loopback device folder; "
                             "pass --root a new or empty folder")
        if self.auth == "key":
            self.keys.fixed = (ensure_key_pair(self.key_path),)
        try:
            from latkit.core.cache import prepare

            prepare(root)  # marks the loopback cache area when latkit creates it
            root.mkdir(parents=True, exist_ok=True)
            sandbox.build(root, self.profile)
            self.player.build()
            self.alias = sandbox.make_alias(root)
        except OSError as exc:
            raise DeviceError(f"cannot set up the loopback device folder {root}: "
                              f"{exc.strerror or exc}; pass --root a writable folder") from exc

    def _listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self._requested_port))
        except OSError as exc:
            listener.close()
            raise DeviceError(f"loopback device cannot listen on {self.host}:"
                              f"{self._requested_port} ({exc.strerror}); pick another "
                              "port or 0 for a free one") from exc
        listener.listen(16)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        return listener

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.faults.turn_away():  # an outage (faults.outage): off the air
                sock.close()
                continue
            peer = f"{addr[0]}:{addr[1]}"
            with self._lock:
                full = len(self._conns) >= self.max_connections
                if full:
                    self.refused += 1
            if full:
                log.warning("loopback: %d connections open; refusing %s", self.max_connections,
                            peer)
                sock.close()
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _keepalive(sock)
            conn = _Connection(self, sock, peer)
            with self._lock:
                self._conns.add(conn)
            conn.thread.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _track(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs = [p for p in self._procs if p.poll() is None] + [proc]

    def connections(self) -> int:
        """Number of live host connections."""
        with self._lock:
            return len(self._conns)

    def stop(self) -> None:
        """Close every connection, end running commands and threads."""
        self.stopping.set()
        running.unregister(self._registration)
        self._registration = None
        if self._listener is not None:
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=2)
        with self._lock:
            conns, procs = list(self._conns), list(self._procs)
        for conn in conns:
            conn.drop()
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            proc.wait(timeout=5)
        for conn in conns:
            conn.thread.join(timeout=2)
        if self.player is not None:
            self.player.stop()
        if self.alias is not None:
            sandbox.remove_alias(self.alias)
            self.alias = None
        log.info("loopback device on port %d stopped", self.port)

    def __enter__(self) -> LoopbackDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _keepalive(sock: socket.socket) -> None:
    """Probe a silent peer after 60 s, so a host that vanished frees its connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def serve(root: Path | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          auth: str = "key", scenario: str | Scenario | None = "cool",
          accepted_keys_path: Path | None = None,
          serial: str = "loopback", model: str = "Loopback Pixel",
          on_ready: Callable[[LoopbackDevice], None] | None = None,
          stop_event: threading.Event | None = None, key_path: Path | None = None) -> None:
    """Run a loopback device until interrupted (the ``latkit loopback-device`` command).

    Args:
        root: sandbox directory (created if missing; None: one per port in the cache).
        host: must be 127.0.0.1.
        port: TCP port to listen on (0 picks a free one; see ``on_ready``).
        auth: ``key``, ``accept``, ``refuse`` or ``off`` (see :class:`LoopbackDevice`).
        scenario: ``cool``, ``heat`` or ``throttle``.
        accepted_keys_path: file of accepted host keys (default in the sandbox).
        key_path: the device's own key (default in the cache).
        serial, model: identity shown to hosts.
        on_ready: called with the started device (e.g. to print ``dev.serial_uri``).
        stop_event: returns when set (otherwise runs until Ctrl-C / SIGTERM).
    """
    stop = stop_event or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dev = LoopbackDevice(root, host=host, port=port, auth=auth,
                         accepted_keys_path=accepted_keys_path, scenario=scenario,
                         serial=serial, model=model, key_path=key_path)
    try:
        with dev:
            if on_ready is not None:
                on_ready(dev)
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        log.info("loopback device interrupted")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
