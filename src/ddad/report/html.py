"""`ddad report`: one self-contained HTML file (pictures embedded) rebuilt from an evaluation folder's files:
metrics.json, scores.json, maps.npy, masks.npy, inputs.npy, reconstructions.npy, calibration.json."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ..metrics import compute_metrics, pro_curve, roc_curve  # noqa: E402
from .figures import colour_bar, overlay, panel, to_uint8  # noqa: E402

__all__ = ["build_report"]

NAMES = {"image_auroc": "I-AUROC", "pixel_auroc": "P-AUROC", "pro": "PRO", "image_ap": "I-AP", "pixel_ap": "P-AP",
         "image_f1_max": "I-F1max", "pixel_f1_max": "P-F1max"}


def _png(fig_or_array) -> str:
    buf = io.BytesIO()
    if isinstance(fig_or_array, np.ndarray):
        Image.fromarray(fig_or_array).save(buf, format="PNG")
    else:
        fig_or_array.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig_or_array)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _load(folder: Path, name: str):
    p = folder / name
    if not p.is_file():
        return None
    return np.load(p, allow_pickle=False, mmap_mode="r") if p.suffix == ".npy" else json.loads(p.read_text())


def _curves(scores, labels, maps, masks, threshold) -> list[str]:
    figs = []
    if 0 < labels.sum() < labels.size:
        fpr, tpr = roc_curve(scores, labels)
        fig, ax = plt.subplots(figsize=(4, 3.5))
        ax.plot(fpr, tpr)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="image ROC")
        figs.append(_png(fig))
    if maps is not None and masks is not None and masks.any():
        fpr, pro = pro_curve(maps.astype(np.float32), masks)
        keep = fpr <= 0.3
        fig, ax = plt.subplots(figsize=(4, 3.5))
        ax.plot(fpr[keep], pro[keep])
        ax.set(xlabel="false positive rate", ylabel="per-region overlap", title="PRO (FPR <= 0.3)", ylim=(0, 1.02))
        figs.append(_png(fig))
    fig, ax = plt.subplots(figsize=(4, 3.5))
    bins = np.linspace(scores.min(), scores.max(), 30)
    ax.hist(scores[~labels], bins, alpha=0.6, label="good")
    ax.hist(scores[labels], bins, alpha=0.6, label="defective")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label="threshold")
    ax.set(xlabel="image score", ylabel="images", title="score histogram")
    ax.legend()
    figs.append(_png(fig))
    return figs


def _order(scores: np.ndarray, labels: np.ndarray, worst: int) -> np.ndarray:
    """Hardest first: good images by descending score, defective ones by ascending score, interleaved."""
    good = np.flatnonzero(~labels)[np.argsort(-scores[~labels])]
    bad = np.flatnonzero(labels)[np.argsort(scores[labels])]
    merged = [i for pair in zip(good, bad) for i in pair] + list(good[len(bad):]) + list(bad[len(good):])
    return np.array(merged[:worst], dtype=int)


def per_defect_metrics(records, scores, labels, maps=None, masks=None) -> dict[str, tuple]:
    """defect type -> (images, image AUROC against all good images, pixel AUROC, PRO over those images)."""
    types = [r["defect_type"] for r in records]
    good = ~labels
    out = {}
    for t in sorted({t for t, lab in zip(types, labels) if lab}):
        of_type = np.array([ty == t for ty in types])
        sel = of_type | good
        m = compute_metrics(scores[sel], labels[sel], None if maps is None else maps[sel],
                            None if masks is None else masks[sel])
        out[t] = (int(of_type.sum()), m.image_auroc, m.pixel_auroc, m.pro)
    return out


def _per_defect(records, scores, labels, maps, masks) -> list[str]:
    """Rows of a table: each defect type against the good images (image AUROC), and its own pixel metrics."""
    return [f"<tr><td>{html.escape(t)}</td><td>{n}</td>" + "".join(
            "<td>-</td>" if v is None else f"<td>{100 * v:.1f}</td>" for v in cells) + "</tr>"
            for t, (n, *cells) in per_defect_metrics(records, scores, labels, maps, masks).items()]


def load_evaluation(eval_dir: str | Path) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray | None,
                                                    np.ndarray | None]:
    """(records, scores, labels as bool, maps or None, masks or None) of a saved evaluation folder."""
    d = Path(eval_dir)
    records = _load(d, "scores.json")
    if records is None:
        raise FileNotFoundError(f"{d} has no scores.json; run `ddad evaluate --model ... --out {d}` first")
    scores = np.array([r["score"] for r in records])
    labels = np.array([r["label"] for r in records]).astype(bool)
    return records, scores, labels, _load(d, "maps.npy"), _load(d, "masks.npy")


def _info_histograms(records: list[dict], labels: np.ndarray) -> list[str]:
    """One histogram per per-image value the method recorded (scores.json "info", e.g. GLAD's adaptive step),
    good and defective images apart."""
    figs = []
    for key in (records[0].get("info") or {}) if records else ():
        v = np.array([r["info"][key] for r in records], dtype=np.float64)
        fig, ax = plt.subplots(figsize=(4, 3.5))
        bins = np.unique(v) if np.unique(v).size <= 30 else 30
        if isinstance(bins, np.ndarray):  # one bar per distinct value (steps of a plan)
            width = np.diff(bins).min() if bins.size > 1 else 1.0
            bins = np.concatenate([bins - width / 2, bins[-1:] + width / 2])
        ax.hist([v[~labels], v[labels]], bins=bins, label=["good", "defective"], stacked=True)
        ax.set(xlabel=key.replace("_", " "), ylabel="images", title=f"per image: {key.replace('_', ' ')}")
        ax.legend()
        figs.append(_png(fig))
    return figs


def _run_name(d: Path, metrics: dict) -> str:
    """The model run an evaluation folder belongs to: <run>/eval -> run; else the folder's own name."""
    run = d.resolve().parent.name if d.name.startswith("eval") else d.resolve().name
    name = str(metrics.get("name", ""))
    return f"{run} ({name})" if name and name != run else run


def build_report(eval_dir: str | Path, out: str | Path | None = None, worst: int = 40) -> Path:
    d = Path(eval_dir)
    metrics = _load(d, "metrics.json")
    if metrics is None:
        raise FileNotFoundError(f"{d} has no metrics.json; run `ddad evaluate --model ... --out {d}` first")
    records, scores, labels, maps, masks = load_evaluation(d)  # raises the same way without scores.json
    inputs, recon, cal = _load(d, "inputs.npy"), _load(d, "reconstructions.npy"), _load(d, "calibration.json") or {}
    threshold, pix_thr = cal.get("threshold"), cal.get("pixel_threshold")
    run = _run_name(d, metrics)
    parts = [f"<h1>ddad report: {html.escape(run)}</h1>",
             f"<p>dataset {html.escape(str(metrics.get('dataset', '')))}, {len(records)} images "
             f"({int(labels.sum())} defective); {metrics.get('seconds_per_image', 0):.3f} s/image; "
             f"peak memory {metrics.get('peak_memory_mb', 0):.0f} MiB"
             + ("" if threshold is None else f"; decision threshold {threshold:.4g}") + "</p>",
             "<table><tr>"]
    parts += [f"<th>{v}</th>" for v in NAMES.values()] + ["</tr><tr>"]
    parts += ["<td>" + ("-" if metrics.get(k) is None else f"{100 * metrics[k]:.1f}") + "</td>" for k in NAMES]
    parts += ["</tr></table>"]
    per_defect = _per_defect(records, scores, labels, maps, masks)
    if per_defect:
        parts += ["<h2>Per defect type</h2><p>image AUROC: that defect type against all good images; pixel AUROC "
                  "and PRO over those images.</p><table><tr><th>defect type</th><th>images</th><th>I-AUROC</th>"
                  "<th>P-AUROC</th><th>PRO</th></tr>", *per_defect, "</table>"]
    parts += ["<div>"] + [f'<img src="{src}">' for src in _curves(scores, labels, maps, masks, threshold)] + ["</div>"]
    info = _info_histograms(records, labels)
    if info:
        parts += ["<h2>What the method decided per image</h2><div>"] + [f'<img src="{s}">' for s in info] + ["</div>"]
    if maps is not None and inputs is not None and recon is not None:
        vmax = float(threshold * 1.5) if threshold else float(np.percentile(maps, 99.9))
        scale = max(1, 160 // inputs.shape[1])

        def img(arr: np.ndarray) -> str:
            return f'<img src="{_png(panel([arr], scale))}">'  # one tile, upscaled (nearest)

        parts.append(f"<h2>Images, hardest first ({min(worst, len(records))} of {len(records)})</h2>"
                     f'<p class="scale">heatmap colour scale: 0 <img src="{_png(colour_bar(vmax, 256, 14))}"> '
                     f"{vmax:.3g} (1.5 x the decision threshold; the same scale for every image)</p>"
                     '<table class="grid"><tr><th>input</th><th>reconstruction</th><th>heatmap</th>'
                     "<th>ground truth</th><th>predicted mask</th><th>image</th></tr>")
        for i in _order(scores, labels, worst):
            amap = maps[i].astype(np.float32)
            gt = to_uint8(masks[i].astype(np.float32)) if masks is not None else np.zeros_like(inputs[i])
            pred = to_uint8((amap > pix_thr).astype(np.float32)) if pix_thr is not None else np.zeros_like(gt)
            tiles = [inputs[i], recon[i], overlay(inputs[i].astype(np.float32) / 255, amap, vmax), gt, pred]
            decision = "" if threshold is None else ("FAIL" if scores[i] > threshold else "PASS")
            r = records[i]
            parts.append("<tr>" + "".join(f"<td>{img(t)}</td>" for t in tiles) +
                         f"<td>{html.escape(r['defect_type'])}<br>score {r['score']:.4g} "
                         f"<b class='{decision}'>{decision}</b><br>"
                         f"{html.escape('/'.join(Path(r['path']).parts[-2:]))}</td></tr>")
        parts.append("</table>")
    style = ("body{font-family:sans-serif;margin:1em 2em;max-width:none}table{border-collapse:collapse;"
             "margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px 8px}table.grid{width:100%}"
             "table.grid td{text-align:center;vertical-align:middle}img{image-rendering:pixelated}"
             ".scale img{vertical-align:middle}.FAIL{color:#b00}.PASS{color:#070}")
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>ddad report: {html.escape(run)}</title>" \
          f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    out = Path(out) if out else d / "report.html"
    out.write_text(doc)
    return out
