"""The tools a Responses request offers, as the model is offered them: `namespace` tools flattened
into functions named `{namespace}__{name}`, hosted tools the server runs as the functions their
implementations take, the other hosted tools left out (and listed, so that the echo, the record
and the log can say so). See `hosted_tools` for the policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from localoai.protocol.client_tools import ApplyPatchTool, CustomTool, LocalShellTool, ShellTool
from localoai.protocol.hosted_tools import HostedTool, NamespaceTool, hosted_family, namespaced_name
from localoai.protocol.responses import FunctionTool, ResponseInputFields

OfferedTool = Union[FunctionTool, CustomTool, LocalShellTool, ShellTool, ApplyPatchTool]


@dataclass(frozen=True)
class OfferedTools:
    """The tools as the model is offered them: namespaces flattened, hosted tools as the functions
    their implementations take (or left out, listed in `not_offered`)."""

    tools: list[OfferedTool]
    namespaced: dict[str, tuple[str, str]]
    """Offered name -> (namespace, the member's own name), for the calls of namespace members."""
    hosted: dict[str, str]
    """Offered name -> hosted tool family, for the calls the server runs."""
    not_offered: list[str]
    """Hosted tool types in `tools` that have no implementation here, so the model never saw them."""


def offered_tools(request: ResponseInputFields, hosted: Mapping[str, dict[str, Any]]) -> OfferedTools:
    """The tools the model is offered (none with `tool_choice: "none"`). `hosted`: the function
    definition of each hosted tool family this server runs (see `handlers.responses.hosted_tools`)."""
    offered: list[OfferedTool] = []
    namespaced: dict[str, tuple[str, str]] = {}
    families: dict[str, str] = {}
    not_offered: list[str] = []
    for tool in request.tools or []:
        if isinstance(tool, NamespaceTool):
            for member in tool.tools:
                name = namespaced_name(tool.name, member.name)
                namespaced[name] = (tool.name, member.name)
                if isinstance(member, CustomTool):
                    offered.append(member.model_copy(update={"name": name}))
                else:
                    offered.append(FunctionTool.model_construct(
                        type="function", name=name, description=member.description or tool.description,
                        parameters=member.parameters, strict=member.strict))
        elif isinstance(tool, HostedTool):
            definition = hosted.get(hosted_family(tool.type))
            if definition is None:
                not_offered.append(tool.type)
                continue
            families[definition["name"]] = hosted_family(tool.type)
            offered.append(FunctionTool.model_construct(type="function", strict=True, **definition))
        else:
            offered.append(tool)
    if request.tool_choice == "none":
        offered = []
    return OfferedTools(offered, namespaced, families, not_offered)
