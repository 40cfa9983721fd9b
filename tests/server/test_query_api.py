"""QueryEvents through `auditline serve`, on the filesystem store and on SeaweedFS: an
auditor's SQL over the exported log finds exactly the calls made, a saved exporter's
files are reached by its name, and a refused query is audited while the server keeps
serving. (The bounds, code by code: test_log_queries.py; each role: test_roles.py.)"""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import timestamp_pb2

from auditline.account.v1 import bucket_pb2
from auditline.account.v1 import service_account_pb2 as sa_pb
from auditline.audit.v1 import audit_log_pb2 as pb
from auditline.audit.v1 import exporter_pb2
from auditline.client import Client
from auditline.errors import InvalidArgumentError, NotFoundError
from tests.support.account_server import (
    BACKENDS,
    Server,
    login_as,
    module_server,
    new_bucket,
    new_name,
)
from tests.support.outcome import code_of
from tests.support.processes import wait_for


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server exporting every 0.2 s, so that calls reach the files at once."""
    yield from module_server(request, tmp_path_factory, "query", "--export-interval", "0.2")


def _query(client: Client, sql: str, **fields: object) -> pb.QueryEventsResponse:
    request = pb.QueryEventsRequest(sql=sql, **fields)  # type: ignore[arg-type]
    response: pb.QueryEventsResponse = client.events.QueryEvents(request, timeout=60)
    return response


def _rows(response: pb.QueryEventsResponse) -> list[tuple[object, ...]]:
    def plain(value: object) -> object:
        kind = value.WhichOneof("kind")  # type: ignore[attr-defined]
        return None if kind == "null_value" else getattr(value, kind)

    return [tuple(plain(v) for v in row.values) for row in response.rows]


def _calls(admin: Client, tag: str) -> list[tuple[str, str]]:
    """Bucket calls whose requests carry `tag`, of three outcomes; (method, status) each."""
    made = []
    for i in range(6):
        request: object
        if i % 3 == 0:
            method, request = "CreateBucket", bucket_pb2.CreateBucketRequest(bucket_id=f"{tag}-{i}")
        elif i % 3 == 1:
            method, request = "GetBucket", bucket_pb2.GetBucketRequest(name=f"buckets/{tag}-no")
        else:
            method, request = "CreateBucket", bucket_pb2.CreateBucketRequest(bucket_id=f"{tag}_X")
        call = getattr(admin.buckets, method)
        made.append((method, code_of(functools.partial(call, request)).name))
    return made


def test_an_auditor_finds_exactly_the_calls_made(server: Server) -> None:
    auditor = login_as(server, sa_pb.ROLE_AUDITOR)
    tag = "q" + uuid.uuid4().hex[:8]
    made = _calls(server.admin, tag)
    sql = (
        "SELECT Method, Response.ResponseStatus, Sequence, time FROM events "  # noqa: S608
        "WHERE Service = 'auditline.account.v1.BucketService' AND "
        f"(Request.RequestParams->>'bucket_id' LIKE '{tag}%' "
        f"OR Request.RequestParams->>'name' = 'buckets/{tag}-no') ORDER BY Sequence"
    )

    def exported() -> pb.QueryEventsResponse | None:
        response = _query(auditor, sql)
        return response if len(response.rows) >= len(made) else None

    response = wait_for(exported, timeout=60, what="the calls in the exported files")
    assert [(m, s) for m, s, *_ in _rows(response)] == made
    assert {status for _, status in made} == {"OK", "NOT_FOUND", "INVALID_ARGUMENT"}
    assert [(c.name, c.type) for c in response.columns] == [
        ("Method", "VARCHAR"),
        ("ResponseStatus", "VARCHAR"),
        ("Sequence", "BIGINT"),
        ("time", "TIMESTAMP WITH TIME ZONE"),
    ]
    assert response.files_read == response.files_listed > 0
    assert response.bytes_read > 0
    assert not response.truncated
    # A range after today reads no file, and so finds nothing.
    tomorrow = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    since = timestamp_pb2.Timestamp()
    since.FromDatetime(tomorrow)
    later = _query(auditor, "SELECT count(*) FROM events", since_time=since)
    assert (later.files_read, _rows(later)) == (0, [(0,)])
    assert later.files_listed > 0


def test_a_saved_exporters_files_are_queried_by_its_name(server: Server) -> None:
    bucket = new_bucket(server.admin)
    definition = exporter_pb2.Exporter(
        display_name=new_name("query"),
        bucket=bucket,
        prefix="audit/q/",
        format=exporter_pb2.OUTPUT_FORMAT_OCSF_JSON,
        compression=exporter_pb2.COMPRESSION_ZSTD,
    )
    definition.flush_interval.FromMilliseconds(200)
    exporter = server.admin.exporters.CreateExporter(
        exporter_pb2.CreateExporterRequest(exporter=definition)
    ).exporter
    tag = "s" + uuid.uuid4().hex[:8]
    made = _calls(server.admin, tag)
    sql = (
        "SELECT api.operation, status_code FROM ocsf "  # noqa: S608
        f"WHERE api.request.data->>'bucket_id' LIKE '{tag}%' "
        f"OR api.request.data->>'name' = 'buckets/{tag}-no' ORDER BY metadata.sequence"
    )

    def exported() -> pb.QueryEventsResponse | None:
        response = _query(server.admin, sql, exporter=exporter.name)
        return response if len(response.rows) >= len(made) else None

    response = wait_for(exported, timeout=60, what="the calls in the exporter's files")
    assert _rows(response) == made
    keys = _rows(_query(server.admin, "SELECT DISTINCT format FROM files", exporter=exporter.name))
    assert keys == [("ocsf-json",)]  # under the prefix, only this exporter's files
    # A prefix must be folders, so that the files can be found under it again.
    definition.display_name, definition.prefix = new_name("query"), "audit-"
    with pytest.raises(InvalidArgumentError) as refused:
        server.admin.exporters.CreateExporter(
            exporter_pb2.CreateExporterRequest(exporter=definition)
        )
    assert refused.value.field_violations[0][0] == "exporter.prefix"


def test_a_refused_query_is_audited_and_the_server_keeps_serving(server: Server) -> None:
    auditor = login_as(server, sa_pb.ROLE_AUDITOR)
    marker = "refused_" + uuid.uuid4().hex[:8]
    with pytest.raises(InvalidArgumentError) as bad_sql:
        _query(auditor, f"SELECT {marker} FROM events")  # noqa: S608 - the test's own
    assert bad_sql.value.field_violations[0][0] == "sql"
    with pytest.raises(NotFoundError):
        _query(auditor, "SELECT 1", exporter="exporters/no-such-exporter")
    with pytest.raises(InvalidArgumentError):
        _query(auditor, "SELECT 1", exporter="no-such-exporter")
    # A time no Timestamp holds (it was UNKNOWN, a ValueError; found by a review helper).
    with pytest.raises(InvalidArgumentError) as bad_time:
        _query(auditor, "SELECT 1", since_time=timestamp_pb2.Timestamp(seconds=-(10**12)))
    assert bad_time.value.field_violations[0][0] == "since_time"
    standard = login_as(server, sa_pb.ROLE_STANDARD)
    with pytest.raises(grpc.RpcError) as denied:
        _query(standard, "SELECT 1")
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _rows(_query(auditor, "SELECT 40 + 2 AS answer")) == [(42,)]
    # Each query is an event of the node's log, with its SQL and its code.
    listed = server.admin.events.ListEvents(
        pb.ListEventsRequest(
            filter=pb.EventFilter(event_names=["QueryEvents"], response_codes=[3]),
            page_size=1000,
        )
    ).events
    assert any(marker in str(event.request.request_params["sql"]) for event in listed)
