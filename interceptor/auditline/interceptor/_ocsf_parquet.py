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
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import orjson

from auditline.interceptor._ocsf import WRITTEN_ATTRIBUTES, class_schema

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["DATA_PAGE_BYTES", "arrow_schema", "parquet_file", "parquet_lines"]

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


def _to_columns(value: Any, kind: Any, field_metadata: Any) -> Any:
    """A record's value as its column takes it: free-form values as JSON text."""
    import pyarrow as pa

    if value is None:
        return None
    if field_metadata == _JSON:
        return orjson.dumps(value).decode()
    if pa.types.is_struct(kind):
        unknown = value.keys() - {kind.field(i).name for i in range(kind.num_fields)}
        if unknown:  # an attribute without a column would be lost
            raise ValueError(f"OCSF attributes without a column: {sorted(unknown)}")
        return {
            kind.field(i).name: _to_columns(
                value.get(kind.field(i).name), kind.field(i).type, kind.field(i).metadata
            )
            for i in range(kind.num_fields)
        }
    if pa.types.is_list(kind):
        return [_to_columns(v, kind.value_type, None) for v in value]
    return value


def _from_columns(value: Any, kind: Any, field_metadata: Any) -> Any:
    """The inverse: a row's value as the record had it (null attributes left out)."""
    import pyarrow as pa

    if field_metadata == _JSON:
        return orjson.loads(value)
    if pa.types.is_struct(kind):
        out = {}
        for i in range(kind.num_fields):
            child = kind.field(i)
            if value.get(child.name) is not None:
                out[child.name] = _from_columns(value[child.name], child.type, child.metadata)
        return out
    if pa.types.is_list(kind):
        return [_from_columns(v, kind.value_type, None) for v in value]
    return value


def _sort_key(record: dict[str, Any]) -> tuple[int, int]:
    return record["time"], record["metadata"].get("sequence", 0)


def parquet_file(lines: list[bytes], *, version: str, compression: str) -> bytes:
    """A Parquet file of the OCSF records given as JSON lines (all of one class)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = sorted((orjson.loads(line) for line in lines), key=_sort_key)
    classes = {record["class_uid"] for record in records}
    if len(classes) != 1:
        raise ValueError(f"a Parquet file holds one OCSF class, not {sorted(classes)}")
    schema = arrow_schema(classes.pop(), version)
    row_type = pa.struct(list(schema))
    rows = [_to_columns(record, row_type, None) for record in records]
    table = pa.Table.from_pylist(rows, schema=schema)
    out = io.BytesIO()
    pq.write_table(
        table,
        out,
        compression=_CODECS[compression],
        data_page_size=DATA_PAGE_BYTES,
        # A dictionary page is a page too; pyarrow checks its limit after adding the
        # value that crosses it, so the limit leaves room for one large value.
        dictionary_pagesize_limit=DATA_PAGE_BYTES // 2,
        row_group_size=max(len(rows), 1),
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

    table = pq.read_table(io.BytesIO(data))
    row_type = pa.struct(list(table.schema))
    return b"".join(
        orjson.dumps(_from_columns(row, row_type, None), option=orjson.OPT_APPEND_NEWLINE)
        for row in table.to_pylist()
    )
