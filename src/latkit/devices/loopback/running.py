"""Which loopback phones run on this machine, for listings and for connection errors.

A started :class:`~latkit.devices.loopback.server.LoopbackDevice` registers itself
in a small JSON file, ``<cache>/loopback/running/port-N.json`` (port, process id,
serial, sandbox folder), and removes it when it stops. :func:`running_loopback`
reads those files, adds the default port and every port with a sandbox folder
(``port-N``, the devices started without ``--root``), and keeps the ports that
accept a TCP connection now: a file left by a killed server names a port that no
longer answers, and is dropped. The registration makes a device started with its
own ``--root`` (whose folder the cache does not show) findable too, so a failed
connection can name the phone that does run (:func:`loopback_hint`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 0.3  # a local port answers at once or not at all
# Outside adb's emulator scan range (5555-5585), so adb never auto-attaches it.
DEFAULT_PORT = 6555


@dataclass(frozen=True)
class RunningLoopback:
    """A loopback phone that answers on 127.0.0.1 now."""

    port: int
    serial: str = ""
    root: str = ""
    pid: int | None = None

    @property
    def uri(self) -> str:
        """The device URI latkit opens it by."""
        return f"adb+tcp://127.0.0.1:{self.port}"

    def to_dict(self) -> dict[str, object]:
        return {"uri": self.uri, "port": self.port, "serial": self.serial, "root": self.root, "pid": self.pid}


def registry_dir() -> Path:
    """Where running loopback phones register: ``<cache>/loopback/running``."""
    from latkit.core.cache import loopback_dir

    return loopback_dir() / "running"


def register(port: int, serial: str, root: Path | None) -> Path | None:
    """Record the device listening on ``port``; returns the file (None if it cannot be written:
    the device still runs, only listings will not find it by its registration)."""
    from latkit.core.cache import prepare
    from latkit.core.files import write_json

    path = registry_dir() / f"port-{port}.json"
    try:
        prepare(path.parent)
        write_json(path, {"port": port, "pid": os.getpid(), "serial": serial, "root": str(root or "")},
                   "loopback registration")
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never stop a device from starting
        log.info("loopback device on port %d not registered: %s", port, exc)
        return None
    return path


def unregister(path: Path | None) -> None:
    """Remove a registration written by :func:`register` (None: nothing was written)."""
    if path is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("left %s: %s", path, exc)


def _registered() -> dict[int, RunningLoopback]:
    found: dict[int, RunningLoopback] = {}
    folder = registry_dir()
    for path in sorted(folder.glob("port-*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            port = int(doc["port"])
            found[port] = RunningLoopback(port, str(doc.get("serial", "")), str(doc.get("root", "")),
                                          int(doc["pid"]) if doc.get("pid") is not None else None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("ignoring the loopback registration %s: %s", path, exc)
    return found


def _answers(port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def running_loopback(timeout_s: float = PROBE_TIMEOUT_S) -> list[RunningLoopback]:
    """The loopback phones answering on 127.0.0.1 now, by port: registered ones, the default
    port, and every port with a sandbox folder in the cache."""
    from latkit.core.cache import loopback_dir

    candidates = _registered()
    candidates.setdefault(DEFAULT_PORT, RunningLoopback(DEFAULT_PORT))
    folder = loopback_dir()
    if folder.is_dir():
        for p in folder.glob("port-*"):
            if p.is_dir() and p.name[5:].isdigit():
                candidates.setdefault(int(p.name[5:]), RunningLoopback(int(p.name[5:]), root=str(p)))
    return [dev for port, dev in sorted(candidates.items()) if _answers(port, timeout_s)]


def loopback_hint(uri: str = "") -> str:
    """``"; a latkit loopback phone runs at adb+tcp://127.0.0.1:6555 ..."`` naming the running loopback
    phones other than ``uri``, to append to a connection error; "" when none runs."""
    asked = uri.split("?", 1)[0].rstrip("/").replace("localhost", "127.0.0.1")
    others = [dev.uri for dev in running_loopback() if dev.uri != asked]
    if not others:
        return ""
    return (f"; latkit loopback phone(s) running here: {', '.join(others)} "
            f"(`--device {others[0]}` to use {'it' if len(others) == 1 else 'one'})")
