"""How training stops early: an error that prevents or ends it, or Ctrl-C with a checkpoint saved."""
from __future__ import annotations

from components.errors import Interrupted, ProjectError


class TrainingError(ProjectError):
    """Training cannot start or must stop; the message says why."""


class TrainingInterrupted(Interrupted):
    """Training was interrupted (Ctrl-C) and a checkpoint saved; the message says which."""

    def line(self) -> str:
        return f"interrupted: {self}; continue with --resume"
