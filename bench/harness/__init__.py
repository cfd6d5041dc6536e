"""The parts the benchmarks in bench/ share: starting the upstream and the gateway as a user would
(from a `git archive` of a commit), the open-loop load generator, /proc CPU and memory sampling,
the capture checks, and the results file. Scripts in bench/ import it as `harness` (python puts
bench/ first on sys.path); it never imports a benchmark script.

    checkout.py  the repository, its venv, `git archive` of a commit
    procs.py     subprocesses in their own groups, always stopped
    targets.py   the loopback upstream, `stillhouse serve`, LiteLLM's proxy
    loadgen.py   the open-loop generator (uvloop + httptools)
    openloop.py  one open-loop run and its statistics
    sampling.py  CPU time and resident memory from /proc
    captures.py  /metrics capture counters and the SQLite store's rows
    wrk.py       wrk's POST script and the parse of its report
    results.py   bench/results/*.json, the machine and the versions
    runner.py    bench/gateway.py's run (direct, gateway, direct, LiteLLM; wrk)
    report.py    bench/gateway.py's summary and markdown
"""

from .captures import metrics_values, store_rows, wait_captures
from .checkout import ROOT, VENV_BIN, export_commit, head_commit
from .loadgen import LoadGen, Rec, http_request, request_body
from .procs import Procs, free_port
from .results import RESULTS, machine_info, write_result
from .sampling import Sampler
from .targets import start_gateway, start_upstream

__all__ = [
    "RESULTS",
    "ROOT",
    "VENV_BIN",
    "LoadGen",
    "Procs",
    "Rec",
    "Sampler",
    "export_commit",
    "free_port",
    "head_commit",
    "http_request",
    "machine_info",
    "metrics_values",
    "request_body",
    "start_gateway",
    "start_upstream",
    "store_rows",
    "wait_captures",
    "write_result",
]
