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

import contextlib
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


def sorted_safetensors(raw: bytes) -> bytes:
    """A safetensors file's bytes with its header rewritten by `safetensors_header_bytes`: the
    library writes its metadata map in hash order, which varies between calls."""
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    return safetensors_header_bytes(header) + raw[8 + size :]


def bf16_safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """A safetensors file of float32 arrays stored as BF16 (numpy has no bfloat16 dtype to hand
    the library), in the order given."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        blob = float32_to_bf16(arr).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape)}
        header[name]["data_offsets"] = [offset, offset + len(blob)]
        blobs.append(blob)
        offset += len(blob)
    return safetensors_header_bytes(header) + b"".join(blobs)


def iter_tensors(path: Path, names=None, framework: str = "numpy"):
    """Yield `(name, tensor)` of a safetensors file, one tensor in memory at a time: those of
    `names` in that order (every one by default, in the file's order). With numpy, BF16 tensors
    come widened to float32 exactly (`read_tensor`); `framework="pt"` keeps the stored dtype.

    Raises what safetensors raises (its `SafetensorError` is not an OSError): callers name
    the error's type to the user, so it is passed on as it came.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework) as f:
        for name in list(f.keys()) if names is None else names:
            if framework == "numpy" and f.get_slice(name).get_dtype() == "BF16":
                yield name, read_tensor(path, name)
            else:
                yield name, f.get_tensor(name)


def tensor_names(path: Path) -> list[str]:
    """The tensor names of a safetensors file, from its checked header, in sorted order."""
    return sorted(safetensors_header(path)[0])


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


@contextlib.contextmanager
def _checked_member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtypes):
    """The member `name` of an open npz, opened once and left at its data, with its shape and
    dtype, after its `.npy` header has shown it to be `shape` (a `None` matches any size) in
    one of `dtypes` and the zip entry to hold exactly that many bytes."""
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        raise FileFormatError(f"no {name}") from None
    with zf.open(info) as f:
        found, dtype, header = npy_header(f)
        _expect(name, found, dtype, shape, dtypes)
        if info.file_size != header + math.prod(found) * dtype.itemsize:
            raise FileFormatError(f"{name}: the zip entry's size does not match its header")
        yield f, found, dtype


def npz_member_header(
    zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtypes=_FLOATS
) -> tuple[tuple[int, ...], np.dtype]:
    """`(shape, dtype)` of the array `name` of an open npz, checked as `_checked_member`
    checks it; only the header is inflated.

    Raises:
        FileFormatError: no such member, another shape or dtype, or a size that does not add up.
    """
    with _checked_member(zf, name, shape, dtypes) as (_, found, dtype):
        return found, dtype


def read_npz_member(
    zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtypes=_FLOATS
) -> np.ndarray:
    """The array `name` of an open npz, read only after its header was checked (as
    `npz_member_header`).

    Raises:
        FileFormatError: as `npz_member_header` (then nothing past the header was inflated),
            or bytes cut short.
    """
    with _checked_member(zf, name, shape, dtypes) as (f, found, dtype):
        out = np.empty(found, dtype)
        if f.readinto(memoryview(out).cast("B")) != out.nbytes or f.read(1):
            raise FileFormatError(f"{name}: the array's bytes are cut short")
    return out


def check_npz_member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> None:
    """Like `read_npz_member`, but streams the bytes (1 MB at a time) through the zip's CRC
    check instead of keeping them: memory stays bounded whatever the array's size."""
    with _checked_member(zf, name, shape, _FLOATS) as (f, _, _):
        try:
            while f.read(_CHUNK):
                pass  # zipfile compares the CRC-32 when it reaches the end
        except zlib.error as e:
            raise FileFormatError(f"{name}: {e}") from None


# A damaged zip's own error (not a ValueError): callers that name errors to the user catch it.
BadZipFile = zipfile.BadZipFile


def npz_file_names(path: Path) -> list[str]:
    """The array names of the npz at `path`, from the zip's directory alone."""
    with zipfile.ZipFile(path) as zf:
        return npz_names(zf)


def iter_npz(path: Path, names: list[str], shape: tuple[int, ...]):
    """Yield `(name, array)` of the npz at `path` for each of `names`, one array in memory at a
    time, each read by `read_npz_member` (its header checked against `shape` first)."""
    with zipfile.ZipFile(path) as zf:
        for name in names:
            yield name, read_npz_member(zf, name, shape)


def check_npz(path: Path, shape: tuple[int, ...]) -> list[str]:
    """The array names of the npz at `path`, after every member's header was checked against
    `shape` and its bytes streamed through the CRC check (`check_npz_member`).

    Raises:
        FileFormatError: a member that is not an .npy array, or one that fails its check.
    """
    with zipfile.ZipFile(path) as zf:
        names = npz_names(zf)
        if len(names) != len(zf.namelist()):
            raise FileFormatError("a member that is not an .npy array")
        for name in names:
            check_npz_member(zf, name, shape)
    return names


def check_npz_headers(path: Path, names: list[str], shape: tuple[int, ...]) -> None:
    """`npz_member_header` of each of `names` in the npz at `path`: headers only."""
    with zipfile.ZipFile(path) as zf:
        for name in names:
            npz_member_header(zf, name, shape)


def check_stacked(found: tuple, shape: tuple, n_layers: int | None = None) -> None:
    """A stacked pattern file's header shape against `[1, n_layers, *shape[1:]]` (`shape` is
    one layer's `(1, heads, T, T)`; a `None` matches any size).

    Raises:
        FileFormatError: another shape.
    """
    expect = (1, n_layers, *shape[1:])
    if not shape_matches(found, expect):
        raise FileFormatError(f"stacked patterns of shape {found}, expected {expect} (None: any)")


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


def read_stored_npz_member(path: Path, name: str, shape: tuple, dtypes) -> np.ndarray | None:
    """The array `name` of the npz at `path` when its member is stored uncompressed (then its
    size is bounded by the file's, whatever a damaged header claims), read as
    `read_npz_member` reads; None when it is compressed.

    Raises:
        FileFormatError: as `read_npz_member`; `KeyError`: no member `name`; `BadZipFile`:
            not a zip.
    """
    with zipfile.ZipFile(path) as zf:
        if zf.getinfo(f"{name}.npy").compress_type != zipfile.ZIP_STORED:
            return None
        return read_npz_member(zf, name, shape, dtypes)


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
