"""azr_jax: the Absolute Zero Reasoner in JAX / Flax NNX."""
