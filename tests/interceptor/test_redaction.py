"""Redaction driven by field options: every mode, every place a secret can hide."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from auditline_testing.v1 import echo_pb2
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
)
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from auditline.audit.v1 import event_pb2, options_pb2
from auditline.interceptor import MASK, AuditInterceptor, MemorySink, hmac_value
from auditline.interceptor._record import CallRecord
from auditline.interceptor._redact import Redactor
from tests.interceptor.records import audit_core, echo_record

KEY = b"property-key-of-16+"
Credentials = echo_pb2.Credentials
Request = echo_pb2.EchoRequest


def test_every_mode_in_every_position() -> None:
    attachment = any_pb2.Any()
    attachment.Pack(Credentials(user="in-any", password="any-pw", api_key="any-key"))
    request = Request(
        text="plain",
        credentials=Credentials(
            user="u", password="pw", api_key="key", pin=b"1234", secret_number=99
        ),
        more=[Credentials(user="m1", password="pw1"), Credentials(user="m2", api_key="k2")],
        by_name={"x": Credentials(user="mx", password="pwx")},
        secret_choice=Credentials(user="c", password="pwc"),
        attachment=attachment,
        tokens=["t1", "t2"],
        labels={"env": "prod"},
        secret_labels={"db": "hunter2"},
        kind=echo_pb2.KIND_LARGE,
        blob=b"\x00\x01",
        ratio=float("inf"),
    )
    request.extra.update({"free": "form", "n": 1})
    request.secret_struct.update({"password": "struct-secret"})
    before = copy.deepcopy(request)

    out = Redactor(KEY).to_dict(request)

    assert request == before  # the live message is never changed
    assert out == {
        "text": "plain",
        "credentials": {
            "user": "u",
            "api_key": hmac_value(KEY, "key"),
            "pin": MASK,
            "secret_number": MASK,
        },
        "more": [{"user": "m1"}, {"user": "m2", "api_key": hmac_value(KEY, "k2")}],
        "by_name": {"x": {"user": "mx"}},
        "secret_choice": {"user": "c"},
        "attachment": {
            "@type": "type.googleapis.com/auditline_testing.v1.Credentials",
            "user": "in-any",
            "api_key": hmac_value(KEY, "any-key"),
        },
        "extra": {"free": "form", "n": 1.0},
        "tokens": [hmac_value(KEY, "t1"), hmac_value(KEY, "t2")],
        "labels": {"env": "prod"},
        "ratio": "Infinity",
        "blob": "AAE=",
        "kind": "KIND_LARGE",
        "secret_struct": MASK,
        "secret_labels": {"db": hmac_value(KEY, "hunter2")},
    }


def test_any_of_an_unknown_type_is_dropped_not_logged() -> None:
    unknown = any_pb2.Any(type_url="type.googleapis.com/nobody.Knows", value=b"\x0a\x03abc")
    request = Request(text="t", attachment=unknown)
    assert Redactor(KEY).to_dict(request) == {"text": "t"}


def test_an_any_that_cannot_be_read_is_dropped_alone() -> None:
    """An Any of an Any of an unknown type, and an Any whose bytes are not its type:
    left out, and the rest of the body kept. (The first gave a value JSON cannot hold,
    which crashed the audit worker on every resend until it was given up; the second
    cost the call both its bodies.)"""
    unknown = any_pb2.Any(type_url="type.googleapis.com/nobody.Knows", value=b"\x0a\x03abc")
    nested = any_pb2.Any()
    nested.Pack(unknown)
    broken = any_pb2.Any(type_url=nested.type_url, value=b"\xff\xff\xff")
    assert Redactor(KEY).to_dict(unknown) == {}  # itself the message: nothing of it
    for attachment in (nested, broken):
        document = Redactor(KEY).to_dict(Request(text="t", attachment=attachment))
        assert document == {"text": "t"}
        record = echo_record(Request(text="t", attachment=attachment), echo_pb2.EchoResponse())
        built = audit_core(MemorySink(), hmac_key=KEY)._delivery.documents(record)[-1]
        assert built.document["Request"]["RequestParams"] == {"text": "t"}


def test_a_group_is_walked_and_redacted_as_a_message() -> None:
    """proto2 groups (and editions' DELIMITED fields) are messages on the wire: their
    fields are redacted too (they went into the document unwalked, secrets and all)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="redaction_test/group.proto", package="redaction_test", syntax="proto2"
    )
    outer = file.message_type.add(name="Login")
    group = outer.nested_type.add(name="Form")
    password = group.field.add(name="password", number=2, type=9, label=1)
    password.options.debug_redact = True
    group.field.add(name="user", number=3, type=9, label=1)
    outer.field.add(
        name="form",
        number=1,
        type=FieldDescriptor.TYPE_GROUP,
        label=1,
        type_name=".redaction_test.Login.Form",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    login: Any = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("redaction_test.Login")
    )()
    login.form.password = "group-secret"
    login.form.user = "u"
    assert Redactor(None).to_dict(login) == {"form": {"user": "u"}}


