"""What a new user hits first: fast, clear CLI errors; --resume that never silently restarts; --data everywhere;
a demo that resumes; predict outputs with consistent names, a mask file, labelled panels and a summary line."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ddad.cli import main

TINY = ["--config", "configs/tiny.yaml", "--set", "train.steps=2", "--set", "train.batch_size=4",
        "--set", "sampling.steps=2", "--set", "adapt.batch_size=8"]

# Runs the CLI in a fresh interpreter and reports whether torch was imported: an argument error must not pay for it.
PROBE = ("import sys, time; t = time.perf_counter(); from ddad.cli import main; rc = main(sys.argv[1:]); "
         "print('torch-loaded' if 'torch' in sys.modules else 'torch-not-loaded', rc, time.perf_counter() - t)")


@pytest.mark.parametrize("argv, says", [
    (["evaluate", "--model", "/no/such/model"], "no such directory"),
    (["predict", "--model", "/no/such/model", "x.png"], "no such directory"),
    (["serve", "--model", "/no/such/model"], "no such directory"),
    (["adapt", "--model", "/no/such/model"], "no such directory"),
    (["report", "/no/such/run"], "no such directory"),
    (["train", "--out", "OUT", "--data", "/no/such/data"], "--data /no/such/data"),
    (["train", "--out", "OUT", "--config", "/no/such.yaml"], "--config /no/such.yaml"),
    (["train", "--out", "OUT", "--set", "samplng.w=1", "--data", "."], "did you mean sampling"),
    (["benchmark", "--config", "/no/such.yaml", "--data", "."], "--config /no/such.yaml"),
])
def test_invalid_input_fails_in_under_3_s_without_loading_torch(argv, says, tmp_path):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert "torch-not-loaded 2" in r.stdout, (r.stdout, r.stderr)
    assert says in r.stderr, r.stderr
    assert wall < 3.0, f"{argv} took {wall:.2f} s to fail"


def test_predict_refuses_a_non_image_before_loading_the_model(tiny_model, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PROBE, "predict", "--model", str(tiny_model), str(notes)],
                       capture_output=True, text=True, timeout=60)
    assert "torch-not-loaded 2" in r.stdout and "is not an image file" in r.stderr, (r.stdout, r.stderr)
    assert time.perf_counter() - t0 < 3.0
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-c", PROBE, "predict", "--model", str(tiny_model), str(empty)],
                       capture_output=True, text=True, timeout=60)
    assert "torch-not-loaded 2" in r.stdout and "holds no image files" in r.stderr


def test_predict_on_a_non_model_directory_says_what_a_model_directory_is(tmp_path, caplog):
    assert main(["predict", "--model", str(tmp_path), str(tmp_path)]) == 2
    assert "no model.json" in caplog.text


def test_resume_without_a_checkpoint_says_so_instead_of_starting_at_step_0(tiny_object, tmp_path, caplog):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(tiny_object), *TINY, "--resume"]) == 2
    assert "no checkpoint" in caplog.text and "Drop --resume" in caplog.text
    assert not (out / "checkpoints").exists()  # nothing was trained


def test_train_and_adapt_take_data(tiny_object, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(tiny_object), *TINY]) == 0
    assert json.loads((out / "model.json").read_text())["config"]["data"]["root"] == str(tiny_object)
    assert main(["adapt", "--model", str(out), "--data", str(tiny_object)]) == 0
    assert (out / "extractor.safetensors").is_file()
    meta = json.loads((out / "model.json").read_text())
    assert meta["adapted"] and meta["train_steps"] == 2  # adapting keeps what training recorded


def test_demo_picks_up_its_own_checkpoints(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    first = capsys.readouterr().out
    assert "resuming" not in first
    ckpt = out / "model" / "checkpoints" / "last.json"
    assert json.loads(ckpt.read_text())["step"] == 2
    assert main(["demo", "--out", str(out), *TINY, "--set", "train.steps=3"]) == 0
    again = capsys.readouterr().out
    assert "resuming training of ddad" in again and "unet at step 2" in again
    assert json.loads(ckpt.read_text())["step"] == 3  # one more step, not three from scratch


def test_predict_writes_named_files_mask_labelled_panel_and_summary(tiny_model, tiny_object, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["predict", "--model", str(tiny_model), str(tiny_object / "test"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    preds = json.loads((out / "predictions.json").read_text())
    n_images = sum(1 for _ in (tiny_object / "test").rglob("*.png"))
    assert len(preds) == n_images
    fails = sum(p["decision"] == "FAIL" for p in preds)
    assert f"{n_images} images: {n_images - fails} PASS, {fails} FAIL;" in text and "img/s" in text
    for p in preds:
        src = p["path"]
        stem = f"{src.split('/')[-2]}_{src.split('/')[-1].rsplit('.', 1)[0]}"  # <defect>_<stem>
        for kind in ("panel", "heatmap", "reconstruction", "mask"):
            assert (out / f"{stem}_{kind}.png").is_file(), (stem, kind)
        assert p["mask"] == str(out / f"{stem}_mask.png")
        mask = np.asarray(Image.open(p["mask"]))
        assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
        if p["decision"] == "PASS":
            assert mask.max() == 0  # the pixel threshold is the decision threshold
        panel = np.asarray(Image.open(out / f"{stem}_panel.png"))
        tile = np.asarray(Image.open(out / f"{stem}_heatmap.png"))
        assert panel.shape[0] > tile.shape[0] * 8 + 30  # 8x upscaled tiles plus label bands and the colour scale


def test_predict_skips_an_unreadable_file_and_counts_it(tiny_model, tiny_object, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    goods = sorted((tiny_object / "test" / "good").iterdir())[:3]
    for g in goods:
        (folder / g.name).write_bytes(g.read_bytes())
    (folder / "broken.png").write_bytes(goods[0].read_bytes()[:60])
    assert main(["predict", "--model", str(tiny_model), str(folder), "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "3 images:" in text and "1 unreadable, skipped" in text
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert sorted(p["path"].split("/")[-1] for p in preds) == sorted(g.name for g in goods)


def test_synth_writes_a_grey_non_square_stand_in_and_names_unknown_defects(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--category", "grain", "--gray", "--width", "48", "--height", "32",
            "--defects", "subtle,crack", "--n-train", "2", "--n-test-good", "1", "--n-test-per-defect", "1"]
    assert main(args) == 0
    assert "48x32 px grey" in capsys.readouterr().out
    root = tmp_path / "grain"
    assert sorted(p.name for p in (root / "test").iterdir()) == ["crack", "faint", "fray", "good", "pit", "thin"]
    assert Image.open(root / "test" / "pit" / "000.png").size == (48, 32)
    assert Image.open(root / "ground_truth" / "pit" / "000_mask.png").size == (48, 32)
    with pytest.raises(SystemExit, match="unknown defects \\['dent'\\]"):
        main(["synth", "--out", str(tmp_path / "x"), "--defects", "thin,dent"])


def test_train_auto_selects_and_saves_the_label_free_choice(tiny_object, tmp_path, capsys, monkeypatch):
    from ddad.detector import Detector
    from ddad.methods import RECIPES, Recipe

    monkeypatch.setitem(RECIPES, "ddad", Recipe({"scoring.v": (1, 8)}))  # plumbing, not accuracy
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(tiny_object), *TINY, "--auto"]) == 0
    text = capsys.readouterr().out
    saved = json.loads((out / "selection.json").read_text())
    assert set(saved["rows"]) == {"", "scoring.v=1", "scoring.v=8"} and f"best: {saved['best'] or '(as saved)'}" in text
    assert (out / "extractor.safetensors").exists()  # the config's adaptation (tiny: 1 epoch) ran before selecting
    assert Detector.load(out).cfg.scoring.v == {"": 1.0, "scoring.v=1": 1.0, "scoring.v=8": 8.0}[saved["best"]]


def test_train_auto_for_a_method_without_an_auto_grid_fails_before_training(tiny_object, tmp_path, caplog,
                                                                            monkeypatch):
    from ddad.methods import RECIPES

    monkeypatch.delitem(RECIPES, "ddad")
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(tiny_object), *TINY, "--auto"]) == 2
    assert "has no label-free recipe" in caplog.text and not out.exists()
