"""A minimal protobuf writer for the Caffe importer's tests.

The tests write `.caffemodel` bytes with this, never with the reader under test, so that a bug in
the reader cannot cancel out in its own test fixtures.
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    """Base-128 varint, least significant group first."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_field(number: int, payload: bytes) -> bytes:
    """Field `number` with wire type 2 (length-delimited): a string, bytes or a message."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:
    """Field `number` with wire type 0 (varint)."""
    return varint(number << 3) + varint(value)
