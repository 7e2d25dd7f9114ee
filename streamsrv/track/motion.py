"""ByteTrack's Kalman prediction over the time that really passed between processed frames.

ByteTrack predicts one fixed step per frame, with motion noise tuned on 30 fps video. At 5 fps a step is six times
as long: a person moves six times as far while the filter still expects a 30 fps step's uncertainty, so its velocity
is learnt slowly and predicted boxes trail the person. Here a step is measured: ``dt`` in units of a 30 fps frame,
the motion matrix moves ``dt`` of those, and the process noise (a random walk) grows with ``dt``. A frame dropped
on the way (latest-frame-wins) is then one longer step, not a step of the usual length.

Example:
    >>> import numpy as np
    >>> mean = np.array([[100.0, 50, 0.5, 80, 3, 0, 0, 0]])  # moving 3 px per 30 fps frame
    >>> float(predict(mean, np.eye(8)[None], dt=6.0, weights=(1 / 20, 1 / 160))[0][0, 0])
    118.0
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

REFERENCE_FPS = 30.0  # the frame rate ByteTrack's motion noise was tuned at (MOT17)


def predict(mean: F64, covariance: F64, dt: float, weights: tuple[float, float]) -> tuple[F64, F64]:
    """Predict ``(n, 8)`` xyah+velocity states and their ``(n, 8, 8)`` covariances ``dt`` reference frames ahead;
    ``weights`` are the filter's position and velocity noise per box height."""
    motion = np.eye(8)
    motion[:4, 4:] = dt * np.eye(4)
    h = mean[:, 3]
    pos, vel = weights[0] * h, weights[1] * h
    std = np.stack([pos, pos, np.full_like(h, 1e-2), pos, vel, vel, np.full_like(h, 1e-5), vel], axis=1)
    noise = np.zeros_like(covariance)
    idx = np.arange(8)
    noise[:, idx, idx] = np.square(std) * dt
    return mean @ motion.T, motion @ covariance @ motion.T + noise
