"""Data-parallel training (torch.distributed, gloo on CPU, 2 processes): the same weights as one process."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import _dist_worker


def _run(tmp_path, name, world, steps, resume=False, checkpoint_every=2, out=None):
    out = out or tmp_path / name
    out.mkdir(parents=True, exist_ok=True)
    init = tmp_path / f"{name}-{steps}-{resume}.pg"
    if world == 1:
        _dist_worker.train(0, 1, str(init), str(out), steps, resume, checkpoint_every)
    else:
        mp.spawn(_dist_worker.train, args=(world, str(init), str(out), steps, resume, checkpoint_every),
                 nprocs=world, join=True)
    ranks = [load_file(out / f"rank{r}.safetensors") for r in range(world)]
    info = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    return out, ranks, info


def test_two_processes_train_the_weights_of_one_process_at_the_same_global_batch(tmp_path):
    _, (single,), (one,) = _run(tmp_path, "one", 1, steps=3)
    out, (r0, r1), (i0, i1) = _run(tmp_path, "two", 2, steps=3)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # identical on both ranks
    assert i0["loss"] == i1["loss"]  # the all-reduced loss of the global batch
    assert i0["loss"] == pytest.approx(one["loss"], rel=1e-5)  # the same data, timesteps and noise were drawn
    # One process at batch 4 vs two at 2 + 2: the same mean gradient, summed in another order (float rounding).
    # Adam turns that rounding into a visible difference only where a gradient is ~0 (e.g. the biases of
    # convolutions that feed a GroupNorm, which the normalisation removes): Adam's first steps there are +-lr by
    # the gradient's sign. So: no weight moves more than steps x lr apart, and on average they agree to 1e-5.
    lr, steps = 1e-3, 3
    assert max((r0[k] - single[k]).abs().max().item() for k in r0) <= steps * lr
    total = sum((r0[k] - single[k]).abs().sum().item() for k in r0) / sum(v.numel() for v in r0.values())
    assert total < 1e-5
    # checkpoints at steps 2 and 3, each written by rank 0 only
    assert (out / "saves.log").read_text().split() == ["0", "0"]


def test_a_two_process_run_resumes_where_it_stopped(tmp_path):
    full, (f0, _), _ = _run(tmp_path, "full", 2, steps=4)
    part = tmp_path / "part"
    _run(tmp_path, "part", 2, steps=2, out=part)  # "killed" after step 2 (its checkpoint)
    _, (p0, p1), (i0, _) = _run(tmp_path, "part", 2, steps=4, resume=True, out=part)
    assert i0["start"] == 2 and i0["steps"] == 4
    for k in f0:
        torch.testing.assert_close(p0[k], f0[k], rtol=0, atol=1e-6)
        assert torch.equal(p0[k], p1[k])


def test_torchrun_trains_through_the_cli(tiny_object, tmp_path):
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddad", "train",
           "--set", f"data.root={tiny_object}", "--set", "data.image_size=32", "--set", "model.preset=cpu-32",
           "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "sampling.steps=2",
           "--set", "features.layers=[1,2]", "--set", "scoring.sigma=1.0", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("model saved to") == 1  # rank 0 alone calibrates and saves
    assert json.loads((out / "model.json").read_text())["train_steps"] == 2
    assert (out / "calibration.json").is_file()


def test_torchrun_predict_shards_files_and_merges_one_predictions_json(tiny_model, tiny_object, tmp_path):
    """2 processes score every other file; rank 0 writes one predictions.json in the files' order, with the scores
    one process gives (scores do not depend on the batch)."""
    from ddad.cli import main

    one = tmp_path / "one"
    assert main(["predict", "--model", str(tiny_model), str(tiny_object / "test"), "--out", str(one)]) == 0
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddad",
           "predict", "--model", str(tiny_model), str(tiny_object / "test"), "--out", str(two)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((one / "predictions.json").read_text())
    b = json.loads((two / "predictions.json").read_text())
    assert [p["path"] for p in b] == [p["path"] for p in a]
    assert [p["score"] for p in b] == pytest.approx([p["score"] for p in a], rel=1e-5, abs=1e-6)
    assert [p["decision"] for p in b] == [p["decision"] for p in a]
    assert all(os.path.isfile(p["panel"]) for p in b)
    assert r.stdout.count(" img/s") == 1 and "(2 processes)" in r.stdout  # one summary, from rank 0
