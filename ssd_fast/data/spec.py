"""Dataset spec strings (SPEC §4): ``FORMAT[:ARG,...][,KEY=VALUE,...]``, the arguments and
options those of the format's registration (:mod:`.dataset`); :func:`formats_help` lists them::

    synthetic[:seed=S,n=N,size=PX,split=train|test]
    voc:ROOT[,year=2007,split=test]
    coco:IMAGES_DIR,ANNOTATIONS_JSON
"""
from typing import Dict, List, Tuple

from . import coco, synthetic, voc  # noqa: F401  (each registers its format)
from .dataset import FORMATS, DetectionDataset


def parse_spec(spec: str) -> Tuple[str, List[str], Dict]:
    """``"voc:/data/VOCdevkit,year=2012"`` -> ``("voc", ["/data/VOCdevkit"], {"year": 2012})``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset spec: expected a string like 'synthetic:seed=0', got {spec!r}")
    kind, _, rest = spec.partition(":")
    fmt = FORMATS.get(kind)
    if fmt is None:
        raise ValueError(f"dataset spec {spec!r}: unknown kind {kind!r}; known: {sorted(FORMATS)}")
    positional, options = [], {}
    for part in [p for p in rest.split(",") if p] if rest else []:
        key, eq, value = part.partition("=")
        if not eq:
            positional.append(part)
            continue
        option = fmt.option(key)
        if option is None:
            raise ValueError(f"dataset spec {spec!r}: unknown option {key!r} for {kind}; "
                             f"known: {sorted(o.name for o in fmt.options)}")
        options[key] = option.parse(spec, value)
    if len(positional) != len(fmt.positional):
        raise ValueError(f"dataset spec {spec!r}: expected {fmt.usage}")
    return kind, positional, options


def build_dataset(spec: str, **defaults) -> DetectionDataset:
    """The dataset a spec names; ``defaults`` fill options the spec leaves out (e.g. the demo's
    ``n`` and ``split``); those the format does not have are ignored."""
    kind, positional, options = parse_spec(spec)
    fmt = FORMATS[kind]
    options = {**{k: v for k, v in defaults.items() if fmt.option(k) is not None}, **options}
    return fmt.builder(*positional, **options)


def formats_help() -> str:
    """One paragraph per registered format: its usage line, its help, each option's help and
    default (e.g. for the CLI's ``--data`` help)."""
    paragraphs = []
    for name in sorted(FORMATS):
        fmt = FORMATS[name]
        lines = [f"{fmt.usage}: {fmt.help}" if fmt.help else fmt.usage]
        defaults = fmt.defaults
        lines += [f"  {o.name}: {o.help} (default {defaults[o.name]})" for o in fmt.options]
        paragraphs.append("\n".join(lines))
    return "\n".join(paragraphs)
