"""Adding the audit interceptor to another gRPC service: a greeter, sync flavour.

Run it: `python examples/greeter.py`. It serves `greeter.Greeter/SayHello` on a
free port, calls it once, and prints the audit event the call produced.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from google.protobuf import json_format, wrappers_pb2

from auditline.interceptor import AuditInterceptor, MemorySink


def say_hello(
    request: wrappers_pb2.StringValue, context: grpc.ServicerContext
) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=f"Hello, {request.value}!")


def main() -> None:
    sink = MemorySink()
    audit = AuditInterceptor(sink)  # the only line the greeter needs, and the next one
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
        print(say(wrappers_pb2.StringValue(value="auditor")).value)

    (event,) = sink.wait_for(1)
    print(json_format.MessageToJson(event, indent=None, always_print_fields_with_no_presence=True))
    server.stop(grace=1).wait()
    audit.close()


if __name__ == "__main__":
    main()
