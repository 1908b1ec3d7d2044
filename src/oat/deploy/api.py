"""``oat export``: a trained model as a file a deployment runs without oat's training code.

* ``lam=X``: the dense sub-network at (λ, width) (:func:`oat.models.export.export`: the width's
  channels only, FiLM folded into that λ's BN, exact) as ONNX (input ``x``, output ``logits``)
  or as a safetensors state dict (:mod:`oat.deploy.dense_file`; :func:`load_dense` rebuilds it).
* ``lam="input"``: the whole conditioned model at one width as one ONNX graph with inputs ``x``
  and ``lam`` (:class:`~oat.deploy.lam_input.LamInputNet`): one file serves every trained λ.

ONNX graphs take any batch size and image size (``x``: ``(N, C, H, W)``, pixels in [0, 1]);
``lam`` is ``(N,)`` or ``(1,)`` float32. Both formats carry ``oat.*`` metadata (architecture,
conditioning spec, λ, width, input shape). Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

import oat
from oat.conditioning import LAM_TOL, check_lam_range
from oat.deploy.dense_file import save_dense
from oat.deploy.lam_input import LamInputNet
from oat.errors import ConfigError, OatError
from oat.models.base import ConditionedNet

from oat.models.export import export as dense_at  # noqa: E402  isort: skip
from oat.models.registry import COMPOSITES  # noqa: E402  isort: skip
from oat.checkpoint import fsync_dir, load_model  # noqa: E402  isort: skip

FORMATS = ("onnx", "safetensors")
SUFFIXES = {".onnx": "onnx", ".safetensors": "safetensors"}
VERIFY_TOL = 1e-4  # max |Δlogit| between the file and PyTorch that --verify accepts
OPSET = 17  # served by every onnxruntime since 1.12
LAM_INPUT_RULE = {
    True: "λ clamped to [0, 1], then the nearest trained λ (ties: the smaller); λ == 0 → clean BN, else adversarial",
    False: "λ clamped to [0, 1], any λ accepted; λ == 0 → clean BN, else adversarial",
}


def export(run_or_model, out, *, lam, width: float | None = None, format: str | None = None,
           overwrite: bool = False, image_size: int | None = None) -> Path:
    """Write a trained model as ONNX or safetensors, as ``oat export`` does.

    Args:
        run_or_model: a run or checkpoint folder (loaded with :func:`oat.load`) or a
            :class:`~oat.models.ConditionedNet` (not changed; exported in eval mode).
        out: the file to write.
        lam: a λ the model was trained for (any λ in [0, 1] for continuous encodings), or
            ``"input"``: the whole model with λ as a graph input (ONNX only).
        width: a trained width (None: the largest).
        format: ``"onnx"`` or ``"safetensors"``; None: from ``out``'s suffix.
        overwrite: replace an existing file.
        image_size: height and width of the example input that is traced (the ONNX graph
            accepts any size); None: the run's data set's, else 32.

    Returns:
        The path written.

    Raises:
        LamError, WidthError: a λ or width the model was not trained for.
        ConfigError: a bad format, ``lam="input"`` with safetensors or a model λ does not change,
            a blend (``oat mix``), or an existing ``out`` without ``overwrite``.
    """
    out = Path(out)
    fmt = _format(format, out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; --out names the file to write")
    lam_input = isinstance(lam, str) and lam == "input"
    if lam_input and fmt != "onnx":
        raise ConfigError("λ as an input needs --format onnx (a safetensors file holds one dense (λ, width))")
    if not lam_input:
        check_lam_range(lam)
    model = _resolve(run_or_model)
    meta = _metadata(model, lam, width, image_size)
    if lam_input:
        net: nn.Module = LamInputNet(model, width)
        meta["oat.lam_rule"] = LAM_INPUT_RULE[bool(net.snap)]
    else:
        net = dense_at(model, float(lam), width).eval()
    shape = json.loads(meta["oat.input_shape"])
    if fmt == "safetensors":
        _atomic(out, lambda p: save_dense(net, p, meta))
    else:
        data = _onnx_bytes(net, shape, lam_input, meta)
        _atomic(out, lambda p: p.write_bytes(data))
    return out


def _format(format: str | None, out: Path) -> str:
    if format is None:
        if out.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"cannot tell the format from {out.name!r}; pass --format {'|'.join(FORMATS)}")
        return SUFFIXES[out.suffix.lower()]
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
    return format


def _resolve(run_or_model) -> ConditionedNet:
    model = run_or_model if isinstance(run_or_model, ConditionedNet) else load_model(run_or_model)
    if model.arch.get("name") in COMPOSITES:
        raise ConfigError(f"a blend ({model.arch['name']}, from oat mix) cannot be exported; export its members")
    return model


def _metadata(model: ConditionedNet, lam, width, image_size) -> dict[str, str]:
    spec = model.spec
    w = spec.widths[spec.width_index(width)]
    if isinstance(lam, str):
        lam_text = lam
    else:
        lam_v = spec.check_lam(float(lam))
        lam_text = repr(lam_v if lam_v > LAM_TOL else 0.0)
    return {"oat.version": oat.__version__, "oat.arch": json.dumps(model.arch),
            "oat.conditioning": json.dumps(spec.to_dict()), "oat.lam": lam_text, "oat.width": repr(w),
            "oat.input_shape": json.dumps(_input_shape(model, image_size))}


def _input_shape(model: ConditionedNet, image_size: int | None) -> list[int]:
    from oat.data import DATASETS

    c = int(model.arch.get("in_channels", 3))
    if image_size is not None:
        if int(image_size) < 1:
            raise ConfigError(f"image size must be a positive whole number; got {image_size}")
        return [c, int(image_size), int(image_size)]
    data = (getattr(model, "checkpoint_state", None) or {}).get("config", {}).get("data")
    if data in DATASETS and DATASETS[data].image_shape[0] == c:
        return list(DATASETS[data].image_shape)
    return [c, 32, 32]


def _onnx_bytes(net: nn.Module, shape: list[int], lam_input: bool, meta: dict[str, str]) -> bytes:
    import onnx

    device = next(net.parameters()).device
    x = torch.rand(2, *shape, device=device)
    args = (x, torch.tensor([0.0, 1.0], device=device)) if lam_input else (x,)
    names = ["x", "lam"] if lam_input else ["x"]
    axes = {"x": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}
    if lam_input:
        axes["lam"] = {0: "lam_batch"}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy (TorchScript) exporter: the torch.export one needs onnxscript and traces no better here.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(net, args, buf, dynamo=False, input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.doc_string = f"oat export: {meta['oat.arch']} at λ={meta['oat.lam']}, width={meta['oat.width']}"
    return proto.SerializeToString()


def _atomic(out: Path, write) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)


# ------------------------------------------------------------------ reading and checking a file
def file_metadata(path, format: str | None = None) -> dict[str, str]:
    """The ``oat.*`` metadata of an exported file (ONNX metadata props or safetensors metadata)."""
    path = Path(path)
    if _format(format, path) == "safetensors":
        from oat.deploy.dense_file import read_dense_metadata

        return read_dense_metadata(path)
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises protobuf's DecodeError and others for a file that is not ONNX
        raise OatError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if "oat.width" not in meta or "oat.lam" not in meta:
        raise OatError(f"{path} is not an ONNX file written by oat export (no oat.* metadata)")
    return meta


def onnx_logits(path, x: torch.Tensor, lam=None) -> torch.Tensor:
    """Logits of an exported ONNX file run by onnxruntime (CPU) on images ``x``.

    ``lam``: for a λ-input graph, a float or a sequence/tensor of one λ per example.
    """
    import numpy as np

    try:
        import onnxruntime as ort
    except ImportError:
        raise OatError("running an ONNX file needs onnxruntime: pip install 'oat-torch[export]'") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": x.detach().cpu().float().numpy()}
    if lam is not None:
        lam_t = lam.detach().cpu() if isinstance(lam, torch.Tensor) else torch.tensor(lam)
        feed["lam"] = lam_t.float().reshape(-1).numpy().astype(np.float32)
    return torch.from_numpy(sess.run(["logits"], feed)[0])


@torch.no_grad()
def verify_onnx(path, model: ConditionedNet, x: torch.Tensor) -> dict[str, float]:
    """Max |Δlogit| between an exported file (onnxruntime) and ``model`` (PyTorch, eval mode).

    Keys are λ values (``f"{λ:g}"``). For a λ-input graph: every trained λ (one λ for the batch),
    and ``"per-example"``: one batch whose examples cycle through the trained λ values.
    """
    meta = file_metadata(path, "onnx")
    width = float(meta["oat.width"])
    was = model.training
    model.eval()
    try:
        if meta.get("oat.lam") != "input":
            lam = float(meta["oat.lam"])
            return {f"{lam:g}": float((onnx_logits(path, x) - model(x, lam, width)).abs().max())}
        lams = list(model.spec.lams)
        diffs = {f"{lam:g}": float((onnx_logits(path, x, [lam]) - model(x, lam, width)).abs().max()) for lam in lams}
        per = torch.tensor([lams[i % len(lams)] for i in range(x.shape[0])])
        diffs["per-example"] = float((onnx_logits(path, x, per) - model(x, per, width)).abs().max())
        return diffs
    finally:
        model.train(was)


@torch.no_grad()
def verify(path, model: ConditionedNet, x: torch.Tensor, format: str | None = None) -> dict[str, float]:
    """:func:`verify_onnx` for an ONNX file; for a safetensors export, the same comparison of the
    module :func:`load_dense` rebuilds (PyTorch) against ``model``."""
    from oat.deploy.dense_file import load_dense

    path = Path(path)
    if _format(format, path) == "onnx":
        return verify_onnx(path, model, x)
    slim = load_dense(path, device=x.device)
    was = model.training
    model.eval()
    try:
        return {f"{slim.lam:g}": float((slim(x) - model(x, slim.lam, slim.width)).abs().max())}
    finally:
        model.train(was)
