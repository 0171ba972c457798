"""TFRecord files without TensorFlow: record framing, CRC32C and the ``tf.train.Example`` protobuf.

A TFRecord file is a sequence of records (docs/data_formats.md §3)::

    uint64 length (little endian) | uint32 masked_crc32c(length) | payload | uint32 masked_crc32c(payload)

optionally gzip-compressed as a whole (MTLCC: ``<tileid>.tfrecord.gz``, one record per file). The
payload of every MTLCC record is a serialised ``tf.train.Example``::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }       (map entry: key = 1, value = 2)
    Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Only the protobuf wire types used there are needed (varint, 64-bit, length-delimited, 32-bit);
unknown fields are skipped, and both packed and unpacked repeated numbers are read.

CRC32C (Castagnoli) is verified on read, with the ``crc32c`` package (hardware CRC instructions; about
1000x faster than the numpy CRC this module used to carry: ``python -m bench.tfrecord_crc`` and
MTLCC/README.md).
"""

import gzip
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from crc32c import crc32c as _crc32c

from utils.atomic import write_bytes_atomic
from utils.errors import DataError

CRC_MASK_DELTA = 0xA282EAD8  # TFRecord's masked CRC: rotate right by 15 bits, then add this
CRC_BYTES = 4
LENGTH_BYTES = 8
GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 1  # the writer's compression level (the synthetic MTLCC sets and test files); readers accept any

# protobuf wire types and the field numbers of the Example schema above
WIRE_VARINT, WIRE_FIXED64, WIRE_LEN, WIRE_FIXED32 = 0, 1, 2, 5
FIXED64_BYTES, FIXED32_BYTES = 8, 4
VARINT_PAYLOAD_BITS, VARINT_CONTINUE, VARINT_MAX_BYTES = 7, 0x80, 10
FIELD_FEATURES = 1  # Example.features and Features.feature
FIELD_KEY, FIELD_VALUE = 1, 2  # map entry
FIELD_BYTES_LIST, FIELD_FLOAT_LIST, FIELD_INT64_LIST = 1, 2, 3
FIELD_LIST_VALUE = 1
FIELD_NUMBER_SHIFT = 3
WIRE_TYPE_MASK = 0x7
KIND_FIELDS = {"bytes_list": FIELD_BYTES_LIST, "float_list": FIELD_FLOAT_LIST, "int64_list": FIELD_INT64_LIST}

FeatureValue = list[bytes] | np.ndarray


# ---------------------------------------------------------------------------------------------
# CRC32C
# ---------------------------------------------------------------------------------------------
def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``; ``crc32c(b"123456789") == 0xE3069283``."""
    return _crc32c(data)


def masked_crc32c(data: bytes) -> int:
    """The masked CRC stored in TFRecord files (rotate right 15, add a constant)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# record framing
# ---------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    """The uncompressed file content; gzip is detected by its magic bytes."""
    if not path.is_file():
        raise DataError(f"{path}: TFRecord file not found")
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:len(GZIP_MAGIC)] == GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"{path}: corrupted or truncated gzip stream ({reason})") from None


def iter_records(path: str | Path, verify: bool = True) -> Iterator[bytes]:
    """Yield the payload of every record of a (gzipped or plain) TFRecord file.

    Raises:
        DataError: missing file, broken gzip stream, truncated record or CRC mismatch.
    """
    path = Path(path)
    content = memoryview(_read_bytes(path))
    offset, index = 0, 0
    header_bytes = LENGTH_BYTES + CRC_BYTES
    while offset < len(content):
        if offset + header_bytes > len(content):
            raise DataError(f"{path}: record {index} truncated in its header at byte {offset}")
        length_bytes = bytes(content[offset:offset + LENGTH_BYTES])
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", content[offset + LENGTH_BYTES:offset + header_bytes])
        if verify and masked_crc32c(length_bytes) != length_crc:
            raise DataError(f"{path}: record {index}: CRC32C mismatch on the length field (corrupted file)")
        start = offset + header_bytes
        end = start + length
        if end + CRC_BYTES > len(content):
            raise DataError(f"{path}: record {index} truncated: {length} payload bytes announced, "
                            f"{max(len(content) - start - CRC_BYTES, 0)} present")
        payload = bytes(content[start:end])
        (payload_crc,) = struct.unpack("<I", content[end:end + CRC_BYTES])
        if verify and masked_crc32c(payload) != payload_crc:
            raise DataError(f"{path}: record {index}: CRC32C mismatch on the payload (corrupted file)")
        yield payload
        offset, index = end + CRC_BYTES, index + 1


