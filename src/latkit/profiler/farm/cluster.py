"""Joining or starting the Ray cluster, and finding every node's devices.

Without an address latkit starts an embedded one-machine cluster (what a
newcomer gets: ``latkit farm profile --adb adb+tcp://127.0.0.1:6555 ...``
needs no ``ray start``); with ``auto`` or ``HOST:PORT`` it joins a cluster
started with ``ray start``, whose nodes declare the phones they own as custom
resources (``ray start --resources '{"latkit_adb:127.0.0.1:6555": 1}'``).
Every node runs the driver's latkit version or the farm refuses to start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from latkit._version import __version__
from latkit.core.errors import DeviceError, LatkitError, MissingExtraError, UsageError
from latkit.core.reprs import short_repr
from latkit.profiler.farm.identity import FarmDevice, device_resource, uri_of_resource
from latkit.profiler.farm.node import probe_node

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """Ray, or an error naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError("the device farm", "farm", exc) from exc
    return ray


@contextmanager
def connect(address: str | None = None, adb: list[str] | tuple[str, ...] = (),
            num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, joined to ``address`` or started embedded; shut down on exit if started here.

    Args:
        address: ``auto``, ``HOST:PORT``, or None for an embedded local cluster
            (reuses one this process already joined).
        adb: ``adb+tcp://`` phones the embedded cluster's node owns.
        num_cpus: CPUs of the embedded cluster (default: Ray's count).

    Raises:
        DeviceError: no cluster answers at ``address``.
        UsageError: ``adb`` given while joining an existing cluster.
    """
    if address not in (None, "auto"):
        _reachable(address)  # before importing ray: a bad address is told even without the extra
    adb = distinct_phones(adb)
    ray = import_ray()
    if ray.is_initialized():  # a caller that joined a cluster itself (tests, notebooks)
        yield ray
        return
    if address is not None and adb:
        raise UsageError("--adb declares phones of an embedded cluster; on a `ray start` cluster "
                         "each node declares its own: ray start --resources "
                         f"'{{\"{device_resource(adb[0])}\": 1}}'")
    # Ray's own start-up notices (token authentication...) would sit beside latkit's one error line;
    # what goes wrong in the farm, latkit reports itself
    try:
        if address is None:
            ray.init(num_cpus=num_cpus, resources={device_resource(u): 1 for u in adb},
                     include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise DeviceError(f"no Ray cluster at {address!r} ({' '.join(str(exc).split())[:200]}); "
                          "start one with `ray start --head`, or leave out --address for a "
                          "local one") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def distinct_phones(adb: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The ``--adb`` phones, each checked and written one way (``adb+tcp://HOST:PORT``).

    A phone is a node resource, so a bad port or option must fail here, and one
    phone under two spellings (``localhost`` and ``127.0.0.1``, port ``06555``)
    would get two workers driving it at once.

    Raises:
        UsageError: not an ``adb+tcp://HOST:PORT`` phone (options are set per device, not here),
            or one phone given twice.
    """
    from latkit.devices.adb_transport import parse_adb_uri

    seen: dict[tuple[str, int], str] = {}
    out: list[str] = []
    for uri in adb:
        kind, host, port = parse_adb_uri(uri)  # checks the port (1-65535) and any ?options
        if kind != "tcp" or "?" in uri:
            raise UsageError(f"--adb {uri!r} must be a phone as adb+tcp://HOST:PORT, without options")
        for address in _addresses(host, port):
            if (address, port) in seen:
                raise UsageError(f"--adb {uri!r} and {seen[(address, port)]!r} are the same phone; give each "
                                 "phone once (two workers on one phone would disturb each other's timings)")
            seen[(address, port)] = uri
        out.append(f"adb+tcp://[{host}]:{port}" if ":" in host else f"adb+tcp://{host}:{port}")
    return tuple(out)


def _addresses(host: str, port: int) -> set[str]:
    """The addresses ``host`` resolves to (itself when it does not resolve)."""
    import socket

    try:
        return {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)} or {host}
    except (OSError, UnicodeError):
        return {host}


# An HTTP/2 client preface and an empty SETTINGS frame: every gRPC server (Ray's GCS and
# its client server) answers with a frame of its own; a listener that is no Ray head does not.
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _reachable(address: str, timeout_s: float = 3.0) -> None:
    """Refuse a malformed address, and one where nothing answers a gRPC handshake in ``timeout_s``
    (``ray.init`` would wait on it without end).

    Raises:
        UsageError: not HOST:PORT with an ASCII port in 1-65535.
        DeviceError: no connection, or no answer to the handshake.
    """
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise UsageError(f"bad cluster address {address!r}; write HOST:PORT (port 1-65535) or auto")
    advice = "start one with `ray start --head`, or leave out --address for a local one"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
            conn.sendall(_H2_HELLO)
            answer = conn.recv(9)
    except socket.timeout:
        raise DeviceError(f"{address} accepted a connection but answered nothing in {timeout_s:g} s, so it is "
                          f"no Ray cluster; give the head's GCS address (HOST:6379 by default), or {advice}") from None
    except (OSError, UnicodeError) as exc:
        raise DeviceError(f"no Ray cluster at {address} ({getattr(exc, 'strerror', None) or exc}); {advice}") from exc
    if not answer:
        raise DeviceError(f"{address} closed the connection at once, so it is no Ray cluster; {advice}")


@dataclass
class NodeReport:
    """One node: where it is, its latkit version, its devices and the ones it could not reach."""

    node_id: str
    node_ip: str
    hostname: str = ""
    latkit_version: str = ""
    devices: list[FarmDevice] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def __repr__(self) -> str:
        return short_repr(self, "node_ip", "hostname", "latkit_version", "devices", "unreachable", "error")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"node_id": self.node_id, "node_ip": self.node_ip, "hostname": self.hostname,
                "latkit_version": self.latkit_version, "devices": [d.to_dict() for d in self.devices],
                "unreachable": self.unreachable, "error": self.error}


