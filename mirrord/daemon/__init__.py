"""The mirror daemon: drains the rings into the sessions' outputs (``mirrord run``)."""
from mirrord.daemon.app import Daemon

__all__ = ["Daemon"]
