"""The `ocsf-parquet` format: a file of OCSF records as Parquet, shaped for an Amazon
Security Lake custom source, and those records read back (for `auditline verify`,
`read_exported` and queries).

The columns are the attributes the OCSF mapping writes (`WRITTEN_ATTRIBUTES`), nested
as the class nests them, each typed from the class's JSON Schema of the exporter's
OCSF version: objects as structs, arrays as lists, strings, booleans, doubles, and
every integer as a 64-bit one (`metadata.sequence` is the node's 64-bit counter,
wider than OCSF's `integer_t`). The free-form attributes (`json_t` and the open
`object`: `unmapped`, `api.request.data`, `api.response.data`) hold JSON text, marked
in the field's metadata so that reading them back parses them again.

A file holds one class (the exporter writes one file per log, and each log is one
class), its rows sorted by `time` (then by sequence), zstd by default, data pages of at
most 1 MiB and one row group (the exporter's file size bound keeps it under 256 MB).
pyarrow is imported only here, and only when a Parquet file is made or read.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import orjson

from auditline.interceptor._ocsf import WRITTEN_ATTRIBUTES, class_schema

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DATA_PAGE_BYTES", "arrow_schema", "column_line", "parquet_file", "parquet_lines"]

DATA_PAGE_BYTES = 1 << 20  # Security Lake: data pages of at most 1 MB, uncompressed
_JSON = {b"ocsf_type": b"json"}  # a field's metadata: the column holds JSON text
_CODECS: dict[str, Literal["zstd", "gzip", "none"]] = {
    "zstd": "zstd",
    "gzip": "gzip",
    "none": "none",
}


def _tree(paths: tuple[str, ...]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})
    return tree


def _field(name: str, spec: dict[str, Any], children: dict[str, Any], defs: dict[str, Any]) -> Any:
    import pyarrow as pa

    is_array = spec.get("type") == "array"
    item = spec.get("items", {}) if is_array else spec
    ref = item.get("$ref", "")
    kind: pa.DataType
    metadata = None
    if ref and ref != "#/$defs/object":
        definition = defs[ref.rsplit("/", 1)[1]]
        kind = pa.struct(
            [
                _field(key, definition["properties"][key], grand, defs)
                for key, grand in children.items()
                if key in definition["properties"]  # not every version has every one
            ]
        )
    elif ref or "type" not in item:  # the open object, or json_t: JSON text
        kind, metadata = pa.string(), _JSON
    else:
        kinds: dict[str, pa.DataType] = {
            "string": pa.string(),
            "integer": pa.int64(),
            "number": pa.float64(),
            "boolean": pa.bool_(),
        }
        kind = kinds[item["type"]]
    if is_array:
        kind = pa.list_(kind)
    return pa.field(name, kind, metadata=metadata)


@cache
def arrow_schema(class_uid: int, version: str) -> pa.Schema:
    """The Parquet columns of a class's records in `version` (see the module's text)."""
    import pyarrow as pa

    schema = class_schema(class_uid, version)
    tree = _tree(WRITTEN_ATTRIBUTES[class_uid])
    return pa.schema(
        [
            _field(name, schema["properties"][name], children, schema["$defs"])
            for name, children in tree.items()
            if name in schema["properties"]
        ],
        metadata={b"ocsf_class_uid": str(class_uid).encode(), b"ocsf_version": version.encode()},
    )


@cache
def _json_paths(class_uid: int, version: str) -> tuple[tuple[str, ...], ...]:
    """Where a record's free-form attributes are (those written as JSON text)."""
    import pyarrow as pa

    def walk(fields: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for field in fields:
            if field.metadata == _JSON:
                yield (*prefix, field.name)
            elif pa.types.is_struct(field.type):
                yield from walk(field.type, (*prefix, field.name))

    return tuple(walk(arrow_schema(class_uid, version), ()))


def _as_text(record: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    for path in paths:
        parent: Any = record
        for key in path[:-1]:
            parent = parent.get(key)
            if not isinstance(parent, dict):
                break
        else:
            if path[-1] in parent:
                parent[path[-1]] = orjson.dumps(parent[path[-1]]).decode()
    return record


Reader = Callable[[Any], Any]


def _reader(kind: pa.DataType, metadata: Any) -> Reader | None:
    """How a column's value becomes the record's again (None: as it is): JSON text
    parsed, null attributes left out."""
    import pyarrow as pa

    if metadata == _JSON:
        return orjson.loads
    if pa.types.is_struct(kind):
        children = [(f.name, _reader(f.type, f.metadata)) for f in kind]

        def struct(value: dict[str, Any]) -> dict[str, Any]:
            return {
                name: (read(value[name]) if read else value[name])
                for name, read in children
                if value[name] is not None
            }

        return struct
    if pa.types.is_list(kind):
        item = _reader(kind.value_type, None)
        return (lambda value: [item(v) for v in value]) if item else None
    return None


def _unknown(value: Any, kind: pa.DataType, prefix: str = "") -> Iterator[str]:
    """The attributes of a record that have no column (to name them in an error)."""
    import pyarrow as pa

    if isinstance(value, dict) and pa.types.is_struct(kind):
        names = {field.name: field for field in kind}
        for key, child in value.items():
            if key not in names:
                yield prefix + key
            else:
                yield from _unknown(child, names[key].type, f"{prefix}{key}.")


def column_line(record: dict[str, Any], version: str) -> bytes:
    """An OCSF record as a JSON line of its columns' values: the free-form attributes
    as JSON text (what `parquet_file` takes)."""
    return orjson.dumps(_as_text(record, _json_paths(record["class_uid"], version)))


def parquet_file(lines: list[bytes], *, version: str, compression: str) -> bytes:
    """A Parquet file of OCSF records (all of one class), given as `column_line`s."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    text = b"\n".join(line.rstrip(b"\n") for line in lines)
    class_uid = orjson.loads(lines[0])["class_uid"]
    schema = arrow_schema(class_uid, version)
    # pyarrow's own JSON reader fills the columns (parsing and converting each record
    # in Python cost five times as much); an attribute without a column is refused.
    try:
        table = pj.read_json(
            io.BytesIO(text),
            read_options=pj.ReadOptions(block_size=len(text) + 1),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="error"
            ),
        )
    except pa.ArrowInvalid as error:
        records = [orjson.loads(line) for line in lines]
        unknown = sorted({p for r in records for p in _unknown(r, pa.struct(list(schema)))})
        raise ValueError(f"OCSF records that do not fit the columns: {error} {unknown}") from None
    classes = pc.unique(table["class_uid"]).to_pylist()
    if classes != [class_uid]:
        raise ValueError(f"a Parquet file holds one OCSF class, not {classes}")
    # By time, then by sequence.
    keys = pa.table({"time": table["time"], "seq": pc.struct_field(table["metadata"], "sequence")})
    table = table.take(
        pc.sort_indices(keys, sort_keys=[("time", "ascending"), ("seq", "ascending")])
    )
    table = table.select(schema.names).cast(schema)
    out = io.BytesIO()
    pq.write_table(
        table,
        out,
        compression=_CODECS[compression],
        data_page_size=DATA_PAGE_BYTES,
        # A dictionary page is a page too; pyarrow checks its limit after adding the
        # value that crosses it, so the limit leaves room for one large value.
        dictionary_pagesize_limit=DATA_PAGE_BYTES // 2,
        row_group_size=max(table.num_rows, 1),
        sorting_columns=[pq.SortingColumn(_leaf_index(schema, "time"))],
        write_statistics=True,
    )
    return out.getvalue()


def _leaf_index(schema: pa.Schema, name: str) -> int:
    """The column index (among leaf columns) of the top-level attribute `name`."""
    import pyarrow as pa

    def leaves(kind: pa.DataType) -> int:
        if pa.types.is_struct(kind):
            return sum(leaves(kind.field(i).type) for i in range(kind.num_fields))
        if pa.types.is_list(kind):
            return leaves(kind.value_type)
        return 1

    index = 0
    for field in schema:
        if field.name == name:
            return index
        index += leaves(field.type)
    raise KeyError(name)


def parquet_lines(data: bytes) -> bytes:
    """A Parquet file's records as JSON lines, each exactly the record written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # On one thread: with Arrow's pool, a process that had read one aborted at its
    # exit now and then ("terminate called without an active exception"; pyarrow
    # 26.0.1, 2 of 40 runs of a bare read against none of 40 so), and `auditline
    # verify` exited 134 after saying "verified" (found by a review helper).
    table = pq.read_table(io.BytesIO(data), use_threads=False)
    read = _reader(pa.struct(list(table.schema)), None)
    assert read is not None  # a struct's reader
    return b"".join(
        orjson.dumps(read(row), option=orjson.OPT_APPEND_NEWLINE) for row in table.to_pylist()
    )
