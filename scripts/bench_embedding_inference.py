"""PyTorch eager vs the shipped fp32 and int8 ONNX graphs of a published embedding version, on the same texts.

    python scripts/bench_embedding_inference.py <artifact_root>/embedding/<version> [--texts FILE.jsonl] [--n 128]

Prints sentences/s of each (timed in turns, best of `--rounds`) and the ratios to PyTorch."""
import argparse, json, random, time
from pathlib import Path
import torch
from sphana_trainer.export.onnx import OnnxEncoder, load_checkpoint, torch_encode

ap = argparse.ArgumentParser()
ap.add_argument("version_dir", type=Path)
ap.add_argument("--texts", type=Path, help="JSONL with query/positive pairs (default: the version's validation file)")
ap.add_argument("--n", type=int, default=128); ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--max-length", type=int, default=256); ap.add_argument("--rounds", type=int, default=3)
a = ap.parse_args()
meta = json.loads((a.version_dir/"metadata.json").read_text())
src = a.texts or Path(meta["dataset"]["validation"] or meta["dataset"]["train"])
recs = [json.loads(l) for l in src.read_text().splitlines() if l.strip()]
texts = list(dict.fromkeys(t for r in recs for t in (r.get("query"), r.get("positive")) if t))
texts = random.Random(0).sample(texts, min(a.n, len(texts)))
enc, tok = load_checkpoint(a.version_dir/"checkpoint")
onnx = a.version_dir/"onnx"
run = {"PyTorch eager": lambda t: torch_encode(enc, tok, t, a.batch, a.max_length),
       "ONNX fp32": (lambda e: lambda t: e.encode(t, a.batch))(OnnxEncoder(onnx/"model.onnx", tok, a.max_length))}
if (onnx/"model.quant.onnx").is_file():
    run["ONNX int8"] = (lambda e: lambda t: e.encode(t, a.batch))(OnnxEncoder(onnx/"model.quant.onnx", tok, a.max_length))
best = {k: float("inf") for k in run}
for f in run.values(): f(texts[:a.batch])
for _ in range(a.rounds):
    for k, f in run.items():
        t0 = time.perf_counter(); f(texts); best[k] = min(best[k], time.perf_counter() - t0)
sps = {k: len(texts) / v for k, v in best.items()}
print(f"{len(texts)} texts from {src.name}, batch {a.batch}, max length {a.max_length}, {torch.get_num_threads()} threads")
print(f"fp32 graph: {meta['parity']['fp32']['graph']}; int8 recipe: {(meta['parity'].get('int8') or {}).get('recipe')}")
for k, v in sps.items(): print(f"{k:14s} {v:7.1f} sentences/s  {v / sps['PyTorch eager']:.2f}x PyTorch")
