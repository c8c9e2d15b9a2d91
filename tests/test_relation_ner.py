"""The relation classifier and the NER tagger end to end through the CLI: train, calibrate, export, publish; ONNX
Runtime against PyTorch on batches and lengths never seen at export; evaluate with ONNX Runtime; bad input (exit 2,
file and line); the shipped configs."""
import json, os, subprocess
from pathlib import Path
import numpy as np
import pytest
from conftest import ROOT, BIN, run_cli as cli

torch = pytest.importorskip("torch")
from sphana_trainer.hub import tiny_bert
from sphana_trainer.train.component import ort_infer
from sphana_trainer.train.ner import NerComponent
from sphana_trainer.train.relation import RelationComponent

CLI = str(BIN/"sphana-trainer")
PAIRS = [("ada", "acme"), ("bob", "bolt"), ("cy", "crux"), ("dee", "dyne"), ("eve", "echo"), ("fay", "flux"),
         ("gus", "gear"), ("hal", "hex")]
VERBS = [("founded", "founded_by"), ("joined", "works_for"), ("visited", "no_relation")]
PEOPLE, PLACES = ["ada", "bob", "cy", "dee", "eve", "fay"], ["paris", "rome", "oslo", "lima"]
WORDS = ["met", "in", "saw", "at"]

