"""The benchmark's subprocesses: each in its own process group, logging to a file in the temp
dir, optionally pinned to a core, and always stopped (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Procs:
    pin: bool
    items: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        port: int,
        log: Path,
        cpu: int | None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        # cwd: the log's folder (the temp dir), so that nothing resolves against the repo
        if self.pin and cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        fh = open(log, "wb")  # noqa: SIM115 - handed to the child
        popen = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=log.parent,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        fh.close()
        proc = Proc(name, popen, log, port)
        self.items.append(proc)
        return proc

    def wait_ready(self, proc: Proc, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = http_get(proc.port, path, timeout=1.0)
                if status < 500:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{proc.name} did not answer {path} within {timeout:.0f}s")

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.items):
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(5)
        self.items.clear()
