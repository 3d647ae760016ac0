"""The reference AF_XDP forwarder: the cffi binding (``binding``), the follower of the
daemon's configuration (``follow``) and the ``mirrord forward`` process (``run``).

Importing this package loads nothing heavy: libxdp is loaded by ``mirrord.forwarder.binding``
(through the compiled module) when it is imported, never here.
"""
