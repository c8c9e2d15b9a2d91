"""The LLM component end to end on a tiny random Llama: training through the CLI, exact resume after SIGKILL, ONNX
greedy parity with the KV cache, LoRA, evaluate, and clear errors for bad input."""
import json, logging, os, signal, subprocess
from pathlib import Path
import pytest
from conftest import ROOT, BIN, run_cli as cli

torch = pytest.importorskip("torch")
import numpy as np
from sphana_trainer.config import load_config, config_from_dict, sample_data_dir
from sphana_trainer.core import SphanaError, write_jsonl
from sphana_trainer.models.llm import (greedy_generate, kv_shape, prompt_ids, step_names, tiny_causal_lm, DecoderStep,
                                       load_causal_lm, encode_record)
from sphana_trainer.train.component import ort_infer, torch_infer
from sphana_trainer.train.llm import COMPONENT, read_qa

CLI = str(BIN/"sphana-trainer")
DATA = sample_data_dir()/"llm"

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny random Llama whose tokenizer was trained on the bundled QA text."
    recs = read_qa(DATA/"train.jsonl") + read_qa(DATA/"validation.jsonl")
    texts = [f"{r['question']} {r.get('context', '')} {r['answer']}" for r in recs]
    return tiny_causal_lm(tmp_path_factory.mktemp("llm")/"tiny", texts)

def write_cfg(path, model, **extra):
    base = {"component": "llm", "model_name": str(model), "dataset_path": str(DATA), "epochs": 2, "batch_size": 8,
            "max_length": 256, "max_new_tokens": 6, "device": "cpu", "learning_rate": 3.0e-3, "eval_every_steps": 2,
            "checkpoint_keep": 1, "progress_log_interval": 0, "version": "v1", "export": {"enabled": False}}
    base.update(extra)
    path.write_text(json.dumps(base))
    return path


def art(ws): return Path(ws)/"artifacts"/"llm"

def test_seed_config_loads(tmp_path):
    (tmp_path/"seed.yaml").write_text('llm:\n  model_name: "Qwen/Qwen2-0.5B-Instruct"\n  quantize: true\n'
                                      '  max_seq_length: 2048\n'
                                      '  epochs: 1\n  batch_size: 2\n  learning_rate: 1e-5\n')
    c = load_config(tmp_path/"seed.yaml", "llm")
    assert (c.model_name, c.max_length, c.epochs, c.batch_size, c.learning_rate) == \
        ("Qwen/Qwen2-0.5B-Instruct", 2048, 1, 2, 1e-5)
    assert c.quantize and c.export.quantize
    assert not config_from_dict({"quantize": False}, "llm").export.quantize
    for f in (ROOT/"configs"/"llm").glob("*.yaml"): load_config(f, "llm")

def test_bad_records(tmp_path):
    write_jsonl(tmp_path/"a.jsonl", [{"question": "Who?", "answer": "Ann."}, {"question": "Where?", "answer": ""}])
    with pytest.raises(SphanaError, match=r"a.jsonl:2: 'answer' is empty"): read_qa(tmp_path/"a.jsonl")
    write_jsonl(tmp_path/"b.jsonl", [{"context": "x", "answer": "Ann."}])
    with pytest.raises(SphanaError, match=r"b.jsonl:1: 'question' is missing"): read_qa(tmp_path/"b.jsonl")
    (tmp_path/"c.jsonl").write_text("\n")
    with pytest.raises(SphanaError, match="no records"): read_qa(tmp_path/"c.jsonl")

