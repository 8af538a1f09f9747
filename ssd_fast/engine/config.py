"""Training defaults and their checks, in one place: :class:`TrainConfig`.

Each field holds its default and its check; those ``ssd-fast train`` takes as flags also hold
the flag and its help. The CLI builds its flags from :func:`flags` and refuses a value by the
field's own check (:class:`ConfigError` names the field, the CLI the flag), so a default or a
range is written once.
"""
import dataclasses
import math
from typing import Any, Optional, Sequence

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine")

#: The model ``ssd-fast train`` builds unless given ``--arch`` / ``--image-size`` (the size of
#: the architectures that take one, ssd_tiny and ssdlite).
TRAIN_ARCH, TRAIN_IMAGE_SIZE = "ssd_tiny", 160


@dataclasses.dataclass(frozen=True)
class Bound:
    """A number ``op`` (``">"`` or ``">="``) ``limit``, and finite where ``finite``."""
    op: str
    limit: int
    finite: bool = False

    def holds(self, value) -> bool:
        if self.finite and not math.isfinite(value):
            return False
        return value > self.limit if self.op == ">" else value >= self.limit

    def requirement(self, value: Any = None) -> str:
        """What a value must be, e.g. "a finite number > 0": in full, or given ``value``, the
        part it fails (finite values fail the bound only: "> 0")."""
        typed = self.finite and (value is None or not math.isfinite(value))
        return f"{'a finite number ' if typed else ''}{self.op} {self.limit}"


@dataclasses.dataclass(frozen=True)
class OneOf:
    """One of ``choices``."""
    choices: tuple

    def holds(self, value) -> bool:
        return value in self.choices

    def requirement(self, value: Any = None) -> str:
        return f"one of {self.choices}"


class ConfigError(ValueError):
    """A :class:`TrainConfig` value its check refuses: ``"{field} must be {requirement}, got
    {value!r}"``, with ``field`` and ``value`` as attributes."""

    def __init__(self, field: str, value: Any, requirement: str):
        super().__init__(f"{field} must be {requirement}, got {value!r}")
        self.field, self.value = field, value


def _field(default, check=None, flag: Optional[str] = None, help: Optional[str] = None, words=None):
    """A TrainConfig field: its ``check`` (:class:`Bound`, :class:`OneOf`); ``flag`` and
    ``help`` for the CLI; ``words``, the flag's words for the values ({"on": True, ...})."""
    return dataclasses.field(default=default, metadata={"check": check, "flag": flag, "help": help, "words": words})


@dataclasses.dataclass
class TrainConfig:
    """Training hyper-parameters (per process: ``batch_size`` is per rank); the defaults are
    those of ``ssd-fast train``. ``ConfigError`` (a ``ValueError``) if a value is out of range."""
    iterations: int = _field(1000, Bound(">", 0), "--iterations", "iterations to train")
    batch_size: int = _field(32, Bound(">", 0), "--batch-size", "images per step, per process")
    lr: float = _field(0.02, Bound(">", 0, finite=True), "--lr", "learning rate after the warmup")
    optimizer: str = _field("sgd", OneOf(OPTIMIZERS), "--optimizer",
                            "SGD (momentum 0.9) as the paper, or AdamW (betas 0.9, 0.999; much faster "
                            "from scratch on small data)")
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = _field(100, Bound(">=", 0), "--warmup", "warmup iterations (the LR rising linearly from a third)")
    warmup_factor: float = 1.0 / 3
    # None: 2/3 and 5/6 of `iterations`
    milestones: Optional[Sequence[int]] = _field(None, help="comma-separated iterations where the LR drops x0.1 "
                                                            "(default: 2/3 and 5/6 of --iterations)")
    gamma: float = 0.1
    schedule: str = _field("multistep", OneOf(SCHEDULES), "--schedule",
                           "LR after the warmup: x0.1 at each milestone, or half a cosine to 0 at the end")
    seed: int = _field(0, None, "--seed", "seed of the data order and augmentation (and of the initialisation)")
    workers: int = _field(2, Bound(">=", 0), "--workers", "DataLoader workers per process")
    # None: on for CUDA (fp16 + GradScaler); on CPU amp means bf16 autocast
    amp: Optional[bool] = _field(None, None, "--amp", "mixed precision: CUDA float16 (auto: on), CPU bfloat16 "
                                 "(auto: off; on pays where the CPU has AVX512-BF16 or AMX)",
                                 words={"auto": None, "on": True, "off": False})
    checkpoint_every: int = _field(500, Bound(">", 0), "--checkpoint-every",
                                   "write checkpoint.pt every this many iterations (and at the end)")
    # This many skipped (non-finite) steps in a row stop the run with NonFiniteTraining: a loss
    # that stays NaN cannot recover, and the skipped steps leave the model as it was. (AMP's
    # loss scaler skips a handful in a row while it finds its scale.)
    max_skipped_in_a_row: int = _field(50, Bound(">=", 1))
    log_every: int = _field(20, Bound(">", 0))
    expand_p: float = 0.5
    max_expand: float = 4.0
    crop: bool = True
    photometric: bool = True
    progress: bool = True
    channels_last: bool = True  # NHWC: about 2x faster for SSDLite's depthwise convs on CPU

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check, value = f.metadata.get("check"), getattr(self, f.name)
            if check is not None and not check.holds(value):
                raise ConfigError(f.name, value, check.requirement(value))
        if self.milestones is None:
            self.milestones = (int(self.iterations * 2 / 3), int(self.iterations * 5 / 6))
        self.milestones = tuple(int(m) for m in self.milestones)


def flags() -> list:
    """The :class:`TrainConfig` fields that are ``ssd-fast train`` flags (``metadata["flag"]``)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag")]


def field(name: str) -> dataclasses.Field:
    """The :class:`TrainConfig` field ``name``."""
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
