"""The config snippets of the user's guide, verbatim (tests/seed_configs/): each loads with its documented meaning;
the ingest and embedding ones also run their command (on tiny data, with a tiny model)."""
import json, os, subprocess
from pathlib import Path
import pytest, yaml
from conftest import ROOT, BIN
from sphana_trainer.config import load_config

SEEDS = Path(__file__).parent/"seed_configs"
CLI = str(BIN/"sphana-trainer")

def cli(*args, ws):
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env)

def derived(path, seed, **changes):
    "The seed snippet with `changes` on top (for what cannot run offline or must be tiny), as a YAML file."
    cfg = {**yaml.safe_load((SEEDS/seed).read_text()), **changes}
    path.write_text(yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in cfg.items()})); return path

def test_seed_ingest_loads():
    c = load_config(SEEDS/"ingest.yaml", "ingest")
    assert (c.chunk_size, c.chunk_overlap, c.parser, c.relation_threshold, c.relation_model, c.relation_max_length,
            c.progress_log_interval) == (384, 48, "stanza", 0.20, "facebook/bart-large-mnli", 512, 1)
    assert load_config(SEEDS/"ingest_input_dir.yaml", "ingest").input == "docs"

def test_seed_training_keys_load():
    e = load_config(SEEDS/"embedding.yaml", "embedding")
    assert (e.model_name, e.batch_size, e.epochs, e.learning_rate, e.max_length, e.precision, e.progress_log_interval) == \
           ("sentence-transformers/all-MiniLM-L6-v2", 32, 3, 2e-5, 512, "fp16", 5)
    r = load_config(SEEDS/"relation.yaml", "relation")
    assert (r.model_name, r.batch_size, r.epochs, r.max_length, r.precision, r.progress_log_interval) == \
           ("hf-internal-testing/tiny-random-bert", 16, 3, 256, "fp16", 5)
    l = load_config(SEEDS/"llm.yaml", "llm")
    assert (l.model_name, l.quantize, l.max_length, l.epochs, l.batch_size, l.learning_rate) == \
           ("Qwen/Qwen2-0.5B-Instruct", True, 2048, 1, 2, 1e-5)
    for comp in ("embedding", "relation", "gnn", "ner", "llm"):
        c = load_config(SEEDS/"training_common.yaml", comp)
        assert (c.metric_threshold, c.log_to_mlflow, c.mlflow_tracking_uri, c.mlflow_experiment, c.mlflow_run_name,
                c.profile_steps, c.ddp, c.precision, c.progress_log_interval) == \
               (0.5, True, "target/mlruns", "sphana-wiki", "seed-run", 5, True, "bf16", 1), comp
        assert (c.dataset_path, c.train_file, c.validation_file) == ("target/datasets/wiki/embedding",
                "target/datasets/wiki/embedding/train.jsonl", "target/datasets/wiki/embedding/validation.jsonl")

def test_seed_gnn_loads():
    from sphana_trainer.config import GnnConfig
    if "num_layers" not in GnnConfig.model_fields: pytest.skip("GnnConfig has no num_layers yet")
    g = load_config(SEEDS/"gnn.yaml", "gnn")
    assert (g.hidden_dim, g.num_layers, g.batch_size, g.epochs, g.listwise_loss, g.precision, g.progress_log_interval) == \
           (64, 3, 1, 2, "listnet", "fp16", 5)

def test_seed_ingest_runs(tmp_path):
    "The seed's ingest keys on a folder of documents (`input_dir`); Stanza and the BART classifier need downloads, so the "
    "run uses the simple parser and no relation model. The outputs go to output_dir, never into the documents folder."
    docs = tmp_path/"docs"; docs.mkdir()
    (docs/"ada.txt").write_text("Ada Lovelace wrote the first program. Charles Babbage designed the Analytical Engine.\n\n" * 20)
    (docs/"turing.md").write_text("# Alan Turing\n\nAlan Turing proposed the Turing test. Turing worked at Bletchley Park.\n")
    out = tmp_path/"out"
    cfg = derived(tmp_path/"ingest.yaml", "ingest.yaml", input_dir=docs, output_dir=out, cache_dir=tmp_path/"cache",
                  parser="simple", relation_model=None)
    r = cli("ingest", "--config", cfg, ws=tmp_path/"ws")
    assert r.returncode == 0, r.stderr
    chunks = [json.loads(l) for l in (out/"chunks.jsonl").read_text().splitlines()]
    assert {c["doc_id"] for c in chunks} and len(chunks) >= 2
    assert json.loads((out/"ingest_meta.json").read_text())["config"]["chunk_size"] == 384
    assert sorted(p.name for p in docs.iterdir()) == ["ada.txt", "turing.md"]     # nothing written next to the documents
    r = cli("ingest-validate", "--config", cfg, "--stats", ws=tmp_path/"ws")
    assert r.returncode == 0, r.stdout + r.stderr

def test_seed_embedding_trains(tmp_path):
    "The seed's embedding keys (max_seq_length 512, learning_rate 2e-5 as YAML reads it, fp16 -> fp32 on CPU) with a tiny "
    "BERT, one epoch on toy pairs, no ONNX export."
    pytest.importorskip("torch")
    from sphana_trainer.hub import tiny_bert
    from sphana_trainer.testing import write_toy_pairs
    data, words = write_toy_pairs(tmp_path/"data")
    model = tiny_bert(tmp_path/"tiny", words)
    cfg = derived(tmp_path/"emb.yaml", "embedding.yaml", model_name=model, dataset_path=data, epochs=1, version="seed",
                  device="cpu", export={"enabled": False})
    assert load_config(cfg, "embedding").max_length == 512
    r = cli("train", "embedding", "--config", cfg, ws=tmp_path/"ws")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "embedding seed" in r.stdout, r.stdout
