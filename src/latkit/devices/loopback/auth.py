"""ADB public-key authentication, device side.

A host key travels in Android's mincrypt ``RSAPublicKey`` layout: the key
length in 32-bit words, ``n0inv``, the modulus as little-endian words, ``rr``
(R^2 mod n) and the public exponent, all base64-encoded and followed by
`` user@host``. The host signs the device's 20-byte token with RSA PKCS#1 v1.5
as if the token were a SHA-1 digest.

By default (``auth="key"``) the device accepts one key pair that it generates
itself, once, into latkit's cache (:func:`device_key_path`, private key mode
0600): latkit's own client tries that key too, so the same user connects with no
setup, while other local users, who cannot read the key, are refused. Other
clients use it as ``ADB_VENDOR_KEYS=<cache>/loopback/adbkey adb connect ...``.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import logging
import os
import socket
import struct
import tempfile
import threading
from pathlib import Path

from latkit.core.errors import DeviceError, MissingExtraError

from .sandbox import cache_dir

log = logging.getLogger(__name__)


def parse_adb_public_key(text: str | bytes) -> tuple[int, int]:
    """Decode an ADB public key into ``(modulus, exponent)``.

    Raises:
        ValueError: when the text is not a well-formed ADB key.
    """
    if isinstance(text, bytes):
        text = text.split(b"\0", 1)[0].decode("ascii", "replace")
    blob_b64 = text.strip().split(None, 1)[0] if text.strip() else ""
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if len(blob) < 8:
        raise ValueError("key blob too short")
    words = struct.unpack_from("<I", blob, 0)[0]
    expected = 4 + 4 + 4 * words + 4 * words + 4
    if words == 0 or len(blob) != expected:
        raise ValueError(f"key blob of {len(blob)} bytes, expected {expected}")
    n = int.from_bytes(blob[8:8 + 4 * words], "little")
    exponent = struct.unpack_from("<I", blob, 8 + 8 * words)[0]
    return n, exponent


def encode_adb_public_key(n: int, exponent: int, comment: str = "") -> str:
    """An RSA public key in ADB's text form (base64 ``RSAPublicKey``, then a comment)."""
    words = (n.bit_length() + 31) // 32
    n0inv = (-pow(n, -1, 1 << 32)) % (1 << 32)
    rr = pow(2, 64 * words, n)  # R^2 mod n with R = 2^(32*words)
    blob = (struct.pack("<II", words, n0inv) + n.to_bytes(4 * words, "little")
            + rr.to_bytes(4 * words, "little") + struct.pack("<I", exponent))
    text = base64.b64encode(blob).decode("ascii")
    return f"{text} {comment}" if comment else text


def device_key_path() -> Path:
    """The loopback device's own key pair (private key; ``.pub`` beside it)."""
    return cache_dir() / "adbkey"


def ensure_key_pair(path: Path) -> str:
    """The ADB public key of the private key at ``path``, generating the pair if missing.

    The private key is written with mode 0600 and linked into place only when
    complete, so two devices starting at once end up sharing one key.

    Raises:
        DeviceError: the key cannot be written or read.
    """
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError as exc:  # pragma: no cover - cryptography ships with adb-shell
        raise MissingExtraError("loopback ADB authentication", "android", exc) from exc
    path = Path(path)
    try:
        if not path.exists():
            from latkit.core.cache import prepare

            prepare(path.parent)  # marks the loopback cache area when latkit creates it
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            fd, tmp = tempfile.mkstemp(prefix=".adbkey-", dir=path.parent)  # mode 0600
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(pem)
                try:
                    os.link(tmp, path)  # never replaces a key another process just made
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
            log.info("generated the loopback device's ADB key pair at %s", path)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DeviceError(f"cannot use the loopback device key {path}: {reason}; delete it to "
                          "make a new one, or set LATKIT_CACHE to a writable folder") from exc
    numbers = private.public_key().public_numbers()
    public = encode_adb_public_key(numbers.n, numbers.e, f"{_user()}@latkit-loopback")
    pub_path = path.with_name(path.name + ".pub")
    try:
        if not pub_path.exists() or pub_path.read_text().split()[:1] != public.split()[:1]:
            pub_path.write_text(public + "\n")
    except OSError as exc:  # the public half is a convenience for other clients
        log.warning("cannot write %s: %s", pub_path, exc.strerror)
    return public


def _user() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}".replace(" ", "_")
    except (OSError, KeyError):
        return "latkit"


def verify_signature(key_text: str, token: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the key's PKCS#1 v1.5 / SHA-1 signature of ``token``."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
    except ImportError as exc:  # pragma: no cover - cryptography ships with adb-shell
        raise MissingExtraError("loopback ADB authentication", "android", exc) from exc
    try:
        n, e = parse_adb_public_key(key_text)
        public = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        log.warning("ignoring malformed ADB key: %s", exc)
        return False
    try:
        # The token stands in for a SHA-1 digest: adbd signs DigestInfo(SHA-1) || token.
        public.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    except (InvalidSignature, ValueError):
        return False
    return True


class KeyStore:
    """The accepted host keys, one per line, persisted like adbd's ``adb_keys``.

    Args:
        path: the ``adb_keys`` file (read on every check, so edits take effect).
        fixed: keys accepted besides the file's (the device's own key).
    """

    def __init__(self, path: Path, fixed: tuple[str, ...] = ()):
        self.path = Path(path)
        self.fixed = tuple(fixed)
        self._lock = threading.Lock()

    def keys(self) -> list[str]:
        """The accepted keys (whole lines, comment included)."""
        with self._lock:
            try:
                text = self.path.read_text() if self.path.is_file() else ""
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read accepted keys %s: %s", self.path, exc)
                text = ""
            return list(self.fixed) + [ln.strip() for ln in text.splitlines() if ln.strip()]

    def add(self, key_text: str) -> None:
        """Store ``key_text`` (validated) unless an identical key is already there."""
        parse_adb_public_key(key_text)
        line = key_text.strip()
        blob = line.split(None, 1)[0]
        if any(k.split(None, 1)[0] == blob for k in self.keys()):
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(line + "\n")
        log.info("loopback device accepted a new host key (%s)", self.path)

    def verify(self, token: bytes, signature: bytes) -> bool:
        """True when any stored key made ``signature`` over ``token``."""
        return any(verify_signature(k, token, signature) for k in self.keys())
