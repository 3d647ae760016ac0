"""Start the real daemon as a subprocess (optionally inside a network namespace) and talk
to it over its control socket."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mirrord.protocol import ControlClient


class DaemonProc:
    def __init__(self, tmp: Path, config_text: str, netns: str | None = None, http: str | None = None,
                 env: dict | None = None, nofile: int | None = None, wrap: list[str] | None = None):
        self.tmp = tmp
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the daemon, to run it short of fds
        self.wrap = wrap or []  # e.g. setpriv, to run the daemon with fewer privileges
        # HTTP on a Unix socket of its own unless a test asks for an address, so daemons
        # started by different tests (or a demo running beside them) never share a port
        self.http = http or str(tmp / "http.sock")
        self.env = env
        self.run_dir = tmp / "run"
        self.cfg = tmp / "mirrord.toml"
        self.sock = self.run_dir / "control.sock"
        self.log = tmp / "daemon.log"
        self.netns = netns
        self.write_config(config_text)
        self.proc: subprocess.Popen | None = None

    def write_config(self, sessions_text: str) -> None:
        self.cfg.write_text(f'[daemon]\nruntime_dir = "{self.run_dir}"\nhttp = "{self.http}"\n'
                            + sessions_text)

    def start(self, timeout: float = 10.0) -> "DaemonProc":
        with contextlib.suppress(OSError):
            self.sock.unlink()
        cmd = [*self.wrap, sys.executable, "-m", "mirrord", "run", "-c", str(self.cfg)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        env = None if self.env is None else {**os.environ, **self.env}
        limit = None
        if self.nofile is not None:
            import resource

            def limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env,
                                     preexec_fn=limit)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if self.sock.exists():
                try:
                    self.request({"op": "status"})
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon not up within {timeout}s:\n{self.log.read_text()}")

    def request(self, msg: dict) -> dict:
        with ControlClient(self.sock) as c:
            return c.request(msg)

    def http_get(self, path: str) -> tuple[int, str]:
        """GET from the daemon's HTTP address, a Unix socket or HOST:PORT (from the calling
        thread's namespace); HTTP/1.0, so the server closes after the reply."""
        import socket

        if self.http.startswith("/"):
            family, addr = socket.AF_UNIX, self.http
        else:
            host, _, port = self.http.rpartition(":")
            family, addr = socket.AF_INET, (host, int(port))
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(addr)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: mirrord\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode()

    def metrics(self) -> dict:
        """/metrics parsed by prometheus-client's own parser: {(sample, labels): value}."""
        from prometheus_client.parser import text_string_to_metric_families

        code, text = self.http_get("/metrics")
        assert code == 200, (code, text)
        return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v != ""))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def status(self) -> dict:
        r = self.request({"op": "status"})
        assert r["ok"], r
        return r["status"]

    def session(self, name: str) -> dict:
        return next(s for s in self.status()["sessions"] if s["name"] == name)

    def wait_for(self, pred, timeout: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status()
            if pred(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"{what} not reached within {timeout}s; last status: {last}")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """The daemon's log once it holds ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log.read_text()
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s; log:\n{self.log.read_text()}")

    def kill(self, sig=signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
