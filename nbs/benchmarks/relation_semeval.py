"""Report of a relation version trained on SemEval-2010 Task 8 through the CLI (held-out test split, CPU).

After `sphana-trainer train relation --config configs/relation/semeval.yaml --version V` (see that config), prints:
training time and throughput (metadata.json, metrics.jsonl), the validation curve, temperature scaling on validation
(checkpoint/calibration.json), the held-out test split scored once: official SemEval score (9 directed types, `Other`
excluded), 19-way macro-F1, accuracy, ECE before (T = 1) and after temperature scaling; ONNX Runtime fp32 and int8 on
the same test split (probability gap to PyTorch, argmax changes, scores) and the int8 candidates of parity.json.

    .venv/bin/python nbs/benchmarks/relation_semeval.py --version V [--test target/datasets/semeval2010/test.jsonl]
"""
import argparse, json
from pathlib import Path
import numpy as np
from sphana_trainer.artifacts import component_root, version_dir
from sphana_trainer.models.relation import calibration_bins, relation_metrics
from sphana_trainer.train.component import ort_infer
from sphana_trainer.train.relation import RelationComponent, predict_logits

KEYS = ("official_f1", "macro_f1", "accuracy", "ece")

def softmax(z:np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True)); return z / z.sum(1, keepdims=True)

def training(d:Path) -> dict:
    "Training time, throughput and validation curve of a published version."
    meta = json.loads((d/"metadata.json").read_text())
    rows = [json.loads(l) for l in (d/"metrics.jsonl").read_text().splitlines() if l.strip()]
    ep = [r for r in rows if r.get("type") == "epoch"]
    ev = [{k: r.get(k) for k in ("step", "official_f1", "macro_f1", "accuracy", "eval_loss")} for r in rows
          if r.get("type") == "eval"]
    m = meta["metrics"]
    return {"train_seconds": m.get("train_seconds"), "train_minutes": round(m.get("train_seconds", 0) / 60, 2),
            "steps": m.get("steps"), "best_step": m.get("best_step"), "epochs": len(ep),
            "epoch_sentences_per_s": [round(r["samples_per_s"], 1) for r in ep],
            "pad_share": [r.get("pad_share") for r in ep], "validation_curve": ev, "dataset": meta["dataset"]}

def test_scores(comp, d:Path, test:list) -> dict:
    "PyTorch (uncalibrated and calibrated) and ONNX fp32/int8 scores on the test records."
    a = comp.load(d/"checkpoint"); gold = [r["label"] for r in test]
    idx = {l: i for i, l in enumerate(a.labels)}; g = np.array([idx.get(l, -1) for l in gold])
    lg = predict_logits(a.model, a, test); p1, pt = softmax(lg), softmax(lg / a.temperature)
    pred = [a.labels[i] for i in lg.argmax(1)]
    m = relation_metrics(gold, pred, a.labels, pt, details=False)
    out = {"pytorch": {k: v for k, v in m.items() if k in KEYS}, "temperature": a.temperature,
           "ece_before": calibration_bins(p1, g)[0], "ece_after": calibration_bins(pt, g)[0]}
    for kind, f in (("onnx_fp32", "model.onnx"), ("onnx_int8", "model.quant.onnx")):
        if not (d/"onnx"/f).is_file(): continue
        inf = ort_infer(d/"onnx"/f)
        po = np.concatenate([np.asarray(inf(x)[0], np.float64) for x in comp.feeds(a, test, 32)])
        m = relation_metrics(gold, [a.labels[i] for i in po.argmax(1)], a.labels, po, details=False)
        out[kind] = {**{k: v for k, v in m.items() if k in KEYS},
                     "max_abs_diff_vs_pytorch": float(np.abs(po - pt).max()),
                     "argmax_changes": int((po.argmax(1) != pt.argmax(1)).sum())}
    return out

def int8_table(d:Path) -> dict:
    "fp32 parity and the int8 candidates of the export."
    p = json.loads((d/"onnx"/"parity.json").read_text())
    cols = ("recipe", "passed", "records_per_s", "metric_drop", "failures")
    return {"fp32": {k: p["fp32"].get(k) for k in ("graph", "max_abs_diff", "argmax_mismatches", "records_per_s")},
            "int8_gate": p.get("int8_gate"),
            "int8_candidates": [{k: r.get(k) for k in cols} for r in p.get("int8_candidates", [])],
            "int8_shipped": (p.get("int8") or {}).get("recipe"), "int8_reason": p.get("int8_reason")}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True); ap.add_argument("--artifacts", default=None, help="artifact root")
    ap.add_argument("--test", default="target/datasets/semeval2010/test.jsonl")
    ap.add_argument("--out", default=None, help="also write the summary JSON here")
    a = ap.parse_args()
    comp = RelationComponent(); d = version_dir(component_root("relation", a.artifacts), a.version)
    res = {"version": d.name, "training": training(d),
           "calibration_validation": {k: json.loads((d/"checkpoint"/"calibration.json").read_text())[k]
                                      for k in ("temperature", "ece_before", "ece_after", "nll_before", "nll_after")},
           "test": test_scores(comp, d, comp.read(a.test)), "export": int8_table(d)}
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))

if __name__ == "__main__": main()
