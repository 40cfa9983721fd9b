"""The contract in proto/: services, secrets, options and the ApiEvent JSON shape."""

from __future__ import annotations

from google.protobuf import descriptor, json_format

from auditline.audit.v1 import (
    event_pb2,
    options_pb2,
)
from auditline.contract import EXPORT_COMPRESSIONS, EXPORT_FORMATS, FILES
from tests.support.paths import REPOSITORY

EXPECTED_METHODS = {
    "auditline.account.v1.AuthService": {"Authenticate", "ValidateToken", "Logout"},
    "auditline.account.v1.UsageService": {"GetHistoricalUsage", "GetCurrentUsage"},
    "auditline.account.v1.PermissionService": {
        "ListPermissions",
        "CreatePermission",
        "GetPermission",
        "UpdatePermission",
        "DeletePermission",
        "BatchCreatePermissions",
    },
    "auditline.account.v1.ServiceAccountService": {
        "ListServiceAccounts",
        "CreateServiceAccount",
        "GetServiceAccount",
        "UpdateServiceAccount",
        "DeleteServiceAccount",
        "EnableServiceAccount",
        "DisableServiceAccount",
    },
    "auditline.account.v1.BucketService": {
        "CreateBucket",
        "GetBucket",
        "ListBuckets",
        "DeleteBucket",
        "SetObjectImmutability",
    },
    "auditline.audit.v1.AuditSettingsService": {
        "GetAuditSettings",
        "EnableAccountAuditLogs",
        "DisableAccountAuditLogs",
        "SetAuditTargetBucket",
        "EnableBucketAuditLogging",
        "DisableBucketAuditLogging",
    },
    "auditline.audit.v1.ExporterService": {
        "CreateExporter",
        "GetExporter",
        "ListExporters",
        "UpdateExporter",
        "DeleteExporter",
    },
    "auditline.audit.v1.AuditLogService": {
        "ListEvents",
        "TailEvents",
        "GetEventCatalog",
        "GetVerifierKeys",
        "QueryEvents",
    },
}

# Every field that holds a credential, by full name. A new secret field must be
# added here *and* marked in the proto; the test fails on either omission.
SECRET_FIELDS = {
    # A secret key given here by mistake (the two swapped) must not reach the log.
    "auditline.account.v1.AuthenticateRequest.access_key",
    "auditline.account.v1.AuthenticateRequest.secret_key",
    "auditline.account.v1.AuthenticateResponse.token",
    "auditline.account.v1.ValidateTokenRequest.token",
    "auditline.account.v1.CreateServiceAccountResponse.secret_key",
    "auditline.audit.v1.ExternalS3Target.secret_access_key",
}
SECRET_WORDS = ("secret", "token", "password", "credential")
NOT_SECRET = {"page_token", "next_page_token"}  # opaque cursors, not credentials


def _all_services() -> dict[str, descriptor.ServiceDescriptor]:
    return {s.full_name: s for f in FILES for s in f.DESCRIPTOR.services_by_name.values()}


def _all_messages() -> list[descriptor.Descriptor]:
    found: list[descriptor.Descriptor] = []

    def walk(message: descriptor.Descriptor) -> None:
        found.append(message)
        for nested in message.nested_types:
            walk(nested)

    for f in FILES:
        for message in f.DESCRIPTOR.message_types_by_name.values():
            walk(message)
    return found


def test_every_service_and_method_of_the_product_is_in_the_contract() -> None:
    services = _all_services()
    assert {name: set(s.methods_by_name) for name, s in services.items()} == EXPECTED_METHODS


def test_every_method_names_its_activity() -> None:
    for service in _all_services().values():
        for method in service.methods:
            options = method.GetOptions().Extensions[options_pb2.event]
            assert options.activity != options_pb2.ACTIVITY_UNSPECIFIED, method.full_name


def test_every_secret_field_is_marked_for_redaction() -> None:
    marked = set()
    for message in _all_messages():
        for field in message.fields:
            opts = field.GetOptions()
            mode = opts.Extensions[options_pb2.redact]
            if opts.debug_redact or mode:
                # Both markers together: protobuf's standard one and auditline's mode.
                assert opts.debug_redact, field.full_name
                assert mode != options_pb2.REDACTION_MODE_UNSPECIFIED, field.full_name
                marked.add(field.full_name)
            elif field.name not in NOT_SECRET and any(w in field.name for w in SECRET_WORDS):
                raise AssertionError(f"{field.full_name} looks secret but is not marked")
    assert marked == SECRET_FIELDS


def test_api_event_json_has_the_account_audit_log_shape() -> None:
    event = event_pb2.ApiEvent(event_name="CreateBucket", version="2")
    event.request.request_params.update({"bucket_id": "logs"})
    event.request.request_time.FromSeconds(1_800_000_000)
    event.response.response_time.FromSeconds(1_800_000_001)
    event.response.response_body.SetInParent()
    as_json = json_format.MessageToDict(event, always_print_fields_with_no_presence=True)
    seed_top = {"EventName", "Version", "Request", "Response"}
    seed_request = {"AccountName", "AccessKey", "RequestTime", "RequestParams", "SourceIP"}
    seed_response = {"ResponseTime", "ResponseCode", "ResponseError", "ResponseBody"}
    assert seed_top <= as_json.keys()
    assert seed_request <= as_json["Request"].keys()
    assert seed_response <= as_json["Response"].keys()
    assert as_json["Version"] == "2"
    assert as_json["Request"]["RequestParams"] == {"bucket_id": "logs"}
    assert as_json["Response"]["ResponseCode"] == 0
    assert as_json["Request"]["RequestTime"] == "2027-01-15T08:00:00Z"
    # The fields every serious audit log has, beyond the seed's shape.
    assert {
        "EventId",
        "Sequence",
        "NodeId",
        "Service",
        "Method",
        "Activity",
        "TraceId",
        "LogType",
    } <= as_json.keys()
    assert "UserAgent" in as_json["Request"]
    # And it parses back.
    assert json_format.ParseDict(as_json, event_pb2.ApiEvent()) == event


def test_activity_numbers_are_ocsf_activity_ids() -> None:
    assert options_pb2.ACTIVITY_CREATE == 1
    assert options_pb2.ACTIVITY_READ == 2
    assert options_pb2.ACTIVITY_UPDATE == 3
    assert options_pb2.ACTIVITY_DELETE == 4
    assert options_pb2.ACTIVITY_OTHER == 99


def test_the_contract_lists_every_file_of_proto() -> None:
    proto = REPOSITORY / "proto"
    assert {f.DESCRIPTOR.name for f in FILES} == {
        p.relative_to(proto).as_posix() for p in proto.rglob("*.proto")
    }


def test_the_exporter_names_of_the_contract_are_the_interceptors() -> None:
    """Every format and compression the API can name, the exporter implements."""
    from auditline.interceptor._compression import COMPRESSIONS
    from auditline.interceptor._formats import FORMATS

    assert set(EXPORT_FORMATS.values()) == set(FORMATS)
    assert set(EXPORT_COMPRESSIONS.values()) == set(COMPRESSIONS)
