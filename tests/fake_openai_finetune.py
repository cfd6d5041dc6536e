"""A fake of the OpenAI (and Azure OpenAI) fine-tuning API: a real HTTP server on loopback.

This is the one acceptable fake in the suite: OpenAI and Azure cannot be reached from here, so
the remote training backend is tested against this server, which speaks their wire format for
/v1/files, /v1/fine_tuning/jobs, /v1/fine_tuning/jobs/{id}, .../events and .../cancel (and the
same under /openai/... with `api-key` and `api-version` as Azure has them). Like the real
service it validates the uploaded JSONL when a job starts (at least 10 chat examples, each
with an assistant answer: the gateway's own check) and fails the job with
`invalid_training_file` otherwise. A
job moves one state per status poll: validating_files -> queued -> running -> succeeded.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stillhouse.errors import BadRequest
from stillhouse.openai.fine_tuning import TERMINAL, read_training_file, too_few

from .upstream import ServerThread

API_KEY = "sk-fake-finetune"
MODELS = ("gpt-4.1-mini-2025-04-14", "gpt-4o-mini-2024-07-18", "gpt-35-turbo-0125")


@dataclass
class FakeFineTuning:
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    cancel_while_running: bool = False  # someone cancels the job in the provider's console
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.ids):06d}fake"

    def event(self, job: dict[str, Any], message: str, **data: Any) -> None:
        self.events[job["id"]].append(
            {
                "object": "fine_tuning.job.event",
                "id": self.new_id("ftevent"),
                "created_at": int(time.time()),
                "level": "error" if job["status"] == "failed" else "info",
                "message": message,
                "data": data or {},
                "type": "metrics" if "train_loss" in data else "message",
            }
        )

    def validate(self, file_id: str) -> str | None:
        """Why the file cannot train a model, or None: the check the gateway's own API makes
        (stillhouse.openai.fine_tuning), as OpenAI does."""
        try:
            examples = read_training_file(self.contents[file_id])
        except BadRequest as err:
            return err.message
        few = too_few(file_id, len(examples))
        return few.message if few is not None else None

    def advance(self, job: dict[str, Any]) -> None:
        """One step of the job's life per status poll."""
        status = job["status"]
        if status == "validating_files":
            problem = self.validate(job["training_file"])
            if problem:
                job["status"] = "failed"
                job["finished_at"] = int(time.time())
                job["error"] = {
                    "code": "invalid_training_file",
                    "message": problem,
                    "param": "training_file",
                }
                self.event(job, f"Training file validation failed: {problem}")
                return
            job["status"] = "queued"
            self.event(job, "Files validated, moving job to queued state")
        elif status == "queued":
            job["status"] = "running"
            self.event(job, "Fine-tuning job started")
        elif status == "running":
            if self.cancel_while_running:
                job["status"] = "cancelled"
                job["finished_at"] = int(time.time())
                self.event(job, "Fine-tuning job cancelled")
                return
            lines = self.contents[job["training_file"]].splitlines()
            epochs = job["hyperparameters"]["n_epochs"]
            for step in range(1, 4):
                self.event(
                    job,
                    f"Step {step}/3: training loss={1.0 / step:.4f}",
                    step=step,
                    train_loss=1.0 / step,
                    total_steps=3,
                )
            suffix = f":{job['suffix']}" if job.get("suffix") else ""
            job["status"] = "succeeded"
            job["finished_at"] = int(time.time())
            job["fine_tuned_model"] = f"ft:{job['model']}:org-fake{suffix}:{job['id'][-10:]}"
            job["trained_tokens"] = sum(len(line) // 4 for line in lines) * epochs
            job["result_files"] = [self.new_id("file")]
            self.event(job, "The job has successfully completed")


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def build_app(fake: FakeFineTuning) -> Starlette:
    def authorised(request: Request) -> bool:
        if request.url.path.startswith("/openai/"):
            return (
                request.headers.get("api-key") == API_KEY and "api-version" in request.query_params
            )
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    def guard(handler: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            fake.requests.append((request.method, request.url.path))
            if not authorised(request):
                return _error(401, "Incorrect API key provided", code="invalid_api_key")
            return await handler(request)

        return wrapped

    async def create_file(request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        if form.get("purpose") != "fine-tune" or upload is None or isinstance(upload, str):
            return _error(400, "purpose must be 'fine-tune' and a file is required", "purpose")
        data = await upload.read()
        file_id = fake.new_id("file")
        fake.contents[file_id] = data
        fake.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": upload.filename,
            "purpose": "fine-tune",
            "status": "processed",
            "status_details": None,
        }
        return JSONResponse(fake.files[file_id])

    async def get_file(request: Request) -> Response:
        found = fake.files.get(request.path_params["file_id"])
        return JSONResponse(found) if found else _error(404, "No such File object", "id")

    async def create_job(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("model") not in MODELS:
            return _error(
                400,
                f"Model {body.get('model')} is not available for fine-tuning",
                "model",
                "model_not_available",
            )
        for key in ("training_file", "validation_file"):
            if body.get(key) is not None and body[key] not in fake.files:
                return _error(400, f"invalid {key}: {body[key]}", key, "invalid_file")
        if "training_file" not in body:
            return _error(400, "training_file is required", "training_file")
        method = body.get("method") or {
            "type": "supervised",
            "supervised": {"hyperparameters": body.get("hyperparameters") or {}},
        }
        given = method.get("supervised", {}).get("hyperparameters", {})
        hyper = {
            "n_epochs": given.get("n_epochs", 3),
            "batch_size": given.get("batch_size", 1),
            "learning_rate_multiplier": given.get("learning_rate_multiplier", 1.8),
        }
        job_id = fake.new_id("ftjob")
        job = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": body["model"],
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "org-fake",
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": body["training_file"],
            "hyperparameters": hyper,
            "trained_tokens": None,
            "error": None,
            "seed": body.get("seed", 0),
            "suffix": body.get("suffix"),
            "estimated_finish": None,
            "integrations": [],
            "metadata": body.get("metadata"),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }
        fake.jobs[job_id] = job
        fake.events[job_id] = []
        fake.event(job, f"Created fine-tuning job: {job_id}")
        return JSONResponse(job)

    def job_or_404(request: Request) -> dict[str, Any] | None:
        return fake.jobs.get(request.path_params["job_id"])

    async def get_job(request: Request) -> Response:
        job = job_or_404(request)
        if job is None:
            return _error(404, "No such fine-tuning job", "fine_tuning_job_id")
        fake.advance(job)
        return JSONResponse(job)

    async def list_events(request: Request) -> Response:
        job = job_or_404(request)
        if job is None:
            return _error(404, "No such fine-tuning job", "fine_tuning_job_id")
        limit = int(request.query_params.get("limit", 20))
        newest_first = list(reversed(fake.events[job["id"]]))
        after = request.query_params.get("after")
        if after:
            ids = [e["id"] for e in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        return JSONResponse({"object": "list", "data": page, "has_more": len(newest_first) > limit})

    async def cancel(request: Request) -> Response:
        job = job_or_404(request)
        if job is None:
            return _error(404, "No such fine-tuning job", "fine_tuning_job_id")
        if job["status"] in TERMINAL:
            return _error(400, f"Job has already {job['status']}", code="invalid_state")
        job["status"] = "cancelled"
        job["finished_at"] = int(time.time())
        fake.event(job, "Fine-tuning job cancelled")
        return JSONResponse(job)

    routes = []
    for prefix in ("/v1", "/openai"):
        routes += [
            Route(f"{prefix}/files", guard(create_file), methods=["POST"]),
            Route(f"{prefix}/files/{{file_id}}", guard(get_file), methods=["GET"]),
            Route(f"{prefix}/fine_tuning/jobs", guard(create_job), methods=["POST"]),
            Route(f"{prefix}/fine_tuning/jobs/{{job_id}}", guard(get_job), methods=["GET"]),
            Route(
                f"{prefix}/fine_tuning/jobs/{{job_id}}/events", guard(list_events), methods=["GET"]
            ),
            Route(f"{prefix}/fine_tuning/jobs/{{job_id}}/cancel", guard(cancel), methods=["POST"]),
        ]
    return Starlette(routes=routes)


@contextmanager
def running_fake() -> Iterator[tuple[str, FakeFineTuning]]:
    """Yield (server root URL, the fake's state)."""
    fake = FakeFineTuning()
    server = ServerThread(build_app(fake)).start()
    try:
        yield server.url, fake
    finally:
        server.stop()
