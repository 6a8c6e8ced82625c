"""The training loop, as a :class:`Trainer` on :class:`accelerate.Accelerator`.

``Trainer(config).run()`` trains a network (``config.architecture``: an
:class:`~diffusers_mrs.MRUNet2DModel` or an :class:`~diffusers_mrs.MRNAFNetModel`, see
:mod:`.architectures`) on ``(lq, gt)`` pairs, ``lq`` being the MR diffusion's ``mu``:
:meth:`Trainer.setup` builds everything,
:meth:`Trainer.train_step` takes one optimiser step, :meth:`Trainer.validate` restores the
held-out crops through the pipeline, :meth:`Trainer.checkpoint` saves a resumable state and
:meth:`Trainer.finish` writes the pipeline folder. accelerate does the rest: mixed precision,
gradient accumulation, multi-process data sharding and trackers (``report_to``). Checkpoints
(folders ``OUTPUT/checkpoints/checkpoint_<n>``, numbered and rotated as accelerate's
``ProjectConfiguration(total_limit=...)`` has them) hold only safetensors and JSON, written
and read by :mod:`.checkpoint` and :mod:`.run_state` rather than accelerate's
``save_state``, which pickles, so a checkpoint resumes on another machine; checkpoints of
earlier versions are read with ``torch.load(weights_only=True)`` and rewritten that way.

The loss is computed by calling the module accelerate prepared (a degradation-aware model's
``forward`` returns its loss terms), so DDP averages the gradients over the processes and
mixed precision's autocast applies. Validation runs the network as the saved pipeline does:
without that autocast, in float32. The per-step loop reads nothing back from the device:
losses are summed on it and read at logging steps.

Multi-process: on GPUs ``accelerate launch --num_processes N``; on a CPU-only machine
``accelerate launch --multi_gpu --num_processes N`` (or ``torchrun``), which selects gloo DDP
on the CPU. Time-based decisions (``max_minutes``, ``validation_minutes``,
``checkpointing_minutes``) follow the main process's clock, broadcast at logging steps (every
``log_every`` steps) and after validations and checkpoints only, so with several processes
they take effect at those steps; step-based ones need no communication.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..data import DegradedPatchDataset, PairedFolderDataset
from ..restore_settings import set_tf32
from .architectures import check_architecture, describe_network, network_class, network_kwargs
from .checkpoint import (
    TrainState,
    check_checkpoint,
    checkpoint_number,
    list_checkpoints,
    new_checkpoint_folder,
    read_trainer_state,
    resolve_checkpoint,
    save_trainer_state,
    upgrade_checkpoint,
)
from .config import TrainingConfig
from .degradation_aware import (
    DegradationAwareModel,
    load_pretrained_encoder,
    load_pretrained_unet,
    make_model,
    type_weights,
)
from .device import pin_host_memory
from .extras import require_training_packages
from .loop import Clock, RunningMeans, TrainingLoop
from .objective import (
    PREDICTION_TYPES,
    check_loss_names,
    check_sampler_start_fraction,
    check_x0_weight_cap,
    denoising_loss,
)
from .photo_data import is_photos_spec, training_images, validation_set
from .run_state import load_run_state, save_run_state
from .trackers import flat_config, make_trackers
from .validation import evaluate, without_autocast

__all__ = ["Trainer", "list_checkpoints", "resolve_checkpoint", "train"]



def _same_network(saved: dict, built: dict, network_class: type) -> bool:
    """Whether a run's recorded network (``network.json``) is the one these options build.
    A setting the record lacks (added to the network class after the run started) counts as
    equal when the network is built with that setting's default."""
    import inspect

    if saved.get("class") != built.get("class"):
        return False
    defaults = {name: p.default for name, p in
                inspect.signature(network_class.__init__).parameters.items()}
    config = dict(saved.get("config", {}))
    for key, value in built.get("config", {}).items():
        if key not in config and key in defaults and defaults[key] == value:
            config[key] = value
    return config == built.get("config")

