"""`--benchmark-timer bench.clock.training_timer`, as it has always been named: bench/referee/clock.py."""
from bench.referee.clock import DEFAULT_TIMER, SESSION, TrainingClock, training_timer

__all__ = ["DEFAULT_TIMER", "SESSION", "TrainingClock", "training_timer"]
