"""`sphana-trainer ingest` end to end: simple and spaCy parsers on the bundled documents, the cache, torchrun, bad inputs."""
import importlib.util, json, os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, BIN

DOCS = os.environ.get("SPHANA_INGEST_TEST_INPUT", "sample:docs.jsonl")
OUTPUTS = ("chunks.jsonl", "relations.jsonl")
_have_parsers = importlib.util.find_spec("sphana_trainer.ingest.parse") is not None and importlib.util.find_spec("sphana_trainer.ingest.extract") is not None
_have_docs = not DOCS.startswith("sample:") or (ROOT/"sphana_trainer/sample_data"/DOCS[len("sample:"):]).is_file()
needs_parsers = pytest.mark.skipif(not _have_parsers, reason="sphana_trainer.ingest.parse/extract not built")
needs_docs = pytest.mark.skipif(not _have_docs, reason="bundled sample docs not present")

def cli(*args, env=None, cwd=ROOT):
    return subprocess.run([str(BIN/"sphana-trainer"), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})})

def write_cfg(path, **kw):
    "An ingest config: configs/ingest/base.yaml with `kw` on top."
    import yaml
    cfg = {**yaml.safe_load((ROOT/"configs/ingest/base.yaml").read_text()), "input": DOCS, **kw}
    path.write_text(yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in cfg.items()}))
    return path

def read(d): return {f: (Path(d)/f).read_bytes() for f in OUTPUTS}
def meta(d): return json.loads((Path(d)/"ingest_meta.json").read_text())

def ingest_twice_and_validate(tmp_path, parser, **kw):
    cfg = write_cfg(tmp_path/f"{parser}.yaml", parser=parser, output_dir=tmp_path/"out", cache_dir=tmp_path/"cache", **kw)
    r1 = cli("ingest", "--config", cfg)
    assert r1.returncode == 0, r1.stdout + r1.stderr
    first, m1 = read(tmp_path/"out"), meta(tmp_path/"out")
    assert m1["counts"]["documents"] > 0 and m1["counts"]["chunks"] >= m1["counts"]["documents"] and m1["cache"]["hits"] == 0
    v = cli("ingest-validate", "--config", cfg, "--stats")
    assert v.returncode == 0, v.stdout + v.stderr
    stats = json.loads(v.stdout[v.stdout.index("{"):v.stdout.rindex("}") + 1])
    assert stats["parser"].startswith(parser) and stats["chunks"] == m1["counts"]["chunks"]
    r2 = cli("ingest", "--config", cfg)
    assert r2.returncode == 0, r2.stderr
    m2 = meta(tmp_path/"out")
    assert m2["cache"] == {"hits": m1["counts"]["documents"], "computed": 0}
    assert read(tmp_path/"out") == first
    ratio = m1["elapsed_s"] / max(m2["elapsed_s"], 1e-3)
    print(f"{parser}: {m1['counts']} first run {m1['elapsed_s']:.2f}s, cached run {m2['elapsed_s']:.3f}s -> {ratio:.1f}x faster")
    assert ratio >= 5, (m1["elapsed_s"], m2["elapsed_s"])
    return m1, stats

@needs_parsers
@needs_docs
def test_ingest_simple(tmp_path):
    m, stats = ingest_twice_and_validate(tmp_path, "simple", chunk_size=24, chunk_overlap=6)  # several overlapping chunks per document
    assert stats["chunks"] > 2 * stats["documents"] and stats["relations"] > 0, stats
    print(json.dumps(stats)[:600])

@needs_parsers
@needs_docs
def test_ingest_spacy(tmp_path):
    pytest.importorskip("spacy")
    m, stats = ingest_twice_and_validate(tmp_path, "spacy")
    assert stats["relations"] > 0, stats

