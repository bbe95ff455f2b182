# One connection written from two threads at once. argv: HOST PORT ROLE.
#
# ROLE send: two threads (tags 0 and 1) start together and each send FRAMES
# frames on the same blocking socket, each frame (<= 4 KiB) with one send()
# loop (sendall semantics; a short send is counted: on a blocking socket
# the kernel returns it only on a signal or a dead peer). A frame: payload
# length (4 bytes), tag (1), sequence number (4), blake2b-8 of
# tag+seq+payload (8), payload. Prints `sent TAG FRAMES BYTES SHORT_SENDS`
# per thread.
#
# ROLE recv: accepts one connection and reads it to EOF with varying recv()
# sizes, then checks every frame: known tag, sequence numbers 0, 1, 2... per
# tag, digest. Prints `frames TAG COUNT` per tag; or, on the first bad frame,
# `broken OFFSET WHAT | DIAGNOSIS` and exits 1. The diagnosis regenerates
# both threads' byte streams and tells whether the connection carried an
# exact interleaving of them (no byte lost or damaged, but frames split by
# the other thread's bytes) or damaged bytes (and where).
import hashlib, random, signal, socket, struct, sys, threading, time

signal.alarm(100)
HOST, PORT, ROLE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
FRAMES, HEAD, MAXPAY = 2000, 17, 4096 - 17


def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def digest(tag, seq, payload):
    return hashlib.blake2b(struct.pack("!BI", tag, seq) + payload, digest_size=8).digest()


def frames(tag):
    rng = random.Random(tag)
    for seq in range(FRAMES):
        payload = rng.randbytes(rng.randint(1, MAXPAY))
        yield struct.pack("!IBI", len(payload), tag, seq) + digest(tag, seq, payload) + payload


def sender():
    s = socket.create_connection((HOST, PORT))
    start = threading.Barrier(2)

    def run(tag):
        total = short = seq = 0
        start.wait()
        try:
            for seq, frame in enumerate(frames(tag)):
                frame, off = memoryview(frame), 0
                while off < len(frame):
                    k = s.send(frame[off:])
                    if off + k < len(frame):
                        short += 1
                    off += k
                total += len(frame)
            say("sent", tag, FRAMES, total, short)
        except OSError as e:
            say("send-error", tag, f"seq={seq}", f"short_sends={short}", repr(e))

    threads = [threading.Thread(target=run, args=(tag,)) for tag in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.shutdown(socket.SHUT_WR)
    assert s.recv(1) == b"", "the receiver closes without writing"
    s.close()


def common_prefix(a, i, b, j):
    """Length of the common prefix of a[i:] and b[j:]."""
    lo, hi = 0, min(len(a) - i, len(b) - j)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[i:i + mid] == b[j:j + mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def diagnose(got):
    """Is `got` the two threads' streams interleaved, byte-exact? Tracks the
    set of possible positions in thread 0's stream (thread 1's follows) byte
    by byte, jumping over long unambiguous runs."""
    a, b = (b"".join(frames(tag)) for tag in (0, 1))
    got = bytes(got)
    at, front, switches, last = 0, {0}, 0, None
    give_up = time.monotonic() + 20
    while at < len(got):
        if time.monotonic() > give_up:
            return (f"UNDETERMINED: the first {at} bytes are an exact interleaving of both "
                    f"threads' bytes; no time to check the rest")
        if len(front) == 1:
            (p,) = front
            r0 = common_prefix(got, at, a, p)
            r1 = common_prefix(got, at, b, at - p)
            if r0 > 64 and r1 == 0 or r1 > 64 and r0 == 0:
                t = 0 if r0 else 1
                if last is not None and t != last:
                    switches += 1
                last = t
                step = (r0 or r1) - 32
                front = {p + step} if t == 0 else {p}
                at += step
                continue
        c = got[at]
        nxt = {p + 1 for p in front if p < len(a) and a[p] == c}
        nxt |= {p for p in front if at - p < len(b) and b[at - p] == c}
        if not nxt:
            p0, p1 = min(front), at - min(front)
            return (f"DAMAGED: byte {at} belongs to neither thread's stream (thread 0 at its "
                    f"byte {p0}, thread 1 at its byte {p1})")
        front = nxt
        at += 1
    if not any(p == len(a) and at - p == len(b) for p in front):
        return (f"LOST: the stream ended before both threads' {len(a)} + {len(b)} bytes")
    return (f"INTERLEAVED: the connection carried exactly both threads' bytes, none lost or "
            f"damaged, but switching between them at least {switches} times, so frames were "
            f"split by the other thread's bytes")


def receiver():
    lst = socket.socket()
    lst.bind((HOST, PORT))
    lst.listen(4)
    say("listening", PORT)
    c, _ = lst.accept()
    say("accepted")
    rng = random.Random(99)
    got = bytearray()
    while (chunk := c.recv(rng.choice([1, 7, 100, 4096, 65536]))):
        got += chunk
    c.close()
    at, want = 0, [0, 0]

    def broken(why):
        say("broken", at, why, "|", diagnose(got))
        sys.exit(1)

    while at < len(got):
        if len(got) < at + HEAD:
            broken(f"EOF inside a frame header ({len(got) - at} bytes left)")
        n, tag, seq = struct.unpack_from("!IBI", got, at)
        if tag not in (0, 1) or not 1 <= n <= MAXPAY:
            broken(f"bad header: length {n} tag {tag} seq {seq}")
        if len(got) < at + HEAD + n:
            broken(f"EOF inside frame tag {tag} seq {seq}")
        if seq != want[tag]:
            broken(f"tag {tag}: sequence {seq}, expected {want[tag]}")
        if bytes(got[at + 9:at + HEAD]) != digest(tag, seq, bytes(got[at + HEAD:at + HEAD + n])):
            broken(f"tag {tag} seq {seq}: digest mismatch over {n} payload bytes")
        want[tag] += 1
        at += HEAD + n
    for tag in (0, 1):
        say("frames", tag, want[tag])


sender() if ROLE == "send" else receiver()
