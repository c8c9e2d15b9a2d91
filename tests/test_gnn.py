"""The GGNN ranker end to end through the CLI: train, publish, ONNX on graph sizes never seen at export, evaluate with
ONNX Runtime, the val_loss gate, and bad input (exit 2 naming file and line)."""
import json, os, subprocess
from pathlib import Path
import numpy as np
import pytest
from conftest import ROOT, BIN, run_cli as cli

torch = pytest.importorskip("torch")
from sphana_trainer.train.gnn import GnnComponent, odd_size_feeds, onnx_parity, synthetic_queries

CLI = str(BIN/"sphana-trainer")

def write_jsonl(path, recs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "Synthetic queries whose relevant candidate is reachable only through message passing."
    d = tmp_path_factory.mktemp("gnn")
    write_jsonl(d/"train.jsonl", synthetic_queries(48, seed=1))
    write_jsonl(d/"validation.jsonl", synthetic_queries(16, seed=2))
    return d

def write_cfg(path, data, **extra):
    base = {"component": "gnn", "dataset_path": str(data), "epochs": 3, "batch_size": 8, "hidden_dim": 16,
            "num_layers": 2, "learning_rate": 3.0e-3, "dropout": 0.0, "device": "cpu", "progress_log_interval": 0,
            "version": "v1", "metric": "ndcg@10", "export": {"quantize": False, "parity_samples": 8}}
    base.update(extra)
    path.write_text(json.dumps(base))
    return path


def test_train_publish_onnx_odd_sizes_and_evaluate(tmp_path, data):
    ws = tmp_path/"ws"
    cli(["train", "gnn", "--config", str(write_cfg(tmp_path/"gnn.yaml", data))], ws)
    v = ws/"artifacts"/"gnn"/"v1"
    meta = json.loads((v/"metadata.json").read_text())
    assert meta["metrics"]["best"]["ndcg@10"] > 0.5 and meta["parity"]
    assert json.loads((ws/"artifacts"/"gnn"/"latest.json").read_text())["version"] == "v1"
    comp = GnnComponent(); assets = comp.load(v/"checkpoint")
    feeds = odd_size_feeds(assets.meta["in_dim"], assets.meta["num_edge_types"])
    par = onnx_parity(assets.model, v/"onnx"/"model.onnx", feeds)
    assert set(par) == {"1 node", "7 nodes", "300 nodes", "0 edges", "1 candidate", "50 candidates"}
    for k, p in par.items(): assert p["max_rel_diff"] < 0.01 and p["same_ranking"], (k, p)
    out = tmp_path/"eval.json"
    cli(["evaluate", "gnn", "--data", str(data/"validation.jsonl"), "--version", "v1", "--onnx", "fp32",
         "--output", str(out)], ws)
    got = json.loads(out.read_text())["metrics"]
    ref = comp.evaluate(assets, comp.read(data/"validation.jsonl"))
    for k in ("ndcg@1", "ndcg@10", "mrr", "val_loss"): assert abs(got[k] - ref[k]) < 1e-4, k

def test_val_loss_gate_is_a_maximum_and_flat_labels_warn(tmp_path, data):
    ws, recs = tmp_path/"ws", synthetic_queries(8, seed=3)
    for c in recs[2]["candidates"]: c["label"] = 0.5
    d = tmp_path/"d"; write_jsonl(d/"train.jsonl", recs)
    write_jsonl(d/"validation.jsonl", synthetic_queries(4, seed=4))
    cfg = write_cfg(tmp_path/"g.yaml", d, epochs=1, metric="val_loss", metric_threshold=0.01)
    r = cli(["train", "gnn", "--config", str(cfg)], ws, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "val_loss" in r.stderr and "is above metric_threshold 0.01" in r.stderr
    assert "1 of 8 queries have all-equal labels (first at line 3)" in r.stdout + r.stderr
    assert not (ws/"artifacts"/"gnn"/"latest.json").exists()

GOOD = {"node_features": [[1.0, 0.0], [0.0, 1.0]], "edge_index": [[0, 1]], "edge_directions": [0], "label": 1.0}
BAD = {"edge index out of range": ({"edge_index": [[0, 5]]}, "edge_index refers to node 5"),
       "edge_directions length": ({"edge_directions": [0, 1]}, "edge_directions has 2 values for 1 edges"),
       "ragged features": ({"node_features": [[1.0, 0.0], [1.0]]}, "ragged"),
       "NaN features": ({"node_features": [[1.0, float("nan")], [0.0, 1.0]]}, "NaN"),
       "no candidates": (None, "has no candidates")}

@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exit_2(tmp_path, case):
    change, msg = BAD[case]
    cands = [] if change is None else [GOOD, {**GOOD, "label": 0.0, **change}]
    bad = {"query_id": "q2", "candidates": cands}
    recs = [{"query_id": "q1", "candidates": [GOOD, {**GOOD, "label": 0.0}]}, bad]
    d = tmp_path/"d"; f = d/"train.jsonl"
    f.parent.mkdir(); f.write_text("\n".join(json.dumps(r, allow_nan=True) for r in recs) + "\n")
    cfg = write_cfg(tmp_path/"g.yaml", d, export={"enabled": False})
    r = cli(["train", "gnn", "--config", str(cfg)], tmp_path/"ws", check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{f}:2" in r.stderr and msg in r.stderr and "Traceback" not in r.stderr

def with_prior(recs, seed=0):
    "Records with a first-stage score per candidate, also appended as the last column of its nodes."
    rng = np.random.default_rng(seed)
    for r in recs:
        for c in r["candidates"]:
            c["retriever_score"] = s = round(float(rng.random()), 4)
            c["node_features"] = [x + [s] for x in c["node_features"]]
    return recs

def test_score_feature_starts_from_the_first_stage_order_and_exports(tmp_path):
    ws, d = tmp_path/"ws", tmp_path/"d"
    write_jsonl(d/"train.jsonl", with_prior(synthetic_queries(16, seed=1)))
    write_jsonl(d/"validation.jsonl", with_prior(synthetic_queries(8, seed=2), seed=1))
    cfg = write_cfg(tmp_path/"g.yaml", d, epochs=1, score_feature=-1, learning_rate=1e-9)   # the prior only
    cli(["train", "gnn", "--config", str(cfg)], ws)
    v = ws/"artifacts"/"gnn"/"v1"
    assets = GnnComponent().load(v/"checkpoint")
    assert assets.meta["score_feature"] == assets.meta["in_dim"] - 1 == 8
    best = json.loads((v/"metadata.json").read_text())["metrics"]["best"]
    assert best["ndcg@10"] == best["retriever_ndcg@10"] and best["mrr"] == best["retriever_mrr"]
    feeds = odd_size_feeds(assets.meta["in_dim"], assets.meta["num_edge_types"])
    par = onnx_parity(assets.model, v/"onnx"/"model.onnx", feeds)
    for k, p in par.items(): assert p["max_rel_diff"] < 0.01 and p["same_ranking"], (k, p)
    bad = write_cfg(tmp_path/"b.yaml", d, score_feature=9, version="v2", export={"enabled": False})
    r = cli(["train", "gnn", "--config", str(bad)], ws, check=False)
    assert r.returncode == 2 and "score_feature 9 is not a node feature column (the data has 9" in r.stderr, r.stderr
