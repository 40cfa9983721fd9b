"""No secret key or token anywhere it could leak: the database, the audit spool and
exported files, the server's log, or the errors clients see."""

from __future__ import annotations

import json

from auditline.account.v1 import bucket_pb2
from auditline.client import Client
from tests.conftest import ServeFactory
from tests.support.account_server import ADMIN_KEY, ADMIN_SECRET, admin_env, new_account
from tests.support.clients import login
from tests.support.exported import exported_events, exported_files
from tests.support.outcome import error_of


def test_no_secret_or_token_in_the_database_logs_or_errors(serve: ServeFactory) -> None:
    process = serve(env=admin_env())
    admin = login(process.target, ADMIN_KEY, ADMIN_SECRET)
    account, secret = new_account(admin)
    user = login(process.target, account.access_key, secret)
    with Client(process.target, token=user.token + "x") as wrong_token:
        errors = [
            error_of(lambda: wrong_token.buckets.ListBuckets(bucket_pb2.ListBucketsRequest())),
            error_of(lambda: login(process.target, account.access_key, secret + "x")),
            # The two swapped: the secret key given as the access key (it was in the
            # IAM log, the exported files and the database; found by a review helper).
            error_of(lambda: login(process.target, secret, account.access_key)),
        ]
    secrets = [ADMIN_SECRET, secret, admin.token, user.token]
    assert process.terminate() == 0
    haystacks = {
        "database": b"".join(p.read_bytes() for p in process.data_dir.glob("auditline.db*")),
        "audit spool": b"".join(
            p.read_bytes() for p in (process.data_dir / "audit").glob("spool.db*")
        ),
        "exported audit files": b"".join(p.read_bytes() for p in exported_files(process.data_dir)),
        "exported audit events": json.dumps(exported_events(process.data_dir)).encode(),
        "server log": process.log().encode(),
        "errors": "".join(f"{e.details()} {e}" for e in errors).encode(),
    }
    for where, haystack in haystacks.items():
        assert haystack, where
        for value in secrets:
            assert value.encode() not in haystack, f"a secret is in the {where}"
