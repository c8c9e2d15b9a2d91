"""Report of a relation version trained on SemEval-2010 Task 8 through the CLI (held-out test split, CPU).

After `sphana-trainer train relation --config configs/relation/semeval.yaml --version V` (see that config), prints:
training time and throughput (metadata.json, metrics.jsonl), the validation curve, temperature scaling on validation
(checkpoint/calibration.json), the held-out test split scored once: official SemEval score (9 directed types, `Other`
excluded), 19-way macro-F1, accuracy, ECE before (T = 1), after the temperature alone and after the full calibration
(temperature + top-label map); ONNX Runtime fp32 and int8 on the same test split (probability gap to PyTorch, argmax
changes, scores) and the int8 candidates of parity.json.

    .venv/bin/python nbs/benchmarks/relation_semeval.py --version V [--test target/datasets/semeval2010/test.jsonl]

With `--calibration-cv VALIDATION.jsonl` it prints instead the choice of calibrator: candidates fitted on one half of
the validation split and scored (ECE, NLL) on the other, over repeated stratified 2-fold splits (the test split is not
read).

With `--cross-fit` it prints the calibration of the whole held-out part (validation + test) by cross-fitting: every
sentence gets probabilities from a calibrator fitted on the other part (validation -> test and test -> validation, and
repeated stratified 2-fold splits of the union), one ECE over all of them; beside each ECE its floor (`ece_floor`: what
a perfectly calibrated model would measure on as many sentences). The ECE of 800 test sentences alone cannot go below
about 0.03 even for perfect calibration; over 1,600 the floor is about 0.02.
"""
import argparse, json
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from sphana_trainer.artifacts import component_root, version_dir
from sphana_trainer.models.relation import (apply_calibration, calibration_bins, ece_floor, fit_calibration,
                                            fit_temperature, relation_metrics)
from sphana_trainer.train.component import ort_infer
from sphana_trainer.train.relation import RelationComponent, predict_logits

KEYS = ("official_f1", "macro_f1", "accuracy", "ece", "ece_floor")

def softmax(z:np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True)); return z / z.sum(1, keepdims=True)

def training(d:Path) -> dict:
    "Training time, throughput and validation curve of a published version."
    meta = json.loads((d/"metadata.json").read_text())
    rows = [json.loads(l) for l in (d/"metrics.jsonl").read_text().splitlines() if l.strip()]
    ep = [r for r in rows if r.get("type") == "epoch"]
    ev = [{k: r.get(k) for k in ("step", "official_f1", "macro_f1", "accuracy", "eval_loss")} for r in rows
          if r.get("type") == "eval"]
    m = meta["metrics"]
    return {"train_seconds": m.get("train_seconds"), "train_minutes": round(m.get("train_seconds", 0) / 60, 2),
            "steps": m.get("steps"), "best_step": m.get("best_step"), "epochs": len(ep),
            "epoch_sentences_per_s": [round(r["samples_per_s"], 1) for r in ep],
            "pad_share": [r.get("pad_share") for r in ep], "validation_curve": ev, "dataset": meta["dataset"]}

