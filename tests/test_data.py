"""dataset-build-from-ingest and dataset-build-from-beir as a user runs them."""
import importlib.util, json, os, subprocess, sys
import pytest
from conftest import ROOT, BIN
from sphana_trainer.schemas import validate_jsonl
from sphana_trainer.data.build import write_example_ingest
from sphana_trainer.data.beir import write_example_beir

CLI = str(BIN/"sphana-trainer")

def run(*args, cwd=ROOT):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)

def one_line_error(r, *needles):
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert len(err) == 1, r.stderr
    for n in needles: assert n in err[0], err[0]

def test_build_from_ingest_cli(tmp_path):
    ex = write_example_ingest(tmp_path/"ingest")
    outs = []
    for name in ("a", "b"):
        r = run("dataset-build-from-ingest", ex, "--output-dir", tmp_path/name, "--min-confidence", "0.35", "--val-ratio", "0.25", "--seed", "3")
        assert r.returncode == 0, r.stderr
        assert "relation:" in r.stdout and "build_meta.json" in r.stdout
        outs.append({p.relative_to(tmp_path/name): p.read_bytes() for p in sorted((tmp_path/name).rglob("*.json*"))})
    assert outs[0] == outs[1]                                   # deterministic: same bytes
    for kind in ("embedding", "relation", "gnn", "ner"):
        for split in ("train", "validation"):
            rep = validate_jsonl(tmp_path/"a"/kind/f"{split}.jsonl", kind)
            assert rep.ok, rep.lines()[:3]
    meta = json.loads((tmp_path/"a"/"build_meta.json").read_text())
    assert meta["seed"] == 3 and meta["documents"] == {"train": 6, "validation": 2} and len(meta["source_fingerprint"]) == 64

def test_build_from_ingest_default_output_and_extras(tmp_path, workspace):
    ex = write_example_ingest(tmp_path/"myingest")
    extra = tmp_path/"extra_rel.jsonl"
    extra.write_text(json.dumps({"text": "Ada met Bob.", "entity1": {"text": "Ada", "start": 0, "end": 3},
                                 "entity2": {"text": "Bob", "start": 8, "end": 11}, "label": "met"}) + "\n")
    r = run("dataset-build-from-ingest", ex, "--extra-relation", extra)
    assert r.returncode == 0, r.stderr
    train = (workspace/"datasets"/"myingest"/"relation"/"train.jsonl").read_text().splitlines()
    assert json.loads(train[-1])["label"] == "met"

def test_build_from_ingest_bad_inputs(tmp_path):
    one_line_error(run("dataset-build-from-ingest", tmp_path/"nope", "-o", tmp_path/"o"), "ingest folder not found")
    ex = write_example_ingest(tmp_path/"ingest")
    lines = (ex/"relations.jsonl").read_text().splitlines()
    (ex/"relations.jsonl").write_text("\n".join(lines[:3] + ['{"id": "x", "broken'] + lines[3:]) + "\n")
    one_line_error(run("dataset-build-from-ingest", ex, "-o", tmp_path/"o"), "relations.jsonl:4", "invalid JSON")
    (ex/"relations.jsonl").write_text("\n".join(lines[:1] + [json.dumps({**json.loads(lines[1]), "confidence": 1.5})]) + "\n")
    one_line_error(run("dataset-build-from-ingest", ex, "-o", tmp_path/"o"), "relations.jsonl:2: confidence")
    (ex/"relations.jsonl").write_text("\n".join(lines) + "\n")
    bad = tmp_path/"bad_gnn.jsonl"; bad.write_text('{"query_id": "q", "candidates": []}\n')
    one_line_error(run("dataset-build-from-ingest", ex, "-o", tmp_path/"o", "--extra-gnn", bad), "bad_gnn.jsonl:1")
    assert not (tmp_path/"o").exists()                          # nothing half-written

