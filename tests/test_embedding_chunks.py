"""Length-sorted chunks in the embedding trainer: same loss and gradients as one padded call, fused AdamW."""
import json
import torch
from sphana_trainer.hub import tiny_bert
from sphana_trainer.models.embedding import (ContrastiveLoss, EmbeddingModel, encode_padded, length_chunks,
                                             load_encoder, make_collate)
from sphana_trainer.train.runtime import make_optimizer

WORDS = "what is a cat dog bird fish tree moon sky blue green long text about many things".split()

def _records(n=12):
    long = " ".join(WORDS * 3)
    return [{"query": f"what is {WORDS[i % len(WORDS)]}",
             "positive": (long if i % 3 == 0 else f"a {WORDS[i % len(WORDS)]} is {WORDS[(i + 1) % len(WORDS)]}")}
            for i in range(n)]

def _grads(model, batch):
    model.zero_grad(set_to_none=True); torch.manual_seed(0)
    loss = model(batch)["loss"]; loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

def test_chunked_training_step_equals_padded(tmp_path):
    enc, tok = load_encoder(str(tiny_bert(tmp_path/"m", WORDS)))
    batch = make_collate(tok, 64)(_records())
    lens = batch["p"]["attention_mask"].sum(1)
    assert lens.max() > 2 * lens.min()                    # long and short positives in one batch: chunks differ
    chunks = length_chunks(sorted(lens.tolist(), reverse=True), overhead=0)
    assert len(chunks) > 1
    plain = EmbeddingModel(enc, ContrastiveLoss(0.05), chunk_overhead=None).eval()   # dropout off: exact comparison
    chunked = EmbeddingModel(enc, ContrastiveLoss(0.05), chunk_overhead=0).eval()
    (l1, g1), (l2, g2) = _grads(plain, batch), _grads(chunked, batch)
    assert abs(l1 - l2) < 1e-5
    assert g1.keys() == g2.keys()
    for n in g1: assert torch.allclose(g1[n], g2[n], atol=1e-5), n

def test_left_padded_batches_fall_back_to_one_call(tmp_path):
    enc, tok = load_encoder(str(tiny_bert(tmp_path/"m", WORDS)))
    tok.padding_side = "left"
    t = dict(tok([r["positive"] for r in _records()], padding=True, return_tensors="pt"))
    enc.eval()
    with torch.no_grad():
        whole = enc(t["input_ids"], t["attention_mask"], t.get("token_type_ids"))
        assert torch.allclose(encode_padded(enc, t, 0), whole, atol=1e-6)

def test_optimizer_is_fused_on_cpu(tmp_path):
    enc, _ = load_encoder(str(tiny_bert(tmp_path/"m", WORDS)))
    opt = make_optimizer(EmbeddingModel(enc, ContrastiveLoss(0.05, learn_temperature=True)), 1e-3, 0.01)
    assert opt.defaults["fused"] is True
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(enc.parameters())) + 1   # + temperature
