"""Tasks: gymnasium environments with fixed thresholds, budgets and evaluation settings."""
from envs.tasks import TASKS, TIERS, Task, get_task, tasks_in_tier

__all__ = ["TASKS", "TIERS", "Task", "get_task", "tasks_in_tier"]
