"""Pulls an image through berthd's Transfer service with PyPI's grpcio, as a Python tool using
containerd's Transfer API would: a progress stream opened on the Streaming service (StreamInit,
then the server's acknowledgement), Transfer called with OCIRegistry -> ImageStore naming that
stream, progress read until the server closes the stream. Raw protobuf, no generated stubs.

Usage: transfer_pull.py SOCKET REFERENCE ARCH MISSING_REFERENCE
Prints one JSON object: the progress events, and what a pull of MISSING_REFERENCE answered.
"""
import json
import queue
import sys
import threading

import grpc

from protowire import field_bytes, parse

STREAM = "/containerd.services.streaming.v1.Streaming/Stream"
TRANSFER = "/containerd.services.transfer.v1.Transfer/Transfer"
METADATA = (("containerd-namespace", "default"),)


def any_of(type_name, value):
    # containerd's Go clients send bare type names; grpcio users often do the same.
    return field_bytes(1, type_name.encode()) + field_bytes(2, value)


def fields(buf):
    out = {}
    for num, value in parse(buf):
        out.setdefault(num, []).append(value)
    return out


def text(fs, num):
    return fs.get(num, [b""])[0].decode()


def open_progress(channel, stream_id):
    """Opens a stream on the Streaming service; returns (events list, reader thread, closer)."""
    done = queue.Queue()

    def requests():
        yield any_of("containerd.services.streaming.v1.StreamInit", field_bytes(1, stream_id))
        # Keep our half open until the transfer is over.
        done.get()

    call = channel.stream_stream(STREAM, request_serializer=None, response_deserializer=None)
    responses = call(requests(), metadata=METADATA, timeout=180)
    # The server acknowledges the stream before anything else.
    next(responses)
    events = []

    def read():
        try:
            for message in responses:
                a = fields(message)
                type_url = text(a, 1)
                if type_url.rsplit("/", 1)[-1] != "containerd.types.transfer.Progress":
                    events.append({"unexpected": type_url})
                    continue
                p = fields(a.get(2, [b""])[0])
                events.append({"event": text(p, 1), "name": text(p, 2)})
        except grpc.RpcError as e:
            events.append({"stream_error": e.code().name})

    reader = threading.Thread(target=read)
    reader.start()
    return events, reader, lambda: done.put(None)


def pull(channel, reference, arch, stream_id):
    registry = field_bytes(1, reference.encode())
    platform = field_bytes(1, b"linux") + field_bytes(2, arch.encode())
    unpack = field_bytes(1, platform) + field_bytes(2, b"overlayfs")
    store = field_bytes(1, reference.encode()) + field_bytes(10, unpack)
    request = (
        field_bytes(1, any_of("containerd.types.transfer.OCIRegistry", registry))
        + field_bytes(2, any_of("containerd.types.transfer.ImageStore", store))
        + field_bytes(3, field_bytes(1, stream_id))
    )
    call = channel.unary_unary(TRANSFER, request_serializer=None, response_deserializer=None)
    return call(request, metadata=METADATA, timeout=180)


def main():
    sock, reference, arch, missing = sys.argv[1:5]
    result = {"grpcio": grpc.__version__}
    with grpc.insecure_channel("unix:" + sock) as channel:
        events, reader, close = open_progress(channel, b"py-progress")
        try:
            pull(channel, reference, arch, b"py-progress")
            result["pull"] = "OK"
        except grpc.RpcError as e:
            result["pull"] = "%s: %s" % (e.code().name, e.details())
        # The server closes the progress stream once the transfer is over.
        reader.join(timeout=30)
        close()
        result["progress_stream_ended"] = not reader.is_alive()
        result["events"] = events
        try:
            pull(channel, missing, arch, b"")
            result["missing"] = {"code": "OK"}
        except grpc.RpcError as e:
            result["missing"] = {"code": e.code().name, "details": e.details()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