class Trainer(TrainingLoop):
    """Trains (or resumes training) an MR diffusion restoration model; see the module doc.

    Args:
        config: the options (see :class:`TrainingConfig`).
        model_cls: the network class (default: that of ``config.architecture``), built with
            :func:`~.architectures.network_kwargs` (``in_channels``/``out_channels`` 3, the
            U-Net's ``nf``/``depth``, the architecture's defaults updated by ``unet_kwargs``).
        scheduler_cls: the scheduler class (default :class:`diffusers_mrs.MRSamplerScheduler`).
    """

    def __init__(self, config: TrainingConfig, model_cls: type | None = None,
                 scheduler_cls: type | None = None) -> None:
        if config.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}")
        if config.max_train_steps < 1:
            raise ValueError(f"max_train_steps must be at least 1, got {config.max_train_steps}")
        check_loss_names(config.loss_type, config.loss_weighting)
        check_sampler_start_fraction(config.sampler_start_fraction)
        check_x0_weight_cap(config.x0_weight_cap, config.loss_space)
        check_architecture(config, model_cls)
        require_training_packages()
        if model_cls is None:
            model_cls = network_class(config.architecture)
        if scheduler_cls is None:
            from ..scheduling_mr_sampler import MRSamplerScheduler as scheduler_cls
        self.config, self.model_cls, self.scheduler_cls = config, model_cls, scheduler_cls
        self.out_dir = Path(config.output_dir)
        self.state = TrainState()
        self.progress = 0.0  # max(step / max_train_steps, time / max_minutes), on all processes
        self._means = RunningMeans()  # the loss terms since the last log line, on the device
        # Time-based options make every process follow the main process's clock.
        self._timed = any(v is not None for v in (
            config.max_minutes, config.validation_minutes, config.checkpointing_minutes))

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Accelerator, network, scheduler, EMA, optimiser, LR schedule, data; then resume."""
        from accelerate.utils import set_seed

        cfg = self.config
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        self.accelerator = self._make_accelerator()
        if self.accelerator.device.type == "cuda":  # TF32 exists on CUDA devices only
            set_tf32(cfg.allow_tf32)
        self.resume_path = self._checkpoint_to_resume()
        set_seed(cfg.seed)  # identical initial weights on every process
        self.unet = self._make_unet()
        self._record_network()
        self.scheduler = self._make_scheduler()
        self.num_parameters = sum(p.numel() for p in self.unet.parameters())
        self.ema = self._make_ema()
        self.optimizer = torch.optim.AdamW(
            self.unet.parameters(), lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay)
        self.lr_scheduler = self._make_lr_scheduler()
        self.dataset, dataloader = self._make_data()
        self.unet, self.optimizer, self.dataloader, self.lr_scheduler = self.accelerator.prepare(
            self.unet, self.optimizer, dataloader, self.lr_scheduler)
        self._resume()
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        self.val_data = validation_set(cfg.train_data, cfg.validation_kinds,
                                       cfg.validation_crop, cfg.seed)
        self.accelerator.init_trackers("train", config=flat_config(cfg.to_dict()))

    def _make_accelerator(self) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

        cfg = self.config
        # Several processes but no GPU: accelerate sets up gloo DDP only when told it is on CPU.
        multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.pin_memory = pin_host_memory(cfg.cpu or multi_cpu)
        project = ProjectConfiguration(
            project_dir=str(self.out_dir), logging_dir=str(self.out_dir / "logs"),
            automatic_checkpoint_naming=True, total_limit=cfg.checkpoints_total_limit)
        return Accelerator(
            cpu=cfg.cpu or multi_cpu, mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            project_config=project,
            dataloader_config=DataLoaderConfiguration(non_blocking=self.pin_memory),
            log_with=make_trackers(cfg.report_to, "train", self.out_dir / "logs") or None)

    def _checkpoint_to_resume(self) -> Path | None:
        """The checkpoint ``resume_from_checkpoint`` names (None: start fresh), checked
        before any work: a pickle in it that needs more than tensors, numbers and numpy
        arrays is refused with an error naming the file (:func:`.checkpoint.check_checkpoint`)."""
        resume = self.config.resume_from_checkpoint
        path = resolve_checkpoint(resume, self.out_dir / "checkpoints") if resume else None
        if path is not None:
            check_checkpoint(path)
        return path

    def _network(self) -> torch.nn.Module:
        """The restoration network alone (without a degradation encoder)."""
        model = self.accelerator.unwrap_model(self.unet)
        return model.unet if isinstance(model, DegradationAwareModel) else model

    def _record_network(self) -> None:
        """Check that a resumed run rebuilt the network its checkpoints hold (class and
        config, as recorded in ``OUTPUT/network.json``), then record the options and the
        network (``training_config.json``, ``network.json``)."""
        record, network = self.out_dir / "network.json", describe_network(self._network())
        network = json.loads(json.dumps(network))
        if self.resume_path is not None and record.is_file():
            saved = json.loads(record.read_text())
            if not _same_network(saved, network, type(self._network())):
                raise ValueError(
                    f"{self.out_dir} holds checkpoints of a {saved['class']} {saved['config']};"
                    f" these options build a {network['class']} {network['config']}: pass the"
                    " run's --architecture/--nf/--depth/--unet_kwargs, or a new --output_dir")
        if self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "training_config.json").write_text(
                json.dumps(self.config.to_dict(), indent=2) + "\n")
            record.write_text(json.dumps(network, indent=2) + "\n")

    def _make_scheduler(self) -> Any:
        """The scheduler with the run's training settings (T, theta schedule, max_sigma, eps,
        target); fine-tuning a pipeline folder keeps its sampler settings (solver order,
        time grid, ...), so the saved pipeline samples as the one it started from."""
        cfg = self.config
        training = {"num_train_timesteps": cfg.num_train_timesteps,
                    "theta_schedule": cfg.theta_schedule, "max_sigma": cfg.max_sigma,
                    "eps": cfg.eps, "prediction_type": cfg.prediction_type}
        init = Path(cfg.init_weights) if cfg.init_weights else None
        if init is not None and (init / "scheduler").is_dir():
            return self.scheduler_cls.from_pretrained(str(init), subfolder="scheduler", **training)
        return self.scheduler_cls(**training)

    @property
    def degradation_types(self) -> list[str]:
        """The encoder's classes: ``kinds`` in order of first appearance."""
        return list(dict.fromkeys(self.config.kinds))

    def _make_unet(self) -> torch.nn.Module:
        """The network (from ``init_weights`` or new); degradation-aware runs pair it with a
        degradation encoder (:class:`DegradationAwareModel`)."""
        cfg = self.config
        if cfg.init_weights:
            unet = load_pretrained_unet(self.model_cls, cfg.init_weights)
        else:
            unet = self.model_cls(**network_kwargs(cfg))
        if not cfg.degradation_aware:
            return unet
        self.type_weights = type_weights(self.degradation_types, cfg.type_loss_weights).to(
            self.accelerator.device)
        encoder = None
        if cfg.init_weights:
            encoder = load_pretrained_encoder(cfg.init_weights, self.degradation_types)
        return make_model(unet, self.degradation_types, cfg.context_dim, cfg.encoder_width,
                          encoder=encoder)

    def _make_ema(self) -> Any:
        from diffusers.training_utils import EMAModel

        if not self.config.use_ema:
            return None
        single = not isinstance(self.unet, DegradationAwareModel)
        return EMAModel(self.unet.parameters(), decay=self.config.ema_decay, use_ema_warmup=True,
                        power=self.config.ema_power, model_cls=self.model_cls if single else None,
                        model_config=self.unet.config if single else None)

    def _make_lr_scheduler(self) -> Any:
        """diffusers' LR schedule; with ``max_minutes`` a cosine/linear decay that follows
        :attr:`progress`, so it ends whichever budget (steps or time) runs out first."""
        from diffusers.optimization import get_scheduler

        cfg = self.config
        if cfg.max_minutes is not None and cfg.lr_scheduler in ("cosine", "linear"):
            return torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._timed_lr_factor)
        name = cfg.lr_scheduler
        if name == "constant" and cfg.lr_warmup_steps > 0:
            name = "constant_with_warmup"
        n = self.accelerator.num_processes
        return get_scheduler(name, optimizer=self.optimizer,
                             num_warmup_steps=cfg.lr_warmup_steps * n,
                             num_training_steps=cfg.max_train_steps * n)

    def _timed_lr_factor(self, _: int) -> float:
        cfg = self.config
        warm = min(1.0, (self.state.step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else 1.0
        p = min(1.0, self.progress)
        if cfg.lr_scheduler == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * p))
        return warm * (1.0 - p)

    def _make_data(self) -> tuple[Any, torch.utils.data.DataLoader]:
        cfg = self.config
        micro = cfg.train_batch_size * self.accelerator.num_processes
        if cfg.train_data == "bundled" or is_photos_spec(cfg.train_data):
            images, degrader = training_images(cfg.train_data, cfg.realistic_ranges)
            dataset: Any = DegradedPatchDataset(
                images, patch_size=cfg.patch_size,
                kinds=tuple(cfg.kinds), length=micro * cfg.gradient_accumulation_steps * 1000,
                seed=cfg.seed, randomize=cfg.randomize_degradations,
                labels=self.degradation_types if cfg.degradation_aware else None,
                degrader=degrader)
        elif cfg.degradation_aware:
            raise ValueError("degradation_aware trains on photos degraded on the fly "
                             "(train_data=bundled or photos)")
        else:
            dataset = PairedFolderDataset(cfg.train_data, patch_size=cfg.patch_size,
                                          augment=True, seed=cfg.seed)
        if len(dataset) < micro:
            raise ValueError(
                f"the dataset has {len(dataset)} items, fewer than one global batch ({micro})")
        # shuffle=False: items are already random functions of (seed, epoch, index); the
        # loader's own generator (for its workers' seeds) keeps each new pass over the data
        # from drawing from the global RNG, so a resumed run draws the noise an uninterrupted
        # one does; pinned batches (on CUDA) reach the device by asynchronous copies
        self.loader_generator = torch.Generator().manual_seed(cfg.seed)  # in checkpoints
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train_batch_size,
                                             shuffle=False, drop_last=True,
                                             num_workers=cfg.dataloader_num_workers,
                                             pin_memory=self.pin_memory,
                                             generator=self.loader_generator)
        return dataset, loader

    def _param_names(self) -> list[str]:
        """Names of the trained parameters, in the order the optimiser and the EMA hold them."""
        return [name for name, _ in self.accelerator.unwrap_model(self.unet).named_parameters()]

    def _resume(self) -> None:
        """Load the checkpoint (upgraded first when an earlier version wrote it): network,
        optimiser, LR schedule, random states (:mod:`.run_state`), then the counters and
        EMA; number new checkpoints after every existing one (none is overwritten)."""
        from accelerate.utils import set_seed

        acc, ckpt_root = self.accelerator, self.out_dir / "checkpoints"
        path = self.resume_path
        if self.config.resume_from_checkpoint and path is None:
            acc.print("resume_from_checkpoint='latest': no checkpoint yet, starting fresh")
        if path is None:
            set_seed(self.config.seed + acc.process_index)  # different noise per process
        else:
            acc.print(f"resuming from {path}")
            if acc.is_main_process:
                for note in upgrade_checkpoint(path, self._param_names()):
                    acc.print(note)
            acc.wait_for_everyone()
            if not load_run_state(path, acc, self.unet, self.optimizer, self.lr_scheduler,
                                  self.loader_generator):
                print(f"{path} holds no random states of process {acc.process_index}: "
                      "seeding them anew")
                set_seed(self.config.seed + acc.process_index)
            counters, ema_state = read_trainer_state(path, self._param_names())
            self.state.load_state_dict(counters)
            if self.ema is not None:
                if ema_state is None:
                    raise ValueError(f"{path} holds no EMA weights (the run kept none): "
                                     "resume with --use_ema false")
                self.ema.load_state_dict(ema_state)
        existing = list_checkpoints(ckpt_root)
        if existing:
            acc.project_configuration.iteration = checkpoint_number(existing[-1]) + 1

    # ------------------------------------------------------------------ steps
    def _loss_terms(self, lq: torch.Tensor, gt: torch.Tensor,
                    labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The batch's ``loss`` (and, degradation-aware, its parts), through the prepared
        module: the plain network's calls, or the degradation-aware model's ``forward``."""
        cfg = self.config
        options = {"timestep_sampling": cfg.timestep_sampling, "loss_space": cfg.loss_space,
                   "loss_type": cfg.loss_type, "loss_weighting": cfg.loss_weighting,
                   "sampler_start_fraction": cfg.sampler_start_fraction,
                   "x0_weight_cap": cfg.x0_weight_cap}
        if labels is None:
            return {"loss": denoising_loss(self.unet, self.scheduler, lq, gt, **options)}
        return self.unet(lq, gt, labels, self.scheduler, self.type_weights,
                         cfg.classifier_loss_weight, **options)

    def train_step(self, lq: torch.Tensor, gt: torch.Tensor,
                   labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Forward, backward and (when gradients sync) clip, optimiser and LR steps; the loss
        terms, detached, on the device (reading them is the caller's choice)."""
        cfg, acc = self.config, self.accelerator
        with acc.accumulate(self.unet):
            terms = self._loss_terms(lq, gt, labels)
            acc.backward(terms["loss"])
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(self.unet.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {name: value.detach() for name, value in terms.items()}

    def validate(self) -> dict[str, float] | None:
        """Validation PSNRs with the EMA weights (main process; logged to the trackers), the
        network run as the saved pipeline runs it (float32, without mixed precision's
        autocast)."""
        cfg, acc = self.config, self.accelerator
        metrics = None
        if acc.is_main_process:
            model = acc.unwrap_model(self.unet)
            if self.ema is not None:
                self.ema.store(model.parameters())
                self.ema.copy_to(model.parameters())
            unet, encoder = ((model.unet, model.encoder)
                             if isinstance(model, DegradationAwareModel) else (model, None))
            with without_autocast(unet):
                metrics = evaluate(unet, self.scheduler, *self.val_data,
                                   num_inference_steps=cfg.validation_num_inference_steps,
                                   seed=cfg.seed, degradation_encoder=encoder)
            if self.ema is not None:
                self.ema.restore(model.parameters())
            acc.print(f"[val step {self.state.step}] PSNR in {metrics['psnr_in']:.2f} dB -> "
                      f"MRS@{cfg.validation_num_inference_steps} {metrics['psnr_out']:.2f} dB "
                      f"(x0 at T: {metrics['psnr_x0_T']:.2f} dB)")
        acc.wait_for_everyone()
        if metrics is not None:
            acc.log({f"val/{k}": v for k, v in metrics.items()}, step=self.state.step)
        return metrics

    def checkpoint(self) -> None:
        """A new checkpoint folder (keeping the newest ``checkpoints_total_limit``): network,
        optimiser, LR schedule, random states (:mod:`.run_state`), then the counters and EMA
        (``trainer_state.json``, written last, and ``ema.safetensors``); no pickle."""
        acc = self.accelerator
        if self.state.batch_in_epoch >= len(self.dataloader):
            self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
        project = acc.project_configuration
        folder = new_checkpoint_folder(self.out_dir / "checkpoints", project.iteration,
                                       project.total_limit, acc.is_main_process)
        acc.wait_for_everyone()
        folder.mkdir(parents=True, exist_ok=True)
        save_run_state(folder, acc, self.unet, self.optimizer, self.lr_scheduler,
                       self.loader_generator)
        project.iteration += 1
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_trainer_state(folder, self.state, self.ema, self._param_names())
        acc.wait_for_everyone()

    def finish(self, final: dict[str, float] | None) -> Path:
        """The pipeline folder ``OUTPUT/pipeline`` (EMA weights, float32, safetensors) and
        ``final_metrics.json``; ends the trackers."""
        acc = self.accelerator
        if acc.is_main_process and self.config.save_pipeline:
            self._save_pipeline(self.out_dir / "pipeline")
        if acc.is_main_process:
            summary = {"step": self.state.step, "train_seconds": self.state.train_seconds,
                       "num_parameters": self.num_parameters, "validation": final}
            (self.out_dir / "final_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        acc.wait_for_everyone()
        acc.end_training()
        return self.out_dir

    def _save_pipeline(self, out: Path) -> None:
        import copy

        from ..pipelines import MRRestorationPipeline

        model = copy.deepcopy(self.accelerator.unwrap_model(self.unet)).float().cpu()
        if self.ema is not None:
            self.ema.copy_to(model.parameters())
        model.eval()
        parts = ({"unet": model.unet, "degradation_encoder": model.encoder}
                 if isinstance(model, DegradationAwareModel) else {"unet": model})
        MRRestorationPipeline(scheduler=self.scheduler, **parts).save_pretrained(
            out, safe_serialization=True)
        self.accelerator.print(f"saved pipeline to {out}")

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """:meth:`setup`, the loop over epochs, final validation and :meth:`finish`."""
        from tqdm.auto import tqdm

        self.setup()
        cfg, acc = self.config, self.accelerator
        acc.print(
            f"training {type(acc.unwrap_model(self.unet)).__name__} "
            f"({self.num_parameters / 1e6:.3f} M params, {cfg.prediction_type}) for "
            f"{cfg.max_train_steps} steps, {acc.num_processes} process(es), "
            f"from step {self.state.step}")
        self._clock = Clock(time.time(), self.state.train_seconds, self.state.step)
        self._update_progress()
        self._bar = self._progress_bar(tqdm)
        self.unet.train()
        done = self._finished()
        while not done:
            done = self._run_epoch()
        self._bar.close()
        return self.finish(self.validate())


def train(config: TrainingConfig, model_cls: type | None = None,
          scheduler_cls: type | None = None) -> Path:
    """Train (or resume) a model: ``Trainer(config, model_cls, scheduler_cls).run()``.

    Returns:
        The output directory: ``training_config.json``, ``logs/`` (trackers; with the
        built-in ``jsonl`` tracker ``logs/train/metrics.jsonl``), ``checkpoints/`` and, at the
        end, ``pipeline/`` (EMA weights) and ``final_metrics.json``.
    """
    return Trainer(config, model_cls, scheduler_cls).run()
