"""The relation component beside Hugging Face `Trainer` + `AutoModelForSequenceClassification` (CPU).

Same backbone (all-MiniLM-L6-v2), same entity-marked text (markers added as special tokens), same training sentences
(the seeded SemEval split of `scripts/bench_relation_split.py`), batch size, learning rate, epochs and max length.
The component trains through the shared runtime with dynamic padding and length-grouped batches (`group_by_length`);
`Trainer` pads dynamically (`DataCollatorWithPadding`) and does not group by length (transformers 5 has no
`group_by_length` training argument). Prints the training sentences/s of both (wall clock of the training call),
their ratio, and both macro-F1s (and SemEval official scores) on the validation split. Run it alone on the machine
(`flock /tmp/sphana-bench.lock`).

    .venv/bin/python nbs/benchmarks/relation_hf_trainer.py --data target/datasets/semeval2010 --threads 2
"""
import argparse, json, os, subprocess, time
from pathlib import Path
import numpy as np
import torch
from sphana_trainer.config import RelationConfig
from sphana_trainer.hub import resolve_model
from sphana_trainer.models.relation import add_markers, encode_relation, relation_metrics
from sphana_trainer.train.relation import RelationComponent, predict_logits
from sphana_trainer.train.runtime import train

MODEL = "sentence-transformers/all-MiniLM-L6-v2"

def hf_trainer(tr:list, va:list, a, out:Path) -> tuple[float, dict]:
    "Fine-tune AutoModelForSequenceClassification ([CLS] head) with Trainer; (sentences/s, validation metrics)."
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    path = resolve_model(MODEL)
    tok = AutoTokenizer.from_pretrained(path); add_markers(tok)
    labels = sorted({r["label"] for r in tr}); idx = {l: i for i, l in enumerate(labels)}
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    model.resize_token_embeddings(len(tok))
    ds = [{"input_ids": encode_relation(tok, r, a.max_length), "labels": idx[r["label"]]} for r in tr]
    for d in ds: d["attention_mask"] = [1] * len(d["input_ids"])
    steps = -(-len(tr) // a.batch_size) * a.epochs
    args = TrainingArguments(output_dir=str(out/"hf"), per_device_train_batch_size=a.batch_size, learning_rate=a.lr,
                             num_train_epochs=a.epochs, warmup_steps=int(a.warmup * steps), weight_decay=0.01,
                             lr_scheduler_type="linear", logging_steps=50, save_strategy="no", report_to=[], seed=42,
                             use_cpu=True, dataloader_num_workers=0)
    t0 = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok)).train()
    sps = len(tr) * a.epochs / (time.perf_counter() - t0)
    model.eval(); pred = []
    with torch.inference_mode():
        for i in range(0, len(va), 64):
            enc = [{"input_ids": encode_relation(tok, r, a.max_length)} for r in va[i:i + 64]]
            b = tok.pad(enc, return_tensors="pt")
            pred += [labels[j] for j in model(**b).logits.argmax(1).tolist()]
    return sps, relation_metrics([r["label"] for r in va], pred, labels, details=False)

def ours(tr:list, va:list, a, out:Path) -> tuple[float, dict]:
    "The relation component through the shared runtime; (sentences/s, validation metrics)."
    comp = RelationComponent()
    cfg = RelationConfig(model_name=MODEL, epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.lr,
                         warmup_ratio=a.warmup, max_length=a.max_length, pooling=a.pooling, group_by_length=True,
                         checkpoint_keep=0, progress_log_interval=0)
    task = comp.build(cfg, tr, None)
    t0 = time.perf_counter(); train(cfg, task, out/"ours"); sps = len(tr) * a.epochs / (time.perf_counter() - t0)
    logits = predict_logits(task.assets.model, task.assets, va)
    pred = [task.assets.labels[i] for i in logits.argmax(1)]
    return sps, relation_metrics([r["label"] for r in va], pred, task.assets.labels, details=False)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="target/datasets/semeval2010", help="folder with train.jsonl, validation.jsonl")
    ap.add_argument("--out", default="/tmp/relation_hf"); ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1); ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32); ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--warmup", type=float, default=0.1); ap.add_argument("--pooling", default="both")
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--hf-first", action="store_true")
    a = ap.parse_args(); torch.set_num_threads(a.threads)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    comp = RelationComponent()
    tr, va = comp.read(Path(a.data)/"train.jsonl"), comp.read(Path(a.data)/"validation.jsonl")
    if a.limit: tr = tr[:a.limit]
    up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if a.hf_first: (s2, m2), (s1, m1) = hf_trainer(tr, va, a, out), ours(tr, va, a, out)
    else: (s1, m1), (s2, m2) = ours(tr, va, a, out), hf_trainer(tr, va, a, out)
    up1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    res = {"records": {"train": len(tr), "validation": len(va)}, "recipe": vars(a), "threads": torch.get_num_threads(),
           "uptime_start": up0, "uptime_end": up1,
           "ours": {"sentences_per_s": round(s1, 2), **m1}, "hf_trainer": {"sentences_per_s": round(s2, 2), **m2},
           "speed_ratio_ours_over_hf": round(s1 / s2, 3)}
    (out/"summary.json").write_text(json.dumps(res, indent=2)); print(json.dumps(res, indent=2))

if __name__ == "__main__": main()