def test_scores(comp, d:Path, test:list) -> dict:
    "PyTorch (uncalibrated and calibrated) and ONNX fp32/int8 scores on the test records."
    a = comp.load(d/"checkpoint"); gold = [r["label"] for r in test]
    idx = {l: i for i, l in enumerate(a.labels)}; g = np.array([idx.get(l, -1) for l in gold])
    lg = predict_logits(a.model, a, test); p1, pt = softmax(lg), softmax(lg / a.temperature)
    pc = apply_calibration(lg, {"temperature": a.temperature, "top_label_map": a.top_label_map})
    pred = [a.labels[i] for i in lg.argmax(1)]
    m = relation_metrics(gold, pred, a.labels, pc, details=False)
    out = {"pytorch": {k: v for k, v in m.items() if k in KEYS}, "temperature": a.temperature,
           "top_label_map": a.top_label_map, "ece_before": calibration_bins(p1, g)[0],
           "ece_temperature": calibration_bins(pt, g)[0], "ece_after": calibration_bins(pc, g)[0],
           "ece_floor_after": ece_floor(pc)}
    for kind, f in (("onnx_fp32", "model.onnx"), ("onnx_int8", "model.quant.onnx")):
        if not (d/"onnx"/f).is_file(): continue
        inf = ort_infer(d/"onnx"/f)
        po = np.concatenate([np.asarray(inf(x)[0], np.float64) for x in comp.feeds(a, test, 32)])
        m = relation_metrics(gold, [a.labels[i] for i in po.argmax(1)], a.labels, po, details=False)
        out[kind] = {**{k: v for k, v in m.items() if k in KEYS},
                     "max_abs_diff_vs_pytorch": float(np.abs(po - pc).max()),
                     "argmax_changes": int((po.argmax(1) != pc.argmax(1)).sum())}
    return out

def int8_table(d:Path) -> dict:
    "fp32 parity and the int8 candidates of the export."
    p = json.loads((d/"onnx"/"parity.json").read_text())
    cols = ("recipe", "passed", "records_per_s", "metric_drop", "failures")
    return {"fp32": {k: p["fp32"].get(k) for k in ("graph", "max_abs_diff", "argmax_mismatches", "records_per_s")},
            "int8_gate": p.get("int8_gate"),
            "int8_candidates": [{k: r.get(k) for k in cols} for r in p.get("int8_candidates", [])],
            "int8_shipped": (p.get("int8") or {}).get("recipe"), "int8_reason": p.get("int8_reason")}

def _ece(p, g): return calibration_bins(p, g)[0]
def _nll(p, g): k = g >= 0; return float(-np.log(np.clip(p[k, g[k]], 1e-12, None)).mean())

def _lbfgs(params, loss):
    opt = torch.optim.LBFGS(params, lr=0.1, max_iter=500, line_search_fn="strong_wolfe")
    def closure(): opt.zero_grad(); v = loss(); v.backward(); return v
    opt.step(closure)

def _scaled(vector:bool, l2:float=1e-2):
    "Temperature (one, or one per class) + per-class bias by NLL with an L2 penalty on the bias."
    def fit(z, g):
        x, y, k = torch.tensor(z), torch.tensor(g), z.shape[1]
        lt = torch.zeros(k if vector else (), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        _lbfgs([lt, b], lambda: F.cross_entropy(x / lt.exp() + b, y) + l2 * (b ** 2).sum())
        t, b = lt.detach().exp().numpy(), b.detach().numpy()
        return lambda q: softmax(q / t + b)
    return fit

def _ts(z, g): t = fit_temperature(z, g); return lambda q: softmax(q / t)
def _ts_ece(z, g):
    ts = np.exp(np.linspace(np.log(0.5), np.log(5), 200)); t = ts[np.argmin([_ece(softmax(z / t), g) for t in ts])]
    return lambda q: softmax(q / t)
def _ets(z, g):
    "Ensemble temperature scaling: w1 softmax(z/T) + w2 softmax(z) + w3 uniform, weights by NLL on a grid."
    t = fit_temperature(z, g); k = z.shape[1]; a, b = softmax(z / t), softmax(z)
    w = min(((w1, w2) for w1 in np.linspace(0, 1, 51) for w2 in np.linspace(0, 1 - w1, 51)),
            key=lambda w: _nll(w[0] * a + w[1] * b + (1 - w[0] - w[1]) / k, g))
    return lambda q: w[0] * softmax(q / t) + w[1] * softmax(q) + (1 - w[0] - w[1]) / k

def _top_label(mapper):
    "Temperature, then the top label's confidence through `mapper(conf, right)`, the others rescaled."
    def fit(z, g):
        t = fit_temperature(z, g); p = softmax(z / t); m = mapper(p.max(1), (p.argmax(1) == g).astype(float))
        def ap(q):
            p = softmax(q / t); c = p.max(1); c2 = np.clip(m(c), 1e-6, 1 - 1e-6)
            out = p * ((1 - c2) / np.clip(1 - c, 1e-12, None))[:, None]; out[np.arange(len(p)), p.argmax(1)] = c2
            return out
        return ap
    return fit

def _platt(c, r):
    lo = lambda v: np.log(np.clip(v, 1e-6, 1 - 1e-6) / np.clip(1 - v, 1e-6, None))
    a, b = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (1.0, 0.0))
    X, Y = torch.tensor(lo(c)), torch.tensor(r)
    _lbfgs([a, b], lambda: F.binary_cross_entropy_with_logits(a * X + b, Y))
    A, B = float(a.detach()), float(b.detach()); return lambda v: 1 / (1 + np.exp(-(A * lo(v) + B)))
