"""``GET /`` of ``serve.py``: a page to try the model by hand, with nothing loaded from the internet.

Drop or choose an image (a model of images), or paste a row of numbers (a model of table rows); the
page posts it to ``/predict`` and shows the top classes with their probabilities (or the values of a
regression, or the labels of a multilabel model), or the server's one-line error.
"""

import html
import json
from typing import Any

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #1d2330; }
  h1 { font-size: 1.3rem; margin-bottom: .2rem; }
  .about { color: #5a6375; margin-top: 0; }
  #drop { border: 2px dashed #9aa4b8; border-radius: 8px; padding: 1.5rem; text-align: center; cursor: pointer; }
  #drop.over { background: #eef3ff; border-color: #4a6fd8; }
  #preview { height: 8rem; display: block; margin: .8rem auto 0; image-rendering: pixelated; }
  textarea { width: 100%; min-height: 5rem; font-family: ui-monospace, monospace; }
  button { margin-top: .5rem; padding: .4rem 1rem; }
  .hidden { display: none; }
  #error { color: #a11; margin-top: 1rem; }
  table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
  td { padding: .25rem .4rem; }
  td.p { width: 5rem; text-align: right; font-variant-numeric: tabular-nums; }
  .bar { background: #4a6fd8; height: .8rem; border-radius: 3px; }
  label.key { display: block; margin-top: 1rem; color: #5a6375; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<p class="about">__ABOUT__</p>
<section id="images" class="hidden">
  <div id="drop">Drop an image here, or click to choose one<input id="file" type="file" accept="image/*" class="hidden"></div>
  <img id="preview" class="hidden" alt="">
</section>
<section id="rows" class="hidden">
  <textarea id="row" placeholder="one row: numbers separated by commas or spaces"></textarea>
  <button id="send">Predict</button>
</section>
<label class="key">API key, if the server wants one <input id="key" type="password" autocomplete="off"></label>
<div id="error" role="alert"></div>
<table id="result"></table>
<script>
const model = __MODEL__;
const $ = (id) => document.getElementById(id);
$(model.images ? "images" : "rows").classList.remove("hidden");

async function predict(body, type) {
  $("error").textContent = ""; $("result").innerHTML = "";
  const headers = {"Content-Type": type};
  if ($("key").value) headers["X-API-Key"] = $("key").value;
  let answer;
  try {
    const response = await fetch("predict", {method: "POST", body, headers});
    answer = await response.json();
    if (!response.ok) { $("error").textContent = answer.error || ("error " + response.status); return; }
  } catch (failure) { $("error").textContent = "the server did not answer: " + failure; return; }
  show(answer.predictions[0]);
}

function row(name, value, share) {
  const line = $("result").insertRow();
  line.insertCell().textContent = name;
  const bar = line.insertCell(); bar.style.width = "60%";
  if (share !== null) { const fill = document.createElement("div"); fill.className = "bar"; fill.style.width = (100 * share) + "%"; bar.append(fill); }
  const cell = line.insertCell(); cell.className = "p"; cell.textContent = value;
}

function show(prediction) {
  if ("top_k" in prediction) { for (const top of prediction.top_k) row(top.class, top.probability.toFixed(4), top.probability); }
  else if ("labels" in prediction) { for (const [name, p] of Object.entries(prediction.probabilities)) row(name, p.toFixed(4), p); }
  else { prediction.prediction.flat().forEach((value, i) => row("output " + i, value.toPrecision(5), null)); }
}

function send(file) {
  if (!file) return;
  $("preview").src = URL.createObjectURL(file); $("preview").classList.remove("hidden");
  predict(file, file.type || "application/octet-stream");
}
$("drop").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => send($("file").files[0]));
$("drop").addEventListener("dragover", (event) => { event.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (event) => { event.preventDefault(); $("drop").classList.remove("over"); send(event.dataTransfer.files[0]); });
$("send").addEventListener("click", () => {
  const numbers = $("row").value.split(/[\\s,;]+/).filter(Boolean).map(Number);
  predict(JSON.stringify({"input": numbers}), "application/json");
});
</script>
</body>
</html>
"""


def page(meta: dict[str, Any], name: str) -> str:
    """The page for the exported model ``name`` described by ``meta`` (its JSON)."""
    reader = meta["preprocessing"]["reader"]
    shape = "x".join(str(n) for n in meta["input"]["shape"])
    about = f"{meta['outputs']['task']}, input {shape}" + (f" ({reader['channels']} channel image)" if reader["kind"] == "image" else " (a row)")
    model = json.dumps({"images": reader["kind"] == "image"}).replace("<", "\\u003c")
    return PAGE.replace("__TITLE__", html.escape(name)).replace("__ABOUT__", html.escape(about)).replace("__MODEL__", model)
