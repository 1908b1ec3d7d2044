"""``report.html``: the report as one self-contained, interactive page beside ``report.md``.

The page shows SA and RA against λ (one curve per width), the SA–RA trade-off with the dedicated
models and any alternatives (further runs with a knob of their own, e.g. an ``oat mix`` blend) as
points, the values of every point on hover, and a λ slider that highlights that λ and shows a few
images of the split, their adversarial versions at that λ and the model's predictions on both
(``RUN/eval/<split>-gallery.json``, see :mod:`oat.evaluate.gallery`; without it the page says why).

Nothing is loaded from anywhere: SVG, CSS and script are inline, images are data URIs, and a
Content-Security-Policy (``default-src 'none'``) forbids the page any request. Run names, paths and
every other string are escaped for where they go: HTML text, attributes, or the JSON the script reads.
"""

from __future__ import annotations

import json
import re
from html import escape
from importlib import resources
from pathlib import Path

from oat.checkpoint import atomic_write_text
from oat.evaluate.gallery import read_gallery
from oat.evaluate.provenance import current_rows, describe_choice, newest_checkpoint
from oat.evaluate.results import pct, read_results, width_of
from oat.evaluate.svg_chart import PALETTE, Point, Series, chart, padded_range

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "fashion-mnist": ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle boot"),
    "stl10": ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
}


def point_key(lam: float, width: float | None) -> str:
    """The page's name of a (λ, width): the slider, the highlighted points and the images share it."""
    return f"{float(lam):.6g}|{'-' if width is None else f'{float(width):.6g}'}"


def _w(width) -> str:
    return "–" if width is None else f"{width:g}"


def extra_runs(runs, info: dict, attack: str | None) -> tuple[list[dict], list[dict]]:
    """The further runs' rows at the report's split, ε, norm and attack: ``(dedicated, alternatives)``.

    A run with one λ (or a pgdat run) is a dedicated model, a point per width; any other run
    (a blend, another OAT model) is an alternative, a point per value of its knob.
    """
    dedicated, alternatives = [], []
    for run in runs:
        doc = read_results(run)
        rows, _ = current_rows(doc, info["split"], eps=info["eps"], norm=info["norm"], newest=newest_checkpoint(run))
        rows = sorted((r for r in rows if r["attack"] == attack), key=lambda r: (-(r["width"] or 1.0), r["lam"]))
        if not rows:
            continue
        if doc.get("objective") == "pgdat" or len({r["lam"] for r in rows}) == 1:
            dedicated += [{**r, "run": Path(run).name} for r in rows]
        else:
            alternatives.append({"name": Path(run).name, "objective": doc.get("objective"),
                                 "knob": "α" if doc.get("objective") == "mix" else "λ", "rows": rows})
    return dedicated, alternatives


def gallery_for(run, info: dict, sha: str | None) -> tuple[dict | None, str | None]:
    """The run's gallery if it shows the report's checkpoint, ε and norm; else None and why not."""
    split = info["split"]
    again = f"`oat evaluate {Path(run).name} --split {split}` records them"
    g = read_gallery(run, split)
    if g is None:
        return None, (f"No example images: none were recorded for the {split} split (evaluated before report.html "
                      f"existed, or with --gallery 0); {again}.")
    if isinstance(g, str):
        return None, f"No example images: {g}; {again}."
    if g.get("checkpoint_sha256") != sha:
        return None, (f"No example images: those recorded are of checkpoint {g.get('checkpoint')}, not of the "
                      f"rows shown; {again}.")
    if abs(float(g.get("eps", -1)) - float(info["eps"] or 0)) > 1e-9 or g.get("norm") != info["norm"]:
        return None, (f"No example images: those recorded are at ε = {g.get('eps')} ({g.get('norm')}), the rows "
                      f"shown at ε = {info['eps']} ({info['norm']}); {again}.")
    return g, None


def page_data(main_rows, gallery: dict | None, knob: str, classes) -> dict:
    """The JSON the page's script reads: the slider's λ and widths, each (λ, width)'s numbers and images."""
    lams = sorted({float(r["lam"]) for r in main_rows} | {float(e["lam"]) for e in (gallery or {}).get("entries", [])})
    widths = sorted({r["width"] for r in main_rows}, key=lambda w: -(w or 1.0))
    rows = {point_key(r["lam"], r["width"]): {"sa": r["sa"], "ra": r["ra"], "n": r["n"]} for r in main_rows}
    data = {"knob": knob, "lams": lams, "lam_labels": [f"{v:g}" for v in lams], "widths": widths,
            "width_labels": [_w(w) for w in widths], "keys": [[point_key(v, w) for v in lams] for w in widths],
            "rows": rows, "classes": list(classes) if classes else None, "gallery": None}
    if gallery:
        data["gallery"] = {"labels": gallery["labels"], "indices": gallery.get("indices"), "clean": gallery["clean"],
                           "entries": {point_key(e["lam"], e["width"]): {k: e[k] for k in ("clean_pred", "adv_pred",
                                                                                            "adv")}
                                       for e in gallery["entries"]}}
    return data


