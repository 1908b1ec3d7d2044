"""report.html: one self-contained page beside report.md, checked as a user sees it, in headless Chromium.

The page must render its SA–RA curves, show values on hover, make no request of any kind, and its
λ slider must show, at each λ, the adversarial images and the predictions stored for that λ by
``oat evaluate`` (``RUN/eval/<split>-gallery.json``); those are checked against the model itself.
OATS (a width selector), dedicated (one λ) and blended (α) runs get the same page; a run without
stored images still renders and says why. A screenshot of each page is kept as a test artefact in
``$OAT_TEST_ARTIFACTS`` (default ``tests/artifacts/``, not committed).

Without Chromium the set-up installs it (as root, with apt-get); if it still cannot, the browser
tests skip locally and fail under CI (``CI`` set).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import oat
from headless_chromium import chromium, find_or_install, full_page_screenshot, requests_of
from oat.evaluate.api import evaluate_run
from oat.evaluate.gallery import gallery_path
from oat.evaluate.report import write_report

ARTIFACTS = Path(os.environ.get("OAT_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
FAST = dict(progress=False, log=lambda *_: None, checks=False, subset=40)
# A folder name a user may well choose, and one that must not become markup or script in the page.
ODD_NAME = "run <b>&\"'<img src=x onerror=\"document.title='pwned'\">"
TINY = dict(data="digits", val_size=300, epochs=1, batch_size=64, attack_steps=1, eps=0.3, seed=0,
            model_kwargs={"base": 8})


def decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    import base64

    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    return np.asarray(img)


def foreign(driver) -> list[str]:
    """Requests the page made that are not of itself or a data: URI, and console errors (a request
    refused by the page's Content-Security-Policy, or a script error, is one)."""
    urls = [u for u in requests_of(driver) if not u.startswith(("file:", "data:"))]
    return urls + [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def browser():
    why = find_or_install()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run in CI: {why}")
        pytest.skip(why)
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def oat_run(run_template, tmp_path_factory):
    """The tiny trained OAT run (λ ∈ {0, 1}) under an odd name, evaluated on 40 test images with PGD-20."""
    run = tmp_path_factory.mktemp("html") / ODD_NAME
    shutil.copytree(run_template, run)
    evaluate_run(run, **FAST)
    return run


def open_page(driver, run: Path):
    driver.get((run / "report.html").resolve().as_uri())
    return driver


def by(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def check_slider_shows_stored(driver, gallery: dict, width_index: int = 0) -> list[list[str]]:
    """Step the slider from the first λ to the last with the keyboard; at each, every shown image and
    prediction must be the stored one. Returns the adversarial predictions shown at each λ."""
    from selenium.webdriver.common.keys import Keys

    width = sorted({e["width"] for e in gallery["entries"]}, key=lambda w: -(w or 1.0))[width_index]
    entries = sorted((e for e in gallery["entries"] if e["width"] == width), key=lambda e: e["lam"])
    slider = by(driver, "#lam-slider")[0]
    slider.send_keys(Keys.HOME)
    shown = []
    for k, e in enumerate(entries):
        if k:
            slider.send_keys(Keys.ARROW_RIGHT)
        assert by(driver, "#lam-value")[0].text.endswith(f"= {e['lam']:g}")
        adv = [by(driver, f"#pred-adv-{i}")[0].text for i in range(len(gallery["labels"]))]
        assert adv == [str(p) for p in e["adv_pred"]]
        assert [by(driver, f"#pred-clean-{i}")[0].text for i in range(len(adv))] == [str(p) for p in e["clean_pred"]]
        assert [by(driver, f"#img-adv-{i}")[0].get_attribute("src") for i in range(len(adv))] == e["adv"]
        shown.append(adv)
    return shown


# --------------------------------------------------------------------------- what evaluate stores
def test_stored_images_are_in_the_ball_and_predictions_are_the_models(oat_run, digits):
    g = json.loads(gallery_path(oat_run, "test").read_text())
    assert g["attack"] == "pgd20" and g["eps"] == 0.1 and len(g["labels"]) == 8 == len(set(g["indices"]))
    assert len(set(g["labels"])) == 8  # one image per class first
    model = oat.load(oat_run)
    x_test = digits[2]
    for idx, uri in zip(g["indices"], g["clean"]):
        assert np.array_equal(decode(uri), np.round(x_test[idx, 0].numpy() * 255).astype(np.uint8))
    eps_steps = int(g["eps"] * 255 + 1e-6)
    moved = 0
    for e in g["entries"]:
        adv = torch.tensor(np.stack([decode(u) for u in e["adv"]]), dtype=torch.float32)[:, None] / 255
        clean = x_test[g["indices"]]
        assert (adv - clean).abs().max() * 255 <= eps_steps + 1e-4  # 8-bit, and still inside the ε-ball
        moved += int((adv != clean).any())
        with torch.no_grad():
            assert model.at(e["lam"])(adv).argmax(1).tolist() == e["adv_pred"]
            assert model.at(e["lam"])(clean).argmax(1).tolist() == e["clean_pred"]
    assert moved == len(g["entries"]) == 2


def test_an_evaluation_of_one_lam_adds_to_the_images_and_gallery_0_stores_none(eval_run):
    evaluate_run(eval_run, lams=[0.0], **FAST)
    evaluate_run(eval_run, lams=[1.0], **FAST)
    g = json.loads(gallery_path(eval_run, "test").read_text())
    assert [e["lam"] for e in g["entries"]] == [0.0, 1.0]
    evaluate_run(eval_run, split="val", gallery=0, **FAST)
    assert not gallery_path(eval_run, "val").exists()
    html = (eval_run / "report.html").read_text()  # the report of the test split still shows its images
    assert 'id="gallery"' in html
    write_report([eval_run], split="val")
    html = (eval_run / "report.html").read_text()
    assert 'id="gallery"' not in html and "No example images: none were recorded for the val split" in html


def test_bad_gallery_count_is_one_line(eval_run, capsys):
    from oat.cli.main import main

    assert main(["evaluate", str(eval_run), "--gallery", "-1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gallery must be a whole number" in err


def test_the_file_is_self_contained_and_user_text_stays_text(oat_run):
    html = (oat_run / "report.html").read_text()
    assert len(html) < 100_000
    assert html.count("<script") == 2 and "<img src=x" not in html  # the folder name is text, escaped
    assert "default-src 'none'" in html
    # the one absolute URL is SVG's namespace name, which is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html))


# --------------------------------------------------------------------------- in the browser
def test_the_page_renders_follows_the_slider_and_requests_nothing(oat_run, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    g = json.loads(gallery_path(oat_run, "test").read_text())
    lams = sorted(e["lam"] for e in g["entries"])
    # The check bites only if some image is predicted differently at two λ: the fixture guarantees it.
    per_lam = {e["lam"]: e["adv_pred"] for e in g["entries"]}
    assert any(len({per_lam[v][i] for v in lams}) > 1 for i in range(len(g["labels"])))
    open_page(browser, oat_run)
    assert by(browser, "#title")[0].text == f"oat report: {ODD_NAME}" and browser.title != "pwned"
    curves = by(browser, "#chart-vs-lam path.curve")
    assert len(curves) == 2 and all(c.get_attribute("d").count("L") == len(lams) - 1 for c in curves)
    assert by(browser, "#chart-vs-lam")[0].size["width"] > 300
    assert len(by(browser, "#chart-tradeoff .pt[data-key]")) == len(lams)
    shown = check_slider_shows_stored(browser, g)
    assert len({tuple(s) for s in shown}) > 1  # the shown predictions changed with λ
    assert len(by(browser, "#chart-vs-lam .pt.on")) == 2  # SA and RA of the slider's λ are highlighted
    tip = by(browser, "#tip")[0]
    assert not tip.is_displayed()
    point = by(browser, "#chart-tradeoff .pt[data-key]")[0]
    ActionChains(browser).move_to_element(point).perform()
    assert tip.is_displayed() and re.search(r"λ = [\d.]+: SA [\d.]+%, RA [\d.]+% \(n = 40\)", tip.text)
    assert foreign(browser) == []
    full_page_screenshot(browser, ARTIFACTS / "report-html-oat.png")


def test_the_request_check_catches_a_page_that_loads_something(oat_run, browser, tmp_path):
    html = (oat_run / "report.html").read_text()
    extra = '<img src="http://127.0.0.1:9/x.png">'
    (tmp_path / "csp").mkdir()
    (tmp_path / "csp" / "report.html").write_text(html.replace("<h2>", extra + "<h2>", 1))
    assert any("Content Security Policy" in m for m in foreign(open_page(browser, tmp_path / "csp")))
    (tmp_path / "open").mkdir()
    no_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace("<h2>", extra + "<h2>", 1)
    (tmp_path / "open" / "report.html").write_text(no_csp)
    assert "http://127.0.0.1:9/x.png" in foreign(open_page(browser, tmp_path / "open"))


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """Tiny runs of the other kinds through the real pipeline: OATS, two dedicated models, their blend."""
    base = tmp_path_factory.mktemp("kinds")
    fit = lambda name, **kw: oat.fit({**TINY, **kw}, base / name, progress=False, evaluate=False,
                                     log=lambda *_: None)
    runs = {"oats": fit("oats", objective="oats", lams=[0.0, 1.0], widths=[0.5, 1.0]),
            "ded-0": fit("ded-0", objective="pgdat", lam=0.0), "ded-1": fit("ded-1", objective="pgdat", lam=1.0)}
    runs["mix"] = oat.mix(runs["ded-0"], runs["ded-1"], base / "mix", alphas=(0.0, 0.5, 1.0), log=lambda *_: None)
    for run in runs.values():
        evaluate_run(run, attacks=["fgsm"], report=False, **FAST)
    return runs


@pytest.mark.parametrize("kind", ["oats", "ded-0", "mix"])
def test_every_kind_of_run_gets_a_working_page(kind, other_runs, browser):
    run = other_runs[kind]
    write_report([run])
    g = json.loads(gallery_path(run, "test").read_text())
    open_page(browser, run)
    knob = "α" if kind == "mix" else "λ"
    assert by(browser, "#lam-value")[0].text.startswith(knob)
    assert len(by(browser, "#chart-tradeoff .pt[data-key]")) == len(g["entries"])
    for curve in by(browser, "#chart-tradeoff path.curve"):  # each width's curve runs in λ order, not by SA
        vertices = [tuple(map(float, v.split())) for v in re.findall(r"[ML]([\d.]+ [\d.]+)", curve.get_attribute("d"))]
        width = curve.get_attribute("data-series").removeprefix("model").strip(" w=") or "-"
        pts = [p for p in by(browser, "#chart-tradeoff circle.pt[data-key]")
               if p.get_attribute("data-key").split("|")[1] == width]
        assert vertices == [(float(p.get_attribute("cx")), float(p.get_attribute("cy"))) for p in pts]
        lams = [float(p.get_attribute("data-key").split("|")[0]) for p in pts]
        assert lams == sorted(lams) and len(lams) > 1
    check_slider_shows_stored(browser, g)
    if kind == "oats":
        from selenium.webdriver.support.ui import Select

        Select(by(browser, "#width-select")[0]).select_by_index(1)  # width 0.5
        check_slider_shows_stored(browser, g, width_index=1)
        assert len(by(browser, "#chart-vs-lam path.curve")) == 4  # SA and RA at each width
    assert foreign(browser) == []
    full_page_screenshot(browser, ARTIFACTS / f"report-html-{kind}.png")


def test_dedicated_models_and_alternatives_are_points_beside_the_curve(oat_run, other_runs, browser, tmp_path):
    runs = [oat_run, other_runs["ded-0"], other_runs["ded-1"], other_runs["mix"]]
    for run in runs[1:]:  # the report's attack and ε: PGD-20 at the OAT run's ε
        evaluate_run(run, eps=0.1, report=False, gallery=0, **FAST)
    write_report(runs, out=tmp_path)
    open_page(browser, tmp_path)
    tips = [p.get_attribute("data-tip") for p in by(browser, "#chart-tradeoff .pt:not([data-key])")]
    assert sorted(t.split(" (")[0] for t in tips) == ["dedicated ded-0", "dedicated ded-1", "mix", "mix", "mix"]
    assert any(t.startswith("mix (mix, α = 0.5") for t in tips)
    assert len(by(browser, "#chart-vs-lam .pt:not([data-key])")) == 4  # dedicated SA and RA, on the λ axis
    # The images are the first run's, recorded at this ε and checkpoint.
    assert by(browser, "#gallery") and foreign(browser) == []


def test_a_page_without_images_renders_and_says_why(eval_run, browser):
    evaluate_run(eval_run, gallery=0, **FAST)
    open_page(browser, eval_run)
    assert "none were recorded for the test split" in by(browser, "#gallery-note")[0].text
    assert by(browser, "#lam-stats")[0].text.startswith("SA ") and by(browser, "#chart-vs-lam path.curve")
    assert foreign(browser) == []
