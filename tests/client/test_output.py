"""The CLI's tables: enum values without their enum's prefix, whole."""

from __future__ import annotations

import pytest

from auditline.account.v1 import permission_pb2, service_account_pb2
from auditline.client._output import print_message


def test_enum_cells_drop_only_the_enums_own_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        permission_pb2.Permission(name="permissions/a", access=access)
        for access in (
            permission_pb2.ACCESS_READ,
            permission_pb2.ACCESS_WRITE,
            permission_pb2.ACCESS_READ_WRITE,
        )
    ]
    print_message(
        permission_pb2.ListPermissionsResponse(permissions=rows),
        as_json=False,
        rows=rows,
        columns=("name", "access"),
    )
    cells = [line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert cells == ["READ", "WRITE", "READ_WRITE"]


def test_role_cells(capsys: pytest.CaptureFixture[str]) -> None:
    account = service_account_pb2.ServiceAccount(role=service_account_pb2.ROLE_AUDITOR)
    print_message(account, as_json=False, columns=("role",))
    assert capsys.readouterr().out.splitlines() == ["ROLE", "AUDITOR"]
