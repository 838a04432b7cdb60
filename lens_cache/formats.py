"""The byte formats a store holds, parsed in one place and with limits: safetensors headers,
`.npy` headers (alone, or inside an `.npz` member), bfloat16, JSON files.

A store may come from anywhere (a Hub pull, a colleague's tarball), so every length, shape and
count in it is untrusted. Each parser here checks what a file declares against the file's own
size, or against the shape the caller expects, *before* that number sizes an allocation or an
inflate. A file that fails a check raises `FileFormatError` (a `ValueError`, which
`lens_cache.damage.reading` turns into a `DamagedFileError` naming the file), having read at most
its header: a 75 MB npz whose member claims `(1, 4, 32768, 32768)` costs a few kilobytes.
"""

from __future__ import annotations

import json
import math
import os
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lens_cache.errors import FileFormatError

# safetensors' own reader refuses headers over 100 MB; ours agree with it.
MAX_SAFETENSORS_HEADER = 100 * 2**20
# numpy's default `max_header_size`: a real .npy header is about a hundred bytes.
MAX_NPY_HEADER = 10_000
# A prompt.json, a model_cfg.json or one line of an index: far above any real one (a 100,000
# token prompt's record is a few MB), far below what would hurt.
MAX_JSON_BYTES = 64 * 2**20
_CHUNK = 2**20
# numpy parses each .npy header with `ast.literal_eval`, and CPython 3.11's ast is not
# thread-safe: two viewer-builder threads parsing at once raised "SystemError: AST constructor
# recursion depth mismatch" in a full test run (3.11.7). So one thread parses a header at a time.
_NPY_HEADER_LOCK = threading.Lock()

SAFETENSORS_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


# --- safetensors -----------------------------------------------------------------------------