def _tip(r: dict, knob: str) -> str:
    width = "" if r["width"] is None else f", width {r['width']:g}"
    return f"{knob} = {r['lam']:g}{width}: SA {pct(r['sa'])}%, RA {pct(r['ra'])}% (n = {r['n']})"


def _model_series(main_rows, knob: str) -> tuple[list[Series], list[Series]]:
    """The model's curves, one per width: SA and RA against λ, and RA against SA."""
    vs_lam, trade = [], []
    for i, w in enumerate(sorted({r["width"] for r in main_rows}, key=lambda w: -(w or 1.0))):
        rs = sorted((r for r in main_rows if r["width"] == w), key=lambda r: r["lam"])
        tag, color = ("" if w is None else f" w={w:g}"), PALETTE[i % len(PALETTE)]
        sa = [Point(r["lam"], 100 * r["sa"], _tip(r, knob), point_key(r["lam"], w)) for r in rs]
        ra = [Point(r["lam"], 100 * r["ra"], _tip(r, knob), point_key(r["lam"], w)) for r in rs]
        vs_lam += [Series(f"SA{tag}", sa, color), Series(f"RA{tag}", ra, color, "dashed", "square")]
        trade.append(Series(f"model{tag}", [Point(100 * r["sa"], 100 * r["ra"], _tip(r, knob), point_key(r["lam"], w),
                                                  f"{r['lam']:g}") for r in rs], color))
    return vs_lam, trade


def _charts(main_rows, dedicated, alternatives, knob: str, attack: str) -> str:
    vs_lam, trade = _model_series(main_rows, knob)
    dtip = lambda d: f"dedicated {d['run']} (λ = {d['lam']:g}, width {_w(d['width'])}): SA {pct(d['sa'])}%, " \
                     f"RA {pct(d['ra'])}%"
    if dedicated:
        vs_lam += [Series("dedicated SA", [Point(d["lam"], 100 * d["sa"], dtip(d)) for d in dedicated], "#000",
                          None, "up", True),
                   Series("dedicated RA", [Point(d["lam"], 100 * d["ra"], dtip(d)) for d in dedicated], "#000",
                          None, "down", True)]
        trade.append(Series("dedicated", [Point(100 * d["sa"], 100 * d["ra"], dtip(d), label=f"{d['lam']:g}")
                                          for d in dedicated], "#000", None, "up", True))
    for j, alt in enumerate(alternatives):
        color = PALETTE[(len(trade) + j) % len(PALETTE)]
        trade.append(Series(alt["name"], [Point(100 * r["sa"], 100 * r["ra"],
                                                f"{alt['name']} ({alt['objective']}, {alt['knob']} = {r['lam']:g}, "
                                                f"width {_w(r['width'])}): SA {pct(r['sa'])}%, RA {pct(r['ra'])}%",
                                                label=f"{r['lam']:g}") for r in alt["rows"]], color, None, "square",
                            True))
    lams = [p.x for s in vs_lam for p in s.points]
    sa = [p.x for s in trade for p in s.points]
    ra = [p.y for s in trade for p in s.points]
    first = chart(vs_lam, title=f"SA and RA ({attack}) against {knob}", x_label=knob, y_label="accuracy (%)",
                  x_range=(min([0.0, *lams]), max([1.0, *lams])), y_range=(0, 100), chart_id="chart-vs-lam",
                  cursor=True)
    second = chart(trade, title=f"SA–RA trade-off (labels: {knob})", x_label="standard accuracy SA (%)",
                   y_label=f"robust accuracy RA, {attack} (%)", x_range=padded_range(sa), y_range=padded_range(ra),
                   chart_id="chart-tradeoff")
    return first + "\n" + second


