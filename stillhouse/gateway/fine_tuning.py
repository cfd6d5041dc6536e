"""The OpenAI files and fine-tuning API, served by the gateway on its own local models:
POST/GET /v1/files, and /v1/fine_tuning/jobs to create, list, read, follow (events) and cancel
jobs. A job trains a LoRA (train/jobs.py, in the JobRunner's thread); its `fine_tuned_model`
then answers /v1/chat/completions (deploy.FineTuned).

Every check runs before anything is stored: a bad file, an unknown file, model or job is an
OpenAI-shaped 4xx naming the problem, and a file or job is stored whole or not at all. These are
control-plane routes: they read the store, in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Config
from ..errors import BadRequest, NotFound, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from ..openai.fine_tuning import (
    ACTIVE,
    event_object,
    file_object,
    job_object,
    page,
    parse_job_request,
    read_training_file,
    resolve,
    too_few,
)
from ..openai.http import json_response, read_body
from ..openai.protocol import load_body
from ..store import open_store
from ..store.base import TraceStore
from ..store.records import FineTuningJob, JobEvent, UploadedFile, new_id
from ..train.config import TrainSettings
from ..train.jobs import JobRunner, base_model, event, missing_train_packages
from .deploy import FineTuned
from .security import refuse_cross_site, require_json

T = TypeVar("T")
FILE_LIMIT = 64 * 1024 * 1024  # bytes of one uploaded file (it is stored in the database)
PURPOSE = "fine-tune"  # the one purpose served: files are for fine-tuning here


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise BadRequest(f"limit must be 1 to {most}", param="limit", code="invalid_value")
    return int(raw)


def _no_job(job_id: str) -> NotFound:
    return NotFound(
        f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="job_not_found"
    )


def _file_for(store: TraceStore, file_id: str, param: str) -> UploadedFile:
    found = store.get_file(file_id)
    if found is None:
        raise BadRequest(
            f"invalid {param}: {file_id} (no such File object; upload one with POST /v1/files)",
            param=param,
            code="file_not_found",
        )
    return found


class FineTuningAPI:
    def __init__(
        self,
        config: Config,
        authorise: Callable[[Request], None],
        fine_tuned: FineTuned,
        out_root: Path,
    ) -> None:
        self.config = config
        self.authorise = authorise
        self.runner = JobRunner(
            config.store.url,
            config.models,
            out_root,
            fine_tuned.publish,
            interval=config.lifecycle.refresh,
        )

    def routes(self) -> list[Route]:
        jobs = "/v1/fine_tuning/jobs"
        return [
            Route("/v1/files", self.create_file, methods=["POST"]),
            Route("/v1/files", self.list_files, methods=["GET"]),
            Route("/v1/files/{file_id}", self.retrieve_file, methods=["GET"]),
            Route(jobs, self.create_job, methods=["POST"]),
            Route(jobs, self.list_jobs, methods=["GET"]),
            Route(jobs + "/{job_id}", self.retrieve_job, methods=["GET"]),
            Route(jobs + "/{job_id}/events", self.list_events, methods=["GET"]),
            Route(jobs + "/{job_id}/cancel", self.cancel_job, methods=["POST"]),
        ]

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()

    async def _with_store(self, work: Callable[[TraceStore], T]) -> T:
        def run() -> T:
            with open_store(self.config.store.url) as store:  # migrated, if this came first
                return work(store)

        return await asyncio.to_thread(run)

    # -- files ------------------------------------------------------------------------------------
    async def create_file(self, request: Request) -> Response:
        self.authorise(request)
        refuse_cross_site(request)
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "multipart/form-data":
            raise UnsupportedMediaType(
                "upload the file as multipart/form-data (fields `file` and `purpose`)",
                code="unsupported_media_type",
            )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > FILE_LIMIT + 64 * 1024:
            raise PayloadTooLarge(f"a file is at most {FILE_LIMIT} bytes", code="file_too_large")
        try:
            async with asyncio.timeout(self.config.gateway.read_timeout):
                form = await request.form(max_files=1, max_fields=8)
        except TimeoutError:
            raise RequestTimeout("the upload did not arrive in time", code="body_timeout") from None
        except MultiPartException as err:
            raise BadRequest(f"malformed multipart body: {err.message}", param="file") from None
        try:
            upload = form.get("file")
            purpose = form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise BadRequest(
                    "file: a file is required", param="file", code="missing_required_parameter"
                )
            if purpose != PURPOSE:
                raise BadRequest(
                    f"purpose: {purpose!r} is not served here; this gateway takes files for "
                    f"fine-tuning (purpose '{PURPOSE}')",
                    param="purpose",
                    code="invalid_value",
                )
            data = await upload.read(FILE_LIMIT + 1)
            if len(data) > FILE_LIMIT:
                raise PayloadTooLarge(
                    f"a file is at most {FILE_LIMIT} bytes", code="file_too_large"
                )
            examples = read_training_file(data)
            record = UploadedFile(
                id=new_id("file", "-"),
                filename=upload.filename or "upload.jsonl",
                purpose=PURPOSE,
                bytes=len(data),
                examples=len(examples),
            )
        finally:
            await form.close()
        await self._with_store(lambda store: store.insert_file(record, data.decode("utf-8")))
        return json_response(file_object(record.to_dict()))

    async def _listed(
        self,
        request: Request,
        most: int,
        read: Callable[[TraceStore, int, str | None], Sequence[Any] | None],
        shown: Callable[[Mapping[str, Any]], dict[str, Any]],
        default: int = 20,
    ) -> Response:
        """A cursor page of what `read(store, limit + 1, after)` finds, newest first (None: the
        job it lists for is unknown)."""
        self.authorise(request)
        limit = _limit(request, default, most)
        after = request.query_params.get("after")
        found = await self._with_store(lambda store: read(store, limit + 1, after))
        if found is None:
            raise _no_job(request.path_params["job_id"])
        return json_response(page([shown(r.to_dict()) for r in found[:limit]], len(found) > limit))

    async def list_files(self, request: Request) -> Response:
        purpose = request.query_params.get("purpose")
        return await self._listed(
            request,
            10_000,
            lambda store, limit, after: store.list_files(purpose, limit, after),
            file_object,
            default=10_000,
        )

    async def retrieve_file(self, request: Request) -> Response:
        self.authorise(request)
        file_id = request.path_params["file_id"]
        found = await self._with_store(lambda store: store.get_file(file_id))
        if found is None:
            raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
        return json_response(file_object(found.to_dict()))

    # -- jobs -------------------------------------------------------------------------------------
    async def create_job(self, request: Request) -> Response:
        self.authorise(request)
        require_json(request)
        gateway = self.config.gateway
        body = load_body(await read_body(request, gateway.max_body_bytes, gateway.read_timeout))
        asked = parse_job_request(body)
        missing = missing_train_packages()
        if missing:
            raise BadRequest(
                "fine-tuning on this gateway needs the `train` extra: pip install "
                f"'stillhouse[train]' ({', '.join(missing)} not installed)",
                code="train_extra_missing",
            )
        base_model(self.config.models, asked.model)

        def create(store: TraceStore) -> FineTuningJob:
            training = _file_for(store, asked.training_file, "training_file")
            if (few := too_few(training.id, training.examples)) is not None:
                raise few
            if asked.validation_file is not None:
                _file_for(store, asked.validation_file, "validation_file")
            job = FineTuningJob(
                id=new_id("ftjob", "-"),
                model=asked.model,
                training_file=training.id,
                validation_file=asked.validation_file,
                status="validating_files",
                hyperparameters=resolve(asked.given(), training.examples),
                seed=TrainSettings().seed if asked.seed is None else asked.seed,
                suffix=asked.suffix,
                metadata=asked.metadata,
            )
            store.create_job(job, event(job.id, f"Created fine-tuning job: {job.id}"))
            return job

        job = await self._with_store(create)
        self.runner.wake()
        return json_response(job_object(job.to_dict()))

    async def list_jobs(self, request: Request) -> Response:
        return await self._listed(
            request, 100, lambda store, limit, after: store.list_jobs(limit, after), job_object
        )

    async def retrieve_job(self, request: Request) -> Response:
        self.authorise(request)
        job_id = request.path_params["job_id"]
        found = await self._with_store(lambda store: store.get_job(job_id))
        if found is None:
            raise _no_job(job_id)
        return json_response(job_object(found.to_dict()))

    async def list_events(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]

        def read(store: TraceStore, limit: int, after: str | None) -> list[JobEvent] | None:
            if store.job_status(job_id) is None:
                return None
            return store.job_events(job_id, limit, after)

        return await self._listed(request, 100, read, event_object)

    async def cancel_job(self, request: Request) -> Response:
        self.authorise(request)
        job_id = request.path_params["job_id"]

        def cancel(store: TraceStore) -> FineTuningJob:
            cancelled = event(job_id, "Fine-tuning job cancelled")
            if not store.move_job(job_id, ACTIVE, "cancelled", cancelled, finished_at=time.time()):
                found = store.get_job(job_id)
                if found is None:
                    raise _no_job(job_id)
                raise BadRequest(
                    f"Job {job_id} has already {found.status}: only a job that has not ended "
                    "can be cancelled",
                    param="fine_tuning_job_id",
                    code="invalid_job_state",
                )
            found = store.get_job(job_id)
            assert found is not None
            return found

        job = await self._with_store(cancel)
        return json_response(job_object(job.to_dict()))
