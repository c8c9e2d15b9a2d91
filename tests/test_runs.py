"""The papermill run notebooks execute end to end (`papermill runs/<stage>.ipynb OUT.ipynb -p config <yaml>`), show their
figures and write report.json; the train_* notebooks are copies of one generic notebook; a failing run keeps its
executed copy with the error visible."""
import json, os, subprocess
from pathlib import Path
import nbformat, pytest
from conftest import ROOT, BIN

pm = pytest.importorskip("papermill")
from sphana_trainer.config import sample_data_dir
from sphana_trainer.workflow import registered

FAST_EXPORT = {"fuse": False, "fuse_for_int8": False, "int8_candidates": ["dynamic"], "parity_samples": 4,
               "min_cosine_int8": 0.0, "max_metric_drop_int8": 1.0}

def papermill(nb, out, ws, *params):
    "The papermill command line, from the project root, in the notebook's own kernel (sphana-trainer)."
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1"}
    env.pop("SPHANA_TRAIN_KILL_AFTER_STEP", None)
    args = [x for k, v in params for x in ("-p", k, str(v))]
    r = subprocess.run([str(BIN/"papermill"), f"runs/{nb}", str(out), *args, "--no-progress-bar"], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    return r, (nbformat.read(str(out), as_version=4) if Path(out).exists() else None)

def text(nb): return "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                              for c in nb.cells for o in c.get("outputs", []))
def images(nb): return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
def errors(nb): return [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]

def write(path, obj): path.write_text(json.dumps(obj)); return path

def test_train_notebooks_are_one_notebook():
    "train_<component>.ipynb differ from the generic train.ipynb only in the title and the defaults of the parameters cell."
    base = nbformat.read(ROOT/"runs"/"train.ipynb", as_version=4)
    for c in ("embedding", "relation", "gnn", "ner", "llm"):
        nb = nbformat.read(ROOT/"runs"/f"train_{c}.ipynb", as_version=4)
        assert len(nb.cells) == len(base.cells)
        params = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
        assert params == [1]
        assert f'component = "{c}"' in nb.cells[1].source and f'config = "configs/{c}/base.yaml"' in nb.cells[1].source
        assert [x.source for x in nb.cells[2:]] == [x.source for x in base.cells[2:]]

def test_run_ingest_and_build_datasets(tmp_path):
    ws = tmp_path/"ws"
    cfg = write(tmp_path/"ingest.yaml", {"component": "ingest", "input": "sample:docs.jsonl", "chunk_size": 64, "chunk_overlap": 8,
                                         "progress_log_interval": 0})
    r, nb = papermill("ingest.ipynb", tmp_path/"ingest.ipynb", ws, ("config", cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "documents ->" in text(nb) and "validation errors: 0" in text(nb) and images(nb) == 2
    fig = json.loads((ws/"ingest"/"report.json").read_text())
    assert fig["chunks"] > 0 and fig["validation_errors"] == 0 and fig["top_predicates"]
    r, nb = papermill("build_datasets.ipynb", tmp_path/"build.ipynb", ws, ("config", cfg), ("output_dir", tmp_path/"ds"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert images(nb) == 1 and json.loads((tmp_path/"ds"/"report.json").read_text())["counts"]["embedding"]["train"] > 0

def test_run_train_export_package(tmp_path):
    "train_embedding -> export -> package, each by the papermill command line with a tiny config."
    from sphana_trainer.hub import tiny_bert
    ws = tmp_path/"ws"; art = tmp_path/"art"
    model = tiny_bert(tmp_path/"tiny", words="who founded helix labs where is varno".split())
    cfg = write(tmp_path/"emb.yaml", {"component": "embedding", "model_name": str(model), "dataset_path": "sample:embedding",
                                      "max_steps": 3, "batch_size": 8, "version": "run-test", "device": "cpu", "progress_log_interval": 0,
                                      "eval_every_steps": 3, "export": FAST_EXPORT})
    r, nb = papermill("train_embedding.ipynb", tmp_path/"train.ipynb", ws, ("config", cfg), ("artifact_root", art))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "version run-test: 3 steps, published=True" in text(nb) and images(nb) >= 3 and not errors(nb)
    vdir = art/"embedding"/"run-test"
    assert (vdir/"onnx"/"model.quant.onnx").exists() and json.loads((vdir/"report.json").read_text())["int8"] == "dynamic"
    rel = write(tmp_path/"release.yaml", {"name": "run-test", "components": ["embedding"], "parity_samples": 2,
                                          "manifest": str(tmp_path/"manifests"/"latest.json")})
    r, nb = papermill("export.ipynb", tmp_path/"export.ipynb", ws, ("config", rel), ("artifact_root", art))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "embedding run-test" in text(nb) and images(nb) == 1 and (tmp_path/"manifests"/"latest.json").is_file()
    r, nb = papermill("package.ipynb", tmp_path/"package.ipynb", ws, ("config", rel), ("artifact_root", art))
    assert r.returncode == 0, r.stderr[-3000:]
    fig = json.loads((tmp_path/"manifests"/"reports"/"package"/"report.json").read_text())
    assert fig["verified"] and Path(fig["package"]).is_file() and "sha256 and schema OK" in text(nb)

def tiny_config(c, tmp_path):
    "A config of component `c` that trains a few steps of a tiny random model on the bundled sample data."
    from sphana_trainer.hub import tiny_bert
    data = sample_data_dir()/c
    words = " ".join(l for l in (data/"train.jsonl").read_text().splitlines()).lower().replace('"', " ").split()[:2000]
    base = {"component": c, "dataset_path": f"sample:{c}", "max_steps": 2, "batch_size": 4, "device": "cpu", "progress_log_interval": 0,
            "export": {**FAST_EXPORT, "quantize": False}}
    if c == "gnn": base.update(hidden_dim=8, num_layers=1)
    elif c == "llm":
        from sphana_trainer.models.llm import tiny_causal_lm
        recs = [json.loads(l) for l in (data/"train.jsonl").read_text().splitlines() if l.strip()]
        base.update(model_name=str(tiny_causal_lm(tmp_path/"tiny-llm", [f"{r['question']} {r.get('context', '')} {r['answer']}" for r in recs])),
                    max_length=128, max_new_tokens=4)
    else: base.update(model_name=str(tiny_bert(tmp_path/"tiny", words)), max_length=48)
    return write(tmp_path/f"{c}.yaml", base)

@pytest.mark.parametrize("component", ["relation", "gnn", "ner", "llm"])
def test_run_train_component(component, tmp_path):
    if not registered(component): pytest.skip(f"component {component} not registered in this installation")
    ws, art = tmp_path/"ws", tmp_path/"art"
    r, nb = papermill(f"train_{component}.ipynb", tmp_path/"out.ipynb", ws, ("config", tiny_config(component, tmp_path)), ("artifact_root", art))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "published=True" in text(nb) and not errors(nb) and images(nb) >= 2     # curves + parity scatter (+ NDCG, confusion, calibration)
    fig = json.loads(next((art/component).glob("*/report.json")).read_text())
    assert fig["component"] == component and fig["steps"] == 2
    if component == "gnn": assert "best validation NDCG@k" in json.dumps(nb.cells[8].outputs) or images(nb) >= 3
    if component == "relation": assert images(nb) >= 4    # + confusion matrix and reliability diagram

def test_failing_run_keeps_its_executed_copy(tmp_path, monkeypatch):
    "A run notebook that fails leaves report.ipynb/.html with the traceback where the error names them."
    from sphana_trainer.core import SphanaError
    from sphana_trainer.reports import run_report
    monkeypatch.setenv("SPHANA_WORKSPACE", str(tmp_path/"ws"))
    bad = write(tmp_path/"bad.yaml", {"component": "embedding", "dataset_path": str(tmp_path/"missing")})
    with pytest.raises(SphanaError) as e: run_report("train_embedding", {"config": str(bad)}, tmp_path/"failed")
    assert "the run notebook failed" in str(e.value) and str(tmp_path/"failed"/"report.ipynb") in str(e.value)
    nb = nbformat.read(tmp_path/"failed"/"report.ipynb", as_version=4)
    assert errors(nb) and "training file" in errors(nb)[0]["evalue"]
    assert "training file" in (tmp_path/"failed"/"report.html").read_text()
