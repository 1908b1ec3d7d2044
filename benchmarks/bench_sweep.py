"""Sweep throughput: K = 6 λ values batched per example against the λ-by-λ loop.

Same model, data, attack (PGD-20, fp32) and examples per forward pass in both: the batched
sweep (:func:`oat.evaluate.sweep.sweep`) repeats each example once per λ with a
per-example λ; the loop binds ``model.at(lam)`` and attacks the whole set once per λ.
Models are untrained (throughput only). One run each, after a warm-up batch; the box is
shared with other processes, so only the ratio within one run is meaningful.

With the defaults (n = 192, 96 (image, λ) pairs per forward pass) both methods make the
same 12 passes of 96. On a CPU, a forward/backward costs about the same per example
whatever the batch (it is compute- and cache-bound), so batching λ saves nothing there
and the mixed clean/adversarial BN routing of a batch holding λ = 0 and λ > 0 adds
gather/scatter copies; the batched sweep pays off where per-pass overhead dominates
(GPUs, small models). The JSON records what this machine measured.

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--n 192] [--batch-size 96] [--device cpu]
    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py --run RUN --n 600 --batch-size 512   # a trained run
"""

from __future__ import annotations

import argparse

import torch  # noqa: E402  (common puts src/ on the path first)
from common import Timer, digits_resized, set_threads, synthetic, table, write_result

import oat  # noqa: E402
from oat.attacks.registry import get_attack  # noqa: E402
from oat.conditioning import PAPER_LAMS, Conditioning  # noqa: E402
from oat.evaluate.sweep import sweep  # noqa: E402
from oat.models import create_model  # noqa: E402

CASES = {  # name: (model, channels, size, data)
    "small-cnn/digits-8x8": ("small-cnn", 1, 8, "digits"),
    "small-cnn/random-32x32": ("small-cnn", 3, 32, "random"),
    "wrn-16-1/random-32x32": ("wrn-16-1", 3, 32, "random"),
}


def lam_by_lam(model, ds, lams, eps, batch_size, device) -> None:
    attack = get_attack("pgd20")
    for lam in lams:
        bound = model.at(lam)
        for i in range(0, len(ds), batch_size):
            x = ds.images[i: i + batch_size].to(device, torch.float32) / 255
            y = ds.labels[i: i + batch_size].to(device)
            x_adv = attack(bound, x, y, eps=eps, generator=torch.Generator().manual_seed(i))
            with torch.no_grad():
                bound(x).argmax(1), bound(x_adv).argmax(1)


def run_case(name, n, batch_size, device) -> dict:
    arch, ch, size, data = CASES[name]
    ds = digits_resized(None)[2] if data == "digits" else synthetic(n, (ch, size, size))
    ds.images, ds.labels = ds.images[:n], ds.labels[:n]
    torch.manual_seed(0)
    model = create_model(arch, Conditioning(lams=PAPER_LAMS), in_channels=ch).to(device).eval()
    lams, eps, k = list(PAPER_LAMS), 8 / 255, len(PAPER_LAMS)
    warm = type(ds)(ds.images[:8], ds.labels[:8], ds.num_classes)
    sweep(model, warm, lams=lams, widths=[None], attacks=["pgd20"], eps=eps, device=device, batch_lams=True)
    with Timer(device) as t_batched:
        sweep(model, ds, lams=lams, widths=[None], attacks=["pgd20"], eps=eps, batch_size=batch_size, device=device,
              batch_lams=True)
    # The loop gets the same pairs per forward pass as the batched sweep (batch_size // K images × K λ).
    with Timer(device) as t_loop:
        lam_by_lam(model, ds, lams, eps, (batch_size // k) * k, device)
    work = n * k  # (image, λ) pairs attacked
    return {"case": name, "n": n, "K": k, "batched_img_per_s": work / t_batched.seconds,
            "loop_img_per_s": work / t_loop.seconds, "speedup": t_loop.seconds / t_batched.seconds,
            "batched_s": t_batched.seconds, "loop_s": t_loop.seconds}


def run_trained(run: str, n: int, batch_size: int, repeats: int, device) -> dict:
    """The library's two sweep paths on a trained run's test split (PGD-20 at the run's ε),
    alternated ``repeats`` times; the best time of each is kept."""
    from oat.evaluate.api import eval_dataset  # the split `oat evaluate` would use

    model = oat.load(run, device=device)
    cfg = model.checkpoint_state["config"]
    test = eval_dataset(model, "test")
    eps, lams = float(model.checkpoint_state["eps"]), list(model.spec.lams)
    kw = dict(lams=lams, widths=[None], attacks=["pgd20"], eps=eps, subset=n, batch_size=batch_size, device=device)
    best, ra = {True: float("inf"), False: float("inf")}, {}
    for _ in range(repeats):
        for batched in (True, False):
            with Timer(device) as t:
                res = sweep(model, test, batch_lams=batched, **kw)
            best[batched] = min(best[batched], t.seconds)
            ra[batched] = [round(float(res.adv[(v, None, "pgd20")].float().mean()), 4) for v in lams]
    work = n * len(lams)
    return {"case": f"trained {cfg['data']} OAT ({cfg['model']})", "n": n, "K": len(lams),
            "batched_img_per_s": work / best[True], "loop_img_per_s": work / best[False],
            "speedup": best[False] / best[True], "ra_batched": ra[True], "ra_loop": ra[False]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=192, help="images per case")
    ap.add_argument("--batch-size", type=int, default=96, help="(image, λ) pairs per forward pass")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--run", default=None, help="a trained OAT run folder: time the library's two paths on it")
    ap.add_argument("--repeats", type=int, default=2, help="with --run: alternating rounds")
    args = ap.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    if args.run:
        row = run_trained(args.run, args.n, args.batch_size, args.repeats, device)
        print(table([row], ["case", "n", "K", "batched_img_per_s", "loop_img_per_s", "speedup"]))
        write_result("bench_sweep_trained", {"settings": {**vars(args), "attack": "pgd20 (fp32)"}, "rows": [row],
                                             "note": "img/s counts (image, λ) pairs; the two paths alternate"})
        return
    rows = [run_case(c, args.n, args.batch_size, device) for c in args.cases]
    print(table(rows, ["case", "n", "K", "batched_img_per_s", "loop_img_per_s", "speedup"]))
    write_result("bench_sweep", {"settings": {"n": args.n, "batch_size": args.batch_size, "attack": "pgd20 (fp32)",
                                              "eps": "8/255", "lams": list(PAPER_LAMS), "device": args.device,
                                              "threads": args.threads},
                                 "rows": rows,
                                 "note": "img/s counts (image, λ) pairs; one run on a CPU shared with other "
                                         "processes (see load_average), so compare the ratio within the run"})


if __name__ == "__main__":
    main()
