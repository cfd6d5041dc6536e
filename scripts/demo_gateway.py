"""`make demo` until the full lifecycle demo lands: a gateway in front of a loopback upstream.

Starts the OpenAI-wire test upstream and `stillhouse serve` as separate processes, sends traffic
through the gateway with the official openai SDK (streaming and not), then shows what was
captured with `stillhouse status` and `stillhouse calls`. Everything runs on this machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "I lost my debit card yesterday",
    "How do I reset my password?",
    "My parcel has not arrived",
    "Can I change the delivery address?",
    "The app crashes when I log in",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args} exited early")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="stillhouse-demo-"))
    up_port, gw_port = free_port(), free_port()
    config = work / "stillhouse.toml"
    config.write_text(
        '[store]\nurl = "sqlite:///stillhouse.db"\n\n'
        "[models.teacher]\n"
        'provider = "openai-compatible"\n'
        f'base_url = "http://127.0.0.1:{up_port}/v1"\n'
        'model = "loopback-teacher"\n'
        "price = { input_per_mtok = 2.0, output_per_mtok = 8.0 }\n\n"
        '[tasks.support]\nteacher = "teacher"\n'
    )
    cli = [sys.executable, "-m", "stillhouse"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "upstream.py"), "--port", str(up_port),
             "--latency-ms", "20"]
        ),
    ]
    try:
        wait_for(f"http://127.0.0.1:{up_port}/v1/models", procs[0])
        procs.append(subprocess.Popen(
            [*cli, "serve", "--config", str(config), "--port", str(gw_port),
             "--log-level", "warning"]))
        wait_for(f"http://127.0.0.1:{gw_port}/healthz", procs[1])
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw_port}/v1", api_key="demo")
        print(f"sending {len(QUESTIONS) * 4} requests through the gateway...", flush=True)
        for round_ in range(4):
            for i, question in enumerate(QUESTIONS):
                if round_ % 2:
                    stream = client.chat.completions.create(
                        model="support", stream=True, user=f"user-{i}",
                        messages=[{"role": "user", "content": question}])
                    answer = "".join(c.choices[0].delta.content or "" for c in stream
                                     if c.choices)
                else:
                    reply = client.chat.completions.create(
                        model="support", user=f"user-{i}",
                        messages=[{"role": "user", "content": question}])
                    answer = reply.choices[0].message.content
                if round_ == 0:
                    print(f"  {question!r} -> {answer!r}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)
    print("\n$ stillhouse status", flush=True)
    subprocess.run([*cli, "status", "--config", str(config)], check=True)
    print("\n$ stillhouse calls --limit 5", flush=True)
    subprocess.run([*cli, "calls", "--config", str(config), "--limit", "5"], check=True)
    print(f"\nthe store and config are in {work}")


if __name__ == "__main__":
    main()
