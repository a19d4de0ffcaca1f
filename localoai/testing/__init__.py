"""Helpers for testing code that talks to localoai: a tiny local model and a running server."""

from localoai.testing.scripted import ScriptedEngine, random_words, text_script
from localoai.testing.server import request_streams, running_server, wait_until
from localoai.testing.tiny import CHAT_TEMPLATE, build_tiny_model, build_tokenizer

__all__ = ["CHAT_TEMPLATE", "ScriptedEngine", "build_tiny_model", "build_tokenizer", "random_words", "request_streams",
           "running_server", "text_script", "wait_until"]
