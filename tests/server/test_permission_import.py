"""Creating permissions from an imported file (`BatchCreatePermissions`, `auditline
permission import`): all of them or none, every invalid entry named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditline.account.v1 import permission_pb2 as pb
from auditline.errors import AlreadyExistsError, InvalidArgumentError
from tests.support.account_server import ADMIN_KEY, ADMIN_SECRET, Server, new_bucket, new_name
from tests.support.cli import run_auditline


def _request(**fields: object) -> pb.CreatePermissionRequest:
    permission_id = str(fields.pop("permission_id", ""))
    fields.setdefault("display_name", new_name("imp"))
    fields.setdefault("access", pb.ACCESS_READ)
    fields.setdefault("bucket_scope", pb.BUCKET_SCOPE_ALL)
    return pb.CreatePermissionRequest(
        permission=pb.Permission(**fields),  # type: ignore[arg-type]
        permission_id=permission_id,
    )


def _names(server: Server) -> set[str]:
    listed = server.admin.permissions.ListPermissions(pb.ListPermissionsRequest(page_size=1000))
    return {p.display_name for p in listed.permissions}


def test_a_batch_is_created_whole(server: Server) -> None:
    bucket = new_bucket(server.admin)
    requests = [
        _request(),
        _request(bucket_scope=pb.BUCKET_SCOPE_NAMES, bucket_names=[bucket]),
        _request(bucket_scope=pb.BUCKET_SCOPE_PREFIX, bucket_prefix="logs-", permission_id="imp-x"),
    ]
    response = server.admin.permissions.BatchCreatePermissions(
        pb.BatchCreatePermissionsRequest(requests=requests)
    )
    assert [p.display_name for p in response.permissions] == [
        r.permission.display_name for r in requests
    ]
    assert response.permissions[2].name == "permissions/imp-x"
    assert {r.permission.display_name for r in requests} <= _names(server)


def test_one_invalid_entry_creates_none_and_each_problem_is_named(server: Server) -> None:
    requests = [
        _request(),
        _request(bucket_scope=pb.BUCKET_SCOPE_NAMES, bucket_names=["no-such-bucket-imp"]),
        _request(),
        _request(access=pb.ACCESS_UNSPECIFIED),
    ]
    requests.append(_request(display_name=requests[0].permission.display_name))
    with pytest.raises(InvalidArgumentError) as refused:
        server.admin.permissions.BatchCreatePermissions(
            pb.BatchCreatePermissionsRequest(requests=requests)
        )
    fields = [field for field, _ in refused.value.field_violations]
    assert fields == [
        "requests[1].permission.bucket_names",
        "requests[3].permission.access",
        "requests[4].permission.display_name",
    ]
    assert "none was created" in refused.value.message
    assert not {r.permission.display_name for r in requests} & _names(server)


def test_a_name_that_exists_fails_the_whole_batch(server: Server) -> None:
    first = _request()
    server.admin.permissions.BatchCreatePermissions(
        pb.BatchCreatePermissionsRequest(requests=[first])
    )
    fresh = _request()
    with pytest.raises(AlreadyExistsError):
        server.admin.permissions.BatchCreatePermissions(
            pb.BatchCreatePermissionsRequest(requests=[fresh, first])
        )
    assert fresh.permission.display_name not in _names(server)


def test_batch_limits(server: Server) -> None:
    with pytest.raises(InvalidArgumentError):
        server.admin.permissions.BatchCreatePermissions(pb.BatchCreatePermissionsRequest())
    too_many = [_request() for _ in range(101)]
    with pytest.raises(InvalidArgumentError) as refused:
        server.admin.permissions.BatchCreatePermissions(
            pb.BatchCreatePermissionsRequest(requests=too_many)
        )
    assert refused.value.field_violations == [("requests", "may hold at most 100")]


def test_the_cli_imports_a_yaml_file(server: Server, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AUDITLINE_TARGET": server.target,
        "AUDITLINE_CONFIG_DIR": str(tmp_path / "config"),
        "AUDITLINE_SECRET_KEY": ADMIN_SECRET,
    }

    def auditline(*args: str, code: int = 0) -> str:
        result = run_auditline(env, *args, code=code)
        return result.stdout + result.stderr

    auditline("login", "--access-key", ADMIN_KEY)
    readers, writers = new_name("yaml"), new_name("yaml")
    good = tmp_path / "permissions.yaml"
    good.write_text(
        f"- display_name: {readers}\n"
        "  bucket_scope: BUCKET_SCOPE_ALL\n"
        "  access: ACCESS_READ\n"
        f"- displayName: {writers}\n"
        "  bucketScope: BUCKET_SCOPE_PREFIX\n"
        "  bucketPrefix: team-\n"
        "  access: ACCESS_READ_WRITE\n"
        f"  id: {writers}\n"
    )
    out = auditline("permission", "import", str(good))
    assert readers in out
    assert f"permissions/{writers}" in out
    assert "READ_WRITE" in out
    bad = tmp_path / "bad.json"
    bad.write_text(
        f'[{{"display_name": "{new_name("j")}", "bucket_scope": "BUCKET_SCOPE_ALL", '
        '"access": "ACCESS_READ"}, {"display_name": "x", "bucket_scope": "BUCKET_SCOPE_ALL"}]'
    )
    out = auditline("permission", "import", str(bad), code=1)
    assert "requests[1].permission.access" in out
    # A file that is not a list of permissions is a usage error, not a call.
    (tmp_path / "scalar.yaml").write_text("just text\n")
    assert "must hold a list" in auditline(
        "permission", "import", str(tmp_path / "scalar.yaml"), code=2
    )
    (tmp_path / "typo.yaml").write_text("- display_nam: x\n")
    assert "entry 0" in auditline("permission", "import", str(tmp_path / "typo.yaml"), code=2)
