"""Bookkeeping of the training loop: wall-clock marks, periodic tasks and running means
kept on the device (so the per-step loop reads nothing back)."""

from __future__ import annotations

import torch


def due(step: int, every_steps: int | None, seconds_since: float,
        every_minutes: float | None) -> bool:
    """Whether a periodic task is due: every N steps and/or every M minutes since it ran."""
    by_steps = bool(every_steps) and step % every_steps == 0
    by_time = every_minutes is not None and seconds_since >= 60 * every_minutes
    return by_steps or by_time


class RunningMeans:
    """Sums of named scalar tensors between two log lines, added on their device (no host
    read-back); :meth:`take` gives the means as one ``[K]`` tensor and starts over."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1

    def take(self) -> tuple[list[str], torch.Tensor | None]:
        """The names and the means since the last call (None when nothing was added)."""
        if not self.sums:
            return [], None
        names = list(self.sums)
        means = torch.stack([self.sums[n] for n in names]) / self.count
        self.sums, self.count = {}, 0
        return names, means


class Clock:
    """Wall-clock marks of a run, in the seconds of training it has spent over all resumes
    (``spent``; with several processes the main process's, see ``Trainer._clock_time``)."""

    def __init__(self, start: float, seconds_before: float, step: int) -> None:
        self.start, self.seconds_before = start, seconds_before
        self.spent = seconds_before
        self.last_val = self.last_ckpt = self.last_log = seconds_before
        self.step_at_last_log = step

    def local_spent(self, now: float) -> float:
        """Seconds of training spent by this process at ``now``."""
        return self.seconds_before + (now - self.start)

    def seconds_per_step(self, step: int) -> float:
        """Mean seconds per step since the last call."""
        sps = (self.spent - self.last_log) / max(step - self.step_at_last_log, 1)
        self.last_log, self.step_at_last_log = self.spent, step
        return sps
