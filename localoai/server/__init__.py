"""The in-process server and its lifecycle."""

from localoai.server.lifecycle import Server, start
from localoai.server.registry import running_servers, stop_all

__all__ = ["Server", "running_servers", "start", "stop_all"]
