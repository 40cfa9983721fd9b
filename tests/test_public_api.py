"""The public API of every distribution, pinned: a name added to or removed from a
public module's `__all__` is a decision, made here on purpose (temporalio/sdk-python
pins its API the same way). Public modules re-export private `_` modules."""

from __future__ import annotations

import importlib

import pytest

PUBLIC: dict[str, set[str]] = {
    # auditline-contract
    "auditline.contract": {
        "EXPORT_COMPRESSIONS",
        "EXPORT_FORMATS",
        "EXPORT_OCSF_VERSIONS",
        "EXPORT_PARTITIONINGS",
        "FILES",
        "OPEN_METHODS",
        "SERVICES",
    },
    "auditline.errors": {
        "BY_CODE",
        "MAX_MESSAGE_CHARS",
        "AbortedError",
        "AlreadyExistsError",
        "AuditlineError",
        "CancelledError",
        "DataLossError",
        "DeadlineExceededError",
        "FailedPreconditionError",
        "InternalError",
        "InvalidArgumentError",
        "NotFoundError",
        "OutOfRangeError",
        "PermissionDeniedError",
        "ResourceExhaustedError",
        "UnauthenticatedError",
        "UnavailableError",
        "UnimplementedError",
        "UnknownError",
        "error_for",
        "from_rpc_error",
        "unpack_details",
    },
    # auditline-interceptor
    "auditline.interceptor": {
        "DROP_EVENT",
        "MASK",
        "LAKE_PARTITION",
        "OCSF_VERSIONS",
        "PARTITIONINGS",
        "SUMMARY_EVENT",
        "AsyncAuditInterceptor",
        "AuditPolicy",
        "AuditRule",
        "AuditInterceptor",
        "AuditUnavailableError",
        "AuditWorker",
        "DirectoryWriter",
        "EventDocument",
        "ExportedEvent",
        "Exporter",
        "ExporterConfig",
        "ExporterState",
        "ExporterStatus",
        "MemorySink",
        "MethodInfo",
        "ObjectWriter",
        "OtelLogSink",
        "Pipeline",
        "Principal",
        "QueryError",
        "QueryLimitError",
        "QueryResult",
        "LocalDirectory",
        "Location",
        "S3Location",
        "PrincipalInput",
        "PrincipalResolver",
        "S3Writer",
        "Sink",
        "Spool",
        "SpoolStats",
        "SpoolView",
        "SummaryPolicy",
        "TrustedProxies",
        "activity_from_verb",
        "event_document",
        "hmac_value",
        "instrument",
        "method_info",
        "ocsf_record",
        "query_exported",
        "open_writer",
        "read_exported",
        "record_event",
        "set_log_type",
        "set_principal",
        "source_of",
    },
    "auditline.interceptor.integrity": {
        "ExpectedCheckpoint",
        "Finding",
        "LocalDirectory",
        "Location",
        "Notary",
        "Report",
        "S3Location",
        "SigningKey",
        "Verifier",
        "VerifierKey",
        "expected_from_report",
        "open_location",
        "prove",
        "verify_proof",
    },
    # auditline-client
    "auditline.client": {"AsyncClient", "Client"},
    "auditline.client.cli": {"COMMAND_GROUP", "build_parser", "main"},
    # auditline-server
    "auditline.server": {
        "AuditlineServer",
        "ConfigError",
        "SERVICES",
        "ServiceRegistration",
        "Settings",
        "run",
    },
}


# The server is an application, not a library: its modules are not underscored, and
# its package re-exports from them.
_APPLICATIONS = {"auditline.server"}


def _defined_where_it_may_be(module_name: str, defined_in: str) -> bool:
    if defined_in == module_name or not defined_in.startswith("auditline."):
        return True
    if module_name in _APPLICATIONS:
        return defined_in.startswith(module_name + ".")
    # A private module of the same package (`auditline.interceptor._verify` for
    # `auditline.interceptor.integrity`).
    package = ".".join(module_name.split(".")[:2]) + "."
    return defined_in.startswith(package) and any(
        part.startswith("_") for part in defined_in.split(".")
    )


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_the_public_api_is_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == PUBLIC[module_name]
    for name in module.__all__:
        defined_in = getattr(getattr(module, name), "__module__", None) or module_name
        # From its own private modules, never from another public module.
        assert _defined_where_it_may_be(module_name, defined_in), (name, defined_in)


@pytest.mark.parametrize(
    "module_name",
    sorted(
        m for m in PUBLIC if (importlib.import_module(m).__file__ or "").endswith("__init__.py")
    ),
)
def test_a_public_package_shows_nothing_it_does_not_list(module_name: str) -> None:
    module = importlib.import_module(module_name)
    shown = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, type(importlib))
    }
    assert shown - set(module.__all__) == set()
