"""Cranfield: the GGNN reranking the embedding retriever's top 20 vs the embedding ranking, on held-out queries.

    python scripts/bench_gnn_cranfield.py [--beir ../shared/data/cranfield] [--work DIR] [--set KEY=VALUE ...]

Every step goes through the CLI, as a user would run it:
1. `sphana-trainer dataset-build-from-beir BEIR -o WORK/built --encoder all-MiniLM-L6-v2 --top-k 20 --val-ratio 0.3`
   (skipped when WORK/built exists): `gnn/validation.jsonl` is the held-out set, never seen by training or tuning;
2. the builder's `gnn/train.jsonl` is split again by query into `fit.jsonl` and `dev.jsonl` (early stopping, best
   checkpoint); `WORK/gnn.yaml` is `configs/gnn/cranfield.yaml` pointed at them (`--set` overrides its keys, e.g.
   `--set score_feature=null` for a GGNN that does not start from the retriever score);
3. `sphana-trainer train gnn --config WORK/gnn.yaml`;
4. `sphana-trainer evaluate gnn --data WORK/built/gnn/validation.jsonl`: NDCG@k / MRR of the GGNN and of the embedding
   ranking carried in the data (`retriever_*`), over the held-out queries with a relevant document in their top 20;
5. NDCG@10 over ALL held-out queries against the full qrels (relevant documents outside the top 20 count as missed).
`--lexical` first appends two lexical columns to every node of the three files (see `add_lexical`)."""
import argparse, json, random, subprocess, sys, time
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent/"sphana-trainer")]
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
def sh(*args) -> str:
    "Run a CLI command, echo and return its output; stop on failure."
    print("$", " ".join(map(str, args)), flush=True)
    p = subprocess.run([*map(str, args)], capture_output=True, text=True)
    out = p.stdout + p.stderr
    if p.returncode: sys.exit(f"exit {p.returncode}:\n{out[-3000:]}")
    return out

def ids(path:Path) -> list: return [json.loads(l)["query_id"] for l in path.read_text().splitlines() if l.strip()]

def split_train(src:Path, work:Path, dev_ratio:float, seed:int) -> tuple:
    "`fit.jsonl` / `dev.jsonl`: the training queries split again by query (the held-out file is not touched)."
    lines = [l for l in src.read_text().splitlines() if l.strip()]
    order = list(range(len(lines))); random.Random(f"{seed}:dev").shuffle(order)
    dev = set(order[:max(1, round(dev_ratio * len(lines)))])
    (work/"fit.jsonl").write_text("".join(l + "\n" for i, l in enumerate(lines) if i not in dev))
    (work/"dev.jsonl").write_text("".join(l + "\n" for i, l in enumerate(lines) if i in dev))
    return len(lines) - len(dev), len(dev)

def add_lexical(paths:list, beir:Path) -> int:
    """Append two lexical columns to every node, in place: the candidate's BM25 score (/ the list's best) and the share
    of the query's IDF mass the node's text covers. Query and corpus only, no labels: a serving-time feature."""
    from sphana_trainer.data.beir import BM25, _words, doc_text, load_beir, passage_nodes
    data = load_beir(beir); ids = sorted(data.corpus); row = {d: i for i, d in enumerate(ids)}
    bm = BM25([doc_text(data.corpus[i]) for i in ids])
    def cover(text, q):
        qw = set(_words(q)); tot = sum(bm.idf.get(w, 0.0) for w in qw)
        return sum(bm.idf.get(w, 0.0) for w in qw & set(_words(text))) / tot if tot else 0.0
    for path in paths:
        recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
        for r in recs:
            q = data.queries[r["query_id"]]; s = bm.scores(q)
            b = [s[row[c["id"]]] for c in r["candidates"]]; top = max(b) or 1.0
            for c, bc in zip(r["candidates"], b):
                texts = [q] + passage_nodes(data.corpus[c["id"]])
                assert len(texts) == len(c["node_features"]), "node texts do not match the built graph"
                for x, t in zip(c["node_features"], texts): x += [round(bc / top, 4), round(cover(t, q), 4)]
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return 2