def safetensors_header(path: Path) -> tuple[dict, int, dict]:
    """`(tensors, data_start, metadata)` of a safetensors file, every entry checked.

    `tensors` maps each name to `{"dtype", "shape", "data_offsets"}`; each tensor's byte count
    equals its shape times its item size, lies inside the file, and overlaps no other.

    Raises:
        FileFormatError: the header is too long, runs past the file, is not JSON, or an entry
            lies about its extent.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(MAX_SAFETENSORS_HEADER, size - 8):
            raise FileFormatError(f"safetensors header length {n} does not fit a {size}-byte file")
        header = _json_object(f.read(n), "safetensors header")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FileFormatError("safetensors __metadata__ is not a map of strings")
    _check_extents(header, size - 8 - n)
    return header, 8 + n, meta


def _check_extents(header: dict, data_bytes: int) -> None:
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_ITEMSIZE:
            raise FileFormatError(f"safetensors entry {name!r} has no known dtype")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not _ints(shape) or not _ints(offsets) or len(offsets) != 2:
            raise FileFormatError(f"safetensors entry {name!r} has a malformed shape or offsets")
        lo, hi = offsets
        nbytes = math.prod(shape) * SAFETENSORS_ITEMSIZE[entry["dtype"]]
        if not 0 <= lo <= hi <= data_bytes or hi - lo != nbytes:
            raise FileFormatError(
                f"safetensors entry {name!r}: shape {shape} does not match bytes {lo}-{hi} "
                f"of {data_bytes}"
            )
        spans.append((lo, hi))
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
        raise FileFormatError("safetensors entries overlap")


def _ints(values) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    )


def safetensors_header_bytes(header: dict) -> bytes:
    """The 8-byte length and JSON header of a safetensors file, keys sorted and space-padded
    to 8 bytes (the data after it stays aligned), so equal content gives equal bytes."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def read_tensor(path: Path, name: str) -> np.ndarray:
    """One tensor of a safetensors file as numpy, bfloat16 widened to float32 exactly (numpy
    has no bfloat16, so safetensors' numpy reader refuses it).

    Raises:
        FileFormatError: a malformed header, or no tensor `name` of a float dtype.
    """
    header, start, _ = safetensors_header(path)
    entry = header.get(name)
    if entry is None or entry["dtype"] not in (*_NUMPY_DTYPES, "BF16"):
        raise FileFormatError(f"no numeric tensor {name!r}")
    lo, hi = entry["data_offsets"]
    raw = np.fromfile(path, dtype=np.uint8, count=hi - lo, offset=start + lo)
    if entry["dtype"] == "BF16":
        return bf16_to_float32(raw.view("<u2")).reshape(entry["shape"])
    return raw.view(_NUMPY_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) as float32: bfloat16 is float32's top half, exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 truncated to bfloat16 bit patterns (uint16, little-endian)."""
    return (np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")


# --- npy and npz -----------------------------------------------------------------------------


def npy_header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    """`(shape, dtype, position of the data)` of the `.npy` stream `f`, which is left at the
    data (at the start of a stream, the position is the header's length).

    Raises:
        FileFormatError: not an .npy of a plain (non-object) dtype, or a header over the limit.
    """
    try:
        version = np.lib.format.read_magic(f)
        read = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read is None:
            raise FileFormatError(f"unknown .npy version {version}")
        with _NPY_HEADER_LOCK:
            shape, fortran, dtype = read(f, max_header_size=MAX_NPY_HEADER)
    except FileFormatError:
        raise
    except (ValueError, SyntaxError, EOFError) as e:
        raise FileFormatError(f"not an .npy header ({e})") from None
    if fortran or dtype.hasobject:
        raise FileFormatError("a Fortran-ordered or object (pickled) array")
    return tuple(shape), dtype, f.tell()


def npz_names(zf: zipfile.ZipFile) -> list[str]:
    """The array names of an open npz (member names without `.npy`)."""
    return [n.removesuffix(".npy") for n in zf.namelist() if n.endswith(".npy")]


_FLOATS = (np.dtype(np.float16), np.dtype(np.float32))


def read_npz_member(
    zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtypes=_FLOATS
) -> np.ndarray:
    """The array `name` of an open npz, read only after its header has shown it to be `shape`
    (float16 or float32; a `None` in `shape` matches any size) and the zip entry to hold
    exactly that many bytes.

    Raises:
        FileFormatError: another shape or dtype, or a size that does not add up; nothing past
            the header was inflated.
    """
    info = zf.getinfo(f"{name}.npy")
    with zf.open(info) as f:
        found, dtype, header = npy_header(f)
        _expect(name, found, dtype, shape, dtypes)
        nbytes = math.prod(found) * dtype.itemsize
        if info.file_size != header + nbytes:
            raise FileFormatError(
                f"{name}: the zip entry holds {info.file_size - header} bytes, not {nbytes}"
            )
        out = np.empty(found, dtype)
        if f.readinto(memoryview(out).cast("B")) != nbytes or f.read(1):
            raise FileFormatError(f"{name}: the array's bytes are cut short")
    return out


def check_npz_member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> None:
    """Like `read_npz_member`, but streams the bytes (1 MB at a time) through the zip's CRC
    check instead of keeping them: memory stays bounded whatever the array's size."""
    info = zf.getinfo(f"{name}.npy")
    with zf.open(info) as f:
        found, dtype, header = npy_header(f)
        _expect(name, found, dtype, shape, _FLOATS)
        if info.file_size != header + math.prod(found) * dtype.itemsize:
            raise FileFormatError(f"{name}: the zip entry's size does not match its header")
        try:
            while f.read(_CHUNK):
                pass  # zipfile compares the CRC-32 when it reaches the end
        except zlib.error as e:
            raise FileFormatError(f"{name}: {e}") from None


def shape_matches(found: tuple, shape: tuple) -> bool:
    """Whether `found` (a header's shape) is `shape`, whose `None` entries match any size."""
    if len(found) != len(shape):
        return False
    return all(e is None or f == e for f, e in zip(found, shape, strict=True))


def _expect(name: str, found: tuple, dtype: np.dtype, shape: tuple, dtypes) -> None:
    if not shape_matches(found, shape) or dtype not in dtypes:
        wanted = " or ".join(map(str, dtypes))
        raise FileFormatError(f"{name}: shape {found} {dtype}, expected {tuple(shape)} {wanted}")


def open_npy(path: Path, shape_check) -> np.ndarray:
    """A memory-mapped `.npy` (nothing is read until sliced) after `shape_check(shape)` has
    accepted its header's shape and the file was found long enough for it.

    Raises:
        FileFormatError: a bad header, a shape `shape_check` refuses, or a short file.
    """
    with open(path, "rb") as f:
        shape, dtype, header = npy_header(f)
        size = os.fstat(f.fileno()).st_size
    shape_check(shape)
    if size < header + math.prod(shape) * dtype.itemsize:
        raise FileFormatError(f"{Path(path).name}: the file is shorter than its header says")
    return np.memmap(path, dtype=dtype, mode="r", offset=header, shape=shape)


def stored_npz_member(path: Path, name: str) -> np.ndarray | None:
    """The uncompressed (stored) array `name` of the npz at `path`, memory-mapped in place
    (read-only), or None when it is compressed (then `read_npz_member` reads it)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the zip local file header; its name and extra field follow
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise FileFormatError(f"{name}: not a zip local header")
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        shape, dtype, offset = npy_header(f)  # the position in the file: start + header
    if offset - start + math.prod(shape) * dtype.itemsize != info.file_size:
        raise FileFormatError(f"{name}: the zip entry's size does not match its header")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


# --- JSON ------------------------------------------------------------------------------------


def read_json(path: Path, limit: int = MAX_JSON_BYTES):
    """A JSON file of at most `limit` bytes.

    Raises:
        FileFormatError: larger than `limit`, not UTF-8, or not JSON.
    """
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileFormatError(f"over {limit} bytes: larger than any file of its kind")
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FileFormatError(f"not valid JSON: {e}") from None


def read_jsonl(path: Path, limit: int = MAX_JSON_BYTES) -> list:
    """Every record of a JSON-lines file, each line at most `limit` bytes.

    Raises:
        FileFormatError: a longer line, or a line that is not UTF-8 JSON (with its number).
    """
    records = []
    with open(path, "rb") as f:
        for number, line in enumerate(iter(lambda: f.readline(limit + 1), b""), 1):
            if len(line) > limit and not line.endswith(b"\n"):
                raise FileFormatError(f"line {number} is over {limit} bytes")
            if line.strip():
                try:
                    records.append(json.loads(line.decode("utf-8")))
                except ValueError as e:
                    raise FileFormatError(f"line {number} is not valid JSON: {e}") from None
    return records


def _json_object(data: bytes, what: str) -> dict:
    try:
        value = json.loads(data.decode("utf-8"))
    except ValueError:
        raise FileFormatError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise FileFormatError(f"{what} is not a JSON object")
    return value
