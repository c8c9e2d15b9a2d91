"""The papermill run notebooks execute end to end and leave an executed report."""
import json, sys
import pytest
from conftest import ROOT

pm = pytest.importorskip("papermill")

def execute(nb, out, **params):
    pm.execute_notebook(str(ROOT/"runs"/nb), str(out), parameters=params, cwd=str(ROOT), kernel_name="python3",
                        progress_bar=False, log_output=False)
    return json.loads(out.read_text())

def test_run_ingest_report(workspace, tmp_path):
    out = workspace/"ingest"/"report.ipynb"; out.parent.mkdir(parents=True)
    nb = execute("ingest.ipynb", out, overrides={"chunk_size": 64, "chunk_overlap": 8})
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "documents ->" in text and "validation errors: 0" in text
    assert any("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    assert (workspace/"ingest"/"chunks.jsonl").exists()

def test_run_train_embedding_report(workspace, tmp_path):
    from sphana_trainer.hub import tiny_bert
    model = tiny_bert(tmp_path/"tiny", words="who founded helix labs where is varno".split())
    out = workspace/"artifacts"/"embedding"/"report.ipynb"; out.parent.mkdir(parents=True)
    nb = execute("train_embedding.ipynb", out, overrides={"model_name": str(model), "max_steps": 3, "batch_size": 8,
                 "version": "run-test", "export": {"min_cosine_int8": 0.0, "max_metric_drop_int8": 1.0}})
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "version run-test: 3 steps, published=True" in text, text[-2000:]
    assert (workspace/"artifacts"/"embedding"/"run-test"/"onnx"/"model.quant.onnx").exists()
