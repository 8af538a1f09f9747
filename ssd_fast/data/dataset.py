"""What every dataset is (:class:`DetectionDataset`) and how a dataset format is registered
(:func:`register_format`), SPEC §4.

A format is the word a dataset spec starts with (``voc`` in ``voc:ROOT,year=2012``). Its one
registration is the decorator on its dataset class: the positional arguments' names, the
``key=value`` options (type, allowed values, help; the default is the class's own keyword
default) and a line of help. :mod:`.spec` parses specs against these records and builds the
dataset; the class checks its values against the same records, so a spec and a direct call
fail with the same message.
"""
import abc
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, TypedDict

import numpy as np


class Target(TypedDict):
    """The annotations of one image, in the image's pixels."""

    boxes: np.ndarray      #: ``[G, 4]`` float32 corners ``(x0, y0, x1, y1)``
    labels: np.ndarray     #: ``[G]`` int64 in ``1 .. len(classes) - 1`` (0 is the background)
    difficult: np.ndarray  #: ``[G]`` bool; VOC metrics ignore these objects


class DetectionDataset(abc.ABC):
    """The contract every dataset keeps (the trainer, evaluation and the CLI rely on no more).

    - ``classes``: the class names, ``classes[0]`` the background;
    - ``len(dataset)`` images, ``dataset[i] -> (image, target)``: ``image`` ``[H, W, 3]`` uint8
      RGB, ``target`` a :class:`Target`;
    - ``target(i)``: ``dataset[i][1]``, cheaper where the dataset can skip decoding the image;
    - ``image_id(i)``: the id COCO evaluation gives image ``i`` (default: ``i``);
    - ``cache()``: keep the items in memory where rebuilding them costs (default: nothing to
      keep); returns the dataset;
    - ``files``: the paths the dataset reads, annotation files and image folders (a folder
      stands for everything in it); ``()`` for data made in memory. :meth:`input_at` tells
      whether an output path would land on one of them.

    A dataset may add more (``category_ids`` and ``coco`` for COCO evaluation, ``bad_annotations``);
    code that uses those looks them up with ``getattr``.
    """

    classes: Tuple[str, ...]
    spec_format: "Format"  #: set by :func:`register_format`

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of images."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Tuple[np.ndarray, Target]:
        """``(image [H, W, 3] uint8 RGB, target)`` of image ``index``."""

    @property
    @abc.abstractmethod
    def files(self) -> Tuple[str, ...]:
        """The annotation files and image folders this dataset reads (``()``: none)."""

    def target(self, index: int) -> Target:
        """The annotations of image ``index`` (``dataset[index][1]``)."""
        return self[index][1]

    def image_id(self, index: int) -> int:
        """The id of image ``index`` in COCO evaluation: here ``index``."""
        return index

    def cache(self) -> "DetectionDataset":
        """Keep the items in memory where that saves work later; here there is nothing to keep."""
        return self

    def input_at(self, path) -> Optional[str]:
        """The entry of :attr:`files` that ``path`` is or lies inside (symbolic links resolved),
        None if none: writing ``path`` would overwrite or add to this dataset's inputs."""
        target = os.path.realpath(path)
        for entry in self.files:
            real = os.path.realpath(entry)
            if target == real or (os.path.isdir(real) and target.startswith(os.path.join(real, ""))):
                return entry
        return None


@dataclass(frozen=True)
class Option:
    """A ``key=value`` option of a format: ``type`` (int or str) is how the spec's text is read;
    ``choices`` or an integer ``range`` (inclusive) are the values the dataset accepts; ``shown``
    is the value the usage line shows (default: the choices, else the default)."""

    name: str
    type: type = str
    help: str = ""
    choices: Optional[Tuple[str, ...]] = None
    range: Optional[Tuple[int, int]] = None
    shown: str = ""

    def __post_init__(self):
        if self.type not in (int, str):
            raise TypeError(f"option {self.name!r}: type must be int or str, got {self.type!r}")

    def parse(self, spec: str, text: str):
        """The value ``text`` (from ``spec``) stands for."""
        if self.type is str:
            return text
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"dataset spec {spec!r}: {self.name} must be an integer, got {text!r}") from None

    def check(self, format_name: str, value):
        """``ValueError`` unless ``value`` is one this option accepts."""
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{format_name}: {self.name} must be one of {sorted(self.choices)}, got {value!r}")
        if self.range is not None:
            low, high = self.range
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{format_name}: {self.name} must be an integer in [{low}, {high}], "
                                 f"got {value!r}")


@dataclass(frozen=True)
class Format:
    """One dataset format: ``builder(*positional, **options)`` makes the dataset."""

    name: str
    builder: Callable[..., DetectionDataset]
    positional: Tuple[str, ...] = ()  #: the positional arguments' names in the usage line
    options: Tuple[Option, ...] = ()
    help: str = ""

    def option(self, name: str) -> Optional[Option]:
        """The option called ``name``, None if this format has none."""
        return next((o for o in self.options if o.name == name), None)

    @property
    def defaults(self) -> Dict[str, Any]:
        """Each option's default: the builder's keyword default."""
        parameters = inspect.signature(self.builder).parameters
        return {o.name: parameters[o.name].default for o in self.options}

    @property
    def usage(self) -> str:
        """E.g. ``voc:ROOT[,year=2007,split=test]``."""
        text = ":".join([self.name, ",".join(self.positional)]) if self.positional else self.name
        if self.options:
            defaults = self.defaults
            shown = [f"{o.name}={o.shown or ('|'.join(o.choices) if o.choices else defaults[o.name])}"
                     for o in self.options]
            text += f"[{',' if self.positional else ':'}{','.join(shown)}]"
        return text

    def check(self, **values):
        """``ValueError`` naming the first of ``values`` (in the order given) its option refuses."""
        for name, value in values.items():
            self.option(name).check(self.name, value)


#: Every registered format by name (the built-in ones register when :mod:`ssd_fast.data` loads).
FORMATS: Dict[str, Format] = {}


def register_format(name: str, *, positional: Sequence[str] = (), options: Sequence[Option] = (),
                    help: str = ""):
    """Class decorator: register the dataset class as the format ``name`` (module docstring).
    Every option must be a keyword parameter of the class with a default."""
    def register(cls):
        if name in FORMATS:
            raise ValueError(f"dataset format {name!r} is registered already ({FORMATS[name].builder.__name__})")
        if not (isinstance(cls, type) and issubclass(cls, DetectionDataset)):
            raise TypeError(f"dataset format {name!r}: {cls!r} is not a DetectionDataset")
        parameters = inspect.signature(cls).parameters
        for o in options:
            if o.name not in parameters or parameters[o.name].default is inspect.Parameter.empty:
                raise TypeError(f"dataset format {name!r}: option {o.name!r} is not a keyword parameter "
                                f"of {cls.__name__} with a default")
        cls.spec_format = FORMATS[name] = Format(name, cls, tuple(positional), tuple(options), help)
        return cls
    return register