def _isotonic(c, r):
    from sklearn.isotonic import IsotonicRegression
    return IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(c, r).predict
def _histogram(nb):
    "Histogram binning: one value (the bin's accuracy) per equal-count bin."
    def m(c, r):
        e = np.quantile(c, np.linspace(0, 1, nb + 1)); e[0], e[-1] = 0, 1
        b = lambda v: np.clip(np.searchsorted(e, v, side="right") - 1, 0, nb - 1)
        v = np.array([r[b(c) == j].mean() if (b(c) == j).any() else 0.5 for j in range(nb)])
        return lambda x: v[b(x)]
    return m
def _map(nb):
    "The shipped calibration: temperature + top-label map with `nb` knots (`apply_calibration`)."
    def fit(z, g):
        cal = fit_calibration(z, g, nb, min_per_bin=1); return lambda q: apply_calibration(q, cal)
    return fit

CANDIDATES = {"uncalibrated": lambda z, g: softmax, "temperature (NLL)": _ts, "temperature (min ECE)": _ts_ece,
              "temperature + class bias (L2 1e-2)": _scaled(False), "vector scaling (L2 1e-2)": _scaled(True),
              "ensemble temperature scaling": _ets, "temperature + top-label Platt": _top_label(_platt),
              "temperature + top-label isotonic": _top_label(_isotonic),
              **{f"temperature + histogram binning {n}": _top_label(_histogram(n)) for n in (3, 5, 10)},
              **{f"temperature + top-label map {n} (shipped: 5)": _map(n) for n in (3, 4, 5, 6, 8)}}

def checkpoint_logits(comp, d:Path, records:list) -> tuple:
    "`(logits, gold ids, strata)` of the version's checkpoint on `records`; strata: gold, -1 for classes seen once."
    a = comp.load(d/"checkpoint"); idx = {l: i for i, l in enumerate(a.labels)}
    z = predict_logits(a.model, a, records).astype(np.float64); g = np.array([idx.get(r["label"], -1) for r in records])
    return z, g, np.where(np.bincount(g[g >= 0], minlength=len(a.labels))[np.maximum(g, 0)] >= 2, g, -1)

def calibration_cv(comp, d:Path, val:list, repeats:int=25) -> dict:
    "Held-out ECE / NLL of each candidate over `repeats` stratified 2-fold splits of the validation records."
    from sklearn.model_selection import StratifiedKFold
    z, g, strat = checkpoint_logits(comp, d, val)
    res = {k: {"ece": [], "nll": [], "argmax_changes": []} for k in CANDIDATES}
    for rep in range(repeats):
        for tr, te in StratifiedKFold(2, shuffle=True, random_state=rep).split(z, strat):
            for k, fit in CANDIDATES.items():
                p = fit(z[tr], g[tr])(z[te])
                res[k]["ece"].append(_ece(p, g[te])); res[k]["nll"].append(_nll(p, g[te]))
                res[k]["argmax_changes"].append(int((p.argmax(1) != z[te].argmax(1)).sum()))
    base = np.array(res["temperature (NLL)"]["ece"])
    return {k: {"ece": float(np.mean(v["ece"])), "ece_sd": float(np.std(v["ece"])), "nll": float(np.mean(v["nll"])),
                "ece_vs_temperature": float(np.mean(np.array(v["ece"]) - base)),
                "lower_than_temperature": float(np.mean(np.array(v["ece"]) < base)),
                "argmax_changes": float(np.mean(v["argmax_changes"]))} for k, v in res.items()}

