"""Embedding training recipes on a BEIR collection, scored on held-out queries, beside sentence-transformers' trainer.

One query split (``--val-ratio`` of the judged queries held out, ``--seed``): every recipe trains on the training
queries' pairs only and is scored on the held-out queries ranking the whole corpus (NDCG@10, MRR@10, Recall@100 with
ir-measures, `sphana-trainer evaluate embedding`). Our side runs through the CLI as a user would:

1. `sphana-trainer dataset-build-from-beir` once per negative recipe (in-batch only, BM25 negatives, encoder negatives
   with and without the false-negative guards);
2. `sphana-trainer train embedding --config <recipe>.yaml` (no validation split, so nothing is selected on held-out
   queries; ONNX export off), each run alone under the shared lock ``/tmp/sphana-bench.lock`` with 2 threads;
3. `sphana-trainer evaluate embedding --data <held-out BEIR folder>`.

sentence-transformers runs its own `SentenceTransformerTrainer` with `MultipleNegativesRankingLoss` and
`CachedMultipleNegativesRankingLoss` on the same train.jsonl, batch size, epochs, max length, learning rate, warmup,
weight decay, clipping and temperature (scale 20 = 1 / 0.05), with its no-duplicates batch sampler.

``--speed`` measures training pairs/s of both trainers in ONE process (held under the lock by the caller): ours
(`train embedding`, length-grouped batches) and sentence-transformers' trainer on the same plain pairs, batch and max
length, in the order ours, theirs, theirs, ours.

    flock /tmp/sphana-bench.lock ... is taken per timed run by the script itself; run it plainly:
    python scripts/bench_embedding_recipes.py --beir ../shared/data/cranfield --work /tmp/bench [--recipes a,b]
    flock /tmp/sphana-bench.lock python scripts/bench_embedding_recipes.py --beir ... --work ... --speed
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(ROOT/".venv/bin/sphana-trainer")] if (ROOT/".venv/bin/sphana-trainer").exists() else ["sphana-trainer"]
BASE = "sentence-transformers/all-MiniLM-L6-v2"
LOCK = "/tmp/sphana-bench.lock"

# dataset variants: dataset-build-from-beir options (all share the split: same --val-ratio and --seed)
DATASETS = {
    "inbatch": ["--hard-negatives", "0"],
    "bm25": ["--hard-negatives", "1", "--miner", "bm25", "--range-min", "0", "--relative-margin", "-1"],
    "bm25_guard": ["--hard-negatives", "1", "--miner", "bm25", "--range-min", "2", "--relative-margin", "0.05"],
    "enc": ["--hard-negatives", "1", "--miner", "encoder", "--range-min", "0", "--relative-margin", "-1"],
    "enc_guard": ["--hard-negatives", "1", "--miner", "encoder", "--range-min", "2", "--relative-margin", "0.05"],
}
# recipe -> (trainer, dataset, overrides)
RECIPES = {
    "untrained": ("base", None, {}),
    "in-batch only": ("ours", "inbatch", {}),
    "BM25 negatives": ("ours", "bm25", {}),
    "BM25 negatives + guards": ("ours", "bm25_guard", {}),
    "BM25 negatives + guards, 3 epochs": ("ours", "bm25_guard", {"epochs": 3}),
    "encoder negatives, no guards": ("ours", "enc", {}),
    "encoder negatives + guards": ("ours", "enc_guard", {}),
    "encoder negatives + guards, cached batch 128": ("ours", "enc_guard", {"batch_size": 128, "cached_batch_size": 32}),
    "in-batch only, 3 epochs": ("ours", "inbatch", {"epochs": 3}),
    "encoder negatives + guards, 3 epochs": ("ours", "enc_guard", {"epochs": 3}),
    "ST MNRL (in-batch only)": ("st", "inbatch", {}),
    "ST MNRL (encoder negatives + guards)": ("st", "enc_guard", {}),
    "ST MNRL (BM25 negatives + guards)": ("st", "bm25_guard", {}),
    "ST CachedMNRL batch 128 (encoder negatives + guards)": ("st", "enc_guard",
                                                             {"batch_size": 128, "cached_batch_size": 32}),
}

def sh(*args, env=None, log=None):
    "Run a command; raise with its output tail on failure."
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env)
    if log: Path(log).write_text(r.stdout + r.stderr)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return r.stdout

def uptime(): return Path("/proc/loadavg").read_text().split()[0]

def env(threads:int, work:Path):
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
            "SPHANA_WORKSPACE": str(work/"ws"), "TOKENIZERS_PARALLELISM": "false"}

def aux(a):
    "Prefix and threads of the untimed steps (builds, evaluation): inside a locked recipe they run like the training."
    return ([], 2) if a.inside else (["nice", "-n", "19"], 1)

def prepare(a, work:Path, names):
    "Build the dataset variants, the held-out BEIR folder and a base-model folder with the benchmark max length."
    for name in names:
        out = work/"ds"/name
        if not (out/"build_meta.json").exists():
            pre, th = aux(a)
            sh(*pre, *CLI, "dataset-build-from-beir", a.beir, "-o", out, "--val-ratio", a.val_ratio,
               "--seed", a.seed, "--max-length", a.max_length, *DATASETS[name], env=env(th, work),
               log=work/f"build_{name}.log")
        tr = work/"train"/name/"train.jsonl"        # training queries only: no validation.jsonl beside it
        if not tr.exists(): tr.parent.mkdir(parents=True, exist_ok=True); shutil.copy(out/"embedding"/"train.jsonl", tr)
    ho = work/"holdout"
    if not (ho/"qrels"/"test.tsv").exists():
        val = (work/"ds"/names[0]/"gnn"/"validation.jsonl").read_text().splitlines()
        held = {json.loads(l)["query_id"] for l in val}
        (ho/"qrels").mkdir(parents=True, exist_ok=True)
        for f in ("corpus.jsonl", "queries.jsonl"): shutil.copy(Path(a.beir)/f, ho/f)
        lines = [l for f in sorted((Path(a.beir)/"qrels").glob("*.tsv")) for l in f.read_text().splitlines()[1:]
                 if l.split("\t")[0] in held]
        (ho/"qrels"/"test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    base = work/"base"
    if not base.exists():   # the base model scored at the benchmark max length, like the trained ones
        sys.path.insert(0, str(ROOT)); from sphana_trainer.hub import resolve_model
        src = resolve_model(BASE); base.mkdir()
        for p in src.iterdir():
            if p.name != "sentence_bert_config.json": (base/p.name).symlink_to(p.resolve())
        cfg = json.loads((src/"sentence_bert_config.json").read_text()); cfg["max_seq_length"] = a.max_length
        (base/"sentence_bert_config.json").write_text(json.dumps(cfg))
    return ho

def settings(a, ov:dict) -> dict:
    return {"epochs": a.epochs, "batch_size": a.batch, "max_length": a.max_length, "learning_rate": a.lr,
            "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0, "temperature": 0.05, "seed": a.seed, **ov}

def train_ours(a, work:Path, name:str, train:Path, ov:dict, group_by_length=True) -> tuple[str, float, dict]:
    "`train embedding` under the lock; returns (version, training seconds, metrics)."
    import yaml
    v = f"r{abs(hash(name)) % 10**8}-{int(time.time())}"
    s = settings(a, ov)
    cfg = {"component": "embedding", "model_name": BASE, "train_file": str(train), "group_by_length": group_by_length,
           "device": "cpu", "progress_log_interval": 25, "export": {"enabled": False}, **s}
    f = work/"configs"/f"{v}.yaml"; f.parent.mkdir(parents=True, exist_ok=True); f.write_text(yaml.safe_dump(cfg))
    cmd = ["flock", LOCK, "timeout", "2400"] if a.lock else ["nice", "-n", "19"] if a.nice else []
    load0 = uptime()
    sh(*cmd, *CLI, "train", "embedding", "--config", f, "--version", v, env=env(2, work), log=work/f"train_{v}.log")
    meta = json.loads((work/"ws"/"artifacts"/"embedding"/v/"metadata.json").read_text())
    return v, meta["metrics"]["train_seconds"], {"load_start": load0, "load_end": uptime()}

def evaluate(a, work:Path, ho:Path, *, version=None, model=None) -> dict:
    out = work/"evals"/f"{version or Path(model).parent.name + '-' + Path(model).name}.json"
    out.parent.mkdir(exist_ok=True)
    sel = ["--version", version] if version else ["--model", model]
    pre, th = aux(a)
    sh(*pre, *CLI, "evaluate", "embedding", "--data", ho, *sel, "--output", out, env=env(th, work))
    return json.loads(out.read_text())["metrics"]

def st_rows(train:Path):
    "train.jsonl as sentence-transformers datasets: triplets and (for pairs without a negative) plain pairs."
    from datasets import Dataset, DatasetDict
    recs = [json.loads(l) for l in train.read_text().splitlines()]
    tri = [{"anchor": r["query"], "positive": r["positive"], "negative": r["negative"]}
           for r in recs if r.get("negative")]
    pairs = [{"anchor": r["query"], "positive": r["positive"]} for r in recs if not r.get("negative")]
    parts = {k: Dataset.from_list(v) for k, v in (("triplets", tri), ("pairs", pairs)) if v}
    return (next(iter(parts.values())) if len(parts) == 1 else DatasetDict(parts)), len(recs)

def train_st(a, work:Path, name:str, train:Path, ov:dict) -> tuple[Path, float, int]:
    "sentence-transformers' own trainer; returns (model folder, training seconds, records)."
    import torch
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments)
    from sentence_transformers.sentence_transformer.losses import (MultipleNegativesRankingLoss,
                                                                   CachedMultipleNegativesRankingLoss)
    from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers
    sys.path.insert(0, str(ROOT)); from sphana_trainer.hub import resolve_model
    torch.set_num_threads(2); s = settings(a, ov)
    model = SentenceTransformer(str(resolve_model(BASE)), device="cpu"); model.max_seq_length = s["max_length"]
    loss = (CachedMultipleNegativesRankingLoss(model, scale=1 / s["temperature"],
                                               mini_batch_size=s["cached_batch_size"])
            if s.get("cached_batch_size") else MultipleNegativesRankingLoss(model, scale=1 / s["temperature"]))
    ds, n = st_rows(train)
    out = work/"st"/f"{name.split()[1]}-{int(time.time())}"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out/"tmp"), num_train_epochs=s["epochs"], per_device_train_batch_size=s["batch_size"],
        learning_rate=s["learning_rate"], warmup_ratio=s["warmup_ratio"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], lr_scheduler_type="linear", seed=s["seed"], save_strategy="no",
        logging_steps=10, report_to="none", use_cpu=True, batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL, dataloader_num_workers=0)
    tr = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss)
    t0 = time.perf_counter(); tr.train(); secs = time.perf_counter() - t0
    model.save(str(out/"model")); shutil.rmtree(out/"tmp", ignore_errors=True)
    return out/"model", secs, n

def one_recipe(a, work:Path, r:str) -> dict:
    "Build (if needed), train and evaluate one recipe; the caller holds the lock when timings count."
    kind, d, ov = RECIPES[r]
    ho = prepare(a, work, ["inbatch"] + ([d] if d and d != "inbatch" else []))
    train = work/"train"/d/"train.jsonl" if d else None
    row = {"trainer": kind, "dataset": d, **settings(a, ov), "load_start": uptime()}
    if kind == "base":
        row.update(metrics=evaluate(a, work, ho, model=str(work/"base")), train_seconds=0.0, records=0)
    elif kind == "ours":
        a.lock = a.nice = False
        v, secs, _ = train_ours(a, work, r, train, ov)
        row.update(metrics=evaluate(a, work, ho, version=v), train_seconds=round(secs, 1), version=v,
                   records=len(train.read_text().splitlines()))
    else:
        model, secs, n = train_st(a, work, r, train, ov)
        row.update(metrics=evaluate(a, work, ho, model=str(model)), train_seconds=round(secs, 1), model=str(model),
                   records=n)
    row["load_end"] = uptime()
    if d: row["mining"] = json.loads((work/"ds"/d/"build_meta.json").read_text()).get("mining")
    return row

def run_recipes(a, work:Path):
    names = [r for r in (a.recipes.split(";") if a.recipes else RECIPES)]
    res_f = work/"results.json"
    for r in names:
        res = json.loads(res_f.read_text()) if res_f.exists() else {}
        if r in res: continue
        cmd = ["flock", LOCK, "timeout", "2400"] if a.lock else ["nice", "-n", "19"]
        out = sh(*cmd, sys.executable, __file__, "--one", r, "--beir", a.beir, "--work", work,
                 "--val-ratio", a.val_ratio, "--seed", a.seed, "--epochs", a.epochs, "--batch", a.batch,
                 "--max-length", a.max_length, "--lr", a.lr,
                 *([] if a.lock else ["--no-lock"]), env=env(2 if a.lock else 1, work))
        row = json.loads(out.strip().splitlines()[-1])
        res = json.loads(res_f.read_text()) if res_f.exists() else {}
        res[r] = row; res_f.write_text(json.dumps(res, indent=2))
        print(table_line(r, row), flush=True)
    print_table(json.loads(res_f.read_text()))

def table_line(r, row):
    m = row["metrics"]
    return (f"| {r} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | {m['recall@100']:.4f} | {row['train_seconds']:.0f} "
            f"| {row['load_start']} -> {row['load_end']} |")

def print_table(res):
    print("| recipe | NDCG@10 | MRR@10 | Recall@100 | train s | load |\n|---|---|---|---|---|---|")
    for r in [r for r in RECIPES if r in res] + [r for r in res if r not in RECIPES]: print(table_line(r, res[r]))

def speed(a, work:Path):
    "pairs/s of both trainers on the same plain pairs, batch and max length, in one process: ours, ST, ST, ours."
    prepare(a, work, ["inbatch"])
    full = (work/"train"/"inbatch"/"train.jsonl").read_text().splitlines()[:a.speed_pairs]
    sub = work/"train"/"speed"/"train.jsonl"; sub.parent.mkdir(parents=True, exist_ok=True)
    sub.write_text("\n".join(full) + "\n")
    print(f"load at start {uptime()}; {len(full)} pairs, batch {a.batch}, max_length {a.max_length}", flush=True)
    runs = []
    for who in ("ours", "st", "st", "ours"):
        if who == "ours": _, secs, _ = train_ours(a, work, "speed", sub, {}, group_by_length=True)
        else: _, secs, _ = train_st(a, work, "speed st", sub, {})
        runs.append((who, len(full) / secs))
        print(f"{who}: {len(full) / secs:.2f} pairs/s (load {uptime()})", flush=True)
    ours = sum(p for w, p in runs if w == "ours") / 2; st = sum(p for w, p in runs if w == "st") / 2
    res = {"pairs": len(full), "batch_size": a.batch, "max_length": a.max_length, "runs": runs,
           "pairs_per_s": {"sphana": round(ours, 3), "sentence_transformers": round(st, 3)},
           "ratio": round(ours / st, 3),
           "load_end": uptime()}
    (work/f"speed_{a.max_length}.json").write_text(json.dumps(res, indent=2)); print(json.dumps(res))

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--beir", required=True); p.add_argument("--work", required=True)
    p.add_argument("--val-ratio", default="0.3"); p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=int, default=1); p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128); p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--recipes", default=None, help="semicolon-separated recipe names (default: all)")
    p.add_argument("--no-lock", dest="lock", action="store_false", help="do not take the shared lock per timed run")
    p.add_argument("--nice", action="store_true", help="with --no-lock: train at nice 19 (quality-only runs)")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--speed-pairs", type=int, default=None, help="pairs timed (default: all)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(); work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    a.inside = bool(a.one) and a.lock
    if a.one: print(json.dumps(one_recipe(a, work, a.one))); return
    if a.speed: a.lock = a.nice = False; a.inside = True; speed(a, work)   # the caller holds the lock throughout
    else: run_recipes(a, work)

if __name__ == "__main__": main()