def test_build_from_beir_cli(tmp_path):
    from sphana_trainer.hub import tiny_bert
    bx = write_example_beir(tmp_path/"beir")
    words = {w for f in ("corpus.jsonl", "queries.jsonl") for w in (bx/f).read_text().lower().replace('"', " ").split()}
    enc = tiny_bert(tmp_path/"enc", sorted(words))
    r = run("dataset-build-from-beir", bx, "--output-dir", tmp_path/"o", "--hard-negatives", "1", "--encoder", enc, "--top-k", "4", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert "NDCG@10" in r.stdout
    for kind in ("embedding", "gnn"):
        rep = validate_jsonl(tmp_path/"o"/kind/"train.jsonl", kind); assert rep.ok, rep.lines()[:3]
    rec = json.loads((tmp_path/"o"/"embedding"/"train.jsonl").read_text().splitlines()[0])
    assert {"query", "positive", "negative"} <= set(rec)

def test_build_from_beir_bad_folder(tmp_path):
    bx = write_example_beir(tmp_path/"beir")
    (bx/"qrels"/"train.tsv").write_text("query-id\tcorpus-id\tscore\nq-mix heat1\n")
    one_line_error(run("dataset-build-from-beir", bx, "-o", tmp_path/"o"), "train.tsv:2", "3 tab-separated fields")
    (bx/"qrels"/"train.tsv").unlink()
    one_line_error(run("dataset-build-from-beir", bx, "-o", tmp_path/"o"), "no .tsv files")
    one_line_error(run("dataset-build-from-beir", tmp_path/"none", "-o", tmp_path/"o"), "BEIR folder not found")

def _bundled_docs():
    from sphana_trainer.config import resolve_path
    docs = os.environ.get("SPHANA_INGEST_TEST_INPUT", "sample:docs.jsonl")
    return docs if resolve_path(docs).exists() else None

@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("sphana_trainer.ingest.pipeline", "sphana_trainer.ingest.parse", "sphana_trainer.ingest.extract"))
                    or _bundled_docs() is None,
                    reason="ingest pipeline or bundled docs not available")
