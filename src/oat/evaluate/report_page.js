// report.html's script: the λ slider (highlight, numbers, example images) and the hover values.
// It reads the page's JSON blob and writes only textContent, attributes and data: image sources.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("oat-data").textContent);
  var slider = document.getElementById("lam-slider");
  var widthSelect = document.getElementById("width-select");
  var tip = document.getElementById("tip");
  var PNG = "data:image/png;base64,";

  function pct(v) { return (100 * v).toFixed(2) + "%"; }
  function className(y) { return data.classes && data.classes[y] !== undefined ? data.classes[y] : String(y); }

  function showPrediction(el, pred, label) {
    el.textContent = className(pred);
    el.className = pred === label ? "right" : "wrong";
    el.title = pred === label ? "correct" : "wrong";
  }

  function moveCursor(key) {
    document.querySelectorAll("svg.chart").forEach(function (svg) {
      var cursor = svg.querySelector(".cursor");
      if (!cursor) { return; }
      var pt = svg.querySelector('.pt[data-key="' + CSS.escape(key) + '"]');
      var x = pt && (pt.getAttribute("cx") || (pt.getBBox().x + pt.getBBox().width / 2));
      cursor.setAttribute("visibility", x ? "visible" : "hidden");
      if (x) { cursor.setAttribute("x1", x); cursor.setAttribute("x2", x); }
    });
  }

  function update() {
    var li = Number(slider.value), wi = widthSelect ? Number(widthSelect.value) : 0;
    var key = data.keys[wi][li], row = data.rows[key];
    document.getElementById("lam-value").textContent = data.knob + " = " + data.lam_labels[li];
    document.getElementById("lam-stats").textContent = row
      ? "SA " + pct(row.sa) + " · RA " + pct(row.ra) + " (n = " + row.n + ")" : "not evaluated at this " + data.knob;
    document.querySelectorAll(".on").forEach(function (el) { el.classList.remove("on"); });
    document.querySelectorAll('[data-key="' + CSS.escape(key) + '"]').forEach(function (el) {
      el.classList.add("on");
    });
    moveCursor(key);
    var g = data.gallery;
    if (!g) { return; }
    var entry = g.entries[key], note = document.getElementById("gallery-note");
    document.getElementById("gallery").hidden = !entry;
    note.hidden = !!entry;
    note.textContent = entry ? "" : "No example images at " + data.knob + " = " + data.lam_labels[li] +
      (widthSelect ? ", width " + data.width_labels[wi] : "") + " (not part of the evaluation that recorded them).";
    if (!entry) { return; }
    g.labels.forEach(function (label, i) {
      var img = document.getElementById("img-adv-" + i);
      if (entry.adv[i].indexOf(PNG) === 0) { img.src = entry.adv[i]; }
      showPrediction(document.getElementById("pred-clean-" + i), entry.clean_pred[i], label);
      showPrediction(document.getElementById("pred-adv-" + i), entry.adv_pred[i], label);
    });
  }

  document.addEventListener("mouseover", function (ev) {
    var t = ev.target;
    if (!t.classList || !t.classList.contains("pt")) { return; }
    tip.textContent = t.getAttribute("data-tip");
    tip.style.left = (ev.clientX + 12) + "px";
    tip.style.top = (ev.clientY + 12) + "px";
    tip.hidden = false;
  });
  document.addEventListener("mouseout", function (ev) {
    if (ev.target.classList && ev.target.classList.contains("pt")) { tip.hidden = true; }
  });
  slider.addEventListener("input", update);
  if (widthSelect) { widthSelect.addEventListener("change", update); }
  update();
}());
