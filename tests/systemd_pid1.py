"""systemd as PID 1 of private namespaces, for tests of the shipped units (root only).

    nsenter --net=NETNS unshare --pid --mount --cgroup --fork --kill-child sh boot.sh

``boot.sh`` runs as PID 1 of the new PID namespace, in its own mount namespace, in a fresh
child cgroup of cgroup2 that became the root of its cgroup namespace, in the network
namespace the test made.  It mounts an overlay whose lower layer is the host's ``/`` (so
the guest sees the installed Python, systemd and libraries) and whose upper layer is a
tmpfs (so everything installed or written inside vanishes with the namespace), a private
``/dev`` (its ``/dev/console`` is a log file of the test), ``/proc``, ``/sys`` with cgroup2
and bpffs, a tmpfs ``/run`` and ``/tmp``, pivots into it and execs ``systemd --system``
with ``container=`` set (container mode: no udev, no getty, no kernel log) and a default
target that wants journald only.

The host stays untouched: every mount lives in the private mount namespace and goes with
it; the cgroup is removed; killing PID 1 ends every process of the PID namespace (and
``--kill-child``/``PR_SET_PDEATHSIG`` end PID 1 if the test runner itself dies).
``shutdown()`` checks that no process of the namespace is left.

This host's own PID 1 is not systemd and it runs cgroup v1 with cgroup2 at
``/sys/fs/cgroup/unified`` (no controllers there): systemd needs none for the units under
test (device policy and IP filters are BPF programs on cgroup2).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEMD = "/lib/systemd/systemd"
PR_SET_PDEATHSIG = 1

BOOT_SH = r"""#!/bin/sh
# PID 1 of a fresh PID namespace: build the guest's root, then become systemd.
set -eu
T=$1 SHARE=$2 CONSOLE=$3
mount --make-rprivate /
mount -t tmpfs -o mode=0755 mrt-sd "$T"
mkdir "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
R=$T/root
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"            # in the test's network namespace: its devices
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t bpf bpf "$R/sys/fs/bpf"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3; mknod -m 666 "$R/dev/zero" c 1 5; mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8; mknod -m 666 "$R/dev/urandom" c 1 9; mknod -m 666 "$R/dev/tty" c 5 0
mkdir -m 755 "$R/dev/net" "$R/dev/pts" "$R/dev/shm"; mknod -m 666 "$R/dev/net/tun" c 10 200
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"; ln -s pts/ptmx "$R/dev/ptmx"
chmod 1777 "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console"; mount --bind "$CONSOLE" "$R/dev/console"
mkdir -p "$R/mnt/share"; mount --bind "$SHARE" "$R/mnt/share"
mkdir -p "$R/etc/systemd/system" "$R/.oldroot"
rm -f "$R/etc/machine-id"                 # a transient one: systemd writes its own
# nothing in the guest brings the network "online" (no networkd): don't wait for it
ln -sf /dev/null "$R/etc/systemd/system/systemd-networkd-wait-online.service"
ln -sf /dev/null "$R/etc/systemd/system/NetworkManager-wait-online.service"
cat > "$R/etc/systemd/system/mrt-test.target" <<EOF
[Unit]
Description=mirrord test target (journald only)
Wants=systemd-journald.socket systemd-journald.service
EOF
cd "$R"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
exec env -i container=mirrord-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    %(systemd)s --system --unit=mrt-test.target --log-target=journal-or-kmsg --show-status=no
"""


def cgroup2_root() -> Path:
    """Where this host mounts cgroup2 (pure v2 at /sys/fs/cgroup; hybrid at .../unified)."""
    for p in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (p / "cgroup.procs").exists() and (p / "cgroup.controllers").exists():
            return p
    raise RuntimeError("no cgroup2 hierarchy mounted (looked at /sys/fs/cgroup and /sys/fs/cgroup/unified)")


def _own_cgroup2() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return "/"


class SystemdPid1:
    """One booted systemd in the network namespace ``netns``; ``shutdown()`` removes it all."""

    def __init__(self, tmp: Path, netns: str, share: Path):
        self.tag = f"mrt-sd-{uuid.uuid4().hex[:8]}"
        self.tmp, self.netns, self.share = tmp, netns, share
        self.stage = tmp / "stage"
        self.console = tmp / "console.log"
        self.cgroup = cgroup2_root() / _own_cgroup2().lstrip("/") / self.tag
        self.proc: subprocess.Popen | None = None
        self.pid = 0           # systemd, as the host sees it
        self.pidns = 0         # inode of its PID namespace

    # -- life cycle ---------------------------------------------------------------------
    def boot(self, timeout: float = 30.0) -> "SystemdPid1":
        self.stage.mkdir()
        self.console.touch()
        script = self.tmp / "boot.sh"
        script.write_text(BOOT_SH % {"systemd": SYSTEMD})
        self.cgroup.mkdir()
        procs = str(self.cgroup / "cgroup.procs")

        def child() -> None:  # between fork and exec, in the child
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--pid", "--mount", "--cgroup",
             "--fork", "--kill-child", "sh", str(script), str(self.stage), str(self.share), str(self.console)],
            stdin=subprocess.DEVNULL, stdout=open(self.tmp / "boot.log", "wb"), stderr=subprocess.STDOUT,
            preexec_fn=child, env={"PATH": PATH})
        deadline = time.monotonic() + timeout
        while not self.pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd did not start: {self.logs()}")
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if kids and Path(f"/proc/{kids[0]}/comm").read_text().strip() == "systemd":
                self.pid = int(kids[0])
                self.pidns = os.stat(f"/proc/{self.pid}/ns/pid").st_ino
            else:
                time.sleep(0.05)
        state = ""
        while time.monotonic() < deadline:
            r = self.run("systemctl", "is-system-running", check=False)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"systemd did not finish booting ({state!r}): {self.logs()}")

    def shutdown(self) -> None:
        """Kill PID 1 (the kernel then kills every process of its PID namespace, which takes
        the mount namespace with it), remove the cgroup, and check that nothing is left."""
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        left: list[int] = []
        deadline = time.monotonic() + 15
        while self.pidns and time.monotonic() < deadline:
            left = self._pidns_members()
            if not left:
                break
            time.sleep(0.1)
        if self.cgroup.exists():
            deadline = time.monotonic() + 10
            while True:
                try:
                    for d in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()),
                                    key=lambda p: len(p.parts), reverse=True):
                        d.rmdir()
                    self.cgroup.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        if self.stage.exists():
            self.stage.rmdir()  # the tmpfs was mounted in the private namespace only: empty here
        assert not left, f"processes of the guest PID namespace survived its PID 1: {left}"

    def _pidns_members(self) -> list[int]:
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    if os.stat(p / "ns/pid").st_ino == self.pidns:
                        out.append(int(p.name))
                except OSError:
                    pass
        return out

    # -- driving it ---------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside every namespace of the guest, as root, with a clean env."""
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "env", "-i", f"PATH={PATH}", *cmd],
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}\n{r.stdout}")
        return r

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, lines: int = 60) -> str:
        r = self.run("journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u", unit, check=False)
        return r.stdout + r.stderr

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file in the guest (through its root, which the host sees in /proc)."""
        self.run("install", "-D", "-m", f"{mode:o}", "/dev/stdin", path, input=text)

    def logs(self) -> str:
        out = []
        for f in (self.tmp / "boot.log", self.console):
            if f.exists():
                out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    def wait_for(self, pred, what: str, timeout: float = 20.0, every: float = 0.2):
        """Poll ``pred()`` until it returns something true; bounded in time."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = pred()
            except (AssertionError, ValueError, KeyError) as e:  # not there yet
                last = e
            else:
                if last:
                    return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def available() -> str | None:
    """Why systemd-as-PID-1 cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for exe in ("nsenter", "unshare", "systemctl", "journalctl", "systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed"
    if not Path(SYSTEMD).exists():
        return f"{SYSTEMD} is not installed"
    try:
        cgroup2_root()
    except RuntimeError as e:
        return str(e)
    return None
