"""Model file formats: Hugging Face directories (safetensors) in and out, and GGUF conversion.

A run's own state (parameters, optimiser, buffers) is saved by `azr_jax.checkpointing` (Orbax).
"""

from azr_jax.formats.hf import CheckpointError, export_hf, export_hf_checkpoint, load_hf_checkpoint, load_tokenizer

__all__ = ["CheckpointError", "export_hf", "export_hf_checkpoint", "load_hf_checkpoint", "load_tokenizer"]
