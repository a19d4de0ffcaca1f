"""Soak: 200 requests from 32 concurrent clients, random cancellations, a pause/resume every
few tenths of a second in a random mode. Every request that was not cancelled completes, every
request is in the store, and the engine and the process give back what they took."""

from __future__ import annotations

import concurrent.futures
import gc
import os
import random
import threading
import time
from typing import Any

import openai

from localoai.engine.stream import RequestStream
from localoai.testing import running_server, wait_until

REQUESTS = 200
CLIENTS = 32


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_request(client: openai.OpenAI, number: int) -> str:
    """Run request `number`; return how it ended: a finish reason, or "cancelled"."""
    chooser = random.Random(number)
    kind = chooser.choice(["chat", "stream", "cancel", "completions"])
    messages = [{"role": "user", "content": f"request {number} " + "weather " * chooser.randrange(1, 12)}]
    max_tokens = chooser.randrange(2, 12)
    if kind == "chat":
        return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens,
                                              seed=number).choices[0].finish_reason
    if kind == "completions":
        answer = client.completions.create(model="tiny", prompt=messages[0]["content"], max_tokens=max_tokens, n=2,
                                           temperature=0)
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
    return finish


def test_soak(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    with running_server(model, tokenizer, name="tiny") as server:
        client = server.client(max_retries=0, timeout=120)
        engine = server.served.engine
        for number in range(8):  # warm-up: lazy imports, allocator pools, the first forward passes
            one_request(client, number)
        gc.collect()
        baseline_rss = rss_bytes()
        baseline_records = server.store.count()
        baseline_cancelled = server.store.count(status="cancelled")

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
                outcomes = list(pool.map(lambda n: one_request(client, n), range(100, 100 + REQUESTS)))
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

        assert engine.stats() == {"waiting": 0, "running": 0, "jobs": 0, "rows": 0}
        gc.collect()
        assert not [obj for obj in gc.get_objects() if type(obj) is RequestStream]
        assert rss_bytes() - baseline_rss < 150 * 2**20
