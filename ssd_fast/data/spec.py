"""Dataset spec strings (SPEC §4)::

    synthetic[:seed=S,n=N,size=PX,split=train|test]
    voc:ROOT[,year=2007,split=test]
    coco:IMAGES_DIR,ANNOTATIONS_JSON
"""
from typing import Dict, List, Tuple

_INT_KEYS = {"seed", "n", "size", "year"}
_ALLOWED = {"synthetic": {"seed", "n", "size", "split"}, "voc": {"year", "split"}, "coco": set()}


def parse_spec(spec: str) -> Tuple[str, List[str], Dict]:
    """``"voc:/data/VOCdevkit,year=2012"`` -> ``("voc", ["/data/VOCdevkit"], {"year": 2012})``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset spec: expected a string like 'synthetic:seed=0', got {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind not in _ALLOWED:
        raise ValueError(f"dataset spec {spec!r}: unknown kind {kind!r}; known: {sorted(_ALLOWED)}")
    positional, options = [], {}
    for part in [p for p in rest.split(",") if p] if rest else []:
        key, eq, value = part.partition("=")
        if not eq:
            positional.append(part)
            continue
        if key not in _ALLOWED[kind]:
            raise ValueError(f"dataset spec {spec!r}: unknown option {key!r} for {kind}; "
                             f"known: {sorted(_ALLOWED[kind])}")
        if key in _INT_KEYS:
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"dataset spec {spec!r}: {key} must be an integer, got {value!r}") from None
        options[key] = value
    want = {"synthetic": 0, "voc": 1, "coco": 2}[kind]
    if len(positional) != want:
        usage = {"synthetic": "synthetic[:seed=S,n=N,size=PX,split=train|test]",
                 "voc": "voc:ROOT[,year=2007,split=test]", "coco": "coco:IMAGES_DIR,ANNOTATIONS_JSON"}[kind]
        raise ValueError(f"dataset spec {spec!r}: expected {usage}")
    return kind, positional, options


def build_dataset(spec: str, **defaults):
    """The dataset a spec names; ``defaults`` fill options the spec leaves out (e.g. the demo's
    ``n`` and ``split``)."""
    kind, positional, options = parse_spec(spec)
    options = {**{k: v for k, v in defaults.items() if k in _ALLOWED[kind]}, **options}
    if kind == "synthetic":
        from .synthetic import SyntheticDataset
        return SyntheticDataset(**options)
    if kind == "voc":
        from .voc import VOCDataset
        return VOCDataset(positional[0], **options)
    from .coco import COCODataset
    return COCODataset(*positional)