def alive_nodes(ray: Any) -> list[dict[str, Any]]:
    """Ray's records of the live nodes."""
    return [n for n in ray.nodes() if n.get("Alive")]


def discover(ray: Any, threads: int = 1, device_options: dict[str, Any] | None = None,
             timeout_s: float = 60.0, host: bool = True) -> list[NodeReport]:
    """Probe every live node (in parallel, at most ``timeout_s``) for its devices.

    A node that does not answer in time is reported with an error, not waited for.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    reports, refs = [], {}
    for n in alive_nodes(ray):
        declared = sorted(u for r in n.get("Resources", {}) if (u := uri_of_resource(r)))
        report = NodeReport(n["NodeID"], n.get("NodeManagerAddress", ""))
        reports.append(report)
        strategy = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        refs[report.node_id] = task.options(scheduling_strategy=strategy).remote(
            n["NodeID"], report.node_ip, declared, threads, device_options, min(timeout_s, 20.0), host)
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    for report in reports:
        ref = refs[report.node_id]
        if ref not in ready:
            ray.cancel(ref, force=True)
            report.error = f"did not answer the device probe within {timeout_s:.0f} s"
            continue
        try:
            got = ray.get(ref, timeout=5)
        except Exception as exc:  # a node lost mid-probe: reported, not fatal
            report.error = f"device probe failed: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        report.hostname, report.latkit_version = got["hostname"], got["latkit_version"]
        report.devices = [FarmDevice.from_dict(d) for d in got["devices"]]
        report.unreachable = got["unreachable"]
    return reports


def check_versions(reports: list[NodeReport], driver_version: str = __version__) -> None:
    """Refuse a cluster where a node runs another latkit than the driver.

    Raises:
        UsageError: naming the node and both versions.
    """
    for r in reports:
        if r.latkit_version and r.latkit_version != driver_version:
            raise UsageError(
                f"node {r.hostname or r.node_ip} ({r.node_id[:8]}) runs latkit {r.latkit_version} but "
                f"the driver runs latkit {driver_version}; install latkit {driver_version} on every "
                "node (the farm's rows must come from one version)"
            )


def select(reports: list[NodeReport], pattern: str) -> list[FarmDevice]:
    """The devices matching ``pattern`` (comma-separated globs).

    Raises:
        UsageError: nothing matches (the error lists what exists).
    """
    every = [d for r in reports for d in r.devices]
    chosen = [d for d in every if d.matches(pattern)]
    if not chosen:
        known = ", ".join(sorted({d.uri for d in every})[:12]) or "none"
        unreachable = [u for r in reports for u in r.unreachable]
        hint = f"; unreachable: {', '.join(unreachable[:4])}" if unreachable else ""
        raise UsageError(f"no device matches {pattern!r}; the cluster has: {known}{hint}; "
                         "see `latkit farm devices`")
    return chosen


def errors_of(reports: list[NodeReport]) -> list[str]:
    """One line per node that failed its probe."""
    return [f"node {r.node_ip} ({r.node_id[:8]}): {r.error}" for r in reports if r.error]


__all__ = ["NodeReport", "check_versions", "connect", "discover", "import_ray", "select",
           "LatkitError"]
