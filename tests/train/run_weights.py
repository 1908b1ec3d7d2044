"""Shared by the training tests: the weights of a run's newest checkpoint."""

from safetensors.torch import load_file

from oat.train.checkpoint import resolve_checkpoint


def final_weights(run) -> dict:
    """Tensors of ``run``'s newest checkpoint (``checkpoints/latest``)."""
    return load_file(str(resolve_checkpoint(run) / "model.safetensors"))
