"""Forward passes that are not generations (embeddings, scoring), run on the engine thread.

A job is a callable the engine runs between two decode steps, holding the model as a step does
(under `Engine.model_lock`, in the backend's generation mode). So it follows the pause semantics
of generation: while the engine is paused (a weight update) queued jobs wait, and a job never
reads half-updated weights. Its result comes back through a `concurrent.futures.Future`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("localoai.engine")


@dataclass
class Job:
    run: Callable[[], Any]
    future: Future[Any] = field(default_factory=Future)

    def execute(self) -> None:
        if not self.future.set_running_or_notify_cancel():  # cancelled while waiting (client gone)
            return
        try:
            self.future.set_result(self.run())
        except BaseException as exc:  # a failed job fails its caller, never the engine thread
            logger.exception("engine job failed")
            self.future.set_exception(exc)


class JobQueue:
    """Jobs waiting for the engine thread (guarded by the engine's condition)."""

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()

    def __len__(self) -> int:
        return len(self._jobs)

    def put(self, run: Callable[[], Any]) -> Future[Any]:
        job = Job(run)
        self._jobs.append(job)
        return job.future

    def take(self) -> list[Job]:
        jobs = list(self._jobs)
        self._jobs.clear()
        return jobs

    def fail_all(self, error: BaseException) -> None:
        for job in self.take():
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(error)
