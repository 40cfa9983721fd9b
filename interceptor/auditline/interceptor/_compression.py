"""The exported files' compressions: one list for the exporter that writes them and
the verifier that reads them back, and a data file's lines whatever its form."""

from __future__ import annotations

import gzip

__all__ = ["COMPRESSIONS", "DATA_SUFFIXES", "compress", "decompress", "extension"]

_EXTENSIONS = {"gzip": ".gz", "zstd": ".zst", "none": ""}
# The compressions an exporter writes (the API's enum names the same ones).
COMPRESSIONS = tuple(_EXTENSIONS)
# How an event file's key ends, whatever its format and compression (a Parquet file
# is compressed inside).
DATA_SUFFIXES = (*(".jsonl" + ext for ext in _EXTENSIONS.values()), ".parquet")


def extension(compression: str) -> str:
    """The file name's suffix after `.jsonl`: `.gz`, `.zst` or nothing."""
    return _EXTENSIONS[compression]


def compress(data: bytes, compression: str) -> bytes:
    # mtime=0: the same events give the same bytes, so a retried upload is identical.
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def decompress(key: str, data: bytes) -> bytes:
    """A file's lines, by its key's suffix (a Parquet file's records as JSON lines)."""
    if key.endswith(".parquet"):
        from auditline.interceptor._ocsf_parquet import parquet_lines

        return parquet_lines(data)
    if key.endswith(".gz"):
        return gzip.decompress(data)
    if key.endswith(".zst"):
        import zstandard

        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))
    return data
