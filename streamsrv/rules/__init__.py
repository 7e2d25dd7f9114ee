"""Rules over tracks: zones, tripwires, loitering, and the per-camera engine that turns them into events."""

from streamsrv.rules.engine import RuleEngine, RuleOutput

__all__ = ["RuleEngine", "RuleOutput"]
