"""HTML for the inspector's views, as strings: shown in `ipywidgets.HTML` and in static exports.

Pure functions of records (and, for the token view, token texts): no widgets and no JavaScript,
so a view looks the same live, in a notebook saved with outputs, and in `embed_minimal_html`.
Hover details use `title` attributes; reasoning uses `<details>` so it starts collapsed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from localoai.store.records import GenerationRecord
from localoai.widgets.format import ENDPOINTS, STATUS_MARKS, Summary, Turn, conversation, row_label, shorten
from localoai.widgets.tokens import PrefixNode, TokenInfo, logprob_color

STYLE = """<style>
.loai{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.45}
.loai .turn{border-left:4px solid #bbb;margin:6px 0;padding:4px 8px;background:#fafafa}
.loai .turn.system{border-color:#888}.loai .turn.user{border-color:#1f77b4}
.loai .turn.assistant{border-color:#2ca02c}.loai .turn.tool{border-color:#ff7f0e}
.loai .turn.generated{background:#f0fff0}
.loai .role{font-weight:600;text-transform:uppercase;font-size:11px;color:#555}
.loai pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;font-size:12px}
.loai .call{border:1px solid #ffcc80;background:#fff8e1;padding:3px 6px;margin:3px 0;border-radius:3px}
.loai .call-name{font-family:monospace;font-weight:700}
.loai .meta{color:#666;font-size:12px}
.loai .toks{overflow-wrap:anywhere;line-height:1.7}
.loai .tok{font-family:monospace;font-size:12px;white-space:pre-wrap;border-radius:2px;padding:0 1px;margin:0 0 2px 0}
.loai .tok.prompt{color:#777}
.loai .tok.prompt.trainable{color:#1b5e20;background:#e8f5e9;text-decoration:underline solid #2ca02c 2px;text-underline-offset:2px}
.loai .tok.diverged{outline:2px solid #d62728;outline-offset:-1px;background:#fde0e0;color:#b71c1c}
.loai .cols{display:flex;gap:8px;align-items:flex-start;overflow-x:auto}
.loai .col{flex:1 1 0;min-width:220px;border:1px solid #ddd;padding:6px;border-radius:4px}
.loai table{border-collapse:collapse}.loai td,.loai th{padding:2px 6px;text-align:left;vertical-align:top}
.loai .failed{color:#d62728}
</style>"""


def wrap(body: str) -> str:
    return f'{STYLE}<div class="loai">{body}</div>'


def empty(message: str) -> str:
    return wrap(f'<p class="meta">{escape(message)}</p>')


def _pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


# -- the list ----------------------------------------------------------------------------------


def list_table(rows: Sequence[Summary]) -> str:
    """The page as a table: what a static export shows in place of the live list."""
    if not rows:
        return empty("No generations match.")
    lines = ["<table><tr><th></th><th>time</th><th>endpoint</th><th>model</th><th>policy</th><th>episode</th>"
             "<th>tools</th><th>id</th><th>gist</th></tr>"]
    for row in rows:
        lines.append(
            f'<tr class="{escape(row.status)}" title="{escape(row.status)}">'
            f'<td>{STATUS_MARKS.get(row.status, "?")}</td>'
            f"<td>{escape(_when(row.created_at))}</td><td>{escape(ENDPOINTS.get(row.kind, row.kind))}</td>"
            f"<td>{escape(row.model)}</td>"
            f"<td>v{row.policy_version}</td><td>{escape(row.episode_id or '')}</td>"
            f"<td>{escape(', '.join(row.tools))}</td><td><code>{escape(row.id)}</code></td>"
            f"<td>{escape(row.preview)}</td></tr>"
        )
    lines.append("</table>")
    return wrap("".join(lines))


def list_labels(rows: Sequence[Summary]) -> list[tuple[str, str]]:
    """(label, id) options for the list's `Select`."""
    return [(row_label(row), row.id) for row in rows]


# -- the episode view --------------------------------------------------------------------------


def turn_html(turn: Turn) -> str:
    classes = f"turn {escape(turn.role)}{' generated' if turn.generated else ''}"
    role = turn.role + (" (generated)" if turn.generated else "")
    # The id outside `.role`, which is upper-cased: call ids are case-sensitive.
    call_id = f' <span class="meta">· <code>{escape(turn.tool_call_id)}</code></span>' if turn.tool_call_id else ""
    parts = [f'<div class="{classes}"><div><span class="role">{escape(role)}</span>{call_id}</div>']
    if turn.reasoning:
        summary = f"reasoning ({len(turn.reasoning)} chars)"
        parts.append(f"<details><summary>{summary}</summary>{_pre(turn.reasoning)}</details>")
    if turn.text:
        parts.append(_pre(turn.text))
    for call in turn.tool_calls:
        call_id = f' <span class="meta">{escape(call.call_id)}</span>' if call.call_id else ""
        parts.append(f'<div class="call">tool call <span class="call-name">{escape(call.name)}</span>{call_id}'
                     f"{_pre(call.arguments)}</div>")
    parts.append("</div>")
    return "".join(parts)


def episode_view(
    record: GenerationRecord,
    *,
    episode: Sequence[GenerationRecord] = (),
    chain: Sequence[GenerationRecord] = (),
    reward: Any = None,
) -> str:
    """The conversation of the selected generation, turn by turn, with its episode and chain."""
    head = [f"<div class='meta'><b>{escape(record.id)}</b> · {escape(ENDPOINTS.get(record.kind, record.kind))}"
            f" · {escape(record.status)} · policy v{record.policy_version} · {escape(record.model)}"]
    if record.episode_id:
        head.append(f" · episode <code>{escape(record.episode_id)}</code>")
    if reward is not None:
        head.append(f" · <b>reward {escape(_number(reward))}</b>")
    head.append("</div>")
    if record.error:
        head.append(f"<div class='failed'>error: {escape(str(record.error.get('message', record.error)))}</div>")
    if len(chain) > 1:
        links = " → ".join(f"<code>{escape(r.id)}</code>" for r in chain)
        head.append(f"<div class='meta'>previous_response_id chain: {links}</div>")
    if len(episode) > 1:
        items = "".join(
            f"<li>{'<b>' if r.id == record.id else ''}<code>{escape(r.id)}</code> {escape(r.status)}"
            f" v{r.policy_version}{'</b>' if r.id == record.id else ''}</li>"
            for r in episode
        )
        head.append(f"<details><summary>{len(episode)} generations in this episode</summary><ol>{items}</ol></details>")
    turns = "".join(turn_html(turn) for turn in conversation(record))
    return wrap("".join(head) + turns)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- the token view ------------------------------------------------------------------------------


def token_span(token: TokenInfo, *, prompt: bool = False) -> str:
    title = [f"id {token.token_id}"]
    if token.logprob is not None:
        title.append(f"logprob {token.logprob:.4f}")
    if token.entropy is not None:
        title.append(f"entropy {token.entropy:.3f} nats (top {len(token.top)})")
    if token.policy_version is not None:
        title.append(f"policy v{token.policy_version}")
    title.append("loss mask 1" if token.trainable else "loss mask 0")
    if token.diverged:
        title.append("re-sent history differs from the sampled tokens from here")
    if token.top:
        title.append("top: " + ", ".join(f"{text!r} {lp:.3f}" for text, lp in token.top))
    classes = ["tok"]
    if prompt:
        classes.append("prompt")
    if token.trainable:
        classes.append("trainable")
    if token.diverged:
        classes.append("diverged")
    style = f' style="background:{logprob_color(token.logprob)}"' if not prompt else ""
    return f'<span class="{" ".join(classes)}"{style} title="{escape("; ".join(title))}">{escape(token.text)}</span>'


def token_view(
    record: GenerationRecord,
    samples: Sequence[Sequence[TokenInfo]],
    prompt: Sequence[TokenInfo] = (),
    *,
    previous_id: str | None = None,
    max_prompt_tokens: int = 2048,
) -> str:
    """Sampled tokens coloured by logprob; the prompt (grey) with re-sent sampled tokens underlined."""
    parts = ["<div class='meta'>Colour: probability of the sampled token (red low, green high). "
             "Hover a token for its id, logprob, entropy, policy version, loss mask and top alternatives.</div>"]
    diverged = next((i for i, t in enumerate(prompt) if t.diverged), None)
    if previous_id:
        note = f"history re-sent from <code>{escape(previous_id)}</code>"
        if diverged is not None:
            note += (f": <span class='failed'>differs from the sampled tokens at prompt token {diverged}</span>"
                     " (outlined in red; what follows is not what the model sampled)")
        else:
            note += ": matches the sampled tokens"
        parts.append(f"<div class='meta'>{note}</div>")
    for index, tokens in enumerate(samples):
        logprobs = [t.logprob for t in tokens if t.logprob is not None]
        total = f", sum logprob {sum(logprobs):.3f}" if logprobs else ""
        versions = sorted({t.policy_version for t in tokens if t.policy_version is not None})
        version = f", policy {', '.join(f'v{v}' for v in versions)}" if versions else ""
        counts = f"{len(tokens)} tokens{total}{version}"
        parts.append(f"<div><b>sample {index}</b> <span class='meta'>({counts})</span></div>")
        parts.append("<div class='toks'>" + "".join(token_span(t) for t in tokens) + "</div>")
    if prompt:
        shown = prompt[-max_prompt_tokens:]
        cut = len(prompt) - len(shown)
        label = f"prompt ({len(prompt)} tokens{f', first {cut} not shown' if cut else ''})"
        spans = "".join(token_span(t, prompt=True) for t in shown)
        opened = " open" if diverged is not None else ""
        parts.append(f"<details{opened}><summary>{label}</summary><div class='toks'>{spans}</div></details>")
    return wrap("".join(parts))


# -- the group view ------------------------------------------------------------------------------


def group_view(group: str, episodes: Mapping[str, Sequence[GenerationRecord]], rewards: Mapping[str, Any],
               tree: PrefixNode | None = None) -> str:
    """A group's episodes side by side, with rewards, and where their tokens branch."""
    if not episodes:
        return empty(f"No episodes in group {group}.")
    columns = []
    for name, records in episodes.items():
        last = records[-1]
        reward = rewards.get(name)
        turns = [t for t in conversation(last) if t.role != "system"]
        body = "".join(turn_html(t) for t in turns[-6:])
        columns.append(
            f"<div class='col'><div><b>{escape(shorten(name, 28))}</b></div>"
            f"<div class='meta'>{len(records)} generations · {escape(last.status)}"
            f"{' · <b>reward ' + escape(_number(reward)) + '</b>' if reward is not None else ''}</div>{body}</div>"
        )
    html = f"<div class='meta'>group <code>{escape(group)}</code>: {len(episodes)} episodes</div>"
    html += f"<div class='cols'>{''.join(columns)}</div>"
    if tree is not None and len(episodes) > 1:
        html += f"<details open><summary>branching (shared token prefixes)</summary>{_tree_html(tree, 0)}</details>"
    return wrap(html)


def _tree_html(node: PrefixNode, parent_length: int) -> str:
    leaves = "".join(f"<li>episode <code>{escape(name)}</code></li>" for name in node.leaves)
    children = "".join(_tree_html(child, node.length) for child in node.children)
    return f"<ul><li>+{node.length - parent_length} tokens (at {node.length})<ul>{leaves}{children}</ul></li></ul>"


# -- the raw view --------------------------------------------------------------------------------


def raw_view(record: GenerationRecord) -> str:
    """Everything as stored: request, the rendered prompt, the response JSON, timings, sampling."""
    sections = [
        ("request", _json(record.request)),
        ("rendered prompt (exactly as the model saw it)", record.prompt_text),
        ("response", _json(record.output)),
        ("timings (seconds)", _json(record.timings)),
        ("sampling", _json(record.sampling)),
        ("metadata", _json({"metadata": record.metadata, "episode_id": record.episode_id,
                            "previous_response_id": record.previous_response_id, "error": record.error,
                            "cached_tokens (first prompt tokens from the prefix cache)": record.cached_tokens})),
    ]
    body = "".join(f"<details{' open' if i < 2 else ''}><summary>{escape(title)}</summary>{_pre(text)}</details>"
                   for i, (title, text) in enumerate(sections))
    return wrap(f"<div class='meta'><b>{escape(record.id)}</b> · {escape(_when(record.created_at))}</div>{body}")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
