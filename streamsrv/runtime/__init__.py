"""Runtime: the supervisor that owns processes, per-camera state and stats."""
