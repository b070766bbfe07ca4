"""A tiny detector end to end: fit + evaluate beats a pixel-mean baseline; the CLI in-process; resume after kill."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ddad.cli import main
from ddad.config import DDADConfig, apply_overrides
from ddad.data import load_dataset
from ddad.data.synthetic import SyntheticSpec, make_synthetic_dataset
from ddad.detector import Detector
from ddad.metrics import auroc
from ddad.pipeline import stack_images

# 48 px: at 32 px the defects are a few pixels and image-level detection is not yet meaningful (measured).
E2E = [
    "data.image_size=48", "model.preset=cpu-32", "train.steps=300", "train.batch_size=16", "train.lr=2e-3",
    "train.optimizer=adamw", "train.weight_decay=0", "train.checkpoint_every=1000", "sampling.steps=5",
    "sampling.start_level=250", "sampling.w=2", "scoring.sigma=1.0", "features.layers=[1,2]",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    spec = SyntheticSpec(category="object", size=48, n_train=40, n_test_good=12, n_test_per_defect=4, seed=3)
    return make_synthetic_dataset(root, spec)


def test_fit_and_evaluate_beats_pixel_mean_baseline(data, tmp_path):
    train = stack_images(load_dataset("mvtec", data, "train", image_size=48))
    test_ds = load_dataset("mvtec", data, "test", image_size=48)
    det = Detector.create(apply_overrides(DDADConfig(), E2E))
    det.fit(train[:34], tmp_path)
    det.calibrate(train[34:])
    res = det.evaluate(test_ds)
    test = stack_images(test_ds)
    baseline = (test - train.mean(0)).abs().mean(1).flatten(1).amax(1).numpy()
    base_auroc = auroc(baseline, np.array(test_ds.labels))
    assert base_auroc < 0.75  # the data is not trivially separable
    assert res.metrics.image_auroc > base_auroc + 0.2, (res.metrics, base_auroc)
    assert res.metrics.pixel_auroc > 0.9 and res.metrics.pro > 0.6
    assert len(res.records) == len(test_ds) and res.seconds_per_image > 0


def test_cli_train_adapt_evaluate_predict(data, tmp_path, capsys):
    run = tmp_path / "run"
    sets = [x for s in E2E[:1] + ["model.preset=cpu-32", "train.steps=3", "train.batch_size=4", "sampling.steps=2",
                                  "scoring.sigma=1.0", "features.layers=[1,2]", "adapt.batch_size=8",
                                  f"data.root={data}"] for x in ("--set", s)]
    assert main(["train", "--out", str(run), *sets]) == 0
    assert (run / "config.yaml").is_file() and (run / "unet.safetensors").is_file()
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert main(["adapt", "--model", str(run)]) == 0
    assert (run / "extractor.safetensors").is_file()
    assert main(["evaluate", "--model", str(run)]) == 0
    out = capsys.readouterr().out
    assert "I-AUROC" in out and json.loads((run / "eval" / "metrics.json").read_text())["image_auroc"] is not None
    assert main(["predict", "--model", str(run), str(data / "test" / "crack"), "--out", str(tmp_path / "p")]) == 0
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(preds) == 4 and all(p["decision"] in ("PASS", "FAIL") for p in preds)
    assert all((tmp_path / "p" / f"crack_000_{k}.png").is_file() for k in ("panel", "heatmap", "reconstruction", "mask"))
    assert main(["train", "--out", str(tmp_path / "x"), "--set", "samplng.w=1"]) == 2  # clear error, exit 2


def test_train_killed_and_resumed_continues_from_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "ddad.cli", "train", "--out", str(run), "--set", f"data.root={data}",
            "--set", "data.image_size=32", "--set", "model.preset=cpu-32", "--set", "train.batch_size=4",
            "--set", "train.checkpoint_every=5"]
    proc = subprocess.Popen([*args, "--set", "train.steps=100000"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = run / "checkpoints" / "last.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.is_file() and json.loads(ckpt.read_text())["step"] >= 10):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = json.loads(ckpt.read_text())["step"]
    assert saved >= 10 and saved % 5 == 0
    done = subprocess.run([*args, "--set", f"train.steps={saved + 3}", "--resume"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"at step {saved}" in done.stderr
    assert json.loads(ckpt.read_text())["step"] == saved + 3
