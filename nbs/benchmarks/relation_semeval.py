"""SemEval-2010 Task 8 with the relation component on all-MiniLM-L6-v2 (CPU).

Splits ../shared/data/semeval2010/train.jsonl beside the repository (or `$SPHANA_SEMEVAL`) (8000 sentences, 19 labels) into train/validation/test (80/10/10, seeded),
trains through the shared runtime, calibrates on validation, and prints the official score (9 directed types, Other
excluded), the 19-way macro-F1, accuracy and ECE before/after temperature scaling on the held-out test split.

    .venv/bin/python nbs/benchmarks/relation_semeval.py --out /tmp/relation_semeval [--epochs 3 --lr 1e-4 ...]
"""
import argparse, json, os, random, time
from pathlib import Path
import numpy as np
import torch
from sphana_trainer.config import RelationConfig
from sphana_trainer.models.relation import calibration_bins
from sphana_trainer.train.relation import RelationComponent, predict_logits
from sphana_trainer.train.runtime import list_checkpoints, load_state, train
from types import SimpleNamespace

import sphana_trainer
DATA = Path(os.environ.get("SPHANA_SEMEVAL", Path(sphana_trainer.__file__).resolve().parents[2]/"shared"/"data"/"semeval2010"/"train.jsonl"))

def split(records, seed=13, frac=0.1):
    "Seeded train/validation/test split (`frac` each for validation and test)."
    idx = list(range(len(records))); random.Random(seed).shuffle(idx)
    k = int(len(records) * frac)
    return [records[i] for i in idx[2 * k:]], [records[i] for i in idx[:k]], [records[i] for i in idx[k:2 * k]]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/relation_semeval"); ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4); ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128); ap.add_argument("--pooling", default="entity_start")
    ap.add_argument("--warmup", type=float, default=0.1); ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--limit", type=int, default=0, help="use only this many sentences (smoke runs)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0: all epochs)")
    ap.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: every epoch)")
    ap.add_argument("--finalize", action="store_true", help="skip training: take the best checkpoint of <out>/run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy 2-core machine)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    comp = RelationComponent()
    recs = comp.read(DATA)
    if a.limit: recs = recs[:a.limit]
    tr, va, te = split(recs)
    print(f"records: train {len(tr)}, validation {len(va)}, test {len(te)}; labels {len({r['label'] for r in recs})}", flush=True)
    cfg = RelationConfig(model_name="sentence-transformers/all-MiniLM-L6-v2", epochs=a.epochs, batch_size=a.batch_size,
                         learning_rate=a.lr, warmup_ratio=a.warmup, max_seq_length=a.max_length, pooling=a.pooling,
                         label_smoothing=a.label_smoothing, checkpoint_keep=0, progress_log_interval=5, seed=42,
                         max_steps=a.max_steps or None, eval_every_steps=a.eval_every or None)
    task = comp.build(cfg, tr, va)
    t0 = time.perf_counter()
    if a.finalize:       # a run stopped early (time budget): its best evaluated checkpoint
        ck = [c for c in list_checkpoints(out/"run") if json.loads((c/"info.json").read_text()).get("metric") is not None]
        best = max(ck, key=lambda c: json.loads((c/"info.json").read_text())["metric"])
        st = load_state(best); task.module.load_state_dict(st["model"])
        res = SimpleNamespace(steps=st["step"], best_step=st["step"], history=st["history"])
        recs_ = [json.loads(l) for l in (out/"run"/"metrics.jsonl").read_text().splitlines()]
        train_s = (best/"info.json").stat().st_mtime - float((out/"started").read_text())  # includes evaluations
        print(f"finalizing from {best} (step {st['step']})", flush=True)
    else:
        (out/"started").write_text(str(time.time()))
        res = train(cfg, task, out/"run")
        train_s = time.perf_counter() - t0
    ck = comp.save(task, cfg, out/"checkpoint")
    cal = json.loads((ck/"calibration.json").read_text())
    assets = comp.load(ck)
    t1 = time.perf_counter(); rep = comp.evaluate(assets, te, batch_size=64); eval_s = time.perf_counter() - t1
    # test ECE of the uncalibrated model (T = 1) next to the calibrated one
    lg = predict_logits(assets.model, assets, te, 64)
    idx = {l: i for i, l in enumerate(assets.labels)}
    gold = np.array([idx.get(r["label"], -1) for r in te])
    p1 = np.exp(lg - lg.max(1, keepdims=True)); p1 /= p1.sum(1, keepdims=True)
    ece_test_before, _ = calibration_bins(p1, gold)
    epochs = [h for h in res.history if h.get("type") == "eval"]
    steps_ = [json.loads(l) for l in (out/"run"/"metrics.jsonl").read_text().splitlines() if '"type": "step"' in l]
    step_sps = [r["samples_per_s"] for r in steps_ if r["step"] <= res.steps]
    summary = {"recipe": vars(a), "train_records": len(tr), "validation_records": len(va), "test_records": len(te),
               "train_seconds": round(train_s, 1) if train_s else None, "train_sentences_per_s_median_step": round(float(np.median(step_sps)), 2) if step_sps else None,
               "steps": res.steps, "best_step": res.best_step, "validation_by_eval": [{k: h.get(k) for k in ("step", "macro_f1", "official_f1", "accuracy", "eval_loss")} for h in epochs],
               "test": {k: rep.get(k) for k in ("official_f1", "macro_f1", "micro_f1", "accuracy", "ece", "unknown_labels")},
               "test_ece_uncalibrated": ece_test_before, "temperature": cal["temperature"],
               "validation_ece_before": cal["ece_before"], "validation_ece_after": cal["ece_after"], "test_eval_seconds": round(eval_s, 1)}
    (out/"summary.json").write_text(json.dumps(summary, indent=2)); (out/"test_report.json").write_text(json.dumps(rep, indent=2))
    print(json.dumps(summary, indent=2), flush=True)

if __name__ == "__main__": main()
