"""Jitted sampling: prefill + decode with a KV cache, on the very parameter arrays the trainer updates."""

from azr_jax.sampling.core import Samples, SamplingParams, StopString, filter_logits, sample_logits
from azr_jax.sampling.sampler import Sampler

__all__ = ["Samples", "Sampler", "SamplingParams", "StopString", "filter_logits", "sample_logits"]
