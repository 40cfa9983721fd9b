"""A greeter whose every call is kept and provable: the whole audit pipeline.

Run it: `python examples/greeter_durable.py DIRECTORY`. The greeter runs fail-closed
(a call is answered only once its event is on disk), spools its events to
DIRECTORY/spool.db, exports them as signed, compressed files under DIRECTORY/log,
and then checks that exported log the way an auditor would: complete, in order, and
unaltered. For an object-locked S3 bucket instead of a directory, install
`auditline-interceptor[s3]` and pass `s3://BUCKET?endpoint=URL` to `open_writer` and
`open_location`.
"""

from __future__ import annotations

import sys
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import wrappers_pb2

from auditline.interceptor import (
    AuditInterceptor,
    ExporterConfig,
    Pipeline,
    Spool,
    open_writer,
)
from auditline.interceptor.integrity import Notary, SigningKey, Verifier, open_location

NODE = "greeter-1"
ORIGIN = f"example/{NODE}"  # names the log in its signed checkpoints


def say_hello(
    request: wrappers_pb2.StringValue, context: grpc.ServicerContext
) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=f"Hello, {request.value}!")


def main(directory: Path) -> None:
    # Keep the signing key secret and publish `key.verifier` to the auditors; here
    # one is made for the run.
    key = SigningKey.generate(ORIGIN)
    spool = Spool(directory / "spool.db", node_id=NODE, durability="sync")
    audit = AuditInterceptor(spool, node_id=NODE, fail_closed=True)
    pipeline = Pipeline(
        spool, interceptors=[audit], notary=Notary(key=key, origin=ORIGIN, node_id=NODE)
    )
    pipeline.add_exporter(ExporterConfig(name="files"), open_writer(str(directory / "log")))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[audit])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "greeter.Greeter",
                {
                    "SayHello": grpc.unary_unary_rpc_method_handler(
                        say_hello,
                        request_deserializer=wrappers_pb2.StringValue.FromString,
                        response_serializer=wrappers_pb2.StringValue.SerializeToString,
                    ),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        say = channel.unary_unary(
            "/greeter.Greeter/SayHello",
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        for name in ("auditor", "operator", "engineer"):
            print(say(wrappers_pb2.StringValue(value=name)).value)

    server.stop(grace=1).wait()
    # In this order: the interceptor's last events into the spool, the spool's last
    # commits, every exporter's last file and checkpoint.
    pipeline.close()

    report = Verifier(open_location(str(directory / "log")), [key.verifier]).run()
    (node,) = report.nodes
    print(
        f"verified {node.events} events in {node.files} files, "
        f"{len(report.findings)} findings ({'ok' if report.ok else 'NOT OK'})"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/greeter_durable.py DIRECTORY")
    main(Path(sys.argv[1]))
