"""ADB public-key authentication, device side.

A host key travels in Android's mincrypt ``RSAPublicKey`` layout: the key
length in 32-bit words, ``n0inv``, the modulus as little-endian words, ``rr``
(R^2 mod n) and the public exponent, all base64-encoded and followed by
`` user@host``. The host signs the device's 20-byte token with RSA PKCS#1 v1.5
as if the token were a SHA-1 digest.
"""

from __future__ import annotations

import base64
import binascii
import logging
import struct
import threading
from pathlib import Path

from latkit.errors import MissingExtraError

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
    """The accepted host keys, one per line, persisted like adbd's ``adb_keys``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def keys(self) -> list[str]:
        """The stored keys (whole lines, comment included)."""
        with self._lock:
            if not self.path.exists():
                return []
            return [ln.strip() for ln in self.path.read_text().splitlines() if ln.strip()]

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
