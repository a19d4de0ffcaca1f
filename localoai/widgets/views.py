"""The inspector's four views of one record, as HTML: shared by the notebook widget and the `/ui` page.

`RecordViews` gathers what each view needs through a `StoreReader` and hands it to the pure
functions of `localoai.widgets.render`, so the widget and the page served by the localoai server
show the same HTML, built in Python, never re-implemented in JavaScript.
"""

from __future__ import annotations

import logging
from typing import Any

from localoai.store.records import GenerationRecord
from localoai.widgets import render
from localoai.widgets.data import StoreReader
from localoai.widgets.format import group_id
from localoai.widgets.tokens import completion_tokens, prefix_tree, prompt_tokens, trajectory_ids

logger = logging.getLogger("localoai.widgets")

TABS = ("Episode", "Tokens", "Group", "Raw")


class RecordViews:
    """HTML of a record's views; `tokenizer` (optional) shows prompt tokens as text."""

    def __init__(self, reader: StoreReader, tokenizer: Any = None) -> None:
        self.reader = reader
        self.tokenizer = tokenizer

    def render(self, tab: int, record: GenerationRecord) -> str:
        """View `tab` (an index into `TABS`) of `record`; a view that fails says so instead of raising."""
        try:
            return (self.episode, self.tokens, self.group, render.raw_view)[tab](record)
        except Exception:  # a view must never take the inspector down; show why instead
            logger.exception("rendering %s of %s failed", TABS[tab], record.id)
            return render.empty(f"Could not render this view of {record.id} (see the localoai.widgets log).")

    def episode(self, record: GenerationRecord) -> str:
        episode = self.reader.episode(record.episode_id) if record.episode_id else []
        chain = self.reader.chain(record) if record.previous_response_id else [record]
        reward = self.reader.reward(record.episode_id)
        return render.episode_view(record, episode=episode, chain=chain, reward=reward)

    def tokens(self, record: GenerationRecord) -> str:
        samples = [completion_tokens(record, self.texts(record, s.get("completion_token_ids", []), sample=i), i)
                   for i, s in enumerate(record.completions)]
        previous = self.reader.previous_turn(record)
        prompt = prompt_tokens(record, self.texts(record, record.prompt_token_ids), previous)
        return render.token_view(record, samples, prompt, previous_id=previous.id if previous else None)

    def group(self, record: GenerationRecord) -> str:
        group = group_id(record)
        if group is None:
            return render.empty("This generation belongs to no group (no group_id).")
        episodes = self.reader.group(group)
        rewards = {name: self.reader.reward(records[0].episode_id) for name, records in episodes.items()}
        sequences = {name: trajectory_ids(records[-1]) for name, records in episodes.items()}
        return render.group_view(group, episodes, rewards, prefix_tree(sequences))

    def texts(self, record: GenerationRecord, ids: list[int], sample: int | None = None) -> list[str] | None:
        """Token texts: from the tokenizer when known, else from the response's logprobs, else none."""
        if self.tokenizer is not None:
            return [self.tokenizer.decode([token_id]) for token_id in ids]
        if sample is None:
            return None
        output = record.output or {}
        choices = [c for c in output.get("choices") or [] if c.get("index", 0) == sample]
        logprobs = (choices[0].get("logprobs") or {}) if choices else {}
        texts = [entry.get("token", "") for entry in logprobs.get("content") or []] or logprobs.get("tokens") or []
        return texts if len(texts) == len(ids) else None
