"""Soak: 200 requests from 32 concurrent clients, random disconnects, background responses cancelled
or polled to their end, a pause/resume every few tenths of a second in a random mode. Every answered
request is recorded complete, none hangs, and the engine and the process give back what they took:
every request's stream (`RequestStream`) released, threads and descriptors back to their baseline
(within 2 threads and 8 descriptors; the workers of the bounded pools that grow on demand, the prepare
threads and the event loop's default executor, are not counted: how many of them a warm-up started
depends on timing), RSS within 150 MiB."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import random
import threading
import time
from typing import Any

import openai

from localoai.testing import request_streams, running_server, wait_until

REQUESTS = 200
CLIENTS = 32


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


THREAD_TOLERANCE = 2
POOL_THREADS = ("localoai-prepare", "asyncio_")  # bounded pools' workers (ThreadPoolExecutor name prefixes)


def threads() -> int:
    """Live threads other than bounded pools' workers."""
    return sum(not thread.name.startswith(POOL_THREADS) for thread in threading.enumerate())
DESCRIPTOR_TOLERANCE = 8


def descriptors() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def background(client: openai.OpenAI, number: int, chooser: random.Random, answered: list[str]) -> str:
    """A background response, cancelled at once or polled until it ends."""
    queued = client.responses.create(model="tiny", input=f"request {number}", background=True,
                                     max_output_tokens=chooser.randrange(2, 12))
    if chooser.random() < 0.5:
        try:
            client.responses.cancel(queued.id)
            return "cancelled"
        except openai.BadRequestError:  # it ended first: "Cannot cancel a response in status ..."
            pass
    ended: list[Any] = []
    wait_until(lambda: (ended.append(client.responses.retrieve(queued.id)) or
                        ended[-1].status not in ("queued", "in_progress")), timeout=120)
    answered.append(queued.id)
    return "stop" if ended[-1].status == "completed" else "length"


def one_request(client: openai.OpenAI, number: int, answered: list[str] | None = None) -> str:
    """Run request `number`; return how it ended: a finish reason, or "cancelled". The ids of the
    answers the client got in full go to `answered`."""
    answered = answered if answered is not None else []
    chooser = random.Random(number)
    kind = chooser.choice(["chat", "stream", "cancel", "completions", "background"])
    if kind == "background":
        return background(client, number, chooser, answered)
    messages = [{"role": "user", "content": f"request {number} " + "weather " * chooser.randrange(1, 12)}]
    max_tokens = chooser.randrange(2, 12)
    if kind == "chat":
        chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, seed=number)
        answered.append(chat.id)
        return chat.choices[0].finish_reason
    if kind == "completions":
        answer = client.completions.create(model="tiny", prompt=messages[0]["content"], max_tokens=max_tokens, n=2,
                                           temperature=0)
        answered.append(answer.id)
        return answer.choices[-1].finish_reason
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens * 2, stream=True,
                                            extra_body={"ignore_eos": True})
    finish = None
    for position, chunk in enumerate(stream):
        if kind == "cancel" and position == 1:
            stream.close()  # the client goes away mid-generation
            return "cancelled"
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish is not None
    answered.append(chunk.id)
    return finish


def test_soak(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny") as server:
        client = server.client(max_retries=0, timeout=120)
        engine = server.served.engine
        # Warm-up, as concurrent as the soak: lazy imports, allocator pools, the thread pools that
        # grow on demand (the event loop's default executor, the prepare threads), the first forward passes.
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda n: one_request(client, n), range(48)))
        client.close()
        gc.collect()
        baseline_rss = rss_bytes()
        baseline_threads, baseline_descriptors = threads(), descriptors()
        client = server.client(max_retries=0, timeout=120)
        baseline_records = server.store.count()
        baseline_cancelled = server.store.count(status="cancelled")
        answered: list[str] = []

        stop_pausing = threading.Event()
        pauses: list[str] = []

        def pause_now_and_then() -> None:
            # Every 0.3 s rather than every few seconds: on an idle machine the whole soak takes ~2 s.
            modes = random.Random(0)
            while not stop_pausing.wait(0.3):
                mode = modes.choice(["keep", "wait", "abort"])
                with server.pause(mode):  # type: ignore[arg-type]
                    pauses.append(mode)
                    time.sleep(0.05)

        pauser = threading.Thread(target=pause_now_and_then)
        pauser.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                outcomes = list(pool.map(lambda n: one_request(client, n, answered), range(100, 100 + REQUESTS)))
        finally:
            stop_pausing.set()
            pauser.join()

        assert len(outcomes) == REQUESTS
        assert set(outcomes) <= {"stop", "length", "cancelled"}  # an abort reads as `length`
        assert 0 < outcomes.count("cancelled") < REQUESTS
        assert pauses, "the soak ran without a single pause"

        # cancelled requests are recorded without the client waiting
        wait_until(lambda: server.store.count() >= baseline_records + REQUESTS, timeout=30)
        assert server.store.count() == baseline_records + REQUESTS
        # A client may go away after its generation already ended (an abort, say): recorded as it ended.
        assert 0 < server.store.count(status="cancelled") - baseline_cancelled <= outcomes.count("cancelled")

        server.served.recorder.flush()
        statuses = {record_id: (server.store.get(record_id) or server.store.get(f"{record_id}:0")) for record_id in answered}
        assert all(record is not None and record.status in ("completed", "incomplete")
                   for record in statuses.values()), [(key, record and record.status) for key, record in statuses.items()]

        assert engine.stats() == {"waiting": 0, "running": 0, "jobs": 0, "rows": 0}
        client.close()

        # Every request's stream released (this process's, earlier tests' servers included), if not
        # at once: a handler whose client left may still be unwinding its task.
        wait_until(lambda: not request_streams(), timeout=30, message="request streams still alive after the soak")
        assert rss_bytes() - baseline_rss < 150 * 2**20
        wait_until(lambda: threads() <= baseline_threads + THREAD_TOLERANCE, timeout=30,
                   message=f"threads: {threads()} after, {baseline_threads} before")
        wait_until(lambda: descriptors() <= baseline_descriptors + DESCRIPTOR_TOLERANCE, timeout=30,
                   message=f"descriptors: {descriptors()} after, {baseline_descriptors} before")
