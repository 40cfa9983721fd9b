"""Adding the audit interceptor to another gRPC service: a greeter, asyncio flavour.

Run it: `python examples/greeter_async.py`. Same as greeter.py on `grpc.aio`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import json_format, wrappers_pb2

from auditline.interceptor import AsyncAuditInterceptor, MemorySink


async def say_hello(
    request: wrappers_pb2.StringValue, context: grpc.aio.ServicerContext[Any, Any]
) -> wrappers_pb2.StringValue:
    return wrappers_pb2.StringValue(value=f"Hello, {request.value}!")


async def main() -> None:
    sink = MemorySink()
    audit = AsyncAuditInterceptor(sink)
    server = grpc.aio.server(interceptors=[audit])
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
    await server.start()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        say = channel.unary_unary(
            "/greeter.Greeter/SayHello",
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.StringValue.FromString,
        )
        print((await say(wrappers_pb2.StringValue(value="auditor"))).value)

    await server.stop(grace=1)
    audit.close()  # flushes: every finished call has reached the sink
    (event,) = sink.events
    print(json_format.MessageToJson(event, indent=None, always_print_fields_with_no_presence=True))


if __name__ == "__main__":
    asyncio.run(main())
