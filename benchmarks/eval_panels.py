"""One row per chosen test image of a saved evaluation: input | reconstruction | |difference| x3 | anomaly map | mask.

    python benchmarks/eval_panels.py runs/standins/grain/ddad/eval-ddad10 docs/standin_grain_ddad.png \\
        --types good,faint,pit,thin,fray

The map is scaled by the evaluation's 99.9th percentile (one scale for every row, so rows compare). The first image
of each named defect type is shown (--index picks another).
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dir")
    ap.add_argument("out")
    ap.add_argument("--types", default=None, help="comma list of defect types (default: good + every type)")
    ap.add_argument("--index", type=int, default=0, help="which image of each type (default: the first)")
    ap.add_argument("--scale", type=int, default=2, help="pixel magnification (default 2)")
    a = ap.parse_args()
    d = Path(a.eval_dir)
    inp, rec = np.load(d / "inputs.npy"), np.load(d / "reconstructions.npy")
    maps, masks = np.load(d / "maps.npy").astype(np.float32), np.load(d / "masks.npy")
    types = [r["defect_type"] for r in json.loads((d / "scores.json").read_text())]
    wanted = a.types.split(",") if a.types else ["good"] + sorted(set(types) - {"good"})
    vmax = float(np.quantile(maps, 0.999)) or 1.0
    grey = lambda x: np.repeat(x[..., None], 3, axis=-1)  # noqa: E731
    rows = []
    for t in wanted:
        i = [k for k, ty in enumerate(types) if ty == t][a.index]
        diff = np.clip(np.abs(inp[i].astype(int) - rec[i].astype(int)) * 3, 0, 255).astype(np.uint8)
        heat = (np.clip(maps[i] / vmax, 0, 1) * 255).astype(np.uint8)
        row = np.concatenate([inp[i], rec[i], diff, grey(heat), grey(masks[i].astype(np.uint8) * 255)], axis=1)
        rows.append(np.pad(row, ((14, 2), (0, 0), (0, 0)), constant_values=255))
    sheet = np.concatenate(rows, axis=0)
    grey_data = not np.ptp(inp[: min(len(inp), 8)], axis=-1).any()  # grey inputs: a grey PNG (a third the size)
    img = Image.fromarray(sheet.mean(axis=-1).round().astype(np.uint8) if grey_data else sheet)
    img = img.resize((img.width * a.scale, img.height * a.scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    h = rows[0].shape[0] * a.scale
    for r, t in enumerate(wanted):
        draw.text((4, r * h + 2), f"{t}: input | reconstruction | |difference| x3 | map | mask", fill=0 if img.mode == "L" else (0, 0, 0))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    img.save(a.out)
    print(f"{a.out}: {len(wanted)} rows, map scale 0..{vmax:.3g}")


if __name__ == "__main__":
    main()
