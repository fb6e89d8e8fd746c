"""`nscnet report`: one self-contained HTML page to look at and listen to every cluster of a run.

For any clustering run (basenet, vaenet, nscnet, pretrain, a study trial, a curated or predict
run) the page holds an overview (clusters ranked by size with the Zipf fit, noise share, the
run's params and metrics; purity and the contingency table when the dataset has reference
labels), one section per cluster (size and share, average spectrogram, the most and the least
typical members as spectrograms with playable audio cut from the original recordings with
context, the most similar clusters), a 2-D map of all segments (click a point: its spectrogram
and, when the recordings are embedded, its sound), and per recording the cluster sequence, with
the cluster-to-cluster transition matrix. Everything is inline (no network); the page is
written to `out/report.html` and logged to the run under `report/`. See docs/report.md.

Modules: `gather` (the run's data and the pure computations), `media` (images, audio, the
per-unit export), `render` (HTML), `curate` (the `nscnet curate` step).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from nscnet.config import ReportConfig
from nscnet.report import gather, media, render

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
REPORT_DIR = "report"  # artifact folder of the run


def _map_data(run: gather.RunData, space: np.ndarray, rank: dict[int, int], recordings: list[str],
              seed: int) -> dict[str, Any]:
    from nscnet.report.plots import _project

    labels = run.labels
    xy, method = _project(space, labels, seed)
    index = {r: i for i, r in enumerate(recordings)}
    table = run.table
    return {"method": method, "x": np.round(xy[:, 0], 4).tolist(), "y": np.round(xy[:, 1], 4).tolist(),
            "c": [rank.get(int(c), -1) for c in labels], "rec": [index[str(r)] for r in table["recording"]],
            "on": np.round(table["onset_s"].astype(float).to_numpy(), 4).tolist(),
            "off": np.round(table["offset_s"].astype(float).to_numpy(), 4).tolist(),
            "seg": table["segment_id"].astype(str).tolist()}


def _recording_minutes(run: gather.RunData, recordings: list[str]) -> float:
    if run.audio_dir is None:
        return 0.0
    total = 0.0
    for name in recordings:
        path = media.recording_file(run.audio_dir, name)
        if path is not None:
            info = media.sf.info(str(path))
            total += info.frames / max(info.samplerate, 1)
    return total / 60.0


def build_report(cfg: ReportConfig, run: gather.RunData | None = None) -> tuple[str, dict[str, Any]]:
    """(HTML text, facts: counts, audio format, what was resolved) of the report of cfg.run_id."""
    run = run or gather.load_run(cfg.run_id, cfg.data, cfg.audio)
    notes = [run.audio_note] if run.audio_note else []
    labels, table, images = run.labels, run.table, run.dataset.images
    ids, sizes = gather.cluster_ids_by_size(labels)
    rank = {int(c): i for i, c in enumerate(ids)}
    names = gather.names_of(table)
    space, space_source = run.space, run.space_source
    if space is None:
        space, space_source = run.dataset.flat(), "flattened spectrograms (the run logged no clustered space)"
        notes.append("The run logged no clustered.npy or embeddings.npy: exemplars and the map use the pixels.")
    chosen = gather.exemplars(space, labels, ids, cfg.exemplars, cfg.atypical)
    centre = gather.centres(space, labels, ids)
    similar = gather.similar_clusters(centre, ids)
    averages = gather.average_images(images, labels, ids)
    truth = run.truth()
    purity = contingency = None
    top: dict[int, tuple[str, float]] = {}
    if truth is not None:
        purity = gather.purity(labels, truth)
        contingency = gather.contingency_table(labels, truth, ids)
        for c, values in zip(contingency.index, contingency.to_numpy()):
            if values.sum():
                top[int(c)] = (str(contingency.columns[int(values.argmax())]), float(values.max() / values.sum()))

    zipf = dict(run.zipf)
    expected = None
    if len(sizes) >= 3:
        from nscnet.analysis.zipf import expected_counts, fit_zipf_s

        if zipf.get("zipf_s") is None:
            zipf["zipf_s"] = fit_zipf_s(sizes)
        expected = expected_counts(zipf["zipf_s"], len(sizes), int(sizes.sum()))

    recordings = sorted(table["recording"].astype(str).unique())
    fmt = media.choose_format(cfg.audio_format, cfg.audio_rate)
    minutes = _recording_minutes(run, recordings)
    embed_recordings = run.audio_dir is not None and 0 < minutes <= cfg.map_audio_minutes
    if run.audio_dir is not None and not embed_recordings:
        notes.append(f"The recordings total {minutes:.1f} min, more than map_audio_minutes={cfg.map_audio_minutes:g}: "
                     "the map shows spectrograms only; the exemplars play.")

    # audio: each recording read once; exemplar clips cut with context, whole recordings for the map
    wanted = {int(r): (int(c), kind, i + 1) for c, (typ, aty) in chosen.items()
              for kind, rows in (("typical", typ), ("atypical", aty)) for i, r in enumerate(rows)}
    clips: dict[int, tuple[str, float]] = {}
    recording_audio = [""] * len(recordings)
    position = {r: i for i, r in enumerate(recordings)}
    rates: set[int] = set()
    audio_bytes = 0
    if run.audio_dir is not None:
        subset = table.iloc[sorted(wanted)] if not embed_recordings else table
        missing = 0
        for recording, y, rate, rows in media.by_recording(subset.assign(row_index=subset.index), run.audio_dir):
            if y is None:
                missing += 1
                continue
            rates.add(rate)
            if embed_recordings:
                payload, _ = media.encode(y, rate, fmt)
                audio_bytes += len(payload)
                recording_audio[position[recording]] = media.data_uri(payload, fmt.mime)
            for row in rows.itertuples(index=False):
                if int(row.row_index) not in wanted:
                    continue
                clip, _ = media.cut(y, rate, float(row.onset_s), float(row.offset_s), cfg.context_s)
                payload, out_rate = media.encode(clip, rate, fmt)
                audio_bytes += len(payload)
                clips[int(row.row_index)] = (media.data_uri(payload, fmt.mime), len(clip) / rate)
        if missing:
            notes.append(f"{missing} recording(s) not found in {run.audio_dir}: their segments have no audio.")

    preprocess = run.dataset.meta.get("params", {})
    window_s, pad = float(preprocess.get("duration_s", 0) or 0), str(preprocess.get("pad", "end"))
    width = images.shape[2]

    def exemplar_image(row: int) -> str:  # the sound, without the padding of the fixed-length cut
        duration = float(table["offset_s"].iloc[row]) - float(table["onset_s"].iloc[row])
        return media.spectrogram_uri(images[row][:, gather.sound_columns(width, duration, window_s, pad)])

    durations = (table["offset_s"].astype(float) - table["onset_s"].astype(float)).to_numpy()

    def average_image(c: int) -> str:  # cut to the longest member's sound (97th percentile)
        longest = float(np.percentile(durations[labels == c], 97))
        return media.spectrogram_uri(averages[rank[c]][:, gather.sound_columns(width, longest, window_s, pad)])

    clusters = []
    n = len(labels)
    for c, size in zip(ids, sizes):
        c = int(c)
        typ, aty = chosen[c]
        shown = []
        for kind, rows in (("typical", typ), ("atypical", aty)):
            for i, r in enumerate(rows):
                seg = table.iloc[int(r)]
                audio, duration = clips.get(int(r), ("", 0.0))
                caption = f"{seg['recording']} {float(seg['onset_s']):.3f}\u2013{float(seg['offset_s']):.3f} s"
                shown.append(render.Exemplar(row=int(r), kind=kind, rank=i + 1, image=exemplar_image(int(r)),
                                             audio=audio, caption=caption, duration_s=duration))
        label, share = top.get(c, ("", float("nan")))
        clusters.append(render.Cluster(id=c, name=names.get(c, str(c)), rank=rank[c], size=int(size),
                                       share=int(size) / n, average=average_image(c),
                                       exemplars=shown, similar=similar[c], top_label=label, top_share=share))

    map_data = _map_data(run, space, rank, recordings, cfg.seed)
    atlas, th, tw = media.thumbnail_atlas(images)
    map_data.update(atlas=media.data_uri(atlas, "image/jpeg"), tile={"h": th, "w": tw, "columns": media.THUMB_COLUMNS},
                    recordings=recordings, recording_audio=recording_audio, context=cfg.context_s)

    strips = []
    ordered = table.sort_values(["recording", "onset_s"], kind="stable")
    for recording, rows in list(ordered.groupby("recording", sort=True))[:render.MAX_STRIPS]:
        items = [(float(a), float(b), rank.get(int(c), -1)) for a, b, c in
                 zip(rows["onset_s"], rows["offset_s"], rows["cluster"])]
        strips.append((str(recording), max(b for _, b, _ in items) + cfg.context_s, items))

    audio_text = (fmt.describe(max(rates)) if rates else "none") + (", peak-normalised" if rates else "")
    facts = {"clusters": len(ids), "segments": n, "exemplars": sum(len(c.exemplars) for c in clusters),
             "audio_clips": len(clips), "audio": audio_text, "audio_bytes": audio_bytes,
             "recordings_embedded": sum(bool(a) for a in recording_audio), "space": space_source,
             "atlas_bytes": len(atlas)}
    page = render.Page(
        title=f"nscnet report: {run.step or 'run'} {run.run_name or run.run_id}",
        run={"run id": run.run_id, "run name": run.run_name, "step": run.step, "experiment": run.experiment,
             "dataset": str(run.dataset.path), "clustering space": space_source,
             "recordings": str(run.audio_dir) if run.audio_dir else "not found",
             "audio": f"{audio_text}; {cfg.context_s:g} s of context before and after",
             "exemplars": f"{cfg.exemplars} most typical (nearest the cluster centre) + up to {cfg.atypical} least "
                          "typical per cluster"},
        n_segments=n, noise=int((labels == -1).sum()), clusters=clusters, params=run.params, metrics=run.metrics,
        zipf=zipf, sizes=sizes, expected=expected, purity=purity, contingency=contingency,
        transitions=gather.transitions(table, ids), strips=strips, n_recordings=len(recordings), map=map_data,
        notes=notes)
    return render.page(page), facts


def run_report(cfg: ReportConfig) -> dict[str, Any]:
    """The `report` entry point: out/report.html, logged to the run under report/; returns facts."""
    from nscnet.runs import tracking

    started = time.perf_counter()
    run = gather.load_run(cfg.run_id, cfg.data, cfg.audio)
    text, facts = build_report(cfg, run)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    if cfg.units:
        facts.update(media.write_units(out / "units", run.table, gather.names_of(run.table), run.audio_dir))
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    tracking.log_artifact_to(cfg.run_id, path, REPORT_DIR)
    tracking.tag_run(cfg.run_id, {"nscnet.report": f"{REPORT_DIR}/{REPORT_FILE}",
                                  "nscnet.report_mb": f"{size / 1e6:.2f}", "nscnet.report_seconds": f"{seconds:.1f}"})
    facts.update(path=str(path.resolve()), bytes=size, seconds=seconds)
    print(f"report: {facts['clusters']} clusters, {facts['exemplars']} exemplars ({facts['audio']}), "
          f"{size / 1e6:.1f} MB in {seconds:.1f} s -> {path.resolve()} (also artifact {REPORT_DIR}/{REPORT_FILE} of "
          f"run {cfg.run_id})")
    return facts
