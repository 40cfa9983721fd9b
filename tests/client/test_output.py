"""The CLI's tables: enum values without their enum's prefix, whole."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest

from auditline.account.v1 import permission_pb2, service_account_pb2
from auditline.client._commands import add_commands
from auditline.client._output import print_deleted, print_message


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


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Any]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield path, parser
        return
    for name, child in actions[0].choices.items():
        yield from _leaves(child, (*path, name))


def test_every_client_command_takes_json() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    leaves = dict(_leaves(parser))
    assert ("bucket", "delete") in leaves
    missing = [
        " ".join(path)
        for path, leaf in leaves.items()
        if "--json" not in {o for a in leaf._actions for o in a.option_strings}
    ]
    assert missing == []


def test_a_delete_says_what_it_deleted_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    print_deleted("buckets/x", as_json=True)
    print_deleted("buckets/x", as_json=False)
    assert capsys.readouterr().out.splitlines() == ['{"deleted": "buckets/x"}', "deleted buckets/x"]
