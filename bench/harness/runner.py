"""The gateway benchmark's run: direct, gateway, direct (and LiteLLM) at each rate, open loop,
then wrk's closed-loop maxima, with the CPU every process used and the capture checks. A target
that dies is noted; the run stops if it is ours (the upstream or the gateway).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .captures import store_rows, wait_captures
from .checkout import ROOT, VENV_BIN, export_commit, head_commit
from .loadgen import request_body
from .openloop import open_loop
from .procs import Proc, Procs, free_port
from .results import machine_info, versions
from .sampling import (
    all_process_cpu,
    children_cpu_ms,
    cpu_ms,
    loadavg,
    machine_busy,
    process_tree,
    self_cpu_ms,
    system_busy_ms,
)
from .targets import start_gateway, start_litellm, start_upstream
from .wrk import parse_wrk, write_post_script


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
        proc = start_upstream(
            self.procs,
            src,
            up,
            self.tmp / "upstream.log",
            latency_ms=a.upstream_latency_ms,
            cpu=0,
            env=env,
        )
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
        proc = start_gateway(self.procs, config, gw, self.tmp / "gateway.log", cpu=1, env=env)
        where = subprocess.run(
            [str(VENV_BIN / "python"), "-c", "import stillhouse; print(stillhouse.__file__)"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
            cwd=self.tmp,  # as for the servers: the current folder is not on their sys.path
        ).stdout.strip()
        self.notes.append(f"gateway code: {a.source} at {self.commit} ({where})")
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
            proc, self.litellm_version = start_litellm(
                self.procs, Path(a.litellm_venv), up, ll, self.tmp, cpu=1
            )
            self.pids["litellm"] = proc.pid
            self.by_target["litellm"] = proc
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
        lua = write_post_script(self.tmp / f"post-{int(stream)}.lua", stream)
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