def frame_record(payload: bytes) -> bytes:
    """One TFRecord record (length, masked CRCs) around ``payload``."""
    length_bytes = struct.pack("<Q", len(payload))
    return (length_bytes + struct.pack("<I", masked_crc32c(length_bytes)) + payload
            + struct.pack("<I", masked_crc32c(payload)))


def write_records(path: str | Path, payloads: Iterable[bytes], compress: bool = True) -> Path:
    """Write payloads as a TFRecord file (gzip like MTLCC when ``compress``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = b"".join(frame_record(payload) for payload in payloads)
    if compress:  # level 1: ~15x less CPU than gzip's default 9 on the synthetic MTLCC records, files ~9 % larger
        content = gzip.compress(content, compresslevel=GZIP_LEVEL)
    write_bytes_atomic(path, content)
    return path


# ---------------------------------------------------------------------------------------------
# protobuf (wire format subset)
# ---------------------------------------------------------------------------------------------
class _ProtoError(ValueError):
    """Malformed protobuf; converted to a DataError naming the file by the caller."""


def _read_varint(buffer: bytes, offset: int) -> tuple[int, int]:
    """(value, next offset) of the base-128 varint at ``offset``."""
    value, shift = 0, 0
    while True:
        if offset >= len(buffer):
            raise _ProtoError("varint runs past the end of the message")
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & VARINT_CONTINUE:
            return value, offset
        shift += VARINT_PAYLOAD_BITS
        if shift >= VARINT_MAX_BYTES * VARINT_PAYLOAD_BITS:
            raise _ProtoError(f"varint longer than {VARINT_MAX_BYTES} bytes")


def _iter_fields(buffer: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field; LEN values are bytes, others ints."""
    offset = 0
    while offset < len(buffer):
        tag, offset = _read_varint(buffer, offset)
        field, wire = tag >> FIELD_NUMBER_SHIFT, tag & WIRE_TYPE_MASK
        if wire == WIRE_VARINT:
            value, offset = _read_varint(buffer, offset)
        elif wire == WIRE_LEN:
            length, offset = _read_varint(buffer, offset)
            if offset + length > len(buffer):
                raise _ProtoError(f"field {field}: {length} bytes announced, {len(buffer) - offset} left")
            value, offset = buffer[offset:offset + length], offset + length
        elif wire in (WIRE_FIXED64, WIRE_FIXED32):
            size = FIXED64_BYTES if wire == WIRE_FIXED64 else FIXED32_BYTES
            if offset + size > len(buffer):
                raise _ProtoError(f"field {field}: fixed-width value runs past the end")
            value, offset = int.from_bytes(buffer[offset:offset + size], "little"), offset + size
        else:
            raise _ProtoError(f"field {field}: unsupported wire type {wire}")
        yield field, wire, value


def _signed64(value: int) -> int:
    """Two's-complement reading of a 64-bit varint (protobuf int64)."""
    return value - (1 << 64) if value >> 63 else value  # bit 63 set: negative


def _parse_feature(buffer: bytes) -> FeatureValue:
    """A Feature message -> list of bytes, float32 array or int64 array (empty Feature -> [])."""
    for kind, _, body in _iter_fields(buffer):
        if not isinstance(body, bytes):
            continue
        if kind == FIELD_BYTES_LIST:
            return [value for field, wire, value in _iter_fields(body) if field == FIELD_LIST_VALUE and wire == WIRE_LEN]
        if kind == FIELD_FLOAT_LIST:
            parts = []
            for field, wire, value in _iter_fields(body):
                if field != FIELD_LIST_VALUE:
                    continue
                if wire == WIRE_LEN:  # packed
                    parts.append(np.frombuffer(value, dtype="<f4"))
                else:  # unpacked fixed32
                    parts.append(np.frombuffer(int(value).to_bytes(FIXED32_BYTES, "little"), dtype="<f4"))
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if kind == FIELD_INT64_LIST:
            values = []
            for field, wire, value in _iter_fields(body):
                if field != FIELD_LIST_VALUE:
                    continue
                if wire == WIRE_LEN:  # packed varints
                    offset = 0
                    while offset < len(value):
                        number, offset = _read_varint(value, offset)
                        values.append(_signed64(number))
                else:
                    values.append(_signed64(value))
            return np.asarray(values, dtype=np.int64)
    return []


