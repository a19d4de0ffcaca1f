"""The token ledger: inside an episode, a turn's prompt is the earlier turn's exact tokens plus the new ones.

An agent re-sends its whole history as messages each turn. Rendering that history again and
re-tokenizing it drifts from what the model sampled: the chat template re-serializes tool calls
differently, strips earlier reasoning, or BPE merges differently across what used to be a
boundary; a trainer that takes the re-rendered ids as the policy's context trains on tokens the
policy never saw (PPO then fails to converge). So when a request's messages are an earlier turn's
messages, then that turn's answer, then new messages, the prompt becomes

    earlier prompt ids + earlier sampled ids + [end-of-turn tokens the model did not sample] + new suffix

where the end-of-turn tokens are the template's text after an assistant message (`<|im_end|>\\n`
in ChatML, minus the `<|im_end|>` the model sampled itself) and the suffix is the re-rendered text
after the assistant message (the tool result, the next user message, the generation prompt).
Every such turn reports, whatever was spliced, whether the re-rendered ids extend the earlier
turn's exactly, and the first index where they diverge.

The ledger keeps the last turns of recent episodes in memory (no store read on the event loop);
an episode closed by its `with` block is dropped from it.
"""

from __future__ import annotations

import json
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localoai.chat_template import RenderedPrompt, template_messages
from localoai.episodes.routing import EpisodeRef
from localoai.errors import InvalidRequestError
from localoai.protocol.chat import Message

MAX_EPISODES = 1024
"""Episodes whose turns the ledger keeps; the least recently used go first."""
MAX_TURNS = 64
"""Turns kept per episode, the latest (an agent extends its latest turn; a branch an older one)."""
_SENTINEL = "\u2063localoai-end-of-turn-probe\u2063"


@dataclass
class EpisodeTurn:
    """One request inside an episode, from `prepare` to its record."""

    episode: EpisodeRef
    messages: list[dict[str, Any]] | None = None
    """The conversation in canonical form (None for legacy completions, which have no messages)."""
    context: str = ""
    """What else shapes the rendering (tools, template arguments): a turn extends only one with the same."""
    ledger: dict[str, Any] | None = None
    """The report kept in the record: `extends` (the earlier record id), `sample`, `rendered_extends`
    (the re-rendered prompt starts with the earlier turn's exact ids), `divergence` (first index where
    it does not), `spliced`, and when not spliced, `reason`."""


@dataclass
class _Turn:
    record_id: str
    messages: list[dict[str, Any]]
    context: str
    prompt_ids: array[int]  # 4 bytes a token: the ledger may hold many long episodes
    samples: list[tuple[list[dict[str, Any]], array[int]]]
    """Per sample: its answer as canonical assistant message(s), and its sampled ids."""


@dataclass
class _Episode:
    group: str | None = None
    token_ledger: bool | None = None
    turns: list[_Turn] = field(default_factory=list)


