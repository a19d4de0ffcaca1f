"""The in-process server and its lifecycle."""

from localoai.server.lifecycle import Server, running_servers, start, stop_all

__all__ = ["Server", "running_servers", "start", "stop_all"]