def test_hmac_without_a_key_masks() -> None:
    out = Redactor(None).to_dict(Request(tokens=["t1"]))
    assert out == {"tokens": [MASK]}


@pytest.mark.parametrize("key", [b"", b"short"])
def test_a_key_too_short_to_hide_short_values_is_refused(key: bytes) -> None:
    """An empty key (an unset environment variable read as b"") let the HMAC of a PIN
    be found by trying them all (found by a review helper)."""
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AuditInterceptor(MemorySink(), hmac_key=key)


def test_hmac_helper_lets_operators_search_for_a_known_value() -> None:
    value = hmac_value(b"k", "needle")
    assert value.startswith("hmac-sha256:")
    assert value == hmac_value(b"k", b"needle")
    assert value != hmac_value(b"other", "needle")
    assert len(value) == len("hmac-sha256:") + 64


# --- properties over generated messages ------------------------------------

SECRET = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=20).map(
    lambda s: f"S3CR3T{s}"
)
PLAIN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz -", max_size=20)

credentials = st.builds(
    Credentials,
    user=PLAIN,
    password=SECRET,
    api_key=SECRET,
    pin=SECRET.map(str.encode),
    secret_number=st.integers(min_value=10**12, max_value=2**62),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[Request, list[Any]]:
    secrets: list[Any] = []

    def creds() -> Credentials:
        c = draw(credentials)
        secrets.extend([c.password, c.api_key, c.pin, c.secret_number])
        return c

    request = Request(
        text=draw(PLAIN),
        action=draw(PLAIN),
        count=draw(st.integers(0, 2**31 - 1)),
        ratio=draw(st.floats(allow_nan=False, allow_infinity=False, width=32)),
        blob=draw(st.binary(max_size=10)),
        kind=draw(st.sampled_from(list(echo_pb2.Kind.values()))),
        labels=draw(st.dictionaries(PLAIN, PLAIN, max_size=3)),
    )
    if draw(st.booleans()):
        request.credentials.CopyFrom(creds())
    for _ in range(draw(st.integers(0, 3))):
        request.more.append(creds())
    for key in draw(st.lists(PLAIN, max_size=2, unique=True)):
        request.by_name[key].CopyFrom(creds())
    if draw(st.booleans()):
        request.secret_choice.CopyFrom(creds())
    else:
        request.plain = draw(PLAIN)
    if draw(st.booleans()):
        request.attachment.Pack(creds())
    tokens = draw(st.lists(SECRET, max_size=3))
    request.tokens.extend(tokens)
    secrets.extend(tokens)
    secret_labels = draw(st.dictionaries(PLAIN, SECRET, max_size=2))
    request.secret_labels.update(secret_labels)
    secrets.extend(secret_labels.values())
    struct_secret = draw(SECRET)
    request.secret_struct.update({"k": struct_secret})
    secrets.append(struct_secret)
    return request, secrets


def _record_for(request: Request) -> CallRecord:
    response = echo_pb2.EchoResponse(text=request.text, session_token="tok", index=3)
    return echo_record(request, response)


def _event_for(request: Request, hmac_key: bytes | None) -> event_pb2.ApiEvent:
    """The event the interceptor's core builds for a unary call carrying `request`."""
    return audit_core(MemorySink(), hmac_key=hmac_key).build_event(_record_for(request))


def _strip_redacted(request: Request) -> dict[str, Any]:
    """What must survive: the request with every redacted field cleared."""
    clean = copy.deepcopy(request)
    # Touching an unset sub-message would set it (and switch a oneof): only the set ones.
    singles = [getattr(clean, n) for n in ("credentials", "secret_choice") if clean.HasField(n)]
    for creds in [*singles, *clean.more, *clean.by_name.values()]:
        for name in ("password", "api_key", "pin", "secret_number"):
            creds.ClearField(name)
    for name in ("tokens", "secret_labels", "secret_struct"):
        clean.ClearField(name)  # type: ignore[arg-type]
    if clean.HasField("attachment"):
        inner = Credentials()
        clean.attachment.Unpack(inner)
        inner.ClearField("password")
        inner.ClearField("api_key")
        inner.ClearField("pin")
        inner.ClearField("secret_number")
        clean.attachment.Pack(inner)
    return json_format.MessageToDict(clean, preserving_proto_field_name=True)


def _without_redacted_keys(value: Any) -> Any:
    """The recorded params with the keys of redacted fields removed (mask/HMAC keep keys)."""
    redacted = {
        "password",
        "api_key",
        "pin",
        "secret_number",
        "tokens",
        "secret_labels",
        "secret_struct",
    }
    if isinstance(value, dict):
        return {k: _without_redacted_keys(v) for k, v in value.items() if k not in redacted}
    if isinstance(value, list):
        return [_without_redacted_keys(v) for v in value]
    return value


def _normalise(value: Any) -> Any:
    """Struct holds numbers as doubles and protobuf's JSON writes 64-bit ints as text."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _map_key_named_like_a_field() -> tuple[Request, list[Any]]:
    # Found by CI: a user's map key "tokens" is data, not the redacted field `tokens`.
    request = Request(labels={"tokens": ""})
    request.secret_struct.update({"k": "S3CR3T222222222222"})
    return request, ["S3CR3T222222222222"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from([KEY, None]))
@example(_map_key_named_like_a_field(), KEY)
def test_no_redacted_value_survives_and_everything_else_round_trips(
    generated: tuple[Request, list[Any]], hmac_key: bytes | None
) -> None:
    request, secrets = generated
    event = _event_for(request, hmac_key)
    text = json_format.MessageToJson(event)
    wire = event.SerializeToString()
    for secret in secrets:
        shown = secret.decode() if isinstance(secret, bytes) else str(secret)
        assert shown not in text
        assert shown.encode() not in wire
    recorded = json_format.MessageToDict(event.request.request_params)
    # Both sides lose the redacted keys: a map key may be named like a field ("tokens").
    expected = _without_redacted_keys(_strip_redacted(request))
    assert _normalise(_without_redacted_keys(recorded)) == _normalise(expected)


def test_struct_values_round_trip_exactly() -> None:
    request = Request()
    request.extra.update({"a": [1, "two", {"three": None}], "b": True})
    out = Redactor(KEY).to_dict(request)
    assert out["extra"] == json_format.MessageToDict(request.extra)
    assert isinstance(request.extra, struct_pb2.Struct)


@given(st.binary(max_size=100), st.text(max_size=50) | st.binary(max_size=50) | st.integers())
def test_the_fast_hmac_is_rfc_2104_hmac_sha256(key: bytes, value: Any) -> None:
    import hmac as std_hmac

    from auditline.interceptor._redact import _Hmac

    raw = value if isinstance(value, bytes) else str(value).encode()
    expected = "hmac-sha256:" + std_hmac.new(key, raw, "sha256").hexdigest()
    assert _Hmac(key)(value) == expected == hmac_value(key, value)


@given(
    st.integers(min_value=-62135596800, max_value=253402300799),
    st.integers(min_value=0, max_value=999_999_999),
)
def test_timestamps_are_written_as_protobuf_writes_them(seconds: int, nanos: int) -> None:
    from google.protobuf import timestamp_pb2

    from auditline.interceptor._redact import timestamp_text

    expected = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos).ToJsonString()
    assert timestamp_text(seconds, nanos) == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from([KEY, None]))
def test_the_document_is_the_json_mapping_of_the_event(
    generated: tuple[Request, list[Any]], hmac_key: bytes | None
) -> None:
    """The one form the builder makes (built without protobuf) is exactly the JSON mapping
    of the `ApiEvent` it parses into: nothing lost, added or spelled otherwise."""
    from auditline.interceptor._builder import event_of
    from auditline.interceptor._formats import apievent_dict

    request, _ = generated
    core = audit_core(MemorySink(), hmac_key=hmac_key)
    document = core.build_document(_record_for(request))
    assert apievent_dict(event_of(document)) == document


def test_an_extension_is_written_under_its_own_name() -> None:
    # Its index counts among its scope's fields, not the message's: read as the
    # message's own field of that index, it came out under another field's name (and
    # with that field's redaction).
    from google.protobuf import descriptor_pb2

    from auditline.audit.v1 import options_pb2

    options = descriptor_pb2.FieldOptions(deprecated=True)
    options.Extensions[options_pb2.redact] = options_pb2.REDACTION_MODE_MASK
    out = Redactor().to_dict(options)
    assert out == {
        "deprecated": True,
        "[auditline.audit.v1.redact]": "REDACTION_MODE_MASK",
    }


def test_an_unmarked_field_named_like_a_secret_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    """An embedder's proto without auditline's options recorded its passwords and
    tokens in clear (found by a review helper): such fields are masked and named in
    the log; an explicit UNSPECIFIED mode keeps one; cursors are kept."""
    file = descriptor_pb2.FileDescriptorProto(
        name="embedder/login.proto", package="embedder", syntax="proto3"
    )
    login = file.message_type.add(name="Login")
    for number, name in enumerate(
        ["user", "password", "session_token", "next_page_token", "api_key", "kept_secret"], 1
    ):
        field = login.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
        if name == "kept_secret":
            field.options.Extensions[options_pb2.redact] = options_pb2.REDACTION_MODE_UNSPECIFIED
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("embedder.Login"))
    values = {
        "user": "ann",
        "password": "hunter2",
        "session_token": "tok",
        "next_page_token": "cursor",
        "api_key": "k",
        "kept_secret": "shown",
    }
    out = Redactor(None, pool=pool).to_dict(cls(**values))
    assert out == values | {"password": MASK, "session_token": MASK, "api_key": MASK}
    assert "embedder.Login.password looks secret" in caplog.text


def test_an_extension_named_like_a_secret_is_masked_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Extensions were planned again at every call, and the warning with them."""
    field_type = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="embedder/ext.proto", package="embedder", syntax="proto2"
    )
    request = file.message_type.add(name="Req")
    request.field.add(
        name="user", number=1, type=field_type.TYPE_STRING, label=field_type.LABEL_OPTIONAL
    )
    request.extension_range.add(start=100, end=200)
    file.extension.add(
        name="auth_token",
        number=100,
        type=field_type.TYPE_STRING,
        label=field_type.LABEL_OPTIONAL,
        extendee=".embedder.Req",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("embedder.Req"))
    message = cls(user="ann")
    message.Extensions[pool.FindExtensionByName("embedder.auth_token")] = "s3cr3t"  # type: ignore[index]
    redactor = Redactor(None, pool=pool)
    for _ in range(3):
        assert redactor.to_dict(message) == {"user": "ann", "[embedder.auth_token]": MASK}
    assert caplog.text.count("embedder.auth_token looks secret") == 1