def all_query_ndcg(version_dir:Path, held_out:Path, beir:Path, k:int=10) -> dict:
    "NDCG@k of the GGNN order and of the embedding order of every held-out query, against the full qrels."
    import numpy as np
    from sphana_trainer.data.beir import load_beir, ndcg_at
    from sphana_trainer.train.gnn import GnnComponent, _torch_scorer, prepare_query, score_lists
    comp, data = GnnComponent(), load_beir(beir)
    assets = comp.load(version_dir/"checkpoint")
    raw = [json.loads(l) for l in held_out.read_text().splitlines() if l.strip()]
    recs = [prepare_query(r) for r in raw]
    import torch
    scores = score_lists(_torch_scorer(assets.model, torch.device("cpu")), recs, assets.meta["num_relations"])
    g, e = [], []
    for r, rec, s in zip(raw, recs, scores):
        docs = [c["id"] for c in r["candidates"]]
        rel = data.qrels[r["query_id"]]
        g.append(ndcg_at([docs[i] for i in np.argsort(-s, kind="stable")], rel, k))
        e.append(ndcg_at([docs[i] for i in np.argsort(-rec["retriever_score"], kind="stable")], rel, k))
    return {"queries": len(raw), "ggnn": float(np.mean(g)), "embedding": float(np.mean(e)),
            "queries_with_relevant_in_list": sum(rec["labels"].max() > 0 for rec in recs)}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beir", type=Path, default=ROOT.parent/"shared"/"data"/"cranfield")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gnn-cranfield"))
    ap.add_argument("--top-k", type=int, default=20); ap.add_argument("--val-ratio", type=float, default=0.3)
    ap.add_argument("--dev-ratio", type=float, default=0.2, help="share of the training queries for early stopping")
    ap.add_argument("--lexical", action="store_true", help="add BM25 node features (see add_lexical)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of the GNN config")
    a = ap.parse_args()
    work, built = a.work.resolve(), a.work.resolve()/"built"
    work.mkdir(parents=True, exist_ok=True)
    if not (built/"build_meta.json").is_file():
        t = time.monotonic()
        sh(*CLI, "dataset-build-from-beir", a.beir, "--output-dir", built, "--encoder", ENCODER, "--top-k", a.top_k,
           "--val-ratio", a.val_ratio, "--device", "cpu")
        print(f"dataset built in {time.monotonic() - t:.0f}s")
    meta = json.loads((built/"build_meta.json").read_text())
    k = meta["top_k"]
    print(f"ranker {meta['ranker']}, top {k}: NDCG@10 {meta['ranker_ndcg@10']} (all judged queries), "
          f"recall@{k} {meta[f'ranker_recall@{k}']}")
    tr, va = ids(built/"gnn"/"train.jsonl"), ids(built/"gnn"/"validation.jsonl")
    assert not set(tr) & set(va), "training and held-out queries overlap"
    n_fit, n_dev = split_train(built/"gnn"/"train.jsonl", work, a.dev_ratio, 42)
    print(f"queries: {len(tr)} training ({n_fit} fit + {n_dev} dev for early stopping), {len(va)} held-out; disjoint")
    held_out = built/"gnn"/"validation.jsonl"
    cfg = yaml.safe_load((ROOT/"configs"/"gnn"/"cranfield.yaml").read_text())
    if a.lexical:   # the builder's columns keep their places: a negative score_feature moves by the added columns
        held_out = work/"held_out.jsonl"; held_out.write_text((built/"gnn"/"validation.jsonl").read_text())
        n = add_lexical([work/"fit.jsonl", work/"dev.jsonl", held_out], a.beir)
        if isinstance(cfg.get("score_feature"), int) and cfg["score_feature"] < 0: cfg["score_feature"] -= n
        print(f"lexical node features added ({n} columns): BM25 of the candidate, IDF coverage of the node")
    cfg.pop("dataset_path")
    cfg.update(train_file=str(work/"fit.jsonl"), validation_file=str(work/"dev.jsonl"), device="cpu",
               output_dir=str(work/"artifacts"/"gnn"))
    for kv in a.set: k, v = kv.split("=", 1); cfg[k] = yaml.safe_load(v)
    (work/"gnn.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t = time.monotonic(); out = sh(*CLI, "train", "gnn", "--config", work/"gnn.yaml")
    print("\n".join(l for l in out.splitlines() if "eval step" in l or "version" in l.lower())[-4000:])
    print(f"train gnn: {time.monotonic() - t:.0f}s (CLI, including ONNX export and checks)")
    latest = json.loads((work/"artifacts"/"gnn"/"latest.json").read_text())
    print(sh(*CLI, "evaluate", "gnn", "--data", held_out, "--artifact-root", work/"artifacts",
             "--version", latest["version"], "--output", work/"evaluate.json"))
    full = all_query_ndcg(Path(latest["path"]), held_out, a.beir)
    ev = json.loads((work/"evaluate.json").read_text())["metrics"]
    print(f"held-out, {full['queries_with_relevant_in_list']} of {full['queries']} queries with a relevant document "
          f"in the top {meta['top_k']}: NDCG@10 GGNN {ev['ndcg@10']:.4f} vs embedding {ev['retriever_ndcg@10']:.4f}; "
          f"MRR {ev['mrr']:.4f} vs {ev['retriever_mrr']:.4f}")
    print(f"held-out, all {full['queries']} queries, full qrels: NDCG@10 GGNN {full['ggnn']:.4f} "
          f"vs embedding {full['embedding']:.4f}")

if __name__ == "__main__": main()
