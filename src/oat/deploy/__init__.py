"""Deployment: a trained (λ, width) or the whole λ-conditioned model as ONNX or safetensors.

``oat.export(run, "model.onnx", lam=0.2, width=0.5)`` writes the dense sub-network at
(λ, width); ``lam="input"`` writes one ONNX graph with λ as an input; ``format="safetensors"``
a plain state dict that :func:`load_dense` rebuilds. See :mod:`oat.deploy.api`.
"""

from oat.deploy.api import FORMATS, VERIFY_TOL, export, file_metadata, onnx_logits, verify, verify_onnx
from oat.deploy.dense_file import load_dense, read_dense_metadata
from oat.deploy.lam_input import LamInputNet

__all__ = ["FORMATS", "VERIFY_TOL", "LamInputNet", "export", "file_metadata", "load_dense", "onnx_logits",
           "read_dense_metadata", "verify", "verify_onnx"]