def parse_example(payload: bytes, source: str | Path = "<bytes>") -> dict[str, FeatureValue]:
    """Decode a serialised ``tf.train.Example`` into ``{key: list[bytes] | float32 array | int64 array}``.

    Raises:
        DataError: the payload is not a valid Example (names ``source``).
    """
    features: dict[str, FeatureValue] = {}
    try:
        for field, wire, features_body in _iter_fields(payload):
            if field != FIELD_FEATURES or wire != WIRE_LEN:
                continue
            for entry_field, entry_wire, entry in _iter_fields(features_body):
                if entry_field != FIELD_FEATURES or entry_wire != WIRE_LEN:
                    continue
                key, value = None, []
                for part_field, part_wire, part in _iter_fields(entry):
                    if part_wire != WIRE_LEN:
                        continue
                    if part_field == FIELD_KEY:
                        key = part.decode("utf-8")
                    elif part_field == FIELD_VALUE:
                        value = _parse_feature(part)
                if key is None:
                    raise _ProtoError("feature map entry without a key")
                features[key] = value
    except (_ProtoError, UnicodeDecodeError) as err:
        raise DataError(f"{source}: not a valid tf.train.Example ({err})") from None
    return features


def _varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int (negative int64 as its 64-bit two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= VARINT_PAYLOAD_BITS
        if value:
            out.append(low | VARINT_CONTINUE)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, wire: int, body: bytes) -> bytes:
    """Tag plus body; length-delimited bodies get their length prefix."""
    tag = _varint((number << FIELD_NUMBER_SHIFT) | wire)
    return tag + (_varint(len(body)) + body if wire == WIRE_LEN else body)


def _serialise_feature(value, packed: bool) -> bytes:
    """Feature message of bytes (or a list of bytes), a float array or an integer array."""
    if isinstance(value, (bytes, bytearray)):
        value = [bytes(value)]
    if isinstance(value, (list, tuple)) and all(isinstance(item, (bytes, bytearray)) for item in value):
        body = b"".join(_field(FIELD_LIST_VALUE, WIRE_LEN, bytes(item)) for item in value)
        return _field(FIELD_BYTES_LIST, WIRE_LEN, body)
    array = np.asarray(value).ravel()
    if np.issubdtype(array.dtype, np.floating):
        floats = array.astype("<f4")
        if packed:
            body = _field(FIELD_LIST_VALUE, WIRE_LEN, floats.tobytes())
        else:
            body = b"".join(_field(FIELD_LIST_VALUE, WIRE_FIXED32, item.tobytes()) for item in floats)
        return _field(FIELD_FLOAT_LIST, WIRE_LEN, body)
    if np.issubdtype(array.dtype, np.integer):
        varints = [_varint(int(item)) for item in array]
        if packed:
            body = _field(FIELD_LIST_VALUE, WIRE_LEN, b"".join(varints))
        else:
            body = b"".join(_field(FIELD_LIST_VALUE, WIRE_VARINT, item) for item in varints)
        return _field(FIELD_INT64_LIST, WIRE_LEN, body)
    raise TypeError(f"cannot serialise a feature of type {type(value).__name__} / dtype {array.dtype}")


def serialise_example(features: Mapping[str, object], packed: bool = True) -> bytes:
    """Encode ``{key: bytes | list[bytes] | float array | int array}`` as a ``tf.train.Example``.

    Args:
        packed: write repeated numbers packed (what TensorFlow writes); False writes one field per
            value, which readers must accept as well.
    """
    entries = b"".join(
        _field(FIELD_FEATURES, WIRE_LEN,
               _field(FIELD_KEY, WIRE_LEN, key.encode("utf-8"))
               + _field(FIELD_VALUE, WIRE_LEN, _serialise_feature(value, packed)))
        for key, value in features.items()
    )
    return _field(FIELD_FEATURES, WIRE_LEN, entries)


def read_examples(path: str | Path, verify: bool = True) -> list[dict[str, FeatureValue]]:
    """Every Example of a TFRecord file, parsed (see :func:`parse_example`)."""
    return [parse_example(payload, source=path) for payload in iter_records(path, verify=verify)]


def write_examples(path: str | Path, examples: Iterable[Mapping[str, object]], compress: bool = True,
                   packed: bool = True) -> Path:
    """Write Examples as a (gzipped) TFRecord file, atomically."""
    return write_records(path, (serialise_example(example, packed=packed) for example in examples), compress)
