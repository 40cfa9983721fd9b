"""The exported files' keys, made (`Exporter`) and read back (`auditline events query`)
in one place: what a key says of its file — format, log, node, day, sequence range.

- JSON Lines: `[prefix]<format folder>/<log>/<YYYY/MM/DD or year=/month=/day=>/
  <node>-<first>-<last>.jsonl[.gz|.zst]`
- Parquet, an Amazon Security Lake custom source's layout under its location (the
  prefix): `[prefix]region=<r>/accountId=<id>/eventDay=<yyyyMMdd>/<log>-<node>-<first>-
  <last>.parquet` (the log in the file's name: each is one OCSF class).
"""

from __future__ import annotations

import dataclasses
import datetime
import re

from auditline.interceptor._compression import extension
from auditline.interceptor._export_config import PARTITIONINGS, ExporterConfig
from auditline.interceptor._formats import FORMAT_DIRS
from auditline.interceptor._log_names import LOG_DIR_NAMES

__all__ = ["TEMPORARY_PREFIX", "DataFile", "data_file", "integrity_prefix", "object_key", "partial"]

# A directory writer's file being written, beside where it goes (`_writers`); one a
# crash left behind stays.
TEMPORARY_PREFIX = ".put-"


def object_key(
    config: ExporterConfig, *, node: str, log: str, day: datetime.datetime, first: int, last: int
) -> str:
    """The key of an exporter's file of one log's events `first`..`last`."""
    name = f"{node}-{first:012d}-{last:012d}"
    if config.format == "ocsf-parquet":
        return (
            f"{config.prefix}region={config.lake_region}/accountId={config.lake_account_id}/"
            f"eventDay={day.strftime('%Y%m%d')}/{log}-{name}.parquet"
        )
    return (
        f"{config.prefix}{FORMAT_DIRS[config.format]}/{log}/"
        f"{day.strftime(PARTITIONINGS[config.partitioning])}/"
        f"{name}.jsonl{extension(config.compression)}"
    )


_FORMATS_BY_FOLDER = {folder: name for name, folder in FORMAT_DIRS.items()}
_FOLDERS = "|".join(_FORMATS_BY_FOLDER)
_LOGS = "|".join(sorted(set(LOG_DIR_NAMES.values())))
_NAME = r"(?P<node>[^/]+)-(?P<first>\d{12,})-(?P<last>\d{12,})"
_JSON_KEY = re.compile(
    rf"(?:^|/)(?P<format>{_FOLDERS})/(?P<log>{_LOGS})/(?:(?P<y>\d{{4}})/(?P<m>\d\d)/"
    rf"(?P<d>\d\d)|year=(?P<hy>\d{{4}})/month=(?P<hm>\d\d)/day=(?P<hd>\d\d))/{_NAME}\.jsonl"
    r"(?:\.gz|\.zst)?\Z"
)
_PARQUET_KEY = re.compile(
    rf"(?:^|/)region=[^/]*/accountId=[^/]*/eventDay=(?P<day>\d{{8}})/(?P<log>{_LOGS})-"
    rf"{_NAME}\.parquet\Z"
)
# The objects an exporter writes beside its files (`_integrity`): its verifier key, and
# its manifests (any JSON in their folder is read as one, and found malformed if it is
# not). Matched to the end, so that a prefix with "integrity/" in it is still a prefix.
# (`$` also matched before a trailing newline: a data file named so was queried, and
# never verified.)
_INTEGRITY_KEY = re.compile(
    r"integrity/(?:keys/[^/]+\.pub|(?P<node>[^/]+)/manifests/[^/]+\.json)\Z"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataFile:
    key: str
    format: str  # apievent-json, ocsf-json or ocsf-parquet
    log: str
    node: str
    day: datetime.date
    first_seq: int
    last_seq: int


def within(key: str, prefix: str) -> str:
    """A data file's key (as its manifest names it: under its exporter's prefix, from
    the bucket's root) as a location whose root is at `prefix` of that same log sees
    it: `prefix`, then the key past its exporter's prefix (the folders before its
    format's or Security Lake's). A location opened at the exporter's prefix
    (`s3://BUCKET/PREFIX`) read no file of the log otherwise."""
    match = _PARQUET_KEY.search(key) or _JSON_KEY.search(key)
    if match is None:
        return key
    start = match.start() + (key[match.start()] == "/")  # the pattern's leading "/"
    return prefix + key[start:]


def integrity_prefix(key: str, *, manifests: bool = False) -> str | None:
    """The exporter's prefix of an integrity object's key (a manifest's only, with
    `manifests`); None for any other object."""
    match = _INTEGRITY_KEY.search(key)
    if match is None or (manifests and match["node"] is None):
        return None
    return key[: match.start()]


def partial(key: str) -> bool:
    """Whether the key is no object of a log but a write under way or cut short (a
    directory writer's temporary file), or a folder (an S3 console's "folder/")."""
    return key.endswith("/") or key.rsplit("/", 1)[-1].startswith(TEMPORARY_PREFIX)


def data_file(key: str) -> DataFile | None:
    """What an exported data file's key says of it; None for any other object."""
    if integrity_prefix(key) is not None:
        return None
    if match := _PARQUET_KEY.search(key):
        format_name, text = "ocsf-parquet", match["day"]
        day = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    elif match := _JSON_KEY.search(key):
        format_name = _FORMATS_BY_FOLDER[match["format"]]
        parts = match.group("y", "m", "d") if match["y"] else match.group("hy", "hm", "hd")
        day = datetime.date(*map(int, parts))
    else:
        return None
    return DataFile(
        key=key,
        format=format_name,
        log=match["log"],
        node=match["node"],
        day=day,
        first_seq=int(match["first"]),
        last_seq=int(match["last"]),
    )