def _table(main_rows, dedicated, knob: str) -> str:
    ded = {(round(d["lam"], 6), width_of(d)): d for d in dedicated}  # a plain dedicated run is width 1
    head = f"<tr><th>{knob}</th><th>width</th><th>SA %</th><th>RA %</th><th>n</th>" + \
        ("<th>dedicated SA %</th><th>dedicated RA %</th>" if ded else "") + "</tr>"
    body = []
    for r in main_rows:
        k = point_key(r["lam"], r["width"])
        cells = [f"{r['lam']:g}", _w(r["width"]), pct(r["sa"]), pct(r["ra"]), str(r["n"])]
        if ded:
            d = ded.get((round(r["lam"], 6), width_of(r)))
            cells += [pct(d and d["sa"]), pct(d and d["ra"])]
        body.append(f'<tr data-key="{escape(k)}">' + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    return f'<table id="rows">{head}{"".join(body)}</table>'


def _gallery_html(data: dict, gallery: dict | None, note: str | None, knob: str, split: str) -> str:
    widths = "" if len(data["widths"]) < 2 else (
        '<label for="width-select">width</label> <select id="width-select">' + "".join(
            f'<option value="{i}">{escape(w)}</option>' for i, w in enumerate(data["width_labels"])) + "</select>")
    controls = (f'<div class="controls"><label for="lam-slider">{knob}</label> <input type="range" id="lam-slider" '
                f'min="0" max="{len(data["lams"]) - 1}" step="1" value="0"> <output id="lam-value"></output> '
                f'{widths} <span id="lam-stats"></span></div>')
    if gallery is None:
        return controls + f'<p id="gallery-note" class="note">{escape(note or "")}</p>'
    cards = "".join(
        f'<div class="card"><div class="imgs"><figure><img id="img-clean-{i}" alt="clean image {i}" '
        f'src="{escape(uri)}"><figcaption>clean: <b id="pred-clean-{i}"></b></figcaption></figure><figure>'
        f'<img id="img-adv-{i}" alt="adversarial image {i}"><figcaption>adversarial: <b id="pred-adv-{i}"></b>'
        f'</figcaption></figure></div><div class="label">label <b>{escape(_class(y, data["classes"]))}</b>'
        f'</div></div>' for i, (uri, y) in enumerate(zip(gallery["clean"], gallery["labels"])))
    about = (f'{len(gallery["labels"])} images of the {split} split; adversarial versions by '
             f'<code>{escape(gallery["attack"])}</code> at ε = {gallery["eps"]:.4g} ({escape(gallery["norm"])}) '
             f'on the model at each {knob}; predictions on the 8-bit images shown (red: wrong).')
    return (controls + f'<p class="note">{about}</p><p id="gallery-note" class="note" hidden></p>'
            f'<div id="gallery">{cards}</div>')


def _class(y: int, classes) -> str:
    return classes[y] if classes and 0 <= y < len(classes) else str(y)


def _code(text: str) -> str:
    """Escaped text with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", escape(text))


def _json_for_script(data: dict) -> str:
    # Inside <script type="application/json"> only "</script" and "<!--" could end or bend the
    # element; no "<", ">" or "&" is left for the HTML parser to see.
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("oat.evaluate").joinpath(name).read_text(encoding="utf-8")


def write_html(out: Path, *, runs, doc: dict, info: dict, attack: str, main_rows: list[dict]) -> Path:
    """Write ``out/report.html`` (atomically) for ``runs[0]`` beside the further ``runs[1:]``.

    ``info``: the report's choice of rows (:func:`oat.evaluate.provenance.current_rows`);
    ``main_rows``: ``runs[0]``'s rows under ``attack``, one per (λ, width).
    """
    runs = [Path(r) for r in runs]
    knob = "α" if doc.get("objective") == "mix" else "λ"
    dedicated, alternatives = extra_runs(runs[1:], info, attack)
    gallery, note = gallery_for(runs[0], info, main_rows[0].get("checkpoint_sha256"))
    data = page_data(main_rows, gallery, knob, CLASS_NAMES.get(str(doc.get("data"))))
    name = runs[0].name
    meta = (f"Model `{doc.get('model')}`, objective `{doc.get('objective')}`, data `{doc.get('data')}`, trained at "
            f"ε = {doc.get('eps')}. Accuracies in %; RA under `{attack}`. Hover a point for its values.")
    listing = "" if len(runs) < 2 else "<h2>Runs</h2><ul>" + "".join(
        f"<li><code>{escape(str(r))}</code></li>" for r in runs) + "</ul>"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>oat report: {escape(name)}</title>
<style>{_asset("report_page.css")}</style></head>
<body>
<h1 id="title">oat report: {escape(name)}</h1>
<p class="meta">{_code(meta)}</p>
<p class="meta">{_code(describe_choice(info))}</p>
<h2>Trade-off</h2>
<div class="charts">{_charts(main_rows, dedicated, alternatives, knob, attack)}</div>
<h2>The model at one {knob}</h2>
{_gallery_html(data, gallery, note, knob, info["split"])}
<h2>Numbers</h2>
{_table(main_rows, dedicated, knob)}
{listing}
<div id="tip" hidden></div>
<script type="application/json" id="oat-data">{_json_for_script(data)}</script>
<script>{_asset("report_page.js")}</script>
</body></html>
"""
    path = Path(out) / "report.html"
    atomic_write_text(path, page)
    return path
