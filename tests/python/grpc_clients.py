"""Drives berthd with PyPI's grpcio, as a Python tool would: no generated stubs, raw protobuf.

Usage: grpc_clients.py SOCKET PREFIX
Prints one JSON object per target with what each call returned; the Rust test asserts on it.
Targets cover the ways grpcio names a unix socket: `unix:PATH`, `unix://PATH`, and an explicit
`grpc.default_authority` of the raw path (the :authority that h2 refuses unless berthd fixes it).
"""
import json
import sys

import grpc

from protowire import field_bytes, parse


def call(channel, method, request, metadata=None):
    fn = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return fn(request, metadata=metadata, timeout=10)


def drive(target, options, name):
    result = {"target": target, "options": options}
    md = [("containerd-namespace", name)]
    with grpc.insecure_channel(target, options=options) as ch:
        try:
            version = parse(call(ch, "/containerd.services.version.v1.Version/Version", b""))
            result["version"] = dict(version).get(1, b"").decode()
            health = parse(
                call(ch, "/grpc.health.v1.Health/Check", field_bytes(1, b""))
            )
            result["health"] = dict(health).get(1, 0)
            ns = field_bytes(1, field_bytes(1, name.encode()))
            call(ch, "/containerd.services.namespaces.v1.Namespaces/Create", ns, md)
            listed = parse(call(ch, "/containerd.services.namespaces.v1.Namespaces/List", b""))
            result["namespaces"] = sorted(
                dict(parse(n)).get(1, b"").decode() for num, n in listed if num == 1
            )
            try:
                call(
                    ch,
                    "/containerd.services.namespaces.v1.Namespaces/Get",
                    field_bytes(1, b"no-such-namespace"),
                )
                result["missing"] = "OK"
            except grpc.RpcError as e:
                result["missing"] = e.code().name
            # A streaming call: Health.Watch sends the current status first.
            watch = ch.unary_stream(
                "/grpc.health.v1.Health/Watch",
                request_serializer=None,
                response_deserializer=None,
            )
            stream = watch(field_bytes(1, b""), timeout=10)
            result["watch"] = dict(parse(next(stream))).get(1, 0)
            stream.cancel()
        except grpc.RpcError as e:
            result["error"] = "%s: %s" % (e.code().name, e.details())
    return result


def main():
    sock, prefix = sys.argv[1], sys.argv[2]
    targets = [
        ("unix:" + sock, []),
        ("unix://" + sock, []),
        ("unix:" + sock, [("grpc.default_authority", sock)]),
    ]
    results = [drive(t, o, "%s-%d" % (prefix, i)) for i, (t, o) in enumerate(targets)]
    results_json = {"grpcio": grpc.__version__, "results": results}
    print(json.dumps(results_json))


if __name__ == "__main__":
    main()
