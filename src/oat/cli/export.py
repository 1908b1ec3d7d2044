"""``oat export``: a trained (λ, width), or the whole model with λ as an input, as ONNX or safetensors."""

from __future__ import annotations

import argparse
import sys

from oat.cli.common import number


def lam_or_input(text: str):
    return "input" if text == "input" else number(text)


def add_parser(sub):
    p = sub.add_parser("export", help="write a trained (λ, width) as ONNX or safetensors, or the whole model "
                       "with λ as an ONNX input",
                       description="Write the dense sub-network of RUN's newest checkpoint at (λ, width): only the "
                       "width's channels, FiLM folded into that λ's BN. As ONNX (input x: N×C×H×W pixels in [0, 1], "
                       "output logits) or as a safetensors state dict with the architecture in its metadata "
                       "(rebuild with oat.deploy.load_dense). --lam input writes the whole model at one width as "
                       "one ONNX graph with a second input lam ((N,) or (1,) float32): λ is clamped to [0, 1] and, "
                       "for index-based encodings, taken to the nearest trained λ; λ == 0 uses the clean BN.")
    p.add_argument("run", help="run folder (or checkpoint folder inside it)")
    p.add_argument("--lam", type=lam_or_input, required=True,
                   help="a trained λ (any λ in [0, 1] for the continuous and scalar encodings), or `input`")
    p.add_argument("--width", type=number, help="a trained width (default: the largest)")
    p.add_argument("--format", choices=("onnx", "safetensors"), help="file format (default: from --out's suffix)")
    p.add_argument("--out", required=True, help="the file to write (e.g. model.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--image-size", type=int,
                   help="image height and width traced (the ONNX graph takes any size; default: the run's data's)")
    p.add_argument("--verify", action="store_true",
                   help="compare the file's logits (onnxruntime for ONNX) with PyTorch's on random images at every "
                   "λ it serves; exit 1 if any differs by more than 1e-4")
    return p


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from oat.checkpoint import load_model
    from oat.deploy import VERIFY_TOL, export, file_metadata, verify

    model = load_model(args.run)
    out = export(model, args.out, lam=args.lam, width=args.width, format=args.format, overwrite=args.overwrite,
                 image_size=args.image_size)
    what = "λ as an input" if args.lam == "input" else f"λ={args.lam:g}"
    width = model.spec.widths[model.spec.width_index(args.width)]
    print(f"wrote {out} ({what}, width {width:g})")
    if not args.verify:
        return 0
    shape = json.loads(file_metadata(out, args.format)["oat.input_shape"])
    x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(0))
    diffs = verify(out, model, x, args.format)
    worst = max(diffs.values())
    print("max |Δlogit| vs PyTorch: " + ", ".join(f"λ={k}: {v:.1e}" for k, v in diffs.items()))
    if worst > VERIFY_TOL:
        print(f"oat: verification failed: max |Δlogit| {worst:.2e} > {VERIFY_TOL:g}", file=sys.stderr)
        return 1
    return 0
