#!/usr/bin/env python
"""Run stored parity samples the way the .NET runtime does: ONNX Runtime sessions, stored inputs, stored outputs.

Independent of sphana_trainer on purpose (json + numpy + onnxruntime only), so it checks the file formats and not
the trainer's own reading of them.

    python scripts/parity_check.py PACKAGE_DIR            # an unpacked package (manifest.json + <component>/...)
    python scripts/parity_check.py SAMPLES.json --model-dir DIR   # one sample file; models looked up in DIR

A sample file: {"models": {"fp32": "model.onnx", ...}, "tolerance": {"max_rel_drift": 0.01},
"batches": [{"inputs": {name: {dtype, shape, data}}, "outputs": {model file: {name: {dtype, shape, data}}}}]}.
Drift = max |got - expected| / max |expected|. Exit 0 when every model is within tolerance, 1 otherwise.
"""
import argparse, hashlib, json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort


def tensor(t):
    return np.asarray(t["data"], dtype=t["dtype"]).reshape(t["shape"])


def check(samples_path, model_dir):
    "Drift of every model of one sample file; prints one line per model; True when all pass."
    s = json.loads(Path(samples_path).read_text(encoding="utf-8"))
    tol, ok = (s.get("tolerance") or {}).get("max_rel_drift", 0.01), True
    for fname in s["models"].values():
        sess = ort.InferenceSession(str(Path(model_dir)/fname), providers=["CPUExecutionProvider"])
        names, worst = [o.name for o in sess.get_outputs()], 0.0
        for b in s["batches"]:
            got = sess.run(names, {k: tensor(v) for k, v in b["inputs"].items()})
            for n, g in zip(names, got):
                e = tensor(b["outputs"][fname][n]).astype(np.float64)
                d = np.abs(e - g).max(initial=0) / (np.abs(e).max(initial=0) or 1.0) if e.shape == g.shape else np.inf
                worst = max(worst, float(d))
        passed = worst < tol; ok &= passed
        who = f"{s.get('component', '?')} {s.get('version', '?')} {fname}"
        print(f"{who}: max drift {worst:.3e} ({'ok' if passed else 'FAIL'}, tolerance {tol})")
    return ok


def check_package(folder):
    "sha256 of every file the manifest lists, then the parity samples of every component."
    folder, ok = Path(folder), True
    man = json.loads((folder/"manifest.json").read_text(encoding="utf-8"))
    for comp, e in man["components"].items():
        for f in e["files"]:
            sha = hashlib.sha256((folder/f["path"]).read_bytes()).hexdigest()
            if sha != f["sha256"]: print(f"{f['path']}: sha256 mismatch"); ok = False
        samples = [f["path"] for f in e["files"] if f.get("role") == "parity_samples"]
        if not samples: print(f"{comp}: no parity samples"); ok = False
        for p in samples: ok &= check(folder/p, (folder/p).parent)
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="unpacked package folder, or a parity samples JSON file")
    ap.add_argument("--model-dir", help="folder of the models a samples file names (default: the file's folder)")
    a = ap.parse_args(argv)
    p = Path(a.path)
    ok = check_package(p) if p.is_dir() else check(p, Path(a.model_dir) if a.model_dir else p.parent)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
