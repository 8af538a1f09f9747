"""The training loop: SGD (momentum 0.9, weight decay 5e-4; or AdamW), linear warmup then multi-step LR,
AMP on CUDA, DDP under ``torchrun``, a guard that skips non-finite steps, atomic checkpoints
every N iterations with exact resume, a tqdm bar and JSON-lines logs.

Exact resume: the batches of iteration ``i`` depend only on ``(seed, i)``
(:class:`~ssd_fast.data.IterationBatchSampler`, per-sample seeded augmentation), and the
checkpoint holds the model, optimizer, scheduler, grad scaler, torch RNG states and the
iteration, so ``resume`` continues as if never stopped (bitwise on CPU, same thread count).
"""
import contextlib
import math
import os
import warnings
from typing import Dict, List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import load_training_checkpoint, restore_training, save_training_checkpoint
from ..data import Augmented, IterationBatchSampler, TrainTransform, collate, normalize_image
from ..models import MultiBoxLoss
from ..outputs import remove_stale_temporaries, run_lock
from .config import TrainConfig
from .distributed import world
from .hooks import Hook, MetricsLog, PeriodicCheckpoint, ProgressBar


def _fused(device: torch.device) -> Dict:
    """AdamW's fused kernel (one pass over all parameters, CPU and CUDA): ~5% of a small
    model's CPU step; the for-loop version is the fallback elsewhere."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast
    (``TrainConfig.amp``) speeds training up; elsewhere oneDNN emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def lr_factor(it: int, cfg: TrainConfig) -> float:
    """LR multiplier at iteration ``it``: linear warmup from ``warmup_factor`` to 1 over
    ``warmup_iters``, then ``gamma`` per milestone passed ("multistep") or half a cosine down to
    0 at ``iterations`` ("cosine", milestones ignored)."""
    if it < cfg.warmup_iters:
        return cfg.warmup_factor + (1 - cfg.warmup_factor) * it / cfg.warmup_iters
    if cfg.schedule == "cosine":
        span = max(1, cfg.iterations - cfg.warmup_iters)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (it - cfg.warmup_iters) / span)))
    return cfg.gamma ** sum(it >= m for m in cfg.milestones)


def batch_size_problem(model, batch_size: int) -> Optional[str]:
    """Why ``model`` cannot train at ``batch_size`` per process, None if it can. BatchNorm in
    training normalizes each channel over the batch and the map: a layer that sees a 1x1 map at
    batch 1 has one value per channel, nothing to normalize over (torch raises "Expected more
    than 1 value per channel"). Found with one forward of a blank image in eval mode."""
    norms = {m: name for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    if batch_size > 1 or not norms:
        return None
    single = []

    def seen(module, inputs):
        if inputs[0][0, 0].numel() == 1:
            single.append(norms[module])
    hooks = [m.register_forward_pre_hook(seen) for m in norms]
    was_training = model.training
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, *model.image_size, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if not single:
        return None
    return (f"BatchNorm layer {single[0]!r} of {getattr(model, 'arch', 'the model')} sees a 1x1 "
            f"map, one value per channel at batch 1, which it cannot normalize in training; use a batch "
            f"size of 2 or more")


class NonFiniteTraining(RuntimeError):
    """Training cannot go on: TrainConfig.max_skipped_in_a_row non-finite steps in a row."""


class Trainer:
    """``Trainer(model, dataset, cfg, out_dir, device).train(resume=None)``.

    :meth:`train` runs :meth:`step` (load -> loss -> backward -> step) once per iteration and
    the rest as hooks around it (:meth:`hooks`). ``out_dir`` receives ``checkpoint.pt`` (every
    ``checkpoint_every`` iterations, unless the last step was skipped or a weight is not finite,
    and at the end; written atomically) and ``log.jsonl`` (one JSON object per ``log_every``
    iterations: iteration, loss, loc_loss, conf_loss, lr, img_per_s, skipped_steps); the caller
    writes ``model.pt`` (the final weights only). Only rank 0 writes, holding ``out_dir`` (:func:`ssd_fast.outputs.run_lock`)
    for the whole run: a second run into it is refused with ``OutputError``, as is a write the
    disk refuses (full, read-only). ``ValueError`` at once if the model cannot train at
    ``cfg.batch_size`` (:func:`batch_size_problem`).
    """

    def __init__(self, model, dataset, cfg: TrainConfig, out_dir: Optional[str] = None, device="cpu"):
        self.cfg, self.out_dir, self.device = cfg, out_dir, torch.device(device)
        self.rank, self.world_size = world()
        self.model = model.to(self.device)
        problem = batch_size_problem(self.model, cfg.batch_size)
        if problem is not None:
            raise ValueError(f"batch_size {cfg.batch_size}: {problem}")
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.criterion = MultiBoxLoss.for_model(model).to(self.device)
        self.net = (DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None) if self.world_size > 1 else model)
        decay, no_decay = [], []
        for p in model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        # weight decay on conv weights only (not BN or biases), as in torchvision's references
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = (torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
                          else torch.optim.AdamW(groups, lr=cfg.lr, **_fused(self.device)))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: lr_factor(it, cfg))
        self.amp = cfg.amp if cfg.amp is not None else self.device.type == "cuda"
        # CUDA: fp16 autocast + loss scaling. CPU: bf16 autocast (same exponent range as fp32: no
        # scaling), worth it where oneDNN has native bf16 (AVX512-BF16 / AMX): ~1.6x on ssd_tiny
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        # uint8 batches, normalized in step(): a quarter of the bytes to collate and move
        self.transform = TrainTransform(model.image_size[0], cfg.expand_p, cfg.max_expand, cfg.crop,
                                        photometric=cfg.photometric, normalize=False)
        self.data = Augmented(dataset, self.transform, cfg.seed)
        self.iteration = 0
        self.skipped_steps = 0
        self.skipped_in_a_row = 0
        # what the hooks read (ssd_fast.engine.hooks), set by train()
        self.end, self.losses, self.lr, self.record, self.finished = cfg.iterations, None, cfg.lr, {}, False

    # -- checkpoints (the format: ssd_fast.checkpoint) --------------------------------------
    def save(self, path: str) -> None:
        """Write a training checkpoint of now to ``path`` (rank 0 only)."""
        if self.rank == 0:
            save_training_checkpoint(path, self.model, self.optimizer, self.scheduler, self.scaler, self.iteration,
                                     self.skipped_steps, self.cfg)

    def load(self, path: str) -> None:
        """Continue from the training checkpoint at ``path``: :meth:`restore` of
        :func:`ssd_fast.checkpoint.load_training_checkpoint` (``ValueError`` if it is not one,
        or not of this model's class count)."""
        self.restore(load_training_checkpoint(path, self.model.num_classes, map_location=self.device))

    def restore(self, ckpt: Dict) -> None:
        """Continue from a loaded training checkpoint (model of the same config): weights,
        optimizer, scheduler, scaler, RNG states, iteration and skipped steps."""
        self.iteration, self.skipped_steps = restore_training(ckpt, self.model, self.optimizer, self.scheduler,
                                                              self.scaler)

    # -- one step: load -> loss -> backward -> step -----------------------------------------
    def step(self, images, target) -> Optional[Dict[str, float]]:
        """One iteration: load -> loss -> backward -> step; returns the losses, or None when the
        step was skipped (non-finite loss or gradients on any rank). A skipped step leaves the
        model, its buffers (BatchNorm's running statistics, which the forward in train mode
        updates) and the optimizer exactly as they were. ``images``: uint8 pixels (normalized
        here, on the device) or already normalized floats."""
        images, boxes, labels = self._load(images, target)
        buffers = [b.detach().clone() for b in self.model.buffers()]  # restored if skipped
        loc_loss, conf_loss = self._loss(images, boxes, labels)
        loss = loc_loss + conf_loss
        if not (self._backward(loss) and self._optimizer_step()):
            return self._skip(buffers)
        self.skipped_in_a_row = 0
        return {"loss": loss.item(), "loc_loss": loc_loss.item(), "conf_loss": conf_loss.item()}

    def _load(self, images, target):
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = normalize_image(images)
        images = images.contiguous(memory_format=self.memory_format)
        return (images, target["boxes"].to(self.device, non_blocking=True),
                target["labels"].to(self.device, non_blocking=True))

    def _loss(self, images, boxes, labels):
        self.net.train()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            loc, conf = self.net(images)
        return self.criterion(loc, conf, boxes, labels)

    def _backward(self, loss) -> bool:
        """Gradients of ``loss``; False, none computed, if it is not finite on every rank."""
        self.optimizer.zero_grad(set_to_none=True)
        ok = torch.isfinite(loss.detach())
        if self.world_size > 1:
            ok = ok.float()
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
            ok = ok.bool()
        if not bool(ok):
            return False
        self.scaler.scale(loss).backward()
        return True

    def _optimizer_step(self) -> bool:
        """The update; False, none made and the gradients dropped, if a gradient is not finite."""
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
        if not math.isfinite(float(grad_norm)):
            if self.scaler.is_enabled():  # let the scaler see the overflow and lower its scale (it skips the step)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return True

    def _skip(self, buffers) -> None:
        """A skipped step: the buffers back as they were before its forward."""
        with torch.no_grad():
            for b, saved in zip(self.model.buffers(), buffers):
                b.copy_(saved)
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
        return None

    # -- the loop -----------------------------------------------------------------------------
    def healthy(self) -> bool:
        """Worth a checkpoint: the last step was not skipped and every weight and buffer is
        finite (else the previous checkpoint stays: the last good state)."""
        return self.skipped_in_a_row == 0 and all(
            bool(torch.isfinite(t).all()) for t in self.model.state_dict().values() if t.is_floating_point())

    def hooks(self) -> List[Hook]:
        """The hooks of a run (:mod:`ssd_fast.engine.hooks`): the metrics (``log.jsonl`` on
        rank 0), the progress bar (rank 0, ``cfg.progress``), the checkpoints (rank 0, with
        ``out_dir``)."""
        out = self.out_dir if self.rank == 0 else None
        hooks = [MetricsLog(os.path.join(out, "log.jsonl") if out else None)]
        if self.rank == 0 and self.cfg.progress:
            hooks.append(ProgressBar())
        if out:
            hooks.append(PeriodicCheckpoint(os.path.join(out, "checkpoint.pt"), self.cfg.checkpoint_every))
        return hooks

    def train(self, resume: Optional[str] = None, stop_at: Optional[int] = None) -> Dict:
        """Train up to ``cfg.iterations`` (or ``stop_at``, to simulate an interruption), from
        the training checkpoint ``resume`` if given. Returns the last logged record."""
        main = self.rank == 0
        with run_lock(self.out_dir) if main and self.out_dir else contextlib.nullcontext():
            if main and self.out_dir:  # what a run killed while writing left behind
                for name in ("checkpoint.pt", "model.pt"):
                    remove_stale_temporaries(os.path.join(self.out_dir, name))
            if resume:
                self.load(resume)
            self.end = min(self.cfg.iterations, stop_at) if stop_at is not None else self.cfg.iterations
            self._run(self._loader(), self.hooks())
        return self.record

    def _loader(self):
        """The batches of iterations ``iteration + 1 .. end`` (those of iteration ``i`` depend on
        ``(seed, i)`` only)."""
        sampler = IterationBatchSampler(len(self.data), self.cfg.batch_size, self.end, self.iteration, self.cfg.seed,
                                        rank=self.rank, world_size=self.world_size)
        return torch.utils.data.DataLoader(self.data, batch_sampler=sampler, collate_fn=collate,
                                           num_workers=self.cfg.workers, persistent_workers=False,
                                           pin_memory=self.device.type == "cuda")

    def _run(self, loader, hooks: List[Hook]) -> None:
        """The loop: each hook at each point (:mod:`ssd_fast.engine.hooks`), :meth:`step` between."""
        self.record, self.finished = {}, False
        for hook in hooks:
            hook.trainer = self
        try:
            for hook in hooks:
                hook.before_train()
            for images, target in loader:
                for hook in hooks:
                    hook.before_step()
                self.losses = self.step(images, target)
                self._count_iteration()
                for hook in hooks:
                    hook.after_step()
            self.finished = True
        finally:
            for hook in hooks:
                hook.after_train()

    def _count_iteration(self) -> None:
        """The step done: the run stopped if it was the last of ``cfg.max_skipped_in_a_row``
        skipped in a row (before it counts: the trainer stays at the last good iteration), else
        its LR kept for the hooks, the schedule stepped (skipped steps too: it follows the
        iterations) and the iteration counted."""
        if self.skipped_in_a_row >= self.cfg.max_skipped_in_a_row:
            raise NonFiniteTraining(
                f"training stopped at iteration {self.iteration + 1}: its last {self.skipped_in_a_row} steps "
                f"were all skipped (non-finite loss or gradients; lower the learning rate?). They left the model "
                f"as it was; the checkpoint last written"
                + (f" ({os.path.join(self.out_dir, 'checkpoint.pt')})" if self.out_dir else "") + " is intact")
        self.lr = self.optimizer.param_groups[0]["lr"]
        if self.losses is None:  # torch's "called before optimizer.step" is moot after a skipped step
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`")
                self.scheduler.step()
        else:
            self.scheduler.step()
        self.iteration += 1
