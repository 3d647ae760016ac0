"""mirrord: a port-mirroring sidecar for user-space (AF_XDP) forwarders."""

__version__ = "0.1.0"
