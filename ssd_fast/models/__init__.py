"""The SSD model (SPEC §3): default boxes."""
from .priors import PRESETS, PriorSpec, get_prior_spec, prior_boxes, ssd_sizes

__all__ = ["PriorSpec", "PRESETS", "prior_boxes", "get_prior_spec", "ssd_sizes"]