def test_long_prompt_cut_or_rejected(tiny, caplog):
    recs = read_qa(DATA/"train.jsonl")[:4]
    long = {**recs[0], "context": " ".join([recs[0]["context"]] * 30)}
    cfg = config_from_dict({"model_name": str(tiny), "max_length": 256}, "llm")
    with caplog.at_level(logging.WARNING):
        task = COMPONENT.build(cfg, [long] + recs[1:], None)
    assert "1 of 4 training contexts were cut to fit max_length 256" in caplog.text
    assert all(len(e["input_ids"]) <= 256 for e in task.train_data)
    assert task.train_data[1]["input_ids"] == encode_record(task.assets["tokenizer"], recs[1], 10**6)["input_ids"]
    with pytest.raises(SphanaError, match="training record 1: question and answer take .* more than max_length 10"):
        COMPONENT.build(cfg.model_copy(update={"max_length": 10}), recs, None)

def test_model_without_chat_template(tmp_path, caplog):
    plain = tiny_causal_lm(tmp_path/"plain", ["Who founded Helix Labs? Marie Laurent."] * 3, chat_template=False)
    with caplog.at_level(logging.WARNING): model, tok = load_causal_lm(plain)
    assert "has no chat template; using a plain '### Question / ### Answer' template" in caplog.text
    e = encode_record(tok, {"question": "Who?", "answer": "Ann."}, 64)
    assert tok.decode(e["input_ids"]).startswith("### Question:\nWho?")
    assert tok.decode([t for t, l in zip(e["input_ids"], e["labels"]) if l != -100]) == "Ann." + tok.eos_token

