"""streamsrv: a multi-camera streaming video analytics server."""

__version__ = "0.1.0"
