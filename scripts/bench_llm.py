"""Greedy generation of a published LLM version: PyTorch `generate` (KV cache) against the shipped ONNX decoder step
(fp32, int8) driven by the project's greedy loop (`models.llm.greedy_generate`, past_key_values in, present out), on
the same held-back prompts with the same `max_new_tokens`, one prompt at a time.

Prints, for each ONNX graph, how many answers are token-for-token identical to PyTorch's, the position-wise token
agreement, and tokens/s with its ratio to PyTorch. Timed runs: under the shared lock, e.g.

    flock /tmp/sphana-bench.lock timeout 2400 .venv/bin/python scripts/bench_llm.py --version V [--int8 q.onnx]
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path


def agreement(a:list, b:list) -> float:
    "Share of positions (up to the longer sequence) where `a` and `b` hold the same token."
    n = max(len(a), len(b))
    return 1.0 if n == 0 else sum(x == y for x, y in zip(a, b)) / n


def timed(fn, prompts:list) -> tuple[list, float]:
    "`fn(prompt)` for every prompt (after one warm-up call): outputs and generated tokens per second."
    fn(prompts[0])
    t = time.perf_counter(); outs = [fn(p) for p in prompts]; dt = time.perf_counter() - t
    return outs, sum(map(len, outs)) / dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", help="published llm version (default: latest)")
    ap.add_argument("--artifact-root", help="artifact root (default: the workspace's)")
    ap.add_argument("--data", default="sample:llm/validation.jsonl", help="records whose prompts are generated from")
    ap.add_argument("--int8", action="append", default=[], help="int8 ONNX graph (default: the version's, if any)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", help="write the figures as JSON")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np, torch
    from sphana_trainer.artifacts import component_root, version_dir
    from sphana_trainer.config import resolve_path
    from sphana_trainer.models.llm import DecoderStep, greedy_generate, kv_shape, prompt_ids, step_names
    from sphana_trainer.train.component import ort_infer, torch_infer
    from sphana_trainer.train.llm import COMPONENT
    torch.set_num_threads(a.threads)
    print("uptime at start:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    d = version_dir(component_root("llm", a.artifact_root), a.version)
    assets = COMPONENT.load(d/"checkpoint"); model, tok, st = assets["model"], assets["tokenizer"], assets["settings"]
    recs = COMPONENT.read_eval(resolve_path(a.data))
    prompts = [prompt_ids(tok, r, st.get("system_prompt")) for r in recs]
    kv, pad, eos, n = kv_shape(model.config), tok.pad_token_id, tok.eos_token_id, a.max_new_tokens
    print(f"version {d.name}: {len(prompts)} prompts ({min(map(len, prompts))}-{max(map(len, prompts))} tokens), "
          f"max_new_tokens {n}, batch 1, {a.threads} threads", flush=True)

    @torch.inference_mode()
    def hf(p):
        o = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=n,
                           do_sample=False, use_cache=True, eos_token_id=eos, pad_token_id=pad)[0, len(p):].tolist()
        return o[:o.index(eos)] if eos in o else o
    step = lambda infer: (lambda p: greedy_generate(infer, [p], kv, pad, {eos}, n)[0])
    ref, ref_tps = timed(hf, prompts)
    rows = {"pytorch_generate": {"tokens_per_s": ref_tps, "tokens": sum(map(len, ref))}}
    print(f"PyTorch generate (KV cache): {ref_tps:.2f} tokens/s, {sum(map(len, ref))} tokens", flush=True)
    loop = [step(torch_infer(DecoderStep(model), step_names(kv[0])[0]))(p) for p in prompts]
    same = sum(x == y for x, y in zip(loop, ref))
    print(f"project greedy loop over PyTorch == generate: {same}/{len(ref)}", flush=True)
    graphs = [("onnx_fp32", d/"onnx"/"model.onnx")] + [(f"onnx_int8 {Path(p).name}", Path(p)) for p in a.int8]
    if not a.int8 and (d/"onnx"/"model.quant.onnx").is_file(): graphs.append(("onnx_int8", d/"onnx"/"model.quant.onnx"))
    for name, path in graphs:
        outs, tps = timed(step(ort_infer(path, a.threads)), prompts)
        same, agr = sum(x == y for x, y in zip(outs, ref)), float(np.mean([agreement(x, y) for x, y in zip(outs, ref)]))
        rows[name] = {"path": str(path), "tokens_per_s": tps, "tokens": sum(map(len, outs)), "identical": same,
                      "prompts": len(ref), "token_agreement": agr, "speed_vs_pytorch": tps / ref_tps}
        print(f"{name}: identical to PyTorch {same}/{len(ref)}, token agreement {agr:.3f}, {tps:.2f} tokens/s "
              f"= {tps / ref_tps:.2f}x PyTorch", flush=True)
    for r, o in list(zip(recs, ref))[:3]: print(" ", r["question"], "->", repr(tok.decode(o, skip_special_tokens=True)))
    print("uptime at end:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    if a.output: Path(a.output).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__": main(sys.argv[1:])
