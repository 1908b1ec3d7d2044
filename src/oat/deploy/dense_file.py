"""One (λ, width) of a conditioned model as a plain safetensors state dict, and its loader.

The file holds the state dict of the dense sub-network (:class:`~oat.models.export.SlimNet`'s
inner network: ordinary ``Conv2d``, ``BatchNorm2d`` with FiLM folded into its affine, and
``Linear`` layers, the width's channels only), keys as in ``slim.net.state_dict()`` without the
(empty) encoding table. Its metadata (all strings, JSON where structured) say how to rebuild it:

* ``oat.format``: ``"oat-dense/1"``;
* ``oat.arch``, ``oat.conditioning``: the registry name and arguments of the architecture and
  its conditioning spec, as in a checkpoint's ``state.json``;
* ``oat.lam``, ``oat.width``: the (λ, width) it was cut at;
* ``oat.input_shape``: ``[C, H, W]`` of the images it was exported with (pixels in [0, 1]);
* ``oat.layers``: every dense layer by state-dict prefix with its type and shape (``Conv2d``:
  in/out channels, kernel, stride, padding, groups, bias; ``BatchNorm2d``: features, eps;
  ``Linear``: in/out features), so another framework can rebuild the layers; the wiring is the
  architecture's forward (e.g. small-cnn: three conv-BN-ReLU, global average pool, linear).

:func:`load_dense` rebuilds the module with oat: the architecture from ``arch`` and
``conditioning``, cut at (λ, width) by :func:`oat.models.export.export`, then these weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from oat.conditioning import Conditioning
from oat.errors import CheckpointError

from oat.models.export import SlimNet  # noqa: E402  isort: skip
from oat.models.export import export as dense_at  # noqa: E402  isort: skip
from oat.checkpoint import build_from_state  # noqa: E402  isort: skip

DENSE_FORMAT = "oat-dense/1"


def layer_table(net: nn.Module) -> dict[str, dict]:
    """The dense layers of ``net`` by state-dict prefix, with what rebuilding each one takes."""
    out: dict[str, dict] = {}
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = {"type": "Conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                         "kernel_size": list(m.kernel_size), "stride": list(m.stride), "padding": list(m.padding),
                         "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None}
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out[name] = {"type": type(m).__name__, "num_features": m.num_features, "eps": m.eps}
        elif isinstance(m, nn.Linear):
            out[name] = {"type": "Linear", "in_features": m.in_features, "out_features": m.out_features,
                         "bias": m.bias is not None}
    return out


def dense_tensors(slim: SlimNet) -> dict[str, torch.Tensor]:
    sd = slim.net.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in sd.items() if k != "lam_table"}


def save_dense(slim: SlimNet, path: Path, metadata: dict[str, str]) -> None:
    """Write ``slim``'s weights and ``metadata`` plus the layer table to ``path``."""
    meta = {**metadata, "oat.format": DENSE_FORMAT, "oat.layers": json.dumps(layer_table(slim.net))}
    save_file(dense_tensors(slim), str(path), metadata=meta)


def read_dense_metadata(path) -> dict[str, str]:
    """The metadata of a file written by ``oat export --format safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no exported file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:80]})") from None
    if meta.get("oat.format") != DENSE_FORMAT:
        raise CheckpointError(f"{path} is not an oat dense export (metadata oat.format is not {DENSE_FORMAT!r})")
    return meta


def load_dense(path, device="cpu") -> SlimNet:
    """Rebuild the dense sub-network written by ``oat export --format safetensors``, in eval mode.

    Args:
        path: the ``.safetensors`` file.
        device: where to put the module.

    Returns:
        A :class:`~oat.models.export.SlimNet`: an ordinary module ``x -> logits``.

    Raises:
        CheckpointError: not such a file, damaged metadata, or weights that do not fit.
    """
    from safetensors.torch import load_file

    meta = read_dense_metadata(path)
    try:
        doc = {"arch": json.loads(meta["oat.arch"]), "conditioning": json.loads(meta["oat.conditioning"])}
        lam, width = float(meta["oat.lam"]), float(meta["oat.width"])
        Conditioning.from_dict(doc["conditioning"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: the export's metadata is damaged ({type(e).__name__}: {str(e)[:80]})") from None
    model = build_from_state(doc).eval()
    slim = dense_at(model, lam, width).eval()
    tensors = load_file(str(path))
    own = dense_tensors(slim)
    bad = sorted(set(own) ^ set(tensors)) or [k for k in own if own[k].shape != tensors[k].shape]
    if bad:
        raise CheckpointError(f"{path}: its weights do not fit the architecture in its metadata (first: {bad[0]})")
    tensors["lam_table"] = slim.net.lam_table
    slim.net.load_state_dict(tensors)
    return slim.to(device).eval()
