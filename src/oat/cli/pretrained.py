"""``oat pretrained``: the small models shipped in the package; list them, show one, copy one to a run folder."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("pretrained", help="list the bundled pretrained models, show one, or copy one to a run folder",
                       description="Without NAME: one model a line (name, kind, parameters, size, SA/RA in %% at "
                       "each trained λ; the header line starts with '#'). With NAME: its manifest (what it is, "
                       "the command that trained it, the commit, its results). Load one in Python with "
                       "oat.load(\"pretrained:NAME\").")
    p.add_argument("name", nargs="?", metavar="NAME", help="the model to show (default: list every model)")
    p.add_argument("--json", action="store_true", help="print NAME's manifest (model.json) as JSON")
    p.add_argument("--copy-to", metavar="RUN", help="write NAME as a new run folder (never over an existing one), "
                   "for oat evaluate, oat report and oat export")
    return p


def kind(doc: dict) -> str:
    if doc["kind"] == "dedicated":
        return f"dedicated λ={doc['lams'][0]:g}"
    return f"OAT ({len(doc['lams'])} λ)"


def _size(doc: dict) -> str:
    return f"{sum(f['bytes'] for f in doc['files'].values()) / 1e3:.0f} kB"


def _sa_ra(doc: dict) -> str:
    return "  ".join(f"{r['lam']:g}: {100 * r['sa']:.1f}/{100 * r['ra']:.1f}" for r in doc["results"])


def list_models(docs: list[dict]) -> None:
    print(f"# {'name':<20} {'kind':<16} {'params':>7} {'size':>7}  SA/RA (%) at λ")
    for d in docs:
        print(f"{d['name']:<22} {kind(d):<16} {d['params'] / 1e3:>6.1f}k {_size(d):>7}  {_sa_ra(d)}")
    if docs:
        r = docs[0]["results"][0]
        print(f"# SA on {r['sa_n']} test images, RA under {r['ra_attack']} on {r['ra_n']}; "
              f"{docs[0]['budget']}. `oat pretrained NAME` shows one.")


def show(doc: dict) -> None:
    arch = doc["architecture"]
    weights = doc["files"]["model.safetensors"]
    lines = [
        ("name", doc["name"]), ("kind", kind(doc)), ("description", doc["description"]),
        ("data", f"{doc['data']} ({'x'.join(map(str, doc['image_shape']))}), ε = {doc['eps']:g} {doc['norm']}"),
        ("architecture", " ".join([arch["name"], *(f"{k}={v}" for k, v in arch["kwargs"].items())])
         + f", {doc['params']:,} parameters"),
        ("λ set", ", ".join(f"{v:g}" for v in doc["lams"])), ("budget", doc["budget"]),
        ("trained by", doc["command"]), ("run", f"{doc['source']['run']} ({doc['checkpoint']})"),
        ("commit", doc.get("commit") or "unknown"),
        ("weights", f"{weights['bytes']:,} bytes, sha256 {weights['sha256']}"),
        ("load", f"oat.load(\"pretrained:{doc['name']}\")"),
    ]
    for key, value in lines:
        print(f"{key + ':':<14}{value}")
    print(f"\n{'λ':>6} {'SA %':>7} {'n':>6} {'RA %':>7} {'attack':>8} {'n':>6}")
    for r in doc["results"]:
        print(f"{r['lam']:>6g} {100 * r['sa']:>7.2f} {r['sa_n']:>6} {100 * r['ra']:>7.2f} {r['ra_attack']:>8} "
              f"{r['ra_n']:>6}")


def run(args) -> int:
    import json

    from oat.errors import ConfigError
    from oat.pretrained import copy_to, list_pretrained, manifest

    if args.name is None:
        if args.copy_to or args.json:
            raise ConfigError("--copy-to and --json need a model NAME (`oat pretrained` lists them)")
        list_models(list_pretrained())
        return 0
    if args.copy_to and args.json:
        raise ConfigError("give --copy-to or --json, not both")
    if args.copy_to:
        copy_to(args.name, args.copy_to)
    elif args.json:
        print(json.dumps(manifest(args.name), indent=1, ensure_ascii=False))
    else:
        show(manifest(args.name))
    return 0