def write_jsonl(path, recs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path

def rel(a, v, b, lab):
    return {"text": f"{a} {v} {b} .", "entity1": {"text": a, "start": 0, "end": len(a)},
            "entity2": {"text": b, "start": len(a) + len(v) + 2, "end": len(a) + len(v) + 2 + len(b)}, "label": lab}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "Both components trained and published once (tiny random BERTs) in one workspace."
    d = tmp_path_factory.mktemp("relner"); ws = d/"ws"
    recs = [rel(a, v, b, lab) for a, b in PAIRS for v, lab in VERBS]
    write_jsonl(d/"rel"/"train.jsonl", recs); write_jsonl(d/"rel"/"validation.jsonl", recs[::4])
    tb = tiny_bert(d/"tb_rel", [w for p in PAIRS for w in p] + [v for v, _ in VERBS])
    common = {"epochs": 20, "batch_size": 8, "learning_rate": 2e-3, "warmup_ratio": 0.0, "eval_every_steps": 20,
              "max_seq_length": 32, "progress_log_interval": 0, "version": "v1", "device": "cpu",
              "export": {"parity_samples": 8}}
    (d/"rel.yaml").write_text(json.dumps({"component": "relation", "model_name": str(tb), "dataset_path": str(d/"rel"),
                                          **common, "group_by_length": True}))
    cli(["train", "relation", "--config", str(d/"rel.yaml")], ws)
    ner = [{"tokens": [p.title(), "Smith", v, q.title()], "tags": ["B-PER", "I-PER", "O", "B-LOC"]}
           for p in PEOPLE for v, q in zip(WORDS, PLACES)]
    ner += [{"tokens": [q.title(), v, p.title()], "tags": ["B-LOC", "O", "B-PER"]}
            for p in PEOPLE[:3] for v, q in zip(WORDS, PLACES)]
    write_jsonl(d/"ner"/"train.jsonl", ner); write_jsonl(d/"ner"/"validation.jsonl", ner[::5])
    tn = tiny_bert(d/"tb_ner", PEOPLE + PLACES + WORDS + ["smith"])
    (d/"ner.yaml").write_text(json.dumps({"component": "ner", "model_name": str(tn), "dataset_path": str(d/"ner"),
                                          **common, "epochs": 12, "eval_every_steps": 18, "max_seq_length": 16}))
    cli(["train", "ner", "--config", str(d/"ner.yaml")], ws)
    return d, ws, recs, ner

def test_relation_artifact_calibration_and_onnx_parity(trained):
    d, ws, recs, _ = trained
    v = ws/"artifacts"/"relation"/"v1"
    meta = json.loads((v/"metadata.json").read_text())
    assert meta["metrics"]["best"]["macro_f1"] == 1.0 and meta["gates"]["passed"]
    info = json.loads((v/"checkpoint"/"relation.json").read_text())
    assert info["labels"] == ["founded_by", "no_relation", "works_for"] and info["label2id"]["works_for"] == 2
    cal = json.loads((v/"checkpoint"/"calibration.json").read_text())
    assert cal["temperature"] == info["temperature"] > 0 and cal["ece_after"] <= cal["ece_before"]
    assert len(cal["reliability_after"]) == 15
    rows = [json.loads(l) for l in (v/"metrics.jsonl").read_text().splitlines() if l.strip()]
    epochs = [r for r in rows if r["type"] == "epoch"]             # group_by_length: length-grouped batches
    assert epochs and all(0 <= r["pad_share"] < 0.5 for r in epochs)
    assert meta["manifest"]["special_tokens"]["entity_markers"] == ["[E1]", "[/E1]", "[E2]", "[/E2]"]
    assert [o["shape"] for o in meta["onnx"]["outputs"]] == [["batch", 3]]
    comp = RelationComponent(); assets = comp.load(v/"checkpoint")
    assert all(t in assets.tokenizer.get_vocab() for t in info["markers"])
    ort, ref = ort_infer(v/"onnx"/"model.onnx"), comp.torch_infer(assets)
    odd = recs[:1] + [rel("ada", "founded", "the very long company name acme", "founded_by")] + recs[5:8]
    for f in list(comp.feeds(assets, odd, 5)) + list(comp.feeds(assets, recs[:1], 1)):     # batch 5 and 1, new lengths
        a, b = ref(f)[0], ort(f)[0]
        assert np.abs(a - b).max() < 0.01 and (a.argmax(1) == b.argmax(1)).all()
        assert np.allclose(b.sum(1), 1, atol=1e-4)                                          # calibrated probabilities

def test_relation_evaluate_onnx_and_unknown_labels(trained, tmp_path):
    d, ws, recs, _ = trained
    odd = write_jsonl(tmp_path/"odd.jsonl", [dict(recs[0], label="Cause-Effect(e1,e2)")] + recs[1:])
    out = tmp_path/"eval.json"
    r = cli(["evaluate", "relation", "--data", str(odd), "--version", "v1", "--onnx", "fp32", "--output", str(out)], ws)
    assert f"{odd}:1: label 'Cause-Effect(e1,e2)' is not in the model's label map" in r.stderr, r.stderr
    m = json.loads(out.read_text())["metrics"]
    assert m["unknown_labels"] == {"Cause-Effect(e1,e2)": 1} and abs(m["accuracy"] - 23 / 24) < 1e-9
    assert "Cause-Effect(e1,e2)" in m["confusion_matrix"]["labels"] and "official_f1" in m and "ece" in m
    comp = RelationComponent()
    ref = comp.evaluate(comp.load(ws/"artifacts"/"relation"/"v1"/"checkpoint"), comp.read(odd))
    assert abs(ref["macro_f1"] - m["macro_f1"]) < 1e-9
    strict = tmp_path/"strict.json"                          # --strict-labels: exit 2 naming file and line, no result
    r = cli(["evaluate", "relation", "--data", str(odd), "--version", "v1", "--strict-labels", "--output", str(strict)],
            ws, check=False)
    assert r.returncode == 2 and f"{odd}:1: label 'Cause-Effect(e1,e2)'" in r.stderr + r.stdout, r.stderr
    assert not strict.exists()

def test_relation_recalibrate_and_reexport(trained, tmp_path):
    "A published version recalibrated with a top-label map and re-exported: ONNX and PyTorch apply the same map."
    import shutil
    from sphana_trainer.models.relation import apply_calibration
    from sphana_trainer.train.relation import predict_logits, recalibrate
    d, ws, recs, _ = trained
    ws2 = tmp_path/"ws"; src = ws2/"artifacts"/"relation"/"v1"
    shutil.copytree(ws/"artifacts"/"relation"/"v1", src)
    old = json.loads((src/"checkpoint"/"calibration.json").read_text())
    labs = ["founded_by", "no_relation", "works_for"]            # every fourth label wrong: over-confident
    noisy = [dict(r, label=labs[(labs.index(r["label"]) + 1) % 3]) if i % 4 == 0 else r for i, r in enumerate(recs)]
    cal = recalibrate(src/"checkpoint", noisy, n_bins=3, min_per_bin=1)
    assert cal["method"] == "temperature_scaling+top_label_map" and cal["top_label_map"]["counts"] == [8, 8, 8]
    assert old["top_label_map"] is None
    cli(["export", "--component", "relation", "--run", "v1", "--version", "v1-cal"], ws2)
    v = ws2/"artifacts"/"relation"/"v1-cal"
    meta = json.loads((v/"metadata.json").read_text())
    assert meta["manifest"]["top_label_map"] == cal["top_label_map"]
    assert json.loads((v/"checkpoint"/"calibration.json").read_text())["top_label_map"] == cal["top_label_map"]
    comp = RelationComponent(); assets = comp.load(v/"checkpoint")
    ort, ref = ort_infer(v/"onnx"/"model.onnx"), comp.torch_infer(assets)
    lg, got = predict_logits(assets.model, assets, recs), []
    for f in comp.feeds(assets, recs, 8):
        a, b = ref(f)[0], ort(f)[0]; got.append(b)
        assert np.abs(a - b).max() < 1e-4 and (a.argmax(1) == b.argmax(1)).all()
    got = np.concatenate(got)
    assert np.abs(got - apply_calibration(lg, cal)).max() < 1e-4                     # the map is in the graph ...
    assert np.abs(got - apply_calibration(lg, {"temperature": cal["temperature"]})).max() > 1e-3  # ... and matters
    out = tmp_path/"eval.json"
    cli(["evaluate", "relation", "--data", str(d/"rel"/"train.jsonl"), "--version", "v1-cal", "--onnx", "fp32",
         "--output", str(out)], ws2)
    m = json.loads(out.read_text())["metrics"]
    assert m["ece"] == pytest.approx(comp.evaluate(assets, recs)["ece"], abs=1e-5)

def test_ner_artifact_and_onnx(trained, tmp_path):
    d, ws, _, ner = trained
    v = ws/"artifacts"/"ner"/"v1"
    meta = json.loads((v/"metadata.json").read_text())
    assert meta["metrics"]["best"]["f1"] == 1.0
    info = json.loads((v/"checkpoint"/"ner.json").read_text())
    assert info["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] and info["scheme"] == "IOB2"
    comp = NerComponent(); assets = comp.load(v/"checkpoint")
    ort, ref = ort_infer(v/"onnx"/"model.onnx"), comp.torch_infer(assets)
    odd = ner[:3] + [{"tokens": ["Ada", "Smith", "met", "Bob", "in", "Rome", "at", "Oslo", "."], "tags": ["O"] * 9}]
    for f in comp.feeds(assets, odd, 3):
        a, b = ref(f)[0], ort(f)[0]; m = f["attention_mask"].astype(bool)
        assert np.abs(a - b)[m].max() < 0.01 and (a.argmax(-1) == b.argmax(-1))[m].all()
    out = tmp_path/"eval.json"
    cli(["evaluate", "ner", "--data", str(d/"ner"/"validation.jsonl"), "--version", "v1", "--onnx", "fp32",
         "--output", str(out)], ws)
    assert json.loads(out.read_text())["metrics"]["f1"] == 1.0
    odd_tags = write_jsonl(tmp_path/"odd_ner.jsonl", ner[:1] + [{"tokens": ["Acme", "hired", "Ada"],
                                                               "tags": ["B-ORG", "O", "B-PER"]}])
    r = cli(["evaluate", "ner", "--data", str(odd_tags), "--version", "v1", "--strict-labels"], ws, check=False)
    assert r.returncode == 2 and f"{odd_tags}:2: label 'B-ORG' is not in the model's label map" in r.stderr + r.stdout

def span(text, start, end): return {"text": text, "start": start, "end": end}

BAD_RELATION = [
    ({"text": "Ada founded Acme.", "entity1": span("Ada", 0, 3), "entity2": span("Acme", 12, 99), "label": "x"},
     "out of range"),
    ({"text": "Ada founded Acme.", "entity1": span("Ada", 1, 4), "entity2": span("Acme", 12, 16), "label": "x"},
     "not its text 'Ada'"),
    ({"text": "Ada founded Acme.", "entity1": span("Ada founded", 0, 11), "entity2": span("founded", 4, 11),
      "label": "x"}, "overlap"),
    ({"text": "", "entity1": {"start": 0, "end": 1}, "entity2": {"start": 2, "end": 3}, "label": "x"},
     "'text' is empty"),
]
BAD_NER = [({"tokens": ["Ada", "met"], "tags": ["B-PER"]}, "2 tokens but 1 tags"),
           ({"tokens": ["Ada"], "tags": ["PER"]}, "not a BIO tag"),
           ({"tokens": ["Ada", "Smith"], "tags": ["O", "I-PER"]}, "follows 'O'")]

@pytest.mark.parametrize("comp,rec,msg",
                         [("relation", r, m) for r, m in BAD_RELATION] + [("ner", r, m) for r, m in BAD_NER])
def test_bad_records_exit_2_naming_file_and_line(tmp_path, comp, rec, msg):
    good = rel("ada", "founded", "acme", "founded_by") if comp == "relation" else {"tokens": ["Ada"], "tags": ["B-PER"]}
    f = write_jsonl(tmp_path/"d"/"train.jsonl", [good, good, rec])
    (tmp_path/"c.yaml").write_text(json.dumps({"component": comp, "train_file": str(f),
                                               "model_name": str(tmp_path/"none")}))
    r = cli(["train", comp, "--config", str(tmp_path/"c.yaml")], tmp_path/"ws", check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{f}:3" in r.stderr + r.stdout and msg in r.stderr + r.stdout

def test_shipped_configs():
    "The relation/NER configs load; the SemEval recipe groups by length; the demo NER config trains enough steps."
    from sphana_trainer.config import load_config
    sem = load_config(ROOT/"configs"/"relation"/"semeval.yaml", "relation")
    assert sem.group_by_length and sem.pooling == "both" and sem.metric == "official_f1" and sem.calibrate
    ner = load_config(ROOT/"configs"/"ner"/"base.yaml", "ner")
    n = len((ROOT/"sphana_trainer"/"sample_data"/"ner"/"train.jsonl").read_text().splitlines())
    assert ner.epochs * -(-n // ner.batch_size) >= 80      # 3 epochs of 16 (15 steps) left the sample tagger at F1 0
    assert load_config(ROOT/"configs"/"relation"/"base.yaml", "relation").component == "relation"
