"""Rewrite a TFLite flatbuffer through the schema's object API, keeping weights stored after it.

A ``.tflite`` file is a flatbuffer, optionally followed by a block of weights
that buffers point into with an ``offset`` (ai-edge-quantizer writes its files
so). :func:`unpack` reads the model into plain objects; :func:`pack` writes it
back, moving that block behind the new flatbuffer by a multiple of 64 bytes
(every buffer keeps its alignment) and its offsets with it. Used to add
metadata to an exported file and, in the loopback phone, to cut a graph short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from latkit.core.errors import StoreError

ALIGN = 64


@dataclass(frozen=True)
class Unpacked:
    """A TFLite model as the schema's object API holds it, and the weights block after its flatbuffer."""

    model: Any  # schema_py_generated.ModelT
    tail: bytes  # the bytes from the first outside buffer to the end (b"" when none)
    tail_start: int  # where they started in the original file


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def unpack(data: bytes) -> Unpacked:
    """The model in ``data`` (a whole .tflite file).

    Raises:
        StoreError: a buffer points past the end of the file.
    """
    model = _schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
    outside = [b for b in model.buffers or [] if int(b.offset or 0) > 1]
    if not outside:
        return Unpacked(model, b"", 0)
    if any(int(b.offset) + int(b.size) > len(data) for b in outside):
        raise StoreError("the TFLite file has weights past its end (truncated?)")
    start = min(int(b.offset) for b in outside)
    return Unpacked(model, bytes(data[start:]), start)


def _finish(model: Any, size_hint: int) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def pack(unpacked: Unpacked) -> bytes:
    """``unpacked.model`` as a .tflite file, its outside weights placed after the new flatbuffer.

    The outside buffers' offsets are shifted to pack and restored after (the object is the caller's).

    Raises:
        StoreError: the flatbuffer grew when its offsets changed (they are fixed-size fields, so it does not).
    """
    model, tail = unpacked.model, unpacked.tail
    packed = _finish(model, len(tail))
    if not tail:
        return packed
    outside = [b for b in model.buffers if int(b.offset or 0) > 1]
    new_start = -(-len(packed) // ALIGN) * ALIGN + unpacked.tail_start % ALIGN
    shift = new_start - unpacked.tail_start
    for b in outside:
        b.offset = int(b.offset) + shift
    try:
        packed = _finish(model, len(tail))
    finally:
        for b in outside:
            b.offset = int(b.offset) - shift
    if len(packed) > new_start:
        raise StoreError("cannot rewrite the TFLite file: its flatbuffer grew past its weights")
    return packed + bytes(new_start - len(packed)) + tail


__all__ = ["Unpacked", "pack", "unpack"]
