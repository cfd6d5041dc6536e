"""Shadow comparisons: a sample of the student's answers is also sent to the teacher, in the
background after the user has the student's answer, and the two are scored with the one
agreement (`answers.agree`) as the `shadow_agreement` score on the student's call.

Never on the user's path, and never able to crash the event loop: a failed comparison is logged
and dropped (its teacher call is captured like any other).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..answers import agree, answer_text, breaks_schema, first_message
from ..config import Config
from ..errors import UpstreamError
from ..routing import shadow_sampled
from ..store.records import Call, Score, new_id
from .capture import Capture
from .plan import Planner

log = logging.getLogger("stillhouse.gateway")


class Shadows:
    def __init__(self, config: Config, planner: Planner, capture: Capture) -> None:
        self.config = config
        self.planner = planner
        self.capture = capture
        self._background: set[asyncio.Task[None]] = set()  # comparisons, held until done

    def maybe(self, student: Call) -> None:
        """Start a comparison for a captured student answer when the task samples it."""
        task = self.config.tasks.get(student.task)
        if task is None or student.status != "ok" or student.response is None:
            return
        if student.route_reason.startswith("fallback") or not shadow_sampled(
            task, student.role, student.id
        ):
            return
        job = asyncio.get_running_loop().create_task(self._compare(student))
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def _compare(self, student: Call) -> None:
        """Ask the teacher too, capture its answer and store whether the two agree."""
        call, forward = self.planner.teacher_call(student, "shadow", "shadow_of")
        started = time.perf_counter()
        try:
            answer = await self.planner.providers[call.model].complete(forward)
        except UpstreamError as err:
            self.capture.error(call, err, started)
            return
        except Exception:  # never let a background comparison crash the loop
            log.exception("shadow call for %s failed", student.id)
            return
        self.capture.answer(call, answer, started)
        task = self.config.tasks[student.task]
        value: float | None = None
        label = None
        if breaks_schema(first_message(answer), task.response_schema):
            # Not a reference to agree with: curation drops such teacher answers from training
            # and so from the offline gate's holdout. Stored unscored, counted by the report.
            label = "teacher_off_schema"
        else:
            value = float(
                await asyncio.to_thread(  # a cosine may embed: off the event loop
                    agree, task.gate.metric, answer_text(answer), answer_text(student.response)
                )
            )
        self.capture.writer.submit(
            Score(
                id=new_id("score"),
                call_id=student.id,
                name="shadow_agreement",
                value=value,
                label=label,
                source="shadow",
                comment=call.id,
            )
        )
