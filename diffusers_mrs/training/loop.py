"""The training loop's bookkeeping: epochs, what follows each optimiser step (EMA, counters,
logging, validation and checkpoint decisions), wall-clock marks and running means kept on
the device, so that the per-step loop reads nothing back.

:class:`TrainingLoop` is the part of :class:`~.trainer.Trainer` that runs between the
steps; every decision in it is the same on every process without communication (steps, or
the main process's clock shared at logging steps).
"""

from __future__ import annotations

import math
import time
from typing import Any

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


class TrainingLoop:
    """Epochs and the work after each optimiser step, for :class:`~.trainer.Trainer` (which
    provides the state, the prepared objects, ``train_step``, ``validate``, ``checkpoint``)."""

    def _progress_bar(self, tqdm: Any) -> Any:
        """Steps out of ``max_train_steps``; for a time-budgeted run (``max_minutes``), the
        percentage of the budget spent (steps or minutes, whichever ends the run first)."""
        cfg, acc = self.config, self.accelerator
        common = {"desc": "train", "disable": not acc.is_local_main_process, "dynamic_ncols": True}
        if cfg.max_minutes is None:
            return tqdm(total=cfg.max_train_steps, initial=self.state.step, unit="step", **common)
        fmt = "{l_bar}{bar}| {n:.1f}/{total:.0f}% [{elapsed}<{remaining}{postfix}]"
        return tqdm(total=100.0, initial=100.0 * self.progress, unit="%", bar_format=fmt, **common)

    def _advance_bar(self) -> None:
        if self.config.max_minutes is None:
            self._bar.update(1)
        else:
            self._bar.update(min(100.0, 100.0 * self.progress) - self._bar.n)

    def _run_epoch(self) -> bool:
        """One pass over the data (from where a resumed run stopped); True when training ends."""
        acc, state = self.accelerator, self.state
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(state.epoch)
        skip = state.batch_in_epoch
        loader = acc.skip_first_batches(self.dataloader, skip) if skip else self.dataloader
        for batch_i, batch in enumerate(loader, start=skip):
            self._means.add(self.train_step(*batch))
            state.batch_in_epoch = batch_i + 1
            if acc.sync_gradients and self._after_optimizer_step():
                return True
        if state.batch_in_epoch:  # (a checkpoint at the epoch's end already moved on)
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        return False

    def _after_optimizer_step(self) -> bool:
        """EMA, counters, logging, validation and checkpoints; True when training ends.
        Every decision here is the same on every process without communication (steps, or
        the clock :meth:`_clock_time` shares at logging steps)."""
        cfg, state, clock = self.config, self.state, self._clock
        if self.ema is not None:
            self.ema.step(self.accelerator.unwrap_model(self.unet).parameters())
        state.step += 1
        last = state.step >= cfg.max_train_steps
        logging = state.step % cfg.log_every == 0 or last
        now = time.time()
        state.train_seconds = clock.local_spent(now)
        clock.spent = self._clock_time(now, share=logging)
        self._update_progress()
        self._advance_bar()
        if logging:
            self._log_training()
        out_of_time = cfg.max_minutes is not None and self.progress >= 1.0
        want_val = due(state.step, cfg.validation_steps, clock.spent - clock.last_val,
                       cfg.validation_minutes)
        want_ckpt = due(state.step, cfg.checkpointing_steps, clock.spent - clock.last_ckpt,
                        cfg.checkpointing_minutes)
        if want_val and not last:
            self.validate()
            clock.last_val = self._clock_time(time.time(), share=True)
        if want_ckpt or last or out_of_time:
            self.checkpoint()
            clock.last_ckpt = self._clock_time(time.time(), share=True)
        if out_of_time and not last:
            self.accelerator.print(f"max_minutes spent at step {state.step}")
        return last or out_of_time

    def _log_training(self) -> None:
        """The mean loss terms since the last log line over all processes (read back here,
        once), the learning rate and the seconds per step."""
        acc = self.accelerator
        names, means = self._means.take()
        values = {}
        if means is not None:
            values = dict(zip(names, acc.gather(means[None]).mean(0).tolist(), strict=True))
        lr = self.lr_scheduler.get_last_lr()[0]
        sec_per_step = self._clock.seconds_per_step(self.state.step)
        self._bar.set_postfix(step=self.state.step, loss=f"{values.get('loss', math.nan):.4g}",
                              lr=f"{lr:.2e}", s_per_step=f"{sec_per_step:.2f}")
        acc.log({**values, "lr": lr, "elapsed_s": self.state.train_seconds,
                 "sec_per_step": sec_per_step}, step=self.state.step)

    def _clock_time(self, now: float, share: bool) -> float:
        """Seconds of training the run has spent at ``now``, as every decision uses them:
        this process's own, except with several processes and time-based options, where
        they are the main process's, broadcast when ``share`` (logging steps, after
        validation and checkpoints) and otherwise those of the last broadcast, so that
        every process decides alike."""
        from accelerate.utils import broadcast

        acc, clock = self.accelerator, self._clock
        local = clock.local_spent(now)
        if acc.num_processes == 1 or not self._timed:
            return local
        if not share:
            return clock.spent
        t = torch.tensor([local], dtype=torch.float64, device=acc.device)
        return float(broadcast(t, from_process=0).item())

    def _update_progress(self) -> None:
        cfg = self.config
        frac = self.state.step / cfg.max_train_steps
        if cfg.max_minutes:
            frac = max(frac, self._clock.spent / (60.0 * cfg.max_minutes))
        self.progress = frac

    def _finished(self) -> bool:
        cfg = self.config
        return self.state.step >= cfg.max_train_steps or (
            cfg.max_minutes is not None and self.progress >= 1.0)