def test_kill_resume_exact(tmp_path, tiny):
    cfg = write_cfg(tmp_path/"c.yaml", tiny)
    cli(["train", "llm", "--config", str(cfg)], tmp_path/"a")   # 40 records / 8 = 5 steps x 2 epochs
    r = cli(["train", "llm", "--config", str(cfg)], tmp_path/"b", {"SPHANA_TRAIN_KILL_AFTER_STEP": "5"}, check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (art(tmp_path/"b")/"latest.json").exists()
    r = cli(["train", "llm", "--config", str(cfg), "--resume", "latest"], tmp_path/"b")
    assert "resumed from" in r.stderr
    ckpt = lambda ws: art(ws)/".runs"/"v1"/"checkpoints"/"step-0000010"/"state.pt"
    last = lambda ws: torch.load(ckpt(ws), weights_only=True)["model"]
    la, lb = last(tmp_path/"a"), last(tmp_path/"b")
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)
    ev = lambda ws: [json.loads(l) for l in (art(ws)/"v1"/"metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    ea, eb = ev(tmp_path/"a"), ev(tmp_path/"b")
    assert [e["step"] for e in ea] == [2, 4, 6, 8, 10] and [e["eval_loss"] for e in ea] == [e["eval_loss"] for e in eb]
    assert {"eval_loss", "perplexity", "exact_match", "token_f1"} <= set(ea[0])
    steps = [json.loads(l) for l in (art(tmp_path/"a")/"v1"/"metrics.jsonl").read_text().splitlines() if '"step"' in l]
    assert steps[-1]["loss"] < steps[0]["loss"]

def test_train_export_onnx_greedy_parity(tmp_path, tiny, monkeypatch):
    "Published version: checkpoint + ONNX decoder; ORT greedy tokens = PyTorch greedy tokens on held-back prompts."
    monkeypatch.setenv("SPHANA_WORKSPACE", str(tmp_path/"ws"))
    from sphana_trainer.lifecycle import run_train, run_evaluate
    cfg = load_config(write_cfg(tmp_path/"c.yaml", tiny, epochs=1, max_steps=3, eval_every_steps=None,
                                export={"parity_samples": 4, "batch_size": 2, "quantize_exclude": [],
                                        "int8_candidates": ["weight_only", "dynamic_per_channel"],
                                        "max_metric_drop_int8": 10.0}), "llm")
    res = run_train(cfg)
    out = art(tmp_path/"ws")/"v1"
    meta = json.loads((out/"metadata.json").read_text())
    assert meta["onnx"]["fp32"] == "onnx/model.onnx" and meta["parity"]["fp32"]["passed"]
    assert "past_key_values.0.key" in meta["parity"]["inputs"] and meta["manifest"]["num_layers"] == 2
    assets = COMPONENT.load(out/"checkpoint")
    model, tok = assets["model"], assets["tokenizer"]
    kv = kv_shape(model.config); names = step_names(kv[0])[0]
    prompts = [prompt_ids(tok, r) for r in read_qa(DATA/"validation.jsonl")]
    args = (kv, tok.pad_token_id, {tok.eos_token_id}, 12)
    pt = greedy_generate(torch_infer(DecoderStep(model), names), prompts, *args)
    ox = greedy_generate(ort_infer(out/"onnx"/"model.onnx"), prompts, *args)
    assert pt == ox and sum(map(len, pt)) > 0
    # the same greedy tokens one prompt at a time (no padding) as in a left-padded batch
    assert [greedy_generate(ort_infer(out/"onnx"/"model.onnx"), [p], *args)[0] for p in prompts[:3]] == ox[:3]
    # both int8 recipes (weight-only blockwise = MatMulNBits, dynamic per-channel) were built, judged, one shipped
    cands = {c["recipe"]: c for c in meta["parity"]["int8_candidates"]}
    assert set(cands) == {"weight_only", "dynamic_per_channel"} and all(c["passed"] for c in cands.values()), cands
    assert meta["onnx"]["int8"] == "onnx/model.quant.onnx" and meta["parity"]["int8"]["recipe"] in cands
    q = greedy_generate(ort_infer(out/"onnx"/"model.quant.onnx"), prompts, *args)
    assert len(q) == len(prompts) and all(len(x) <= 12 for x in q)
    # evaluate through the lifecycle: checkpoint (PyTorch) and the fp32 ONNX model give the same scores
    a = run_evaluate("llm", DATA/"validation.jsonl", version="v1")["metrics"]
    b = run_evaluate("llm", DATA/"validation.jsonl", version="v1", onnx="fp32")["metrics"]
    assert {"exact_match", "token_f1", "perplexity", "eval_loss"} <= set(a)
    assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-3
    assert a["token_f1"] == b["token_f1"] and a["exact_match"] == b["exact_match"]
    assert abs(a["eval_loss"] - res.metrics["eval_loss"]) < 1e-3

def test_lora_merged_checkpoint(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("SPHANA_WORKSPACE", str(tmp_path/"ws"))
    from sphana_trainer.lifecycle import run_train
    from safetensors.torch import load_file
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    cfg = load_config(write_cfg(tmp_path/"c.yaml", tiny, max_steps=2, eval_every_steps=None,
                                gradient_checkpointing=True, lora=lora), "llm")
    task = COMPONENT.build(cfg, read_qa(DATA/"train.jsonl")[:4], None)
    trainable = [n for n, p in task.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    res = run_train(cfg)
    w = load_file(str(art(tmp_path/"ws")/"v1"/"checkpoint"/"model.safetensors"))
    assert not any("lora" in k for k in w) and res.steps == 2
    base = load_file(str(Path(tiny)/"model.safetensors"))
    assert not torch.equal(w["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(w["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])

def test_evaluate_cli_base_model(tmp_path, tiny):
    out = tmp_path/"ev.json"
    cli(["evaluate", "llm", "--data", str(DATA/"validation.jsonl"), "--model", str(tiny), "--output", str(out)],
        tmp_path/"ws")
    m = json.loads(out.read_text())["metrics"]
    assert 0 <= m["token_f1"] <= 1 and m["perplexity"] > 1
    r = cli(["evaluate", "llm", "--data", str(tmp_path/"none.jsonl"), "--model", str(tiny)], tmp_path/"ws", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # a prompt longer than max_length (512 by default) even without context: one clear line, exit 2
    write_jsonl(tmp_path/"long.jsonl", [{"question": "Who? " * 600, "answer": "Ann."}])
    r = cli(["evaluate", "llm", "--data", str(tmp_path/"long.jsonl"), "--model", str(tiny)], tmp_path/"ws", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "record 1: question and answer take" in r.stderr and "more than max_length 512" in r.stderr
