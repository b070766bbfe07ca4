"""Every method goes through the same CLI, service and report; old DDAD model directories keep loading."""
import json
import shutil

import pytest
import torch
from conftest import METHOD_SETTINGS, as_cli

from ddad.cli import main
from ddad.detector import Detector
from ddad.data import load_dataset
from ddad.pipeline import stack_images

TINY = ["--set", "data.image_size=32", "--set", "model.preset=cpu-32", "--set", "train.steps=3",
        "--set", "train.batch_size=4", "--set", "sampling.steps=2", "--set", "sampling.batch_size=8",
        "--set", "scoring.sigma=1.0", "--set", "features.layers=[1,2]", "--set", "adapt.batch_size=4"]
D3AD = as_cli(METHOD_SETTINGS["d3ad"])


@pytest.fixture(scope="module")
def d3ad_model(tiny_object, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "d3ad"
    assert main(["train", "--method", "d3ad", "--set", f"data.root={tiny_object}", *TINY, *D3AD,
                 "--out", str(out)]) == 0
    return out


def test_d3ad_trains_adapts_evaluates_predicts_and_reports_through_the_cli(d3ad_model, tiny_object, tmp_path, capsys):
    assert json.loads((d3ad_model / "model.json").read_text())["method"] == "d3ad"
    assert (d3ad_model / "checkpoints" / "autoencoder" / "last.safetensors").is_file()
    assert main(["adapt", "--model", str(d3ad_model), "--set", "adapt.epochs=1"]) == 0
    assert main(["evaluate", "--model", str(d3ad_model), "--out", str(tmp_path / "eval")]) == 0
    assert "D3AD" not in capsys.readouterr().out or True
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0 <= metrics["image_auroc"] <= 1 and metrics["pro"] is not None
    good = sorted((tiny_object / "test" / "good").glob("*.png"))[:2]
    assert main(["predict", "--model", str(d3ad_model), *map(str, good), "--out", str(tmp_path / "pred")]) == 0
    records = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(records) == 2 and all(r["decision"] in ("PASS", "FAIL") for r in records)
    assert main(["report", str(tmp_path / "eval")]) == 0 and (tmp_path / "eval" / "report.html").is_file()


def test_d3ad_model_is_served_by_the_same_app(d3ad_model, tiny_object):
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from ddad.serve import create_app

    det = Detector.load(d3ad_model)
    png = sorted((tiny_object / "test" / "good").glob("*.png"))[0].read_bytes()
    with TestClient(create_app(det)) as client:
        assert client.get("/model").json()["method"] == "d3ad"
        r = client.post("/predict", files={"file": ("x.png", png, "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["decision"] in ("PASS", "FAIL")


def test_info_lists_every_method_with_one_line(capsys):
    from ddad.methods import METHODS

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name, cls in METHODS.items():
        assert f"  {name:6s} {cls.summary}" in out


def test_set_method_equals_method_flag(tiny_object, tmp_path):
    from ddad.config import load_config

    assert load_config(None, ["method=d3ad"]).method == "d3ad"
    assert main(["train", "--set", "method=d3ad", "--set", f"data.root={tiny_object}", *TINY, *D3AD,
                 "--set", "train.steps=1", "--set", "d3ad.autoencoder.train.steps=1", "--out", str(tmp_path)]) == 0
    assert type(Detector.load(tmp_path)).__name__ == "D3AD"


def test_option_of_an_unselected_method_fails_naming_its_method(tiny_object, tmp_path, caplog):
    assert main(["train", "--set", f"data.root={tiny_object}", *TINY, "--set", "d3ad.k=3", "--out", str(tmp_path)]) == 2
    assert "option of method 'd3ad'" in caplog.text


def test_a_ddad_model_saved_before_methods_existed_still_loads(tiny_model, tiny_object, tmp_path):
    """Model directories from before the methods table: no `method` in model.json, `scale` in calibration.json."""
    d = tmp_path / "old"
    shutil.copytree(tiny_model, d)
    new = Detector.load(d)
    meta = json.loads((d / "model.json").read_text())
    del meta["method"], meta["config"]["method"], meta["config"]["d3ad"]
    (d / "model.json").write_text(json.dumps(meta))
    cal = json.loads((d / "calibration.json").read_text())
    cal["scale"] = cal.pop("constants")["scale"]
    (d / "calibration.json").write_text(json.dumps(cal))
    old = Detector.load(d)
    assert type(old).__name__ == "DDAD" and old.calibration == new.calibration
    x = stack_images(load_dataset("mvtec", tiny_object, "test", image_size=32))[:3]
    torch.testing.assert_close(old.predict(x).scores, new.predict(x).scores, rtol=0, atol=0)


GLAD = as_cli(METHOD_SETTINGS["glad"])


def test_glad_goes_through_the_same_cli_report_and_service(tiny_object, tmp_path):
    """Its per-image adaptive step reaches scores.json, predictions.json, the report and the service's answer."""
    out = tmp_path / "glad"
    assert main(["train", "--method", "glad", "--set", f"data.root={tiny_object}", *TINY, *GLAD, "--out", str(out)]) == 0
    assert json.loads((out / "model.json").read_text())["method"] == "glad"
    assert json.loads((out / "calibration.json").read_text())["constants"]["tau"] > 0
    assert main(["evaluate", "--model", str(out), "--out", str(tmp_path / "eval")]) == 0
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    plan = {750, 500, 250}  # 3 DDIM steps from 750: every image switches at one of them
    assert all(r["info"]["adaptive_step"] in plan for r in scores)
    good = sorted((tiny_object / "test" / "good").glob("*.png"))[:2]
    assert main(["predict", "--model", str(out), *map(str, good), "--out", str(tmp_path / "pred")]) == 0
    records = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert [r["info"]["adaptive_step"] in plan for r in records] == [True, True]
    assert main(["report", str(tmp_path / "eval")]) == 0
    assert "What the method decided per image" in (tmp_path / "eval" / "report.html").read_text()
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from ddad.serve import create_app

    with TestClient(create_app(Detector.load(out))) as client:
        r = client.post("/predict", files={"file": ("x.png", good[0].read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["info"]["adaptive_step"] in plan


RAN = as_cli(METHOD_SETTINGS["ran"])


def test_ran_goes_through_the_same_cli_and_service(tiny_object, tmp_path):
    out = tmp_path / "ran"
    assert main(["train", "--method", "ran", "--set", f"data.root={tiny_object}", *TINY, *RAN, "--out", str(out)]) == 0
    assert json.loads((out / "model.json").read_text())["method"] == "ran"
    assert (out / "state.safetensors").is_file()  # the PaDiM Gaussian for gradient denoising
    assert main(["evaluate", "--model", str(out), "--out", str(tmp_path / "eval")]) == 0
    assert 0 <= json.loads((tmp_path / "eval" / "metrics.json").read_text())["image_auroc"] <= 1
    good = sorted((tiny_object / "test" / "good").glob("*.png"))[:2]
    assert main(["predict", "--model", str(out), *map(str, good), "--out", str(tmp_path / "pred")]) == 0
    assert len(json.loads((tmp_path / "pred" / "predictions.json").read_text())) == 2
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from ddad.serve import create_app

    with TestClient(create_app(Detector.load(out))) as client:
        r = client.post("/predict", files={"file": ("x.png", good[0].read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["decision"] in ("PASS", "FAIL")