@needs_parsers
@needs_docs
def test_torchrun_two_ranks_byte_identical(tmp_path):
    one = write_cfg(tmp_path/"one.yaml", output_dir=tmp_path/"one", cache_dir=tmp_path/"cache1", chunk_size=32, chunk_overlap=8)
    two = write_cfg(tmp_path/"two.yaml", output_dir=tmp_path/"two", cache_dir=tmp_path/"cache2", chunk_size=32, chunk_overlap=8)
    r = cli("ingest", "--config", one)
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(BIN/"torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "sphana_trainer.cli",
                        "ingest", "--config", str(two)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(shard 1/2)" in r.stderr and "(shard 2/2)" in r.stderr, r.stderr  # both ranks did work
    assert meta(tmp_path/"two")["shards"] == 2 and meta(tmp_path/"two")["cache"]["computed"] == meta(tmp_path/"one")["counts"]["documents"]
    a, b = read(tmp_path/"one"), read(tmp_path/"two")
    assert a == b, "2-rank output differs from 1-rank output"
    print(f"torchrun 2 ranks: {', '.join(f'{k} {len(v)} bytes' for k, v in b.items())}, byte-identical to 1 rank")

@needs_parsers
def test_bad_inputs_clear_errors_nothing_damaged(tmp_path):
    good = tmp_path/"good.jsonl"
    good.write_text("".join(json.dumps({"id": f"g{i}", "title": "G", "text": f"Ada Lovelace wrote program {i}. Babbage built the engine."}) + "\n" for i in range(3)))
    out = tmp_path/"out"
    r = cli("ingest", "--config", write_cfg(tmp_path/"good.yaml", input=good, output_dir=out, cache_dir=tmp_path/"cache"))
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path/"legacy").mkdir(); (tmp_path/"legacy/a.txt").write_text("fine"); (tmp_path/"legacy/b.txt").write_bytes(b"caf\xe9 cr\xe8me \x93quoted\x94")
    (tmp_path/"empty.jsonl").write_text("")
    (tmp_path/"badline.jsonl").write_text(good.read_text().splitlines()[0] + '\n{"id": "x", "text": "unterminated\n')
    cases = {"legacy": ("b.txt: cannot decode byte b'\\xe9' at offset 3", "input_encoding"),
             "empty.jsonl": ("empty.jsonl: file is empty",),
             "badline.jsonl": ("badline.jsonl:2: invalid JSON",),
             "no-such-dir": ("bad-no-such-dir.yaml: input", "not found")}
    for name, expect in cases.items():
        cfg = write_cfg(tmp_path/f"bad-{name}.yaml", input=tmp_path/name, output_dir=out, cache_dir=tmp_path/"cache")
        r = cli("ingest", "--config", cfg)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        print(name, "->", lines)
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, (name, r.stderr)
        for e in expect: assert e in lines[0], (name, lines[0])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # earlier outputs untouched, no temp files left

def test_cache_models_offline_message(tmp_path):
    "With no network, each failing model is named with how to install it offline; the packaged spaCy model counts as cached."
    dead = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path/"hf"), "NO_PROXY": ""}
    r = cli("ingest-cache-models", "--spacy-model", "en_core_web_sm", "--stanza-lang", "en", "--stanza-dir", tmp_path/"stanza",
            "--relation-model", "facebook/bart-large-mnli", env=dead)
    print(r.stdout)
    assert r.returncode == 2
    lines = r.stdout.splitlines()
    assert lines[0].startswith("ok   spacy en_core_web_sm")
    assert lines[1].startswith("FAIL stanza en: download failed") and "STANZA_RESOURCES_DIR" in lines[1]
    assert lines[2].startswith("FAIL hf facebook/bart-large-mnli: download failed") and "hf download facebook/bart-large-mnli" in lines[2]

@needs_parsers
def test_sigkill_leftovers_removed_on_next_run(tmp_path):
    "kill -9 mid-ingest leaves .chunks.jsonl.*.tmp / .relations.jsonl.*.tmp; the next run removes them."
    import signal, time
    docs = tmp_path/"docs.jsonl"
    with open(docs, "w") as f:
        for i in range(3000):
            f.write(json.dumps({"id": f"d{i}", "title": f"Doc {i}", "text": f"Ada Lovelace wrote note {i} about the engine. "
                                "Charles Babbage designed the Analytical Engine in London. " * 4}) + "\n")
    out = tmp_path/"out"
    cfg = write_cfg(tmp_path/"k.yaml", input=docs, output_dir=out, cache_dir=tmp_path/"cache", parser="simple", progress_log_interval=0)
    p = subprocess.Popen([str(BIN/"sphana-trainer"), "ingest", "--config", str(cfg)], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:
            tmps = list(out.glob(".*.tmp")) if out.is_dir() else []
            if len(tmps) >= 2 and all(t.stat().st_size > 0 for t in tmps): break
            time.sleep(0.05)
        assert p.poll() is None, "ingest finished before it could be killed; make the input larger"
        os.kill(p.pid, signal.SIGKILL); p.wait()
    finally:
        if p.poll() is None: p.kill(); p.wait()
    left = sorted(t.name for t in out.glob(".*.tmp"))
    assert any(n.startswith(".chunks.jsonl.") for n in left) and any(n.startswith(".relations.jsonl.") for n in left), left
    assert not (out/"chunks.jsonl").exists()
    r = cli("ingest", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert sorted(t.name for t in out.glob(".*.tmp")) == [], sorted(out.iterdir())
    assert "left by an interrupted run" in r.stderr
    assert sum(1 for _ in open(out/"chunks.jsonl")) > 0
