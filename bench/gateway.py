"""Gateway overhead benchmark: the latency `stillhouse serve` adds over calling the upstream.

    .venv/bin/python bench/gateway.py            # full run, about 8-9 minutes
    .venv/bin/python bench/gateway.py --quick    # smoke run, about 2-3 minutes

What it measures
  * Open-loop, constant-rate load (50, 200 and 500 requests/s) of the same chat-completion request,
    non-streaming and streaming, sent (a) straight to a loopback OpenAI-wire upstream
    (tests/upstream.py, 5 ms fixed latency), (b) through the Stillhouse gateway (capture on, SQLite
    store), (c) through LiteLLM's proxy when it is installed. Each cell runs in the order direct,
    gateway, direct, litellm, so that drift in the shared machine shows up as a difference between
    the two direct runs, which is reported. "Added" latency is the gateway's percentile minus the
    direct percentile (both direct runs pooled), and the ratio of the two: a difference of
    percentiles, not a percentile of per-request differences.
  * Streaming: time to the last byte (the `data: [DONE]` event) is the latency; time to the first
    body byte (the first SSE event) is reported as TTFT.
  * Maximum throughput: `wrk` (closed loop, 32 connections, one thread) against each target, with
    the CPU each process used, so a limit can be told apart from the upstream's own.
  * Capture integrity: the gateway's /metrics `stillhouse_captures_dropped_total` must stay 0, and
    the rows in the SQLite store must equal the responses the gateway gave.

Why this load generator
  wrk2 (constant rate) is not in Debian, and `wrk` and `hey -q` are closed loop: a slow response
  delays the next request, which hides stalls ("coordinated omission"). The open-loop runs use
  the small generator below instead: asyncio on uvloop with raw protocols and the httptools parser
  (both already installed with uvicorn[standard]), no HTTP client library, so it costs about
  40-60 us of CPU a request (reported per run as `loadgen_cpu_us_per_req`). Each request is fired
  at its scheduled time whether or not earlier ones have answered; it takes an idle keep-alive
  connection or opens a new one (at most 128; beyond that requests queue in the generator and the
  wait counts in their latency). Latency runs from the moment the request is fired to the last
  byte. The timer of the event loop has about 1 ms resolution, so a request is fired up to about
  1 ms after its scheduled time; that lag is reported separately (`lag_p99_ms`), and it is not
  counted in the latency, because it belongs to the generator, not to the system measured.
  `wrk` (C, a Lua script for the POST body) is used only for the maximum throughput, where a
  closed loop is what is wanted and its low CPU cost matters.

Processes and cores (2-core machine)
  The gateway (or LiteLLM) runs alone on CPU 1; the upstream, this generator and wrk share CPU 0
  (`taskset`; --no-pin turns this off). The gateway is started as a user would: a temporary
  stillhouse.toml (teacher = openai-compatible at the upstream, store = sqlite in a temp dir) and
  `.venv/bin/stillhouse serve --config ... --port ... --log-level warning`. The code it runs is a
  `git archive` copy of the committed HEAD put first on PYTHONPATH (the working tree is shared with
  people editing it); `--source worktree` runs the working tree instead. LiteLLM, if
  bench/.litellm-venv (or --litellm-venv) has it, runs with `--num_workers 1` and one model_list
  entry; it captures nothing, so it does less work per request than the gateway.
  Install it with: python3 -m venv bench/.litellm-venv && bench/.litellm-venv/bin/pip install
  'litellm[proxy]'.

Noise: the machine is shared. Each run records the CPU time used by processes that are not part of
the benchmark (`foreign_cpu_pct`, from /proc/stat, with the top such processes in `foreign_top`);
an overloaded target is left to go idle (`settle_s`) before the next run, and each group of runs
waits up to --quiet-wait seconds for the machine to be under 15% busy (`quiet_waits`).

Every subprocess runs in its own process group and is stopped at the end, on error and on Ctrl-C;
the whole run is bounded by an alarm (--budget-s). Results: bench/results/gateway-<time>.json, and a
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import uvloop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = ROOT / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")

PROMPT = (
    "Summarise the following customer message in one sentence and say whether it needs a "
    "refund: my order arrived two days late and the box was damaged, but everything inside "
    "works fine, so I only want to let you know."
)


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "You are a concise support assistant."},
            {"role": "user", "content": PROMPT},
        ],
        "temperature": 0,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def http_request(port: int, body: bytes) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nAuthorization: Bearer sk-bench\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# ---------------------------------------------------------------------------------------------
# Open-loop load generator
# ---------------------------------------------------------------------------------------------


class Rec:
    __slots__ = ("done", "error", "first_body", "intended", "retried", "status", "t0", "tail")

    def __init__(self, intended: float) -> None:
        self.intended = intended
        self.t0 = 0.0  # when it was fired
        self.first_body: float | None = None
        self.done: float | None = None
        self.status = 0
        self.tail = b""
        self.error: str | None = None
        self.retried = False


class _Conn(asyncio.Protocol):
    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.rec: Rec | None = None
        self.got_bytes = False
        self.now = 0.0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.now = time.perf_counter()
        if self.rec is None:
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            rec, self.rec = self.rec, None
            rec.error = f"parse: {err}"
            self.gen.failed(rec)
            if self.transport:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gen.lost(self)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        rec = self.rec
        if rec is not None:
            if rec.first_body is None and body:
                rec.first_body = self.now
            rec.tail = (rec.tail + body)[-16:]

    def on_message_complete(self) -> None:
        rec, self.rec = self.rec, None
        if rec is None:
            return
        rec.done = self.now
        rec.status = self.parser.get_status_code()
        self.gen.finished(rec, self)

    def send(self, rec: Rec, payload: bytes) -> None:
        self.rec = rec
        self.got_bytes = False
        self.gen.written += 1
        self.transport.write(payload)  # type: ignore[union-attr]


class LoadGen:
    def __init__(self, port: int, payload: bytes, max_conns: int = 128) -> None:
        self.port = port
        self.payload = payload
        self.max_conns = max_conns
        self.idle: list[_Conn] = []  # LIFO: hot connections stay hot
        self.conns: set[_Conn] = set()
        self.connecting = 0
        self.waiting: collections.deque[Rec] = collections.deque()
        self.outstanding = 0
        self.results: list[Rec] = []
        self.retries = 0
        self.written = 0  # requests written to a socket (retries included)
        self.closing = False  # set when the run is over: lost connections are not retried
        self.queued_max = 0
        self.conns_max = 0
        self._drained: asyncio.Event | None = None

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        self.connecting += 1
        try:
            _, proto = await loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
        finally:
            self.connecting -= 1
        assert isinstance(proto, _Conn)
        self.conns.add(proto)
        self.conns_max = max(self.conns_max, len(self.conns))
        return proto

    async def prewarm(self, n: int) -> None:
        for c in await asyncio.gather(*(self._open() for _ in range(n))):
            self.idle.append(c)

    def fire(self, rec: Rec) -> None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                conn.send(rec, self.payload)
                return
        if len(self.conns) + self.connecting < self.max_conns:
            asyncio.get_running_loop().create_task(self._connect_and_send(rec))
        else:
            self.waiting.append(rec)
            self.queued_max = max(self.queued_max, len(self.waiting))

    async def _connect_and_send(self, rec: Rec) -> None:
        try:
            conn = await self._open()
        except OSError as err:
            rec.error = f"connect: {err}"
            self.failed(rec)
            return
        conn.send(rec, self.payload)

    def _release(self, conn: _Conn) -> None:
        if self.waiting and not conn.closed:
            conn.send(self.waiting.popleft(), self.payload)
        elif not conn.closed:
            self.idle.append(conn)

    def _settle(self, rec: Rec) -> None:
        self.results.append(rec)
        self.outstanding -= 1
        if self._drained is not None and self.outstanding == 0:
            self._drained.set()

    def finished(self, rec: Rec, conn: _Conn) -> None:
        self._settle(rec)
        self._release(conn)

    def failed(self, rec: Rec) -> None:
        rec.done = time.perf_counter()
        self._settle(rec)

    def lost(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        rec, conn.rec = conn.rec, None
        if rec is None:
            return
        if not conn.got_bytes and not rec.retried and not self.closing:
            # The server closed an idle keep-alive connection as we wrote to it: it never saw
            # the request, so send it again (the time already spent still counts).
            rec.retried = True
            self.retries += 1
            self.fire(rec)
            return
        rec.error = "cut off at the end of the run" if self.closing else "connection lost"
        self.failed(rec)

    async def run(self, rate: float, seconds: float, drain_s: float) -> tuple[float, float, int]:
        """Fire rate*seconds requests at fixed intervals; returns (start, end, unfinished)."""
        total = int(rate * seconds)
        interval = 1.0 / rate
        self._drained = asyncio.Event()
        start = time.perf_counter() + 0.01
        i = 0
        while i < total:
            now = time.perf_counter()
            due = start + i * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < total and start + i * interval <= now:
                rec = Rec(start + i * interval)
                rec.t0 = now
                self.outstanding += 1
                self.fire(rec)
                i += 1
        end = start + total * interval
        self._drained.clear()  # it was set whenever nothing was in flight during the run
        if self.outstanding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), drain_s)
        unfinished = self.outstanding
        self.closing = True
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.close()
        await asyncio.sleep(0.05)
        return start, end, unfinished


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(-(-q * len(values) // 1)) - 1))
    return values[k]


def summarise(recs: list[Rec], t_measure: float, t_end: float, stream: bool) -> dict[str, Any]:
    measured = [r for r in recs if r.intended >= t_measure]
    ok = [
        r
        for r in measured
        if r.error is None and r.status == 200 and (not stream or r.tail.endswith(b"[DONE]\n\n"))
    ]
    lat = sorted((r.done - r.t0) * 1000 for r in ok if r.done is not None)
    lag = sorted((r.t0 - r.intended) * 1000 for r in measured)
    ttft = sorted((r.first_body - r.t0) * 1000 for r in ok if r.first_body is not None)
    seconds = t_end - t_measure
    # throughput: successful completions of any request (warm-up ones too) inside the window
    in_window = sum(
        1
        for r in recs
        if r.error is None
        and r.status == 200
        and r.done is not None
        and t_measure <= r.done <= t_end
    )
    ok_ids = {id(r) for r in ok}

    def why(r: Rec) -> str:
        if r.error:
            return r.error
        return f"http {r.status}" if r.status != 200 else "stream not finished"

    errors = collections.Counter(why(r) for r in measured if id(r) not in ok_ids)
    out: dict[str, Any] = {
        "measured_requests": len(measured),
        "ok": len(ok),
        "errors": dict(errors),
        "achieved_rps": round(in_window / seconds, 1) if seconds > 0 else None,
        "mean_ms": round(sum(lat) / len(lat), 3) if lat else None,
    }
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
        v = pct(lat, q)
        out[f"{name}_ms"] = round(v, 3) if v is not None else None
    out["max_ms"] = round(lat[-1], 3) if lat else None
    if stream:
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            v = pct(ttft, q)
            out[f"ttft_{name}_ms"] = round(v, 3) if v is not None else None
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        v = pct(lag, q)
        out[f"lag_{name}_ms"] = round(v, 3) if v is not None else None
    out["lag_max_ms"] = round(lag[-1], 3) if lag else None
    out["_lat"] = lat  # pooled later, dropped before writing
    out["_ttft"] = ttft
    return out


async def _open_loop(
    port: int,
    body: bytes,
    rate: float,
    warmup: float,
    seconds: float,
    drain_s: float,
    max_conns: int,
) -> dict[str, Any]:
    gen = LoadGen(port, http_request(port, body), max_conns=max_conns)
    await gen.prewarm(min(max_conns, 8 + int(rate * 0.02)))
    start, end, unfinished = await gen.run(rate, warmup + seconds, drain_s)
    stats = summarise(gen.results, start + warmup, end, stream=b'"stream":true' in body)
    stats["unfinished"] = unfinished
    stats["retried_on_closed_keepalive"] = gen.retries
    stats["generator_queue_max"] = gen.queued_max
    stats["connections_max"] = gen.conns_max
    stats["all_ok_responses"] = sum(1 for r in gen.results if r.error is None and r.status == 200)
    stats["all_responses"] = sum(1 for r in gen.results if r.error is None and r.status)
    stats["requests_written"] = gen.written - gen.retries  # a retried one was not received
    return stats


def open_loop(
    port: int,
    body: bytes,
    rate: float,
    warmup: float,
    seconds: float,
    drain_s: float = 10.0,
    max_conns: int = 128,
) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_open_loop(port, body, rate, warmup, seconds, drain_s, max_conns))


# ---------------------------------------------------------------------------------------------
# Processes, CPU accounting, HTTP helpers
# ---------------------------------------------------------------------------------------------


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


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f:
                children[int(f[1])].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_ms(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants, in ms."""
    total = 0
    for p in process_tree(pid):
        f = _stat_fields(p)
        if f:
            total += int(f[11]) + int(f[12])
    return total * 1000 / CLK_TCK


