"""Batched detection: backends behind one protocol, letterbox pre-processing, NMS post-processing."""
