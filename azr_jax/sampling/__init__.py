"""Jitted sampling: prefill + decode with a KV cache, on the very parameter arrays the trainer updates."""

from azr_jax.sampling.sampler import Samples, Sampler, SamplingParams, filter_logits, sample_logits

__all__ = ["Samples", "Sampler", "SamplingParams", "filter_logits", "sample_logits"]
