"""The report's HTML: one self-contained page (inline CSS, JS, images and audio; nothing loaded
from the network). Every text that comes from data (cluster names, labels, recordings,
parameters) goes through `html.escape`, or into the page's JSON with '<' escaped, and the
script shows it with `textContent` only: a name holding HTML is shown as text, never run.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_STRIPS = 300  # recordings drawn as cluster strips (the rest are counted, not drawn)


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def colour_of(rank: int) -> str:
    """A distinct colour per cluster rank (golden-angle hues)."""
    return f"hsl({(rank * 137.508) % 360:.1f},70%,{48 + 10 * (rank % 2)}%)"


def page_json(data: Any) -> str:
    """JSON safe inside a <script> element ('<' escaped, so no tag can close it)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


@dataclass
class Exemplar:
    row: int
    kind: str  # "typical" or "atypical"
    rank: int
    image: str  # data URI
    audio: str  # data URI or ""
    caption: str
    duration_s: float  # of the audio clip (0 without audio)


@dataclass
class Cluster:
    id: int
    name: str
    rank: int
    size: int
    share: float
    average: str  # data URI
    exemplars: list[Exemplar]
    similar: list[tuple[int, float]]
    top_label: str = ""
    top_share: float = float("nan")


@dataclass
class Page:
    title: str
    run: dict[str, str]  # run id, name, step, experiment, dataset, space, audio
    n_segments: int
    noise: int
    clusters: list[Cluster]
    params: dict[str, str]
    metrics: dict[str, float]
    zipf: dict[str, Any]
    sizes: np.ndarray
    expected: np.ndarray | None
    purity: float | None
    contingency: Any  # DataFrame or None
    transitions: np.ndarray
    strips: list[tuple[str, float, list[tuple[float, float, int]]]]  # recording, length, (onset, offset, rank)
    n_recordings: int
    map: dict[str, Any]
    notes: list[str] = field(default_factory=list)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:1.5em;margin:.6em 0 .2em} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.meta{color:#555;font-size:14px} .note{color:#8a5300;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;padding:4px;border:1px solid #ddd;border-radius:4px;width:268px;font-size:12px}
figure.atypical{border-color:#d9822b;background:#fff7ee}
figure img{height:128px;max-width:256px;image-rendering:pixelated;display:block;background:#000}
figure audio{width:256px;height:32px}
.kind{font-weight:600} .atypical .kind{color:#b35900}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:middle;margin-right:4px}
img.average{height:128px;max-width:256px;image-rendering:pixelated;border:1px solid #ddd}
#map-wrap{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
#map-canvas{border:1px solid #ccc;cursor:crosshair}
#preview-canvas{width:256px;height:128px;image-rendering:pixelated;border:1px solid #ddd}
input.name{width:120px;font-size:13px}
.strip{display:block;margin:1px 0}
details{margin:.5em 0}
.side{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap} .side>div:first-child{max-width:440px}
.scroll{max-height:520px;overflow:auto;border:1px solid #eee}
"""

JS = r"""
(function(){
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  // --- names.csv for `nscnet curate --names`
  function csvCell(text){ return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text; }
  var button = document.getElementById("download-names");
  if (button) button.addEventListener("click", function(){
    var lines = ["cluster,name"];
    document.querySelectorAll("input.name").forEach(function(input){
      lines.push(input.getAttribute("data-cluster") + "," + csvCell(input.value.trim()));
    });
    var blob = new Blob([lines.join("\n") + "\n"], {type: "text/csv"});
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "names.csv";
    document.body.appendChild(link); link.click(); link.remove();
  });
  // --- the 2-D map
  var map = data.map, canvas = document.getElementById("map-canvas");
  if (!canvas || !map || !map.x.length) return;
  var ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 10;
  var minX = Math.min.apply(null, map.x), maxX = Math.max.apply(null, map.x);
  var minY = Math.min.apply(null, map.y), maxY = Math.max.apply(null, map.y);
  function px(i){ return pad + (map.x[i] - minX) / ((maxX - minX) || 1) * (W - 2 * pad); }
  function py(i){ return H - pad - (map.y[i] - minY) / ((maxY - minY) || 1) * (H - 2 * pad); }
  function draw(selected){
    ctx.clearRect(0, 0, W, H);
    for (var i = 0; i < map.x.length; i++){
      var c = map.c[i];
      ctx.fillStyle = c < 0 ? "#bbb" : data.colours[c];
      ctx.fillRect(px(i) - 1.5, py(i) - 1.5, 3, 3);
    }
    if (selected >= 0){
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(px(selected), py(selected), 6, 0, 2 * Math.PI); ctx.stroke();
    }
  }
  draw(-1);
  var atlas = document.getElementById("atlas"), preview = document.getElementById("preview-canvas");
  var info = document.getElementById("preview-info"), player = document.getElementById("map-audio");
  var stopTimer = null;
  function show(i){
    draw(i);
    var pctx = preview.getContext("2d"), t = map.tile;
    var r = Math.floor(i / t.columns), col = i % t.columns;
    pctx.clearRect(0, 0, preview.width, preview.height);
    if (atlas.complete && atlas.naturalWidth) pctx.drawImage(atlas, col * t.w, r * t.h, t.w, t.h, 0, 0, preview.width, preview.height);
    var c = map.c[i];
    info.textContent = "segment " + map.seg[i] + " \u00b7 " + data.recordings[map.rec[i]] + " " +
      map.on[i].toFixed(3) + "\u2013" + map.off[i].toFixed(3) + " s \u00b7 " + (c < 0 ? "noise" : data.names[c]);
    var src = data.recording_audio[map.rec[i]];
    if (!src || !player) return;
    if (player.getAttribute("data-rec") !== String(map.rec[i])){ player.src = src; player.setAttribute("data-rec", String(map.rec[i])); }
    var start = Math.max(0, map.on[i] - data.context), stop = map.off[i] + data.context;
    var go = function(){
      player.currentTime = start;
      var p = player.play(); if (p && p.catch) p.catch(function(){});
      if (stopTimer) clearTimeout(stopTimer);
      stopTimer = setTimeout(function(){ player.pause(); }, (stop - start) * 1000);
    };
    if (player.readyState >= 1) go(); else player.addEventListener("loadedmetadata", go, {once: true});
  }
  canvas.addEventListener("click", function(event){
    var box = canvas.getBoundingClientRect();
    var x = (event.clientX - box.left) * W / box.width, y = (event.clientY - box.top) * H / box.height;
    var best = -1, bestD = 100;
    for (var i = 0; i < map.x.length; i++){
      var d = (px(i) - x) * (px(i) - x) + (py(i) - y) * (py(i) - y);
      if (d < bestD){ bestD = d; best = i; }
    }
    if (best >= 0) show(best);
  });
})();
"""


def _table(rows: list[list[Any]], header: list[str], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{cell}</td>' for i, cell in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return esc(value)


def zipf_svg(sizes: np.ndarray, expected: np.ndarray | None, width: int = 420, height: int = 260) -> str:
    """Rank-size plot on log-log axes: observed sizes (dots), the fitted Zipf law (line)."""
    if len(sizes) == 0:
        return ""
    ranks = np.arange(1, len(sizes) + 1)
    top = max(float(sizes.max()), float(expected.max()) if expected is not None else 1.0)
    low = max(0.5, min(float(sizes.min()), float(expected.min()) if expected is not None else top) / 1.5)
    left, right, bottom, upper = 46, 10, 30, 10
    lx0, lx1, ly0, ly1 = 0.0, math.log10(max(len(sizes), 2)), math.log10(low), math.log10(top * 1.2)

    def x(r: float) -> float:
        return left + (math.log10(r) - lx0) / (lx1 - lx0) * (width - left - right)

    def y(v: float) -> float:
        return height - bottom - (math.log10(max(v, low)) - ly0) / (ly1 - ly0) * (height - bottom - upper)

    parts = [f'<svg class="zipf" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{left}" y="{upper}" width="{width - left - right}" height="{height - bottom - upper}" '
             'fill="none" stroke="#999"/>']
    for decade in range(int(math.floor(ly0)), int(math.ceil(ly1)) + 1):
        for step in (1, 2, 5):
            v = step * 10.0 ** decade
            if low <= v <= top * 1.2:
                parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:g}</text>')
    parts.append(f'<text x="12" y="{(upper + height - bottom) / 2:.0f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(upper + height - bottom) / 2:.0f})">segments</text>')
    for r in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000):
        if r <= len(sizes):
            parts.append(f'<text x="{x(r):.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{r}</text>')
    parts.append(f'<text x="{(left + width) / 2:.0f}" y="{height - 3}" font-size="11" text-anchor="middle">rank</text>')
    if expected is not None:
        points = " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in zip(ranks, expected))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="1.5"/>')
    parts += [f'<circle cx="{x(r):.1f}" cy="{y(v):.1f}" r="2.5" fill="#1f4e9c"/>' for r, v in zip(ranks, sizes)]
    parts.append("</svg>")
    return "".join(parts)


def transitions_svg(counts: np.ndarray, clusters: list[Cluster], cell: int = 0) -> str:
    """Row-normalised transition matrix (from row to column) as an SVG heat map, clusters by rank."""
    k = len(clusters)
    if k == 0 or counts.sum() == 0:
        return "<p>No transitions between clusters (one segment per recording, or all noise).</p>"
    cell = cell or max(6, min(24, 640 // k))
    label = 40
    size = label + k * cell
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    parts = [f'<svg class="transitions" width="{size + 4}" height="{size + 4}" xmlns="http://www.w3.org/2000/svg">']
    font = max(6, min(11, cell - 1))
    for i, c in enumerate(clusters):
        parts.append(f'<text x="{label - 3}" y="{label + i * cell + cell * 0.8:.1f}" font-size="{font}" '
                     f'text-anchor="end">{c.id}<title>{esc(c.name)}</title></text>')
        parts.append(f'<text x="{label + i * cell + cell * 0.5:.1f}" y="{label - 4}" font-size="{font}" '
                     f'text-anchor="middle">{c.id}<title>{esc(c.name)}</title></text>')
    rows, cols = np.nonzero(counts)
    for i, j in zip(rows, cols):
        lightness = 100 - 70 * share[i, j]
        parts.append(f'<rect x="{label + j * cell}" y="{label + i * cell}" width="{cell}" height="{cell}" '
                     f'fill="hsl(220,80%,{lightness:.0f}%)"><title>{esc(clusters[i].name)} \u2192 '
                     f'{esc(clusters[j].name)}: {counts[i, j]} ({share[i, j]:.0%})</title></rect>')
    parts.append(f'<rect x="{label}" y="{label}" width="{k * cell}" height="{k * cell}" fill="none" stroke="#999"/>')
    parts.append("</svg>")
    return "".join(parts)


def strip_svg(length: float, items: list[tuple[float, float, int]], names: list[str], width: int = 900) -> str:
    scale = width / max(length, 1e-6)
    rects = "".join(f'<rect x="{on * scale:.1f}" y="0" width="{max(1.0, (off - on) * scale):.1f}" height="14" '
                    f'fill="{"#bbb" if r < 0 else colour_of(r)}"><title>{esc("noise" if r < 0 else names[r])} '
                    f'{on:.3f}\u2013{off:.3f} s</title></rect>' for on, off, r in items)
    return (f'<svg class="strip" width="{width}" height="14" xmlns="http://www.w3.org/2000/svg">'
            f'<rect width="{width}" height="14" fill="#f4f4f4"/>{rects}</svg>')


def _contingency(table: Any, clusters: list[Cluster]) -> str:
    name = {c.id: c.name for c in clusters}
    header = ["cluster", *map(str, table.columns)]
    rows = []
    for cid, values in zip(table.index, table.to_numpy()):
        total = max(int(values.sum()), 1)
        cells = [f'<span title="cluster {cid}">{esc(name.get(int(cid), "noise"))}</span>']
        for v in values:
            shade = 100 - 55 * v / total
            cells.append(f'<span style="display:block;background:hsl(140,60%,{shade:.0f}%)">{int(v)}</span>' if v
                         else "")
        rows.append(cells)
    return _table(rows, header)


def _cluster_section(c: Cluster, names: dict[int, str], truth: bool) -> str:
    similar = ", ".join(f'<a href="#cluster-{s}">{esc(names.get(s, s))}</a> ({d:.3g})' for s, d in c.similar)
    label = (f" · most common reference label <b>{esc(c.top_label)}</b> ({c.top_share:.0%})" if truth and c.top_label
             else "")
    figures = []
    for e in c.exemplars:
        kind = f"most typical {e.rank}" if e.kind == "typical" else f"least typical {e.rank}"
        audio = (f'<audio controls preload="metadata" src="{e.audio}"></audio>' if e.audio
                 else '<div class="note">no audio</div>')
        figures.append(f'<figure class="exemplar {e.kind}" data-row="{e.row}" data-duration="{e.duration_s:.4f}">'
                       f'<img src="{e.image}" alt="spectrogram of segment {e.row}">'
                       f'<figcaption><span class="kind">{kind}</span> · {esc(e.caption)}</figcaption>{audio}</figure>')
    return (f'<section class="cluster" id="cluster-{c.id}" data-cluster="{c.id}">'
            f'<h2><span class="swatch" style="background:{colour_of(c.rank)}"></span>'
            f'{esc(c.name)} <small>(cluster {c.id}, rank {c.rank + 1})</small></h2>'
            f'<p class="meta">{c.size} segments, {c.share:.1%} of all{label}. Most similar clusters (centre '
            f'distance): {similar or "none"}.</p>'
            f'<div class="grid"><figure class="average"><img class="average" src="{c.average}" '
            f'alt="average spectrogram of cluster {c.id}"><figcaption><span class="kind">average</span> of all '
            f'{c.size} members</figcaption></figure></div>'
            f'<h3>Exemplars</h3><div class="grid">{"".join(figures)}</div></section>')


def page(p: Page) -> str:
    """The whole HTML document of a report."""
    names = {c.id: c.name for c in p.clusters}
    truth = p.purity is not None
    run_rows = [[esc(k), esc(v)] for k, v in p.run.items()]
    overview_rows = []
    for c in p.clusters:
        similar = ", ".join(f'<a href="#cluster-{s}">{s}</a>' for s, _ in c.similar)
        row = [f'<span class="swatch" style="background:{colour_of(c.rank)}"></span>{c.rank + 1}',
               f'<a href="#cluster-{c.id}">{c.id}</a>',
               f'<input class="name" data-cluster="{c.id}" value="{esc(c.name)}" aria-label="name of cluster {c.id}">',
               str(c.size), f"{c.share:.1%}"]
        if truth:
            row.append(f"{esc(c.top_label)} ({c.top_share:.0%})" if c.top_label else "")
        row.append(similar)
        overview_rows.append(row)
    header = ["rank", "cluster", "name", "segments", "share"] + (["top label"] if truth else []) + ["similar"]
    zipf = p.zipf
    if zipf.get("zipf_s") is not None:
        source = (f'Zipf run <code>{esc(zipf["run_id"])}</code>' if zipf.get("run_id")
                  else "fitted here (maximum likelihood; run <code>nscnet zipf</code> for the goodness of fit)")
        tests = "".join(f", {k} {zipf[k]:.3g}" for k in ("zipf_ks_pvalue", "zipf_chi2_pvalue") if zipf.get(k) is not None)
        zipf_text = f"<p>Zipf exponent s = {zipf['zipf_s']:.3f}{tests} ({source}).</p>"
    else:
        zipf_text = "<p>No Zipf fit (fewer than 3 clusters).</p>"
    noise_share = p.noise / max(p.n_segments, 1)
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{esc(p.title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{esc(p.title)}</h1><p class=\"meta\">{p.n_segments} segments in {len(p.clusters)} clusters, "
        f"noise {p.noise} ({noise_share:.1%}). Jump to: <a href=\"#overview\">overview</a> · <a href=\"#map\">map</a>"
        f" · <a href=\"#recordings\">recordings and syntax</a> · clusters below.</p>",
        "".join(f'<p class="note">{esc(n)}</p>' for n in p.notes), "</header>",
        '<section id="overview"><h2>Overview</h2>', _table(run_rows, ["", ""], left=2),
        '<h3>Clusters ranked by size</h3><div class="side"><div>', zipf_svg(p.sizes, p.expected), zipf_text,
        "<p>Curate: edit the names in the table (the same name on several clusters merges them; <code>noise</code> "
        "drops a cluster), download them and run <code>nscnet curate --run_id RUN --names names.csv</code>.</p>",
        '<p><button id="download-names" type="button">Download names.csv</button></p></div>',
        '<div class="scroll">', _table(overview_rows, header, left=0), "</div></div>",
    ]
    if truth:
        parts += [f"<h3>Against the reference labels</h3><p>Purity {p.purity:.3f} (share of non-noise segments "
                  "in their cluster's most common label; labels are only counted here, never used to cluster).</p>",
                  "<details><summary>Contingency table (clusters by rank × reference labels)</summary>",
                  _contingency(p.contingency, p.clusters), "</details>"]
    parts += ["<details><summary>Metrics</summary>",
              _table([[esc(k), _number(v)] for k, v in sorted(p.metrics.items())], ["metric", "value"]), "</details>",
              "<details><summary>Parameters</summary>",
              _table([[esc(k), esc(v)] for k, v in sorted(p.params.items())], ["parameter", "value"]), "</details>",
              "</section>"]
    has_audio = any(p.map.get("recording_audio", []))
    parts += ['<section id="map"><h2>Map of all segments</h2>',
              f'<p class="meta">{esc(p.map.get("method", ""))} projection of the clustering space. Click a point to '
              f'see its spectrogram{" and hear it" if has_audio else ""}.</p>',
              '<div id="map-wrap"><canvas id="map-canvas" width="720" height="520"></canvas><div>'
              '<canvas id="preview-canvas" width="256" height="128"></canvas><p id="preview-info" class="meta">'
              'no segment chosen</p>', '<audio id="map-audio" preload="none"></audio>' if has_audio else "",
              '</div></div>',
              f'<img id="atlas" alt="" style="display:none" src="{p.map.get("atlas", "")}">' if p.map.get("atlas")
              else "", "</section>"]
    parts += [_cluster_section(c, names, truth) for c in p.clusters]
    rank_names = [c.name for c in p.clusters]
    strips = "".join(f'<div><span class="meta">{esc(rec)}</span>{strip_svg(length, items, rank_names)}</div>'
                     for rec, length, items in p.strips)
    more = (f"<p class=\"meta\">{p.n_recordings - len(p.strips)} more recordings not drawn.</p>"
            if p.n_recordings > len(p.strips) else "")
    parts += ['<section id="recordings"><h2>Recordings and syntax</h2>',
              "<h3>Cluster-to-cluster transitions</h3><p class=\"meta\">Share of the segments of each cluster (row) "
              "followed by each cluster (column) within a recording; clusters by rank, noise left out.</p>",
              transitions_svg(p.transitions, p.clusters),
              "<h3>Cluster sequence of each recording</h3>", strips, more, "</section>"]
    data = {"colours": [colour_of(c.rank) for c in p.clusters], "names": rank_names,
            "recordings": p.map.get("recordings", []), "recording_audio": p.map.get("recording_audio", []),
            "context": p.map.get("context", 0.0),
            "map": {k: p.map[k] for k in ("x", "y", "c", "rec", "on", "off", "seg", "tile") if k in p.map}}
    parts += [f'<script type="application/json" id="report-data">{page_json(data)}</script>',
              f"<script>{JS}</script></body></html>"]
    return "".join(parts)
