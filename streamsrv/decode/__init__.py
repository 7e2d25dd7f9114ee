"""Decoding: camera sources and the per-camera decoder process."""
