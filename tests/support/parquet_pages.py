"""The pages of a Parquet file's column chunks, read from the file's bytes (pyarrow does
not expose them): each page header is a Thrift compact-protocol `PageHeader` whose
field 2 is the page's uncompressed size and field 3 its size in the file."""

from __future__ import annotations

import io

import pyarrow.parquet as pq


def _varint(stream: io.BytesIO) -> int:
    shift = result = 0
    while True:
        byte = stream.read(1)[0]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7


def _zigzag(stream: io.BytesIO) -> int:
    value = _varint(stream)
    return (value >> 1) ^ -(value & 1)


def _skip(stream: io.BytesIO, kind: int) -> None:
    if kind in (1, 2):  # booleans are in the field header
        return
    if kind == 3:
        stream.read(1)
    elif kind in (4, 5, 6):
        _varint(stream)
    elif kind == 7:
        stream.read(8)
    elif kind == 8:
        stream.read(_varint(stream))
    elif kind in (9, 10):
        header = stream.read(1)[0]
        size = header >> 4 if header >> 4 != 15 else _varint(stream)
        for _ in range(size):
            _skip(stream, 3 if header & 0x0F in (1, 2) else header & 0x0F)
    elif kind == 11:
        size = _varint(stream)
        if size:
            types = stream.read(1)[0]
            for _ in range(size):
                _skip(stream, types >> 4)
                _skip(stream, types & 0x0F)
    elif kind == 12:
        _struct(stream)
    else:
        raise ValueError(f"unknown Thrift compact type {kind}")


def _struct(stream: io.BytesIO) -> dict[int, int]:
    """The struct's integer fields by id (the others skipped)."""
    fields: dict[int, int] = {}
    last = 0
    while True:
        header = stream.read(1)[0]
        if header == 0:
            return fields
        delta, kind = header >> 4, header & 0x0F
        last = last + delta if delta else _zigzag(stream)
        if kind in (4, 5, 6):
            fields[last] = _zigzag(stream)
        else:
            _skip(stream, kind)


def page_sizes(data: bytes) -> dict[str, list[int]]:
    """Each column's pages' uncompressed sizes, by the column's dotted path."""
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    out: dict[str, list[int]] = {}
    for group in range(metadata.num_row_groups):
        for index in range(metadata.num_columns):
            column = metadata.row_group(group).column(index)
            start = column.dictionary_page_offset or column.data_page_offset
            stream = io.BytesIO(data[start : start + column.total_compressed_size])
            sizes = out.setdefault(column.path_in_schema, [])
            while stream.tell() < column.total_compressed_size:
                header = _struct(stream)
                sizes.append(header[2])
                stream.seek(header[3], io.SEEK_CUR)
    return out
