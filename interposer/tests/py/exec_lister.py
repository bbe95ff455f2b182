# Run without the library: counts the carriers and segment memfds of
# libshmnet among this process's fds.
import os
names = {}
for line in open("/proc/net/unix").read().splitlines()[1:]:
    f = line.split()
    if len(f) >= 8:
        names[f[6]] = f[7]
carriers = memfds = 0
for fd in os.listdir("/proc/self/fd"):
    try:
        t = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        continue
    if "shmnet-conn" in t:
        memfds += 1
    if t.startswith("socket:[") and names.get(t[8:-1], "").startswith("@shmnet.4/exec/"):
        carriers += 1
print("carriers", carriers, "memfds", memfds)
