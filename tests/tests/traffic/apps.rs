//! Real clients and servers of today's protocols for the traffic tests: a gRPC greeter
//! (Debian's python3-grpcio with a generic handler and raw bytes, so no generated code), a
//! WebSocket echo (python3-websockets), and its clients.

/// Debian's Python, which has python3-grpcio and python3-websockets (a developer's `python3`
/// may be another one).
pub const PYTHON: &str = "/usr/bin/python3";

/// `helloworld.Greeter/SayHello` as a `.proto` file, for `--proto-path`.
pub const GREETER_PROTO: &str = r#"syntax = "proto3";
package helloworld;
service Greeter {
  rpc SayHello (HelloRequest) returns (HelloReply);
}
message HelloRequest {
  string name = 1;
}
message HelloReply {
  string message = 1;
}
"#;

/// The greeter: `argv[1]` address:port. `SayHello{name}` answers `{message: "hello NAME"}`;
/// the name `nobody` gets NOT_FOUND with a message.
pub const GRPC_SERVER: &str = r#"
import grpc, sys
from concurrent import futures
def field1(b):
    # HelloRequest{name = 1}: tag 0x0a, one-byte length (the test's names are short)
    return b[2:2 + b[1]].decode() if len(b) > 2 and b[0] == 0x0a else ''
def say_hello(req, ctx):
    name = field1(req)
    if name == 'nobody':
        ctx.abort(grpc.StatusCode.NOT_FOUND, 'no such user: nobody')
    msg = ('hello ' + name).encode()
    return b'\x0a' + bytes([len(msg)]) + msg
handler = grpc.method_handlers_generic_handler('helloworld.Greeter', {
    'SayHello': grpc.unary_unary_rpc_method_handler(say_hello),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(sys.argv[1])
server.start()
server.wait_for_termination()
"#;

/// One client run: `argv[1]` target; calls SayHello("world") with an authorization header,
/// then SayHello("nobody"); prints the reply bytes' text and the second call's status.
pub const GRPC_CLIENT: &str = r#"
import grpc, sys, time
with grpc.insecure_channel(sys.argv[1]) as ch:
    call = ch.unary_unary('/helloworld.Greeter/SayHello')
    name = b'world'
    reply = call(b'\x0a' + bytes([len(name)]) + name, timeout=10,
                 metadata=[('authorization', 'Bearer grpc-secret-0123456789')])
    print(reply[2:].decode())
    try:
        call(b'\x0a\x06nobody', timeout=10)
        print('no error')
    except grpc.RpcError as e:
        print(e.code().name)
    # Channels live on in real programs; a process that exits within milliseconds of its call
    # may be gone before the daemon looks for the socket's owner.
    time.sleep(0.5)
"#;

/// A WebSocket echo server on `argv[1]` port (127.0.0.1).
pub const WS_SERVER: &str = r#"
import asyncio, sys, websockets
async def echo(ws, path):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, '127.0.0.1', int(sys.argv[1]), compression=None):
        await asyncio.Future()
asyncio.run(main())
"#;

/// A WebSocket client: `argv[1]` URI. Sends a text and a binary message, reads both echoes,
/// closes with 1000 "bye"; prints the text echo.
pub const WS_CLIENT: &str = r#"
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1], compression=None) as ws:
        await ws.send('hello over websocket')
        print(await ws.recv())
        await ws.send(b'\x00\x01\x02\x03')
        await ws.recv()
        await ws.close(code=1000, reason='bye')
asyncio.run(main())
"#;
