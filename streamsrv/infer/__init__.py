"""Batched detection: backends behind one protocol, letterbox pre-processing, NMS post-processing."""

import os

# The inference process shares the CPU with decoder processes. OpenMP's default is to spin waiting threads,
# which under any contention made YOLOv8s 7-10x slower here (0.2 s/frame became 1.8-3 s). Passive waiting
# sleeps instead. It must be set before torch loads its OpenMP runtime, hence here; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
