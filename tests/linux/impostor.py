"""A fake daemon on a control socket path, run as an unprivileged user.

Serves `config` (mirroring every frame of the ingress named on the command line, whatever
the real configuration says) and `register` (keeps the ring descriptors it is handed).
After DURATION seconds it prints one JSON line: who it ran as, what it was given, and how
many times MARKER occurs in the rings it received."""
import json
import os
import socket
import struct
import sys
import time

path, ingress, marker, duration = sys.argv[1], sys.argv[2], sys.argv[3].encode(), float(sys.argv[4])
from mirrord.protocol import decode, encode  # noqa: E402  (the interpreter's mirrord, as the suite's)

# Started as root so that the framing above could be imported (the interpreter's packages may
# lie where an unprivileged user cannot read them); from here on an unprivileged user (uid
# argv[5], e.g. nobody): it binds and listens, so SO_PEERCRED names that uid.
uid = int(sys.argv[5])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)

srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o666)  # so a forwarder without CAP_DAC_OVERRIDE can connect too
srv.listen(8)
srv.settimeout(0.2)
print("listening", flush=True)
got = []   # (path in the message, readlink of each fd, fd numbers)
conns = []
end = time.monotonic() + duration
snapshot = {"instance": "impostor", "generation": 1, "runtime_dir": "/nowhere",
            "sessions": [{"name": "evil", "id": 0x1234, "input": [ingress], "rate": 1,
                          "run_length": 0, "max_packet_length": 0}]}
while time.monotonic() < end:
    try:
        c, _ = srv.accept()
        c.settimeout(0.2)
        conns.append([c, b"", []])
    except socket.timeout:
        pass
    for st in conns:
        c = st[0]
        try:
            data, fds, _, _ = socket.recv_fds(c, 1 << 16, 4)
        except (socket.timeout, BlockingIOError):
            continue
        except OSError:
            continue
        st[1] += data
        st[2] += fds
        while len(st[1]) >= 4:
            (n,) = struct.unpack("!I", st[1][:4])
            if len(st[1]) < 4 + n:
                break
            msg = decode(st[1][4:4 + n])
            st[1] = st[1][4 + n:]
            if msg.get("op") == "config":
                c.sendall(encode({"ok": True, "config": snapshot}))
            elif msg.get("op") == "register":
                fds, st[2] = st[2], []
                got.append((msg.get("path"), [os.readlink(f"/proc/self/fd/{f}") for f in fds], fds))
                c.sendall(encode({"ok": True, "ring": "x"}))
            else:
                c.sendall(encode({"ok": False, "error": "no"}))
hits = 0
flags = []
for _, _, fds in got[:1]:
    ring = fds[0]
    flags.append(oct(os.stat(f"/proc/self/fd/{ring}").st_mode))
    size = os.fstat(ring).st_size
    blob = os.pread(ring, size, 0)
    hits = blob.count(marker)
    # and it may write there too: the descriptor is open for writing
    fl = int(open(f"/proc/self/fdinfo/{ring}").read().split("flags:")[1].split()[0], 8)
    flags.append(fl & 3)  # 2 = O_RDWR
print(json.dumps({"uid": os.getuid(), "registered": [(p, links) for p, links, _ in got],
                  "marker_hits": hits, "ring_fd_accmode": flags[1:] if flags else None}), flush=True)
os.unlink(path)
