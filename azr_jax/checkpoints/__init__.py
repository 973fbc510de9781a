"""Checkpoint formats: Hugging Face directories (safetensors) in and out, and GGUF conversion."""

from azr_jax.checkpoints.hf import CheckpointError, export_hf_checkpoint, load_hf_checkpoint, load_tokenizer

__all__ = ["CheckpointError", "export_hf_checkpoint", "load_hf_checkpoint", "load_tokenizer"]