def test_bundled_docs_ingest_then_build(tmp_path):
    "Bundled docs -> ingest (parser simple) -> dataset-build-from-ingest (with the cached parses): schema-valid datasets."
    import yaml
    cfg = {**yaml.safe_load((ROOT/"configs/ingest/base.yaml").read_text()), "input": _bundled_docs(), "parser": "simple",
           "output_dir": str(tmp_path/"ingest"), "cache_dir": str(tmp_path/"cache"), "progress_log_interval": 0}
    (tmp_path/"ingest.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([CLI, "ingest", "--config", str(tmp_path/"ingest.yaml")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    r = run("dataset-build-from-ingest", tmp_path/"ingest", "-o", tmp_path/"ds", "--parses-dir", tmp_path/"cache"/"parses")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path/"ds"/"build_meta.json").read_text())
    print(meta["counts"], meta["relation"]["labels"], meta["skipped"])
    assert meta["counts"]["embedding"]["train"] > 0 and meta["counts"]["embedding"]["validation"] > 0
    assert meta["counts"]["relation"]["train"] > 0 and meta["counts"]["gnn"]["train"] > 0
    for kind, c in meta["counts"].items():
        for split in ("train", "validation"):
            if c[split]:
                rep = validate_jsonl(tmp_path/"ds"/kind/f"{split}.jsonl", kind); assert rep.ok, rep.lines()[:3]

@pytest.mark.skipif(importlib.util.find_spec("sphana_trainer.ingest.pipeline") is None, reason="ingest pipeline not available")
def test_pipeline_output_builds(tmp_path):
    "run_ingest (rule-based stand-in parser, small chunks so sentences cross chunk edges) -> build_from_ingest + cached parses."
    import re
    from dataclasses import dataclass
    from types import SimpleNamespace
    from sphana_trainer.config import IngestConfig
    from sphana_trainer.ingest.pipeline import run_ingest
    from sphana_trainer.hub import tiny_bert
    from sphana_trainer.data.build import build_from_ingest, _EXAMPLE_DOCS

    @dataclass
    class Tok: text: str; start: int; end: int
    @dataclass
    class Sent: text: str; start: int; end: int; tokens: list; entities: list

    class Parser:
        name, version, Sentence, Token = "stand-in", "1", Sent, Tok
        def parse_many(self, texts):
            out = []
            for text in texts:
                sents = []
                for m in re.finditer(r"[^.]+\.?", text):
                    if not m.group().strip(): continue
                    toks = [Tok(t.group(), m.start() + t.start(), m.start() + t.end()) for t in re.finditer(r"\w+|[^\w\s]", m.group())]
                    sents.append(Sent(m.group(), m.start(), m.end(), toks, [(t.start, t.end, "ENT") for t in toks if t.text[:1].isupper()]))
                out.append(sents)
            return out

    def extract(sentences, text, cfg):
        out = []
        for s in sentences:
            for m in re.finditer(r"\b([A-Z]\w+) (\w+) (?:the |a |an )?(\w+)", s.text):
                g = lambda k: (m.group(k), s.start + m.start(k), s.start + m.end(k))
                out.append(SimpleNamespace(subject=g(1), predicate=m.group(2), object=g(3), sentence=(s.start, s.end), confidence=0.8, pattern="svo"))
        return out

    docs = [{"id": d, "title": t, "text": " ".join(" ".join(c) for c in cs)} for d, t, cs in _EXAMPLE_DOCS]
    (tmp_path/"docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    tok = tiny_bert(tmp_path/"tok", sorted({w.lower() for d in docs for w in re.findall(r"\w+", d["text"] + " " + d["title"])}))
    cfg = IngestConfig(input=str(tmp_path/"docs.jsonl"), tokenizer=str(tok), chunk_size=12, chunk_overlap=3,
                       output_dir=str(tmp_path/"ing"), cache_dir=str(tmp_path/"cache"), progress_log_interval=0)
    run_ingest(cfg, parser=Parser(), extract=extract)
    res = build_from_ingest(tmp_path/"ing", tmp_path/"ds", parses_dir=tmp_path/"cache"/"parses", progress_log_interval=0)
    assert res.meta["skipped"] == {}, res.meta["skipped"]          # every triple placed, even across chunk edges
    assert all(res.counts[k]["train"] > 0 for k in ("embedding", "relation", "gnn", "ner")), res.counts
    for kind in res.counts:
        for f in res.files(kind):
            rep = validate_jsonl(f, kind); assert rep.ok, rep.lines()[:3]

def test_val_ratio_zero_writes_no_validation(tmp_path):
    "--val-ratio 0: no validation.jsonl at all (an empty one used to be written), for both builders."
    ex, bx = write_example_ingest(tmp_path/"ingest"), write_example_beir(tmp_path/"beir")
    for cmd, src, kinds in (("dataset-build-from-ingest", ex, {"embedding", "relation", "gnn", "ner"}),
                            ("dataset-build-from-beir", bx, {"embedding", "gnn"})):
        out = tmp_path/cmd
        r = run(cmd, src, "--output-dir", out, "--val-ratio", "0.25")
        assert r.returncode == 0, r.stderr
        assert {p.parent.name for p in out.rglob("validation.jsonl")} == kinds   # a first build with validation
        r = run(cmd, src, "--output-dir", out, "--val-ratio", "0")
        assert r.returncode == 0, r.stderr
        assert sorted(out.rglob("validation.jsonl")) == [], r.stdout              # none written, the old ones removed
        assert {p.parent.name for p in out.rglob("train.jsonl")} == kinds
        assert "0 validation" in r.stdout

def test_outputs_follow_umask(tmp_path):
    "Files written atomically get the mode a plain open() would give them: 0644 under umask 022, 0600 under 077."
    import stat
    ex = write_example_ingest(tmp_path/"ingest")
    for um, want in ((0o022, 0o644), (0o077, 0o600)):
        out = tmp_path/f"o{um:o}"
        r = subprocess.run([CLI, "dataset-build-from-ingest", str(ex), "--output-dir", str(out)], capture_output=True, text=True,
                           cwd=ROOT, umask=um)
        assert r.returncode == 0, r.stderr
        modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
        assert modes and set(modes.values()) == {want}, (oct(um), {k: oct(v) for k, v in modes.items()})

def test_mine_negatives_pairs_file(tmp_path):
    "dataset-mine-negatives: a query's other positives are never its negatives; guards and counts in mine_meta.json."
    pairs = [("heat flow in slabs", "transient heat flow through layered slabs"),
             ("heat flow in slabs", "heat conduction in composite slabs"),
             ("shock waves at hypersonic speed", "detached shock ahead of blunt bodies")]
    docs = ["thermal conductivity of slab materials", "heat flow and shock waves", "laminar boundary layer transition",
            "turbulent boundary layer on a flat plate"]
    pf, cf = tmp_path/"pairs.jsonl", tmp_path/"corpus.jsonl"
    pf.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in pairs))
    cf.write_text("".join(json.dumps({"_id": str(i), "title": "", "text": t}) + "\n" for i, t in enumerate(docs)))
    r = run("dataset-mine-negatives", pf, "-o", tmp_path/"m", "--corpus", cf, "--negatives", "2", "--sampling", "random",
            "--relative-margin", "-1")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(l) for l in (tmp_path/"m"/"train.jsonl").read_text().splitlines()]
    meta = json.loads((tmp_path/"m"/"mine_meta.json").read_text())
    assert len(recs) == meta["records"] == 6 and meta["documents"] == 7 and meta["mining"]["sampling"] == "random"
    assert meta["mining"]["counts"]["dropped_relevant"] >= 2, meta                      # the other positive of the query
    for x in recs:
        assert x["negative"] not in {p for q, p in pairs if q == x["query"]}, x
    assert validate_jsonl(tmp_path/"m"/"train.jsonl", "embedding").ok
    one_line_error(run("dataset-mine-negatives", pf, "-o", tmp_path/"m2", "--range-min", "5", "--range-max", "5"),
                   "range_min < range_max")