CROSS_FIT = {"uncalibrated": CANDIDATES["uncalibrated"], "temperature (NLL)": _ts,
             "shipped: temperature + map 5": _map(5)}

def cross_fit(comp, d:Path, val:list, test:list, repeats:int=10) -> dict:
    "Pooled out-of-fold ECE over validation + test: each part calibrated by a fit on the other (and random halves)."
    from sklearn.model_selection import StratifiedKFold
    z, g, strat = checkpoint_logits(comp, d, val + test); v, t = np.arange(len(val)), len(val) + np.arange(len(test))
    out = {}
    for k, fit in CROSS_FIT.items():
        p = np.zeros_like(z); p[t] = fit(z[v], g[v])(z[t]); p[v] = fit(z[t], g[t])(z[v])
        row = {"validation<->test": {"ece": _ece(p, g), "ece_floor": ece_floor(p), "nll": _nll(p, g),
                                     "ece_test_only": _ece(p[t], g[t]), "ece_floor_test_only": ece_floor(p[t])}}
        e, f = [], []
        for rep in range(repeats):
            for tr, te in StratifiedKFold(2, shuffle=True, random_state=rep).split(z, strat):
                p[te] = fit(z[tr], g[tr])(z[te])
            e.append(_ece(p, g)); f.append(ece_floor(p, draws=50))
        row["random halves"] = {"ece": float(np.mean(e)), "ece_sd": float(np.std(e)), "ece_floor": float(np.mean(f))}
        out[k] = row
    return {"n": len(g), "repeats": repeats, "calibrators": out}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", required=True); ap.add_argument("--artifacts", default=None, help="artifact root")
    ap.add_argument("--test", default="target/datasets/semeval2010/test.jsonl")
    ap.add_argument("--out", default=None, help="also write the summary JSON here")
    ap.add_argument("--calibration-cv", default=None, help="validation file: compare calibrators on it (only)")
    ap.add_argument("--repeats", type=int, default=None, help="2-fold splits (--calibration-cv, --cross-fit: 10)")
    ap.add_argument("--cross-fit", action="store_true", help="calibration of validation + test by cross-fitting (only)")
    ap.add_argument("--validation", default="target/datasets/semeval2010/validation.jsonl")
    a = ap.parse_args()
    comp = RelationComponent(); d = version_dir(component_root("relation", a.artifacts), a.version)
    if a.calibration_cv:
        res = {"version": d.name, "validation": a.calibration_cv, "repeats": a.repeats or 25,
               "candidates": calibration_cv(comp, d, comp.read(a.calibration_cv), a.repeats or 25)}
        if a.out: Path(a.out).write_text(json.dumps(res, indent=2))
        return print(json.dumps(res, indent=2))
    if a.cross_fit:
        res = {"version": d.name, "validation": a.validation, "test": a.test,
               **cross_fit(comp, d, comp.read(a.validation), comp.read(a.test), a.repeats or 10)}
        if a.out: Path(a.out).write_text(json.dumps(res, indent=2))
        return print(json.dumps(res, indent=2))
    res = {"version": d.name, "training": training(d),
           "calibration_validation": {k: json.loads((d/"checkpoint"/"calibration.json").read_text()).get(k)
                                      for k in ("temperature", "top_label_map", "ece_before", "ece_temperature",
                                                "ece_after", "nll_before", "nll_temperature", "nll_after")},
           "test": test_scores(comp, d, comp.read(a.test)), "export": int8_table(d)}
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))

if __name__ == "__main__": main()
