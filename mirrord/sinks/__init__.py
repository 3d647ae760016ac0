"""Mirror outputs.  Each sink is an async context manager that opens its output and
exposes ``fd`` (or -1 while the output is missing) and ``mode`` (how the C drain routine
writes to it).  ``open_sink`` picks the class for an ``Output`` from the config."""
from __future__ import annotations

from mirrord.config import Output
from mirrord.sinks.base import Sink, SinkError, close_fds, in_passing_thread, open_sinks
from mirrord.sinks.interface import InterfaceSink
from mirrord.sinks.remote import RemoteSink
from mirrord.sinks.tap import TapSink, TunSink

__all__ = ["Sink", "SinkError", "TapSink", "TunSink", "InterfaceSink", "RemoteSink", "sink_for", "open_sinks", "close_fds",
           "in_passing_thread"]

_TYPES: dict[str, type[Sink]] = {"tap": TapSink, "tun": TunSink, "interface": InterfaceSink}


def sink_for(output: Output) -> Sink:
    if output.remote is not None:
        return RemoteSink(output)
    return _TYPES[output.type](output.name)