class EpisodeLedger:
    """The server's episodes in memory: their groups, ledger setting and recent turns. Thread-safe."""

    def __init__(self, tokenizer: Any, *, enabled: bool = True, max_episodes: int = MAX_EPISODES) -> None:
        self.tokenizer = tokenizer
        self.enabled = enabled
        """The default for episodes that do not choose (`start(token_ledger=...)`)."""
        self.max_episodes = max_episodes
        self._episodes: OrderedDict[str, _Episode] = OrderedDict()
        self._lock = threading.Lock()
        self._end_of_turn: str | None | bool = False  # False: not probed yet

    def open(self, episode_id: str, group: str | None = None, token_ledger: bool | None = None) -> None:
        with self._lock:
            entry = self._entry(episode_id)
            entry.group, entry.token_ledger = group, token_ledger

    def close(self, episode_id: str) -> None:
        with self._lock:
            self._episodes.pop(episode_id, None)

    def _entry(self, episode_id: str) -> _Episode:
        """Under the lock."""
        entry = self._episodes.get(episode_id)
        if entry is None:
            entry = self._episodes[episode_id] = _Episode()
            while len(self._episodes) > self.max_episodes:
                self._episodes.popitem(last=False)
        self._episodes.move_to_end(episode_id)
        return entry

    # -- a request's way through -------------------------------------------------------------

    def turn(self, ref: EpisodeRef | None) -> EpisodeTurn | None:
        """The turn to record for a request without messages (legacy completions: no ledger)."""
        return None if ref is None else EpisodeTurn(self._resolve(ref)[0])

    def _resolve(self, ref: EpisodeRef) -> tuple[EpisodeRef, list[_Turn], bool]:
        """The episode with its group filled in, its turns so far, and whether its ledger is on."""
        with self._lock:
            entry = self._entry(ref.id)
            if entry.group is None:
                entry.group = ref.group
            enabled = self.enabled if entry.token_ledger is None else entry.token_ledger
            return EpisodeRef(ref.id, entry.group), list(entry.turns), enabled

    def attach(
        self,
        ref: EpisodeRef | None,
        messages: Sequence[Message],
        prompt: RenderedPrompt,
        render_history: Callable[[Sequence[Message]], str] | None = None,
        context: Any = None,
    ) -> tuple[RenderedPrompt, EpisodeTurn | None]:
        """The prompt to generate from (spliced when the request extends an earlier turn) and the
        turn to record; `(prompt, None)` outside episodes. `render_history(messages)` renders a
        conversation without the generation prompt, as the request's own rendering does; `context`
        (JSON-able: tools, template arguments) must equal the earlier turn's for a splice."""
        if ref is None:
            return prompt, None
        resolved, turns, enabled = self._resolve(ref)
        turn = EpisodeTurn(resolved)
        turn.messages = canonical(template_messages(messages))
        turn.context = json.dumps(context, sort_keys=True, default=str)
        found = _extended([earlier for earlier in turns if earlier.context == turn.context], turn.messages)
        if found is None:
            return prompt, turn
        earlier, sample = found
        answer, sampled_ids = earlier.samples[sample]
        sampled = sampled_ids.tolist()
        exact = earlier.prompt_ids.tolist() + sampled
        rendered = prompt.token_ids
        divergence = next((i for i, (a, b) in enumerate(zip(rendered, exact)) if a != b), None)
        if divergence is None and len(rendered) < len(exact):
            divergence = len(rendered)
        report: dict[str, Any] = {"extends": earlier.record_id, "sample": sample,
                                  "rendered_extends": divergence is None, "divergence": divergence,
                                  "spliced": False}
        turn.ledger = report
        if not enabled:
            report["reason"] = "token ledger off"
            return prompt, turn
        if render_history is None:
            report["reason"] = "no history rendering for this endpoint"
            return prompt, turn
        try:
            history = render_history(list(messages[: len(earlier.messages) + len(answer)]))
        except InvalidRequestError:  # a template that will not end a conversation on an assistant turn
            report["reason"] = "the chat template does not render the history on its own"
            return prompt, turn
        new_ids, reason = self._suffix_ids(history, prompt.text, sampled)
        if new_ids is None:
            report["reason"] = reason
            return prompt, turn
        ids = exact + new_ids
        report["spliced"] = True
        if ids != rendered:
            report["rendered_token_ids"] = rendered  # what the re-rendering would have given, for inspection
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        return RenderedPrompt(text=text, token_ids=ids), turn

    def finish(self, turn: EpisodeTurn, record_id: str, prompt_ids: list[int],
               samples: list[tuple[list[dict[str, Any]], list[int]]]) -> None:
        """A completed turn joins its episode's ledger, for the turns that extend it. `samples`: per
        sample, its answer as the assistant message(s) a chat template reads (`template_messages`'s
        form, given by the endpoint that shaped it) and its sampled ids."""
        if turn.messages is None:
            return
        kept = _Turn(record_id, turn.messages, turn.context, array("i", prompt_ids),
                     [(canonical(answer), array("i", ids)) for answer, ids in samples])
        with self._lock:
            turns = self._entry(turn.episode.id).turns
            turns.append(kept)
            del turns[:-MAX_TURNS]

    # -- the splice ----------------------------------------------------------------------------

    def _suffix_ids(self, history: str, rendered: str, sampled: list[int]) -> tuple[list[int] | None, str]:
        """The ids after the earlier turn's sampled ones: the end-of-turn tokens the model did not
        sample, then what the rendering adds after the earlier answer."""
        end = self.end_of_turn()
        if end is None:
            return None, "the chat template's end of an assistant turn could not be found"
        if not rendered.startswith(history):
            return None, "the template renders the history differently once more messages follow it"
        if not history.endswith(end):
            return None, "the rendered history does not end with the template's end of turn"
        end_ids = self._encode(end)
        taken = next(k for k in range(min(len(end_ids), len(sampled)), -1, -1)
                     if k == 0 or sampled[-k:] == end_ids[:k])  # the model sampled these itself
        head = self.tokenizer.decode(end_ids[:taken], skip_special_tokens=False)
        if not end.startswith(head):
            return None, "the end-of-turn tokens do not decode to the template's text"
        return self._encode(end[len(head):] + rendered[len(history):]), ""

    def end_of_turn(self) -> str | None:
        """The template's text after an assistant message's content (`<|im_end|>\\n` in ChatML)."""
        if self._end_of_turn is False:
            try:
                probe = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": "ping"}, {"role": "assistant", "content": _SENTINEL}],
                    add_generation_prompt=False, tokenize=False)
                _, found, after = str(probe).partition(_SENTINEL)
                self._end_of_turn = after if found and after else None
            except Exception:  # noqa: BLE001 - a template that cannot render the probe gets no splice
                self._end_of_turn = None
        return self._end_of_turn  # type: ignore[return-value]

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _extended(turns: Sequence[_Turn], messages: list[dict[str, Any]]) -> tuple[_Turn, int] | None:
    """The latest, longest earlier turn whose messages and one sample's answer start `messages`
    (with something after them)."""
    best: tuple[_Turn, int] | None = None
    for earlier in reversed(turns):
        size = len(earlier.messages)
        if best is not None and size <= len(best[0].messages):
            continue
        if messages[:size] != earlier.messages:
            continue
        for index, (answer, _) in enumerate(earlier.samples):
            end = size + len(answer)
            if answer and len(messages) > end and messages[size:end] == answer:
                best = (earlier, index)
                break
    return best


def canonical(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Template messages in a form two renderings of the same conversation compare equal in: tool-call
    ids and empty fields dropped, arguments parsed (clients re-send them re-serialized)."""
    result = []
    for message in messages:
        entry = {key: value for key, value in message.items() if value not in (None, "", []) and key != "tool_call_id"}
        if "tool_calls" in entry:
            entry["tool_calls"] = [
                {"name": call["function"]["name"], "arguments": _parsed(call["function"]["arguments"])}
                for call in entry["tool_calls"]
            ]
        result.append(entry)
    return result


def _parsed(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
