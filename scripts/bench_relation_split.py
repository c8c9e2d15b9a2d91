"""Seeded 80/10/10 train/validation/test split of SemEval-2010 Task 8 (`train.jsonl`, 8000 sentences) for the CLI.

Writes `<out>/train.jsonl`, `<out>/validation.jsonl`, `<out>/test.jsonl` (the records unchanged). The test part is
scored once, at the end, with `sphana-trainer evaluate relation --data <out>/test.jsonl --version ...`.
`--reverse-out DIR` also writes the same split with the training part doubled by role swapping: every training
sentence again with entity1 and entity2 exchanged and the direction of its label reversed (`T(e1,e2)` <-> `T(e2,e1)`,
`Other` stays `Other`); validation and test are unchanged.

    .venv/bin/python scripts/bench_relation_split.py [--data ../shared/data/semeval2010/train.jsonl]
        [--out target/datasets/semeval2010] [--reverse-out target/datasets/semeval2010-reverse] [--seed 13]
"""
import argparse, json, random, re
from pathlib import Path

def split(records:list, seed:int=13, frac:float=0.1) -> tuple[list, list, list]:
    "Seeded (train, validation, test): `frac` of the records each for validation and test."
    idx = list(range(len(records))); random.Random(seed).shuffle(idx)
    k = int(len(records) * frac)
    return [records[i] for i in idx[2 * k:]], [records[i] for i in idx[:k]], [records[i] for i in idx[k:2 * k]]

def reverse(rec:dict) -> dict:
    "`rec` with the two entities' roles exchanged and the direction of its label reversed."
    swap = {"e1,e2": "e2,e1", "e2,e1": "e1,e2"}
    label = re.sub(r"\((e1,e2|e2,e1)\)$", lambda m: f"({swap[m.group(1)]})", rec["label"])
    return {**rec, "id": f"{rec.get('id', '')}-reversed", "entity1": rec["entity2"], "entity2": rec["entity1"],
            "label": label}

def write(out:Path, parts:dict):
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        (out/f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        print(f"{out/name}.jsonl: {len(part)} sentences, {len({r['label'] for r in part})} labels")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(__file__).resolve().parents[2]/"shared"/"data"/"semeval2010"/"train.jsonl"
    ap.add_argument("--data", default=str(shared))
    ap.add_argument("--out", default="target/datasets/semeval2010"); ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--reverse-out", default=None, help="also write the split with role-swapped training copies here")
    a = ap.parse_args()
    recs = [json.loads(l) for l in Path(a.data).read_text().splitlines() if l.strip()]
    tr, va, te = split(recs, a.seed)
    write(Path(a.out), {"train": tr, "validation": va, "test": te})
    if a.reverse_out: write(Path(a.reverse_out), {"train": tr + [reverse(r) for r in tr], "validation": va, "test": te})

if __name__ == "__main__": main()
