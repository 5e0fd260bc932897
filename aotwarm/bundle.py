"""The bundle: one deterministic ``.tar.zst`` holding ``manifest.json`` and the caches' files.

Only this module and ``install.py`` know the format; which member names are allowed is each cache
kind's rule (``kinds``: ``triton/<entry>/<file>``, ``deep_gemm/cache/...``, ``flashinfer/<m>/<m>.so``).  Writing is deterministic: members sorted,
mtime 0, owner 0/0 with empty names, fixed modes, single-threaded zstd with a frame checksum,
and a manifest with no timestamps, so the same inputs give a byte-identical file.  The file ends
with a zstd *skippable frame* (ignored by ``zstd``/``tar --zstd``) that holds the sha256 of every
byte before it: zstd's own checksum covers the decompressed data only, and some bits of a
compressed stream (unused entropy-table bits) can flip without changing it.  Reading is
defensive: the seal must match, the manifest must come first, every member must be a regular
file with a safe relative path that the manifest lists with its size and sha256, no member is
read past its declared size, and nothing but zero padding may follow the end of the archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from .errors import BadInput
from .fsutil import atomic_write_bytes
from .kinds import kind_of_member
from .kinds.triton import CACHE_PLACEHOLDER, collect_entries, normalize_group_file, relocate_group_file

__all__ = ["BUNDLE_FORMAT", "CACHE_PLACEHOLDER", "SinkError", "collect_entries", "normalize_group_file",
           "read_bundle", "read_manifest", "relocate_group_file", "seal", "write_bundle"]

BUNDLE_FORMAT = 2
# zstd skippable frame: magic 0x184D2A5E, little-endian u32 length, then SEAL_TAG + sha256 digest.
SEAL_MAGIC = (0x184D2A5E).to_bytes(4, "little")
SEAL_TAG = b"aotwarm-seal-v1\0"
SEAL_HEADER = SEAL_MAGIC + (len(SEAL_TAG) + 32).to_bytes(4, "little") + SEAL_TAG
SEAL_SIZE = len(SEAL_HEADER) + 32
MANIFEST = "manifest.json"
ZSTD_LEVEL = 10
MAX_MANIFEST_BYTES = 64 << 20


class SinkError(Exception):
    """Writing a verified file failed (disk full, read-only): the destination's fault, not the bundle's."""

    def __init__(self, err: OSError):
        super().__init__(err.strerror or str(err))
        self.strerror = err.strerror or str(err)


def manifest_self_hash(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_bundle(path: Path, manifest: dict, files: dict[str, bytes]) -> dict:
    """Write the bundle atomically; returns the final manifest (with file list and self hash)."""
    import zstandard

    manifest = dict(manifest)
    manifest["format"] = BUNDLE_FORMAT
    manifest["files"] = [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                         for p, d in sorted(files.items())]
    manifest["manifest_sha256"] = manifest_self_hash(manifest)
    manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(MANIFEST, manifest_bytes)] + sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, threads=0).compress(raw.getvalue())
    atomic_write_bytes(path, seal(compressed))
    return manifest


def seal(compressed: bytes) -> bytes:
    """``compressed`` followed by the skippable frame that holds its sha256."""
    return compressed + SEAL_HEADER + hashlib.sha256(compressed).digest()


def _check_seal(fh: IO[bytes], size: int, path: Path) -> int:
    """Check the trailing seal against the bytes before it; returns the length of the sealed part."""
    if size < SEAL_SIZE:
        raise BadInput(f"{path} is not an aotwarm bundle or is corrupt (too short): rebuild or re-download it")
    fh.seek(size - SEAL_SIZE)
    trailer = fh.read(SEAL_SIZE)
    if trailer[:-32] != SEAL_HEADER:
        raise BadInput(f"{path} is not an aotwarm bundle of this format, or is truncated (no seal at its end): "
                       "rebuild or re-download it")
    h = hashlib.sha256()
    fh.seek(0)
    left = size - SEAL_SIZE
    while left > 0:
        block = fh.read(min(1 << 20, left))
        if not block:
            raise BadInput(f"{path} changed while it was read: try again")
        h.update(block)
        left -= len(block)
    if h.digest() != trailer[-32:]:
        raise BadInput(f"{path} is corrupt or tampered (its bytes do not match the seal at its end): "
                       "rebuild or re-download it")
    fh.seek(0)
    return size - SEAL_SIZE


# -- reading -------------------------------------------------------------------------------


class _Limited(io.RawIOBase):
    """At most ``limit`` bytes of ``inner``; past that, end of file or (with ``overflow``) BadInput."""

    def __init__(self, inner: IO[bytes], limit: int, overflow: str | None = None):
        self._inner, self._left, self._overflow = inner, limit, overflow

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._left <= 0:
            if self._overflow:
                raise BadInput(self._overflow)
            return 0
        # With an overflow message, ask for one byte more than allowed so that exceeding is seen.
        n = self._inner.readinto(memoryview(b)[: min(len(b), self._left + (1 if self._overflow else 0))])
        self._left -= n
        return n


_BOMB = "bundle decompresses to more than its manifest declares: refusing it (corrupt or hostile)"


def _open_tar(path: Path, limit: int) -> tuple[IO[bytes], tarfile.TarFile]:
    import zstandard

    try:
        fh = open(path, "rb")
    except OSError as err:
        raise BadInput(f"cannot read bundle {path}: {err.strerror}")
    try:
        sealed = _check_seal(fh, path.stat().st_size, path)
    except BaseException:
        fh.close()
        raise
    reader = zstandard.ZstdDecompressor().stream_reader(_Limited(fh, sealed), read_across_frames=True)
    stream = io.BufferedReader(_Limited(reader, limit, _BOMB))
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except (tarfile.TarError, zstandard.ZstdError, OSError, EOFError) as err:
        fh.close()
        raise BadInput(f"{path} is not an aotwarm bundle or is corrupt ({_why(err)}): rebuild or re-download it")
    return fh, tar


def _check_tail(stream: IO[bytes], path: Path) -> None:
    """Read past the end-of-archive marker to the end of the zstd stream.

    Tar readers stop at the first zero block and never look at the rest; reading to the end makes the
    zstd frame checksum get verified and proves that the padding is all zeros, so a flipped byte
    anywhere in the file is refused (the bounded reader still caps how much is read).
    """
    while True:
        chunk = stream.read(1 << 16)
        if not chunk:
            return
        if chunk.count(0) != len(chunk):
            raise BadInput(f"{path} has data after the end of its archive (corrupt or tampered): rebuild or re-download it")


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")


def _check_member_name(name: str) -> None:
    if name != MANIFEST and kind_of_member(name) is None:
        raise BadInput(f"bundle member {name!r} has an unsafe or unexpected path: refusing the bundle")
    parts = PurePosixPath(name).parts
    if ".." in parts or name.startswith("/"):
        raise BadInput(f"bundle member {name!r} escapes the destination: refusing the bundle")


def _validate_manifest(raw: bytes, path: Path) -> dict:
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput(f"{path}: manifest.json is not valid JSON (corrupt bundle): rebuild or re-download it")
    if not isinstance(manifest, dict):
        raise BadInput(f"{path}: manifest.json is not an object (corrupt bundle)")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BadInput(f"{path}: bundle format {manifest.get('format')!r} is not supported by this aotwarm "
                       f"(reads format {BUNDLE_FORMAT}): install the aotwarm version that built it")
    if manifest.get("manifest_sha256") != manifest_self_hash(manifest):
        raise BadInput(f"{path}: manifest does not match its own checksum (edited or corrupt): refusing the bundle")
    files = manifest.get("files")
    if not isinstance(files, list):
        raise BadInput(f"{path}: manifest has no file list (corrupt bundle)")
    seen = set()
    for f in files:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
                and isinstance(f.get("sha256"), str) and f["size"] >= 0):
            raise BadInput(f"{path}: manifest file entry {f!r} is malformed (corrupt bundle)")
        _check_member_name(f["path"])
        if f["path"] in seen:
            raise BadInput(f"{path}: manifest lists {f['path']} twice (corrupt bundle)")
        seen.add(f["path"])
    return manifest


def read_bundle(path: Path, sink: Callable[[str, bytes], None] | None = None) -> dict:
    """Validate the whole bundle; with ``sink``, hand each verified file to it. Returns the manifest.

    Nothing reaches ``sink`` that has not been checked against the manifest (path, type, size, sha256).
    Raises BadInput with a one-line reason on any problem.
    """
    import zstandard

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise BadInput(f"cannot read bundle {path}: {err.strerror}")
    # A hard ceiling until the manifest is read: nothing legitimate compresses better than 1000:1 here.
    fh, tar = _open_tar(path, limit=max(1 << 20, size * 1000))
    try:
        members: Iterator[tarfile.TarInfo] = iter(tar)
        first = next(members, None)
        if first is None or first.name != MANIFEST or not first.isreg() or first.size > MAX_MANIFEST_BYTES:
            raise BadInput(f"{path}: manifest.json is not the first member (not an aotwarm bundle)")
        manifest = _validate_manifest(tar.extractfile(first).read(), path)
        expected = {f["path"]: f for f in manifest["files"]}
        seen: set[str] = set()
        for member in members:
            _check_member_name(member.name)
            if not member.isreg():
                raise BadInput(f"bundle member {member.name!r} is not a regular file (link, device or FIFO): refusing the bundle")
            if member.name in seen:
                raise BadInput(f"bundle member {member.name!r} appears twice: refusing the bundle")
            seen.add(member.name)
            want = expected.get(member.name)
            if want is None:
                raise BadInput(f"bundle member {member.name!r} is not in the manifest: refusing the bundle")
            if member.size != want["size"]:
                raise BadInput(f"bundle member {member.name!r} is {member.size} bytes, the manifest says {want['size']}: refusing the bundle")
            data = tar.extractfile(member).read(want["size"] + 1)
            if len(data) != want["size"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
                raise BadInput(f"bundle member {member.name!r} does not match its sha256 in the manifest (corrupt or tampered)")
            if sink is not None:
                try:
                    sink(member.name, data)
                except OSError as err:
                    raise SinkError(err) from err
        missing = sorted(set(expected) - seen)
        if missing:
            raise BadInput(f"bundle is missing {len(missing)} file(s) its manifest lists, e.g. {missing[0]} (truncated?)")
        _check_tail(tar.fileobj, path)  # the decompressed stream under the streaming TarFile
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as err:
        raise BadInput(f"{path} is truncated or corrupt ({_why(err)}): rebuild or re-download it")
    finally:
        tar.close()
        fh.close()
    return manifest


def read_manifest(path: Path) -> dict:
    """Validate the whole bundle and return its manifest (used by inspect and verify)."""
    return read_bundle(path)