def all_process_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (short command line, CPU ms) for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if not f:
            continue
        try:
            cmd = (
                Path(f"/proc/{entry}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
                .strip()[:80]
            )
        except OSError:
            cmd = ""
        out[int(entry)] = (cmd, (int(f[11]) + int(f[12])) * 1000 / CLK_TCK)
    return out


def system_busy_ms() -> float:
    with open("/proc/stat") as fh:
        parts = fh.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) * 1000 / CLK_TCK


def self_cpu_ms() -> float:
    t = os.times()
    return (t.user + t.system) * 1000


def children_cpu_ms() -> float:
    """CPU of our waited-for children that are not long-running servers (wrk)."""
    t = os.times()
    return (t.children_user + t.children_system) * 1000


def machine_busy(seconds: float = 2.0) -> float:
    """Percent of all cores busy (any process) over `seconds`."""
    b0, t0 = system_busy_ms(), time.perf_counter()
    time.sleep(seconds)
    wall = (time.perf_counter() - t0) * 1000 * (os.cpu_count() or 1)
    return 100 * (system_busy_ms() - b0) / wall


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


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


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def metrics_values(port: int) -> dict[str, float]:
    _, text = http_get(port, "/metrics")
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("stillhouse_capture"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def store_rows(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        total, ok, stream = conn.execute(
            "SELECT count(*), coalesce(sum(status = 'ok'), 0), coalesce(sum(stream), 0) FROM calls"
        ).fetchone()
    finally:
        conn.close()
    return {"rows": total, "rows_ok": ok, "rows_stream": stream}


def wait_captures(port: int, expected: int | None, timeout: float = 30.0) -> dict[str, float]:
    """Wait until the capture queue is empty (and `expected` records are written, if given)."""
    deadline = time.monotonic() + timeout
    m = metrics_values(port)
    while time.monotonic() < deadline:
        m = metrics_values(port)
        written = m.get("stillhouse_captures_written_total", 0) + m.get(
            "stillhouse_captures_replayed_total", 0
        )
        if m.get("stillhouse_capture_queue_depth", 0) == 0 and (
            expected is None or written >= expected
        ):
            break
        time.sleep(0.2)
    time.sleep(0.3)  # the writer commits a batch after counting it
    return metrics_values(port)


def parse_wrk(text: str) -> dict[str, Any]:
    def ms(value: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s|m)", value)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
        return float(m.group(1)) * scale

    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", text, re.M)
        out[f"p{q}_ms"] = round(ms(m.group(1)), 3) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", text)
    out["socket_errors"] = m.group(1).strip() if m else None
    return out


def head_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def export_commit(commit: str, src: Path) -> Path:
    """Write `commit`'s stillhouse/ and tests/upstream.py into `src` (`git archive`): what a
    benchmark runs, untouched by half-done edits in the shared working tree."""
    src.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "stillhouse", "tests/upstream.py"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="stillhouse-bench-"))
        self.procs = Procs(pin=args.pin)
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.gateway_ok = 0  # successful responses the gateway gave (open-loop runs)
        self.gateway_responses = 0
        self.gateway_written = 0  # requests the generator wrote to the gateway
        self.runs: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.by_target: dict[str, Proc] = {}
        self.dead: set[str] = set()
        self.quiet_waits: list[dict[str, Any]] = []

    # -- set-up ------------------------------------------------------------------------------
    def checkout(self) -> tuple[Path, dict[str, str]]:
        """Where the gateway and the upstream are run from, and the environment for them.

        By default a copy of the committed HEAD (`git archive`): the working tree is shared
        with people editing it, and half-done edits must not be measured. `--source worktree`
        runs the working tree as it is (the editable install)."""
        self.commit = head_commit()
        if self.args.source == "worktree":
            return ROOT, {}
        src = export_commit(self.commit, self.tmp / "src")
        # PYTHONPATH comes before the editable install's finder on sys.path
        return src, {"PYTHONPATH": str(src)}

    def start(self) -> None:
        a = self.args
        src, env = self.checkout()
        up = free_port()
        self.ports["direct"] = up
        proc = self.procs.start(
            "upstream",
            [
                str(VENV_BIN / "python"),
                str(src / "tests" / "upstream.py"),
                "--port",
                str(up),
                "--latency-ms",
                str(a.upstream_latency_ms),
            ],
            up,
            self.tmp / "upstream.log",
            cpu=0,
            env=env,
        )
        self.procs.wait_ready(proc, "/v1/models", 30)
        self.pids["direct"] = proc.pid
        self.by_target["direct"] = proc

        gw = free_port()
        self.ports["gateway"] = gw
        self.db = self.tmp / "store" / "bench.db"
        config = self.tmp / "stillhouse.toml"
        config.write_text(
            f"""[gateway]
host = "127.0.0.1"
port = {gw}

[store]
url = "sqlite:///{self.db}"

[models.teacher]
provider = "openai-compatible"
base_url = "http://127.0.0.1:{up}/v1"
model = "upstream-model"

[tasks.bench]
teacher = "teacher"
mode = "teacher"
"""
        )
        proc = self.procs.start(
            "gateway",
            [
                str(VENV_BIN / "stillhouse"),
                "serve",
                "--config",
                str(config),
                "--port",
                str(gw),
                "--log-level",
                "warning",
            ],
            gw,
            self.tmp / "gateway.log",
            cpu=1,
            env=env,
        )
        where = subprocess.run(
            [str(VENV_BIN / "python"), "-c", "import stillhouse; print(stillhouse.__file__)"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
            cwd=self.tmp,  # as for the servers: the current folder is not on their sys.path
        ).stdout.strip()
        self.notes.append(f"gateway code: {a.source} at {self.commit} ({where})")
        self.procs.wait_ready(proc, "/healthz", 30)
        self.pids["gateway"] = proc.pid
        self.by_target["gateway"] = proc

        litellm = Path(a.litellm_venv) / "bin" / "litellm"
        if a.no_litellm:
            self.notes.append("LiteLLM skipped (--no-litellm).")
        elif not litellm.exists():
            self.notes.append(
                f"LiteLLM not installed at {litellm}: skipped (see the docstring to install it)."
            )
        else:
            ll = free_port()
            self.ports["litellm"] = ll
            cfg = self.tmp / "litellm.yaml"
            cfg.write_text(
                "model_list:\n"
                "  - model_name: bench\n"
                "    litellm_params:\n"
                "      model: openai/upstream-model\n"
                f"      api_base: http://127.0.0.1:{up}/v1\n"
                "      api_key: sk-bench\n"
                "litellm_settings:\n"
                "  telemetry: false\n"
            )
            env = {
                "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False",
            }
            proc = self.procs.start(
                "litellm",
                [
                    str(litellm),
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ll),
                    "--num_workers",
                    "1",
                ],
                ll,
                self.tmp / "litellm.log",
                cpu=1,
                env=env,
            )
            self.procs.wait_ready(proc, "/health/liveliness", 120)
            self.pids["litellm"] = proc.pid
            self.by_target["litellm"] = proc
            ver = subprocess.run(
                [
                    str(Path(a.litellm_venv) / "bin" / "python"),
                    "-c",
                    "import importlib.metadata as m; print(m.version('litellm'))",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            self.litellm_version = ver.stdout.strip()
        if a.pin:
            os.sched_setaffinity(0, {0})

    # -- one measured run --------------------------------------------------------------------
    def _cpu_snapshot(self) -> dict[str, float]:
        snap = {name: cpu_ms(pid) for name, pid in self.pids.items()}
        snap["_self"] = self_cpu_ms()
        snap["_children"] = children_cpu_ms()
        snap["_system"] = system_busy_ms()
        snap["_wall"] = time.perf_counter() * 1000
        self._procs_snap = all_process_cpu()
        return snap

    def _foreign_top(self, before: dict[int, tuple[str, float]], wall_ms: float) -> list[str]:
        """The processes outside the benchmark that used the most CPU since `before`."""
        ours = {os.getpid()}
        for pid in self.pids.values():
            ours.update(process_tree(pid))
        ours.update(process_tree(os.getpid()))
        used = []
        for pid, (cmd, ms) in all_process_cpu().items():
            if pid in ours:
                continue
            delta = ms - before.get(pid, (cmd, 0.0))[1]
            if delta > 0.05 * wall_ms:
                used.append((delta, f"{100 * delta / wall_ms:.0f}% {cmd or pid}"))
        return [u for _, u in sorted(used, reverse=True)[:3]]

    def _cpu_delta(
        self,
        before: dict[str, float],
        after: dict[str, float],
        procs_before: dict[int, tuple[str, float]],
    ) -> dict[str, Any]:
        wall = after["_wall"] - before["_wall"]
        ours = sum(after[k] - before[k] for k in before if not k.startswith("_"))
        loadgen = after["_self"] - before["_self"]
        wrk = after["_children"] - before["_children"]
        system = after["_system"] - before["_system"]
        foreign = max(0.0, system - ours - loadgen - wrk)
        out: dict[str, Any] = {
            f"{k}_cpu_pct": round(100 * (after[k] - before[k]) / wall, 1)
            for k in before
            if not k.startswith("_")
        }
        out["loadgen_cpu_pct"] = round(100 * (loadgen + wrk) / wall, 1)
        out["foreign_cpu_pct"] = round(100 * foreign / wall, 1)
        out["foreign_top"] = self._foreign_top(procs_before, wall)
        return out

    def alive(self, target: str, during: str) -> bool:
        """False once `target` has exited (noted once); the benchmark stops if it is ours."""
        if target in self.dead:
            return False
        proc = self.by_target[target]
        if proc.popen.poll() is None:
            return True
        self.dead.add(target)
        self.pids.pop(target, None)
        code = proc.popen.returncode
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        tail = proc.log.read_text(errors="replace").strip().splitlines()[-3:]
        note = f"{proc.name} died ({how}) during {during}; last log lines: {tail}"
        with contextlib.suppress(OSError):
            dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
            hits = [ln for ln in dmesg.splitlines() if f"[{proc.pid}]" in ln]
            if hits:
                note += f"; kernel: {hits[-1].strip()}"
        self.notes.append(note)
        print(f"  !! {note}", flush=True)
        if target != "litellm":
            raise RuntimeError(note)
        return False

    def wait_quiet(self, label: str) -> None:
        """Wait (at most --quiet-wait s) for other people's work on the machine to pause."""
        t0 = time.monotonic()
        busy = machine_busy(1.0)
        while busy > 15 and time.monotonic() - t0 < self.args.quiet_wait:
            busy = machine_busy(1.0)
        waited = round(time.monotonic() - t0, 1)
        self.quiet_waits.append({"before": label, "waited_s": waited, "busy_pct": round(busy)})
        if waited > 1.5:
            print(f"  (waited {waited:.0f}s for a quieter machine: {busy:.0f}% busy)", flush=True)

    def settle(self, target: str, limit: float = 30.0) -> float:
        """Wait until `target` (and the upstream) go idle: an overloaded server keeps working
        through its backlog after the client has gone, which would slow the next run."""
        t0 = time.monotonic()
        names = {target, "direct"} & set(self.pids)
        while time.monotonic() - t0 < limit:
            before = {n: cpu_ms(self.pids[n]) for n in names}
            time.sleep(0.5)
            busy = max((cpu_ms(self.pids[n]) - before[n]) / 500 for n in names)
            if busy < 0.1:
                break
        return round(time.monotonic() - t0, 1)

    def open_loop_run(self, target: str, stream: bool, rate: float, seconds: float) -> None:
        a = self.args
        mode = "stream" if stream else "json"
        if not self.alive(target, f"the runs before {mode} at {rate:.0f} req/s"):
            return
        body = request_body(stream)
        before = self._cpu_snapshot()
        procs_before = self._procs_snap
        load0 = loadavg()
        try:
            stats = open_loop(self.ports[target], body, rate, a.warmup, seconds)
        except OSError as err:
            self.alive(target, f"{mode} at {rate:.0f} req/s")
            self.notes.append(f"{target} {mode} at {rate:.0f} req/s failed: {err}")
            return
        if not self.alive(target, f"{mode} at {rate:.0f} req/s"):
            self.notes.append(f"{target} {mode} at {rate:.0f} req/s: run discarded (target died)")
            return
        after = self._cpu_snapshot()
        total_sent = int(rate * (a.warmup + seconds))
        run = {
            "kind": "open-loop",
            "target": target,
            "stream": stream,
            "rate": rate,
            "seconds": seconds,
            "warmup": a.warmup,
            "loadavg_before": load0,
            **stats,
            **self._cpu_delta(before, after, procs_before),
        }
        gen_ms = after["_self"] - before["_self"]
        run["loadgen_cpu_us_per_req"] = round(1000 * gen_ms / max(1, total_sent), 1)
        tcpu = after[target] - before[target]
        run["target_cpu_us_per_req"] = round(1000 * tcpu / max(1, stats["all_responses"]), 1)
        if target == "gateway":
            self.gateway_ok += stats["all_ok_responses"]
            self.gateway_responses += stats["all_responses"]
            self.gateway_written += stats["requests_written"]
        run["settle_s"] = self.settle(target)
        run["sustained"] = bool(
            not stats["errors"]
            and not stats["unfinished"]
            and stats["achieved_rps"] is not None
            and stats["achieved_rps"] >= 0.97 * rate
        )
        self.runs.append(run)
        print(
            f"  {target:<8} {mode:<6} {rate:>4.0f}/s  p50 {run['p50_ms']} ms  p99 {run['p99_ms']}"
            f" ms  ok {run['ok']}/{run['measured_requests']}  achieved {run['achieved_rps']}/s"
            f"  lag p99 {run['lag_p99_ms']} ms  cpu {run.get(target + '_cpu_pct')}%"
            f"  foreign {run['foreign_cpu_pct']}%",
            flush=True,
        )
        if run["foreign_top"]:
            print(f"      busy outside the benchmark: {'; '.join(run['foreign_top'])}", flush=True)
        time.sleep(a.pause)

    def wrk_run(self, target: str, stream: bool, conns: int) -> dict[str, Any] | None:
        a = self.args
        if not self.alive(target, "the wrk runs"):
            return None
        lua = self.tmp / f"post-{int(stream)}.lua"
        lua.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [==[{request_body(stream).decode()}]==]\n"
        )
        port = self.ports[target]
        argv = [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{a.wrk_seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ]
        if a.pin:
            argv = ["taskset", "-c", "0", *argv]
        before = self._cpu_snapshot()
        procs_before = self._procs_snap
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=a.wrk_seconds + 30
        )
        if not self.alive(target, f"wrk -c{conns} {'stream' if stream else 'json'}"):
            return None
        after = self._cpu_snapshot()
        # wrk is a child of ours: os.times() counts it once it has been waited for.
        run: dict[str, Any] = {
            "kind": "wrk",
            "target": target,
            "stream": stream,
            "connections": conns,
            "seconds": a.wrk_seconds,
            **parse_wrk(done.stdout),
        }
        run["wrk_rc"] = done.returncode
        run.update(self._cpu_delta(before, after, procs_before))
        run["settle_s"] = self.settle(target)
        if run.get("requests"):
            tcpu = after[target] - before[target]
            run["target_cpu_us_per_req"] = round(1000 * tcpu / run["requests"], 1)
        self.runs.append(run)
        mode = "stream" if stream else "json"
        print(
            f"  wrk -c{conns:<3} {target:<8} {mode:<6} {run['rps']} req/s  p50 {run['p50_ms']} ms"
            f"  p99 {run['p99_ms']} ms  non-2xx {run['non_2xx']}"
            f"  cpu {run.get(target + '_cpu_pct')}%"
            f"  foreign {run['foreign_cpu_pct']}%",
            flush=True,
        )
        if run["foreign_top"]:
            print(f"      busy outside the benchmark: {'; '.join(run['foreign_top'])}", flush=True)
        time.sleep(a.pause)
        return run

    def captures_check(self, label: str, expected: int | None) -> dict[str, Any]:
        m = wait_captures(self.ports["gateway"], expected)
        rows = store_rows(self.db)
        check = {
            "label": label,
            # every stillhouse_capture* metric the gateway exports (names vary by version)
            **{k.removeprefix("stillhouse_").removesuffix("_total"): v for k, v in m.items()},
            **rows,
            "gateway_ok_responses": self.gateway_ok,
            "gateway_responses": self.gateway_responses,
            "gateway_requests_written": self.gateway_written,
        }
        print(f"  captures ({label}): {check}", flush=True)
        return check

    # -- the whole run -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        a = self.args
        started = time.time()
        load_start = loadavg()
        self.busy_start = machine_busy()
        self.start()
        targets = ["direct", "gateway", "direct"] + (["litellm"] if "litellm" in self.ports else [])
        for stream in (False, True):
            for rate in a.rates:
                seconds = a.seconds_low if rate < 100 else a.seconds
                print(f"== {'stream' if stream else 'json'} at {rate:.0f} req/s", flush=True)
                self.wait_quiet(f"{'stream' if stream else 'json'} at {rate:.0f} req/s")
                for target in targets:
                    s = seconds
                    if target == "litellm" and rate >= a.litellm_short_from:
                        s = min(seconds, a.litellm_seconds)
                    self.open_loop_run(target, stream, rate, s)
        checks = [self.captures_check("after open-loop runs", self.gateway_responses)]
        print("== max throughput (wrk, closed loop)", flush=True)
        wrk_runs = []
        for stream in (False, True):
            self.wait_quiet(f"wrk {'stream' if stream else 'json'}")
            for conns in a.wrk_connections:
                for target in ["direct", "gateway"] + (
                    ["litellm"] if "litellm" in self.ports else []
                ):
                    run = self.wrk_run(target, stream, conns)
                    if run is not None:
                        wrk_runs.append(run)
        gw_wrk = sum(r.get("requests") or 0 for r in wrk_runs if r["target"] == "gateway")
        after_wrk = self.captures_check("after wrk runs", None)
        after_wrk["wrk_gateway_requests"] = gw_wrk
        after_wrk["wrk_connections"] = sum(
            r["connections"] for r in wrk_runs if r["target"] == "gateway"
        )
        checks.append(after_wrk)
        load_end = loadavg()
        return {
            "benchmark": "gateway",
            "date": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "quick": a.quick,
            "machine": machine_info(),
            "settings": {k: v for k, v in vars(a).items()},
            "versions": versions(getattr(self, "litellm_version", None)),
            "gateway_commit": self.commit,  # what ran (HEAD may move during the run)
            "loadavg_start": load_start,
            "busy_pct_before_start": round(self.busy_start, 1),
            "loadavg_end": load_end,
            "notes": self.notes,
            "quiet_waits": self.quiet_waits,
            "runs": self.runs,
            "captures": checks,
        }

    def close(self) -> None:
        self.procs.stop_all()
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(litellm: str | None) -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {}
    for pkg in ("stillhouse", "uvicorn", "starlette", "httpx", "uvloop", "httptools", "orjson"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    out["git"] = rev.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--short", "--", "stillhouse"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # the gateway runs from this working tree (editable install): note uncommitted changes
    out["stillhouse_uncommitted"] = dirty.stdout.splitlines()[:20] if dirty.stdout else []
    wrk = shutil.which("wrk")
    out["wrk"] = wrk
    out["litellm"] = litellm
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _pooled(runs: list[dict[str, Any]], key: str, q: float) -> float | None:
    values = sorted(v for r in runs for v in r[key])
    return pct(values, q)


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per (mode, rate): pooled direct vs gateway vs litellm, added latency and ratio."""
    cells: list[dict[str, Any]] = []
    loops = [r for r in result["runs"] if r["kind"] == "open-loop"]
    keys = sorted({(r["stream"], r["rate"]) for r in loops})
    for stream, rate in keys:
        group = [r for r in loops if r["stream"] == stream and r["rate"] == rate]
        by = collections.defaultdict(list)
        for r in group:
            by[r["target"]].append(r)
        cell: dict[str, Any] = {
            "stream": stream,
            "rate": rate,
            "foreign_cpu_max_pct": max(r["foreign_cpu_pct"] for r in group),
        }
        for target, runs in by.items():
            t: dict[str, Any] = {}
            for name, q in (("p50", 0.5), ("p99", 0.99)):
                t[f"{name}_ms"] = _pooled(runs, "_lat", q)
                if stream:
                    t[f"ttft_{name}_ms"] = _pooled(runs, "_ttft", q)
            t["sustained"] = all(r["sustained"] for r in runs)
            t["achieved_rps"] = min(r["achieved_rps"] or 0 for r in runs)
            t["errors"] = sum(sum(r["errors"].values()) + r["unfinished"] for r in runs)
            t["cpu_us_per_req"] = runs[0].get("target_cpu_us_per_req")
            cell[target] = t
        d = cell.get("direct")
        if d and len(by["direct"]) == 2:
            a, b = by["direct"]
            cell["direct_drift_p50_ms"] = (
                round(b["p50_ms"] - a["p50_ms"], 3) if (a["p50_ms"] and b["p50_ms"]) else None
            )
            cell["direct_drift_p99_ms"] = (
                round(b["p99_ms"] - a["p99_ms"], 3) if (a["p99_ms"] and b["p99_ms"]) else None
            )
        for target in ("gateway", "litellm"):
            t = cell.get(target) or {}
            if not (t and d):
                continue
            for name in ("p50", "p99") + (("ttft_p50", "ttft_p99") if stream else ()):
                gv, dv = t.get(f"{name}_ms"), d.get(f"{name}_ms")
                if gv is not None and dv is not None:
                    t[f"added_{name}_ms"] = round(gv - dv, 3)
                    t[f"ratio_{name}"] = round(gv / dv, 3) if dv else None
        for t in (v for v in cell.values() if isinstance(v, dict)):
            for k, v in list(t.items()):
                if isinstance(v, float):
                    t[k] = round(v, 3)
        cells.append(cell)
    wrk = {}
    for r in result["runs"]:
        if r["kind"] == "wrk":
            mode = "stream" if r["stream"] else "json"
            wrk[f"{r['target']}/{mode}/c{r['connections']}"] = {
                k: r.get(k)
                for k in (
                    "rps",
                    "p50_ms",
                    "p99_ms",
                    "non_2xx",
                    "socket_errors",
                    "target_cpu_us_per_req",
                    f"{r['target']}_cpu_pct",
                    "direct_cpu_pct",
                    "foreign_cpu_pct",
                )
            }
    targets = {}
    best: dict[str, Any] = {}
    for name, w in wrk.items():
        target, mode, _ = name.split("/")
        key = f"{target}/{mode}"
        if w["rps"] and not w["non_2xx"] and (key not in best or w["rps"] > best[key]["rps"]):
            best[key] = {"rps": w["rps"], "at": name}
    for c in cells:
        if c["rate"] == 500 and "gateway" in c:
            g = c["gateway"]
            mode = "stream" if c["stream"] else "json"
            targets[mode] = {
                "added_p50_ms": g.get("added_p50_ms"),
                "added_p99_ms": g.get("added_p99_ms"),
                "p50_target_met": g.get("added_p50_ms") is not None and g["added_p50_ms"] <= 1.0,
                "p99_target_met": g.get("added_p99_ms") is not None and g["added_p99_ms"] <= 5.0,
            }
    return {"cells": cells, "wrk": wrk, "max_rps": best, "targets_at_500": targets}


def markdown(result: dict[str, Any], summ: dict[str, Any]) -> str:
    has_ll = any("litellm" in c for c in summ["cells"])
    lines = []
    head = (
        "| mode | req/s | direct p50 / p99 | gateway p50 / p99 | gateway added p50 / p99 "
        "(ratio p50) |"
    )
    sep = "|---|---:|---:|---:|---:|"
    if has_ll:
        head += " LiteLLM p50 / p99 | LiteLLM added p50 / p99 |"
        sep += "---:|---:|"
    head += " others' CPU % |"
    sep += "---:|"
    lines += [head, sep]

    def pair(t: dict[str, Any] | None, a: str, b: str) -> str:
        if not t:
            return "-"
        s = f"{_f(t.get(a))} / {_f(t.get(b))}"
        if not t.get("sustained", True):
            s += f" (overloaded: {t['achieved_rps']:.0f}/s done, {t['errors']} not done)"
        return s

    for c in summ["cells"]:
        mode = "stream (last byte)" if c["stream"] else "non-stream"
        g = c.get("gateway")
        added = (
            f"{_f(g.get('added_p50_ms'))} / {_f(g.get('added_p99_ms'))} (x{_f(g.get('ratio_p50'))})"
            if g
            else "-"
        )
        row = (
            f"| {mode} | {c['rate']:.0f} | {pair(c.get('direct'), 'p50_ms', 'p99_ms')} | "
            f"{pair(g, 'p50_ms', 'p99_ms')} | {added} |"
        )
        if has_ll:
            ll = c.get("litellm")
            lla = f"{_f(ll.get('added_p50_ms'))} / {_f(ll.get('added_p99_ms'))}" if ll else "-"
            row += f" {pair(ll, 'p50_ms', 'p99_ms')} | {lla} |"
        row += f" {c['foreign_cpu_max_pct']:.0f} |"
        lines.append(row)
        if c["stream"]:
            row = (
                f"| stream (first event) | {c['rate']:.0f} | "
                f"{pair(c.get('direct'), 'ttft_p50_ms', 'ttft_p99_ms')} | "
                f"{pair(g, 'ttft_p50_ms', 'ttft_p99_ms')} | "
                f"{_f(g.get('added_ttft_p50_ms'))} / {_f(g.get('added_ttft_p99_ms'))} |"
            )
            if has_ll:
                ll = c.get("litellm")
                row += f" {pair(ll, 'ttft_p50_ms', 'ttft_p99_ms')} | " + (
                    f"{_f(ll.get('added_ttft_p50_ms'))} / {_f(ll.get('added_ttft_p99_ms'))} |"
                    if ll
                    else "- |"
                )
            row += " |"
            lines.append(row)
    lines.append("")
    lines.append(
        'Latencies in ms. "others\' CPU %": the most CPU (percent of one core) that '
        "processes outside the benchmark used during any run of the row."
    )
    lines.append(
        "Drift between the two direct runs of each cell (p50 / p99, ms): "
        + ", ".join(
            f"{'stream' if c['stream'] else 'json'}@{c['rate']:.0f} "
            f"{_f(c.get('direct_drift_p50_ms'))} / {_f(c.get('direct_drift_p99_ms'))}"
            for c in summ["cells"]
        )
    )
    lines.append("")
    lines.append(
        "| max throughput (wrk, closed loop) | req/s | p50 / p99 ms | target CPU µs/req | "
        "target CPU % | upstream CPU % |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, w in summ["wrk"].items():
        target = name.split("/")[0]
        lines.append(
            f"| {name} | {_f(w['rps'], 0)} | {_f(w['p50_ms'])} / {_f(w['p99_ms'])} | "
            f"{_f(w['target_cpu_us_per_req'], 0)} | {_f(w.get(f'{target}_cpu_pct'), 0)} | "
            f"{_f(w.get('direct_cpu_pct'), 0)} |"
        )
    lines.append("")
    for c in result["captures"]:
        lines.append(
            f"- captures {c['label']}: dropped {c.get('captures_dropped', float('nan')):.0f}"
            + "".join(
                f", {k.removeprefix('captures_')} {v:.0f}"
                for k, v in c.items()
                if k.startswith("captures_")
                and k not in ("captures_dropped", "captures_written")
                and v
            )
            + "; "
            f"rows in store {c['rows']} (ok {c['rows_ok']}); open-loop requests written to the "
            f"gateway {c['gateway_requests_written']}, answered {c['gateway_responses']} "
            f"(200: {c['gateway_ok_responses']})"
            + (
                f", + wrk {c['wrk_gateway_requests']} completed (up to {c['wrk_connections']} more "
                "cut off at the ends of the runs)"
                if "wrk_gateway_requests" in c
                else ""
            )
        )
    for t, v in summ["targets_at_500"].items():
        lines.append(
            f"- target at 500 req/s, {t}: added p50 {_f(v['added_p50_ms'])} ms "
            f"({'met' if v['p50_target_met'] else 'NOT met'}, ≤ 1 ms), added p99 "
            f"{_f(v['added_p99_ms'])} ms ({'met' if v['p99_target_met'] else 'NOT met'}, ≤ 5 ms)"
        )
    for n in result["notes"]:
        lines.append(f"- {n}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    p.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=None,
        help="offered loads in req/s (default 50,200,500)",
    )
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--litellm-venv", default=str(ROOT / "bench" / ".litellm-venv"))
    p.add_argument("--upstream-latency-ms", type=float, default=5.0)
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, store)")
    p.add_argument(
        "--source",
        choices=["head", "worktree"],
        default="head",
        help="run the committed HEAD (a git archive copy, default) or the working tree",
    )
    p.add_argument("--budget-s", type=int, default=None, help="abort after this long")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each group of runs, wait up to this many seconds for the "
        "machine to be under 15%% busy (default 15, quick 3)",
    )
    a = p.parse_args(argv)
    a.rates = a.rates or [50.0, 200.0, 500.0]
    if a.quick:
        a.warmup, a.seconds, a.seconds_low, a.litellm_seconds = 1.0, 3.0, 3.0, 3.0
        a.wrk_seconds = 3
        a.pause = 0.5
    else:
        a.warmup, a.seconds, a.seconds_low, a.litellm_seconds = 2.0, 12.0, 8.0, 8.0
        a.wrk_seconds = 8
        a.pause = 1.0
    if a.quiet_wait is None:
        a.quiet_wait = 3.0 if a.quick else 15.0
    a.litellm_short_from = 200.0  # LiteLLM is saturated there: shorter runs, same rate
    a.wrk_connections = [8, 32]
    a.budget_s = a.budget_s or (300 if a.quick else 720)
    if a.pin and (os.cpu_count() or 1) < 2:
        a.pin = False
    if not shutil.which("wrk"):
        p.error("wrk is needed for the throughput runs: apt-get install -y wrk")

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(
        signal.SIGALRM,
        lambda s, f: (_ for _ in ()).throw(
            TimeoutError(f"benchmark ran over its budget of {a.budget_s}s")
        ),
    )
    signal.alarm(a.budget_s)
    bench = Bench(a)
    busy = machine_busy()
    print(
        f"load average before: {loadavg():.2f}, CPU busy over 2 s: {busy:.0f}% of "
        f"{os.cpu_count()} cores; temp dir {bench.tmp}",
        flush=True,
    )
    if busy > 25:
        print(
            "  warning: the machine is busy with other work; the numbers will be disturbed",
            flush=True,
        )
    try:
        result = bench.run()
    finally:
        signal.alarm(0)
        bench.close()
    summ = summary(result)
    for r in result["runs"]:
        r.pop("_lat", None)
        r.pop("_ttft", None)
    result["summary"] = summ
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"gateway-{stamp}{'-quick' if a.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print()
    print(markdown(result, summ))
    print(
        f"\nload average: {result['loadavg_start']:.2f} at start, "
        f"{result['loadavg_end']:.2f} at end; {result['duration_s']:.0f}s; results: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
