"""What a training run does around its steps, as hooks of :meth:`Trainer.train
<ssd_fast.engine.Trainer.train>`: the metrics and ``log.jsonl``, the progress bar, the periodic
checkpoints. The loop calls, in the order of the hooks::

    before_train()
    for each batch:  before_step(); trainer.step(batch); (iteration counted); after_step()
    after_train()                        # always: trainer.finished says if the run got to its end

A hook reads the trainer (``self.trainer``): ``iteration`` (steps done, the one just done
included), ``end`` (the run's last iteration), ``losses`` (the last step's, None if it was
skipped), ``lr`` (the learning rate that step used), ``record`` (the last logged metrics),
``finished``, ``cfg``.
"""
import json
import time
from typing import Optional

from ..outputs import LineLog


class Hook:
    """A no-op at every point of the loop; override what you need."""
    trainer = None

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class MetricsLog(Hook):
    """Every ``cfg.log_every`` iterations and at the end: ``trainer.record`` = iteration, lr,
    skipped_steps, img_per_s and the mean loss, loc_loss, conf_loss of the steps since the last
    record (NaN if all were skipped), appended to ``path`` as a JSON line when given
    (:class:`ssd_fast.outputs.LineLog`)."""

    def __init__(self, path: Optional[str] = None):
        self.path, self.log = path, None

    def before_train(self):
        self.window, self.t0 = [], time.perf_counter()
        if self.path:
            self.log = LineLog(self.path)

    def after_step(self):
        t = self.trainer
        if t.losses is not None:
            self.window.append(t.losses)
        if t.iteration % t.cfg.log_every and t.iteration != t.end:
            return
        images = len(self.window or [0]) * t.cfg.batch_size * t.world_size
        record = {"iteration": t.iteration, "lr": t.lr, "skipped_steps": t.skipped_steps,
                  "img_per_s": images / max(time.perf_counter() - self.t0, 1e-9)}
        for k in ("loss", "loc_loss", "conf_loss"):
            record[k] = sum(w[k] for w in self.window) / len(self.window) if self.window else float("nan")
        t.record = record
        if self.log:
            self.log.write(json.dumps(record) + "\n")
        self.window, self.t0 = [], time.perf_counter()

    def after_train(self):
        if self.log:
            self.log.close()


class ProgressBar(Hook):
    """A tqdm bar of the iterations, the last record's loss, lr and img/s beside it (after
    :class:`MetricsLog` in the hooks)."""

    def __init__(self):
        self.bar = None

    def before_train(self):
        from tqdm import tqdm

        self.bar = tqdm(total=self.trainer.end, initial=self.trainer.iteration, desc="train", dynamic_ncols=True)

    def after_step(self):
        self.bar.update(1)
        record = self.trainer.record
        if record.get("iteration") == self.trainer.iteration:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}",
                                 img_s=f"{record['img_per_s']:.0f}")

    def after_train(self):
        if self.bar is not None:
            self.bar.close()


class PeriodicCheckpoint(Hook):
    """A training checkpoint at ``path`` every ``every`` iterations if the trainer is
    :meth:`~ssd_fast.engine.Trainer.healthy` (else the previous one stays, the last good
    state), and at the end of a run that finished (unless just written)."""

    def __init__(self, path: str, every: int):
        self.path, self.every, self.written = path, every, None

    def after_step(self):
        t = self.trainer
        if t.iteration % self.every == 0 and t.healthy():
            t.save(self.path)
            self.written = t.iteration

    def after_train(self):
        if self.trainer.finished and self.written != self.trainer.iteration:
            self.trainer.save(self.path)
