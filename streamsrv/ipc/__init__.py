"""Inter-process hand-off: shared-memory frame rings."""
