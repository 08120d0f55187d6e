"""Raw protobuf for the grpcio test clients: no generated stubs, no protobuf package."""


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def read_varint(buf, i):
    """The varint at buf[i:], and the index after it."""
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def parse(buf):
    """Top-level protobuf fields as a list of (number, value) pairs (bytes or int)."""
    i, out = 0, []
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(buf, i)
            out.append((num, v))
        elif wire == 2:
            ln, i = read_varint(buf, i)
            out.append((num, buf[i : i + ln]))
            i += ln
        else:
            raise ValueError("unexpected wire type %d" % wire)
    return out
