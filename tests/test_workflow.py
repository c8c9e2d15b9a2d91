"""`workflow run|wiki|status` through the real CLI: unchanged stages skipped, a changed config re-running its stage and
those downstream only, a SIGKILL during training resumed from the checkpoint, every stage through its run notebook with
reports beside the outputs (one opened in headless Chromium), and the wiki flow against a local fake wiki API."""
import json, os, signal, subprocess
from pathlib import Path
import pytest
from conftest import ROOT, BIN

pytest.importorskip("torch")
from sphana_trainer.hub import tiny_bert
from sphana_trainer.testing import write_toy_pairs

CLI = str(BIN/"sphana-trainer")
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT/"target"/"test_workflow"   # screenshots of the report, kept for people to look at
# ONNX export kept short: plain fp32 graph, one int8 recipe, loose int8 gates (a tiny random model)
FAST_EXPORT = {"fuse": False, "fuse_for_int8": False, "int8_candidates": ["dynamic"], "parity_samples": 4,
               "min_cosine_int8": 0.0, "max_metric_drop_int8": 1.0}

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    "Toy pairs (12 train / 4 validation) and a tiny BERT that knows their words."
    d = tmp_path_factory.mktemp("toy")
    data, words = write_toy_pairs(d/"data")
    return data, tiny_bert(d/"tiny", words + "helix labs varno marie laurent founded".split())

def write(path, obj):
    path.write_text(json.dumps(obj)); return path   # JSON is valid YAML

def configs(tmp, toy, **emb):
    "Ingest (bundled documents), embedding (toy pairs, tiny BERT) and release configs."
    data, model = toy
    ing = write(tmp/"ingest.yaml", {"component": "ingest", "input": "sample:docs.jsonl", "output_dir": str(tmp/"ingest"),
                                    "cache_dir": str(tmp/"cache"), "chunk_size": 64, "chunk_overlap": 8, "parser": "simple",
                                    "progress_log_interval": 0})
    e = write(tmp/"emb.yaml", {"component": "embedding", "model_name": str(model), "dataset_path": str(data), "epochs": 2,
                               "batch_size": 2, "max_length": 16, "device": "cpu", "learning_rate": 1.0e-3, "eval_every_steps": 2,
                               "checkpoint_keep": 1, "progress_log_interval": 0, "export": FAST_EXPORT, **emb})
    rel = write(tmp/"release.yaml", {"name": "test-release", "components": ["embedding"], "parity_samples": 2,
                                     "package": {"compresslevel": 1}})
    return ing, e, rel

def cli(args, ws, env_extra=None, check=True, cwd=ROOT):
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    env.pop("SPHANA_TRAIN_KILL_AFTER_STEP", None); env.update(env_extra or {})
    r = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, cwd=cwd)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r

def run_args(tmp, ing, emb, rel, *extra):
    return ["workflow", "run", "--artifact-root", str(tmp/"art"), "--ingest-config", str(ing), "--build-datasets",
            "--dataset-output-dir", str(tmp/"datasets"), "--embedding-config", str(emb), "--export-config", str(rel),
            "--package-config", str(rel), "--promote-component", "embedding", "--manifest", str(tmp/"manifests"/"latest.json"), *extra]

def report(tmp): return json.loads((tmp/"art"/"workflow-report.json").read_text())
def actions(tmp): return {s["stage"]: s["action"] for s in report(tmp)["stages"]}
def status(tmp, ws):
    return {r["stage"]: r for r in json.loads(cli(["workflow", "status", "--artifact-root", str(tmp/"art"), "--json"], ws).stdout)}

STAGES = ["ingest", "build_datasets", "train_embedding", "export", "package", "promote"]

def test_unchanged_skips_and_changed_config_reruns_downstream(tmp_path, toy):
    ws = tmp_path/"ws"; ing, emb, rel = configs(tmp_path, toy)
    r = cli(run_args(tmp_path, ing, emb, rel, "--no-report"), ws)
    for i, s in enumerate(STAGES, 1): assert f"stage {i}/6: {s}: done in" in r.stdout, r.stdout
    assert actions(tmp_path) == {s: "ran" for s in STAGES}
    rep = report(tmp_path); pkg = Path(rep["package"])
    assert rep["status"] == "succeeded" and pkg.is_file() and f"package: {pkg}" in r.stdout
    assert "workflow report: " in r.stdout and rep["manifest"]["content"]["name"] == "test-release"
    v1 = rep["manifest"]["content"]["components"]["embedding"]["version"]
    out = {s["stage"]: s["outputs"] for s in rep["stages"]}
    assert out["package"]["verified"] and out["promote"]["version"] == v1 == out["train_embedding"]["version"]
    assert (tmp_path/"datasets"/"embedding"/"train.jsonl").is_file() and (tmp_path/"ingest"/"report.json").is_file()
    # the same command again: every stage skipped
    r = cli(run_args(tmp_path, ing, emb, rel, "--no-report"), ws)
    for i, s in enumerate(STAGES, 1): assert f"stage {i}/6: {s}: skipped (unchanged since" in r.stdout, r.stdout
    assert actions(tmp_path) == {s: "skipped" for s in STAGES}
    # the embedding config touched: status says its stage is stale, the next run re-runs it and what follows only
    configs(tmp_path, toy, learning_rate=5.0e-4)
    st = status(tmp_path, ws)
    assert {s: st[s]["stale"] for s in STAGES} == {s: s == "train_embedding" for s in STAGES}
    assert st["train_embedding"]["version"] == v1 and st["train_embedding"]["status"] == "succeeded"
    assert st["train_embedding"]["note"] == "changed: config.learning_rate"
    cli(run_args(tmp_path, ing, emb, rel, "--no-report"), ws)
    assert actions(tmp_path) == {"ingest": "skipped", "build_datasets": "skipped", "train_embedding": "ran", "export": "ran",
                                 "package": "ran", "promote": "ran"}
    v2 = report(tmp_path)["manifest"]["content"]["components"]["embedding"]["version"]
    assert v2 != v1 and (tmp_path/"art"/"embedding"/v2/"metadata.json").is_file()
    assert not any(r["stale"] for r in status(tmp_path, ws).values())
    # --force re-runs one stage even though nothing changed; an unknown stage is refused
    cli(run_args(tmp_path, ing, emb, rel, "--no-report", "--force", "ingest"), ws)
    assert actions(tmp_path)["ingest"] == "ran" and actions(tmp_path)["build_datasets"] == "skipped"
    r = cli(run_args(tmp_path, ing, emb, rel, "--no-report", "--force", "train_nothing"), ws, check=False)
    assert r.returncode == 2 and "--force train_nothing: no such stage" in r.stderr

def test_killed_training_resumes_from_its_checkpoint(tmp_path, toy):
    ws = tmp_path/"ws"; _, emb, _ = configs(tmp_path, toy, export={"enabled": False})
    args = ["workflow", "run", "--artifact-root", str(tmp_path/"art"), "--embedding-config", str(emb), "--no-report"]
    # 2 epochs x 6 steps, checkpoint every 2 steps: SIGKILL right after step 5 (the last checkpoint is step 4)
    r = cli(args, ws, {"SPHANA_TRAIN_KILL_AFTER_STEP": "5"}, check=False)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    ent = json.loads((tmp_path/"art"/"workflow-state.json").read_text())["stages"]["train_embedding"]
    assert ent["status"] == "running" and ent["version"]
    assert status(tmp_path, ws)["train_embedding"]["status"] == "running"
    r = cli(args, ws)
    assert f"stage 1/1: train_embedding (resuming {ent['version']})" in r.stdout, r.stdout
    assert "resumed from" in r.stderr
    row = report(tmp_path)["stages"][0]
    assert row["action"] == "resumed" and row["outputs"]["version"] == ent["version"] and row["outputs"]["steps"] == 12
    assert "skipped (unchanged since" in cli(args, ws).stdout

def test_failed_stage_stops_and_is_retried(tmp_path, toy):
    ws = tmp_path/"ws"; ing, emb, rel = configs(tmp_path, toy)
    write(rel, {"name": "test-release", "components": ["embedding"], "versions": {"embedding": "no-such-version"}})
    args = ["workflow", "run", "--artifact-root", str(tmp_path/"art"), "--ingest-config", str(ing), "--export-config", str(rel), "--no-report"]
    r = cli(args, ws, check=False)
    assert r.returncode == 2 and "stage 2/2: export: failed" in r.stdout and "error: stage export failed" in r.stderr, r.stdout + r.stderr
    assert report(tmp_path)["status"] == "failed" and actions(tmp_path) == {"ingest": "ran", "export": "failed"}
    r = cli(args, ws, check=False)
    assert actions(tmp_path) == {"ingest": "skipped", "export": "failed"}

@pytest.fixture(scope="module")
def reported(tmp_path_factory, toy):
    "A workflow whose every stage ran through its run notebook (papermill), reports beside the outputs."
    tmp = tmp_path_factory.mktemp("reported"); ws = tmp/"ws"; ing, emb, rel = configs(tmp, toy)
    r = cli(run_args(tmp, ing, emb, rel, "--report"), ws)
    return tmp, r

def test_reports_beside_every_output(reported):
    tmp, r = reported
    rep = report(tmp); rows = {s["stage"]: s for s in rep["stages"]}
    assert [s["action"] for s in rep["stages"]] == ["ran"] * 6, r.stdout
    v = rows["train_embedding"]["outputs"]["version"]
    where = {"ingest": tmp/"ingest", "build_datasets": tmp/"datasets", "train_embedding": tmp/"art"/"embedding"/v,
             "export": tmp/"manifests"/"reports"/"export", "package": tmp/"manifests"/"reports"/"package"}
    for stage, d in where.items():
        for f in ("report.ipynb", "report.html", "report.json"): assert (d/f).is_file(), (stage, d/f)
        assert rows[stage]["report"]["html"] == str(d/"report.html") and f"report: {d/'report.html'}" in r.stdout
        nb = json.loads((d/"report.ipynb").read_text())
        outs = [o for c in nb["cells"] for o in c.get("outputs", [])]
        assert not [o for o in outs if o["output_type"] == "error"], stage
        html = (d/"report.html").read_text()
        assert "https://" not in "".join(__import__("re").findall(r"<(?:script|link|img)[^>]*>", html)), stage
    fig = json.loads((where["train_embedding"]/"report.json").read_text())
    assert fig["version"] == v and fig["int8"] == "dynamic" and fig["metrics"]["ndcg@10"] >= 0
    html = (where["train_embedding"]/"report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 3     # curves, NDCG, parity scatter
    assert "int8" in html and "dynamic" in html
    assert html.count('src="data:image/png;base64,') >= 1 and (where["ingest"]/"report.html").read_text().count("data:image/png") >= 2

def test_report_in_headless_chromium(reported):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    from playwright.sync_api import sync_playwright
    tmp, _ = reported
    v = {s["stage"]: s for s in report(tmp)["stages"]}["train_embedding"]["outputs"]["version"]
    page_file = tmp/"art"/"embedding"/v/"report.html"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600}); remote = []
            page.on("request", lambda req: remote.append(req.url) if req.url.startswith("http") else None)
            page.goto(page_file.as_uri()); page.wait_for_load_state("load")
            imgs = page.locator("img")
            assert imgs.count() >= 3
            assert all(page.evaluate("(img) => img.complete && img.naturalWidth > 100", imgs.nth(i).element_handle()) for i in range(imgs.count()))
            assert f"version {v}" in page.inner_text("body") and remote == []
            page.screenshot(path=str(SHOTS/"train_embedding_report.png"), full_page=True)
        finally: browser.close()
    assert (SHOTS/"train_embedding_report.png").stat().st_size > 10_000

def test_wiki_workflow_against_a_fake_wiki(tmp_path, toy):
    "Download (fake API) -> spaCy ingest -> datasets -> every component with a wiki.yaml -> export -> verified package, MLflow on."
    from sphana_trainer.core import iter_jsonl
    from sphana_trainer.config import sample_data_dir
    from sphana_trainer.testing import FakeWikiAPI
    from sphana_trainer.workflow import registered
    _, model = toy
    pages = {d["title"]: d["text"] for d in iter_jsonl(sample_data_dir()/"docs.jsonl")}
    (tmp_path/"titles.txt").write_text("\n".join(list(pages) + ["No such page"]) + "\n")
    tiny = ["model_name=" + str(model), "max_steps=2", "batch_size=4", "max_seq_length=32", "precision=fp32",
            "device=cpu", "progress_log_interval=0", "early_stopping_patience=null"]
    sets = ["ingest.parser=spacy", "ingest.relation_model=null", "ingest.chunk_size=96", "ingest.chunk_overlap=16",
            "ingest.progress_log_interval=0", "ingest.device=cpu"]
    for c in ("embedding", "relation", "ner"): sets += [f"{c}.{x}" for x in tiny] + [f"{c}.export.{k}={json.dumps(v)}" for k, v in FAST_EXPORT.items()]
    sets += ["gnn.max_steps=2", "gnn.hidden_dim=8", "gnn.precision=fp32", "gnn.device=cpu", "gnn.progress_log_interval=0",
             "gnn.export.quantize=false"]
    ws = tmp_path/"ws"
    with FakeWikiAPI(pages) as api:
        args = ["workflow", "wiki", "--artifact-root", str(tmp_path/"art"), "--configs-dir", str(ROOT/"configs"),
                "--titles-file", str(tmp_path/"titles.txt"), "--api-url", api.url, "--rate", "0", "--full-content", "--no-report",
                *[x for s in sets for x in ("--set", s)]]
        r = cli(args, ws, cwd=tmp_path)
    rows = {s["stage"]: s for s in report(tmp_path)["stages"]}
    trained = [c for c in ("embedding", "relation", "gnn", "ner") if registered(c)]
    assert [s for s in rows] == ["download_wiki", "ingest", "build_datasets", *[f"train_{c}" for c in ("embedding", "relation", "gnn", "ner")],
                                 "export", "package"], r.stdout
    assert all(rows[f"train_{c}"]["action"] == "ran" for c in trained), r.stdout
    assert rows["download_wiki"]["outputs"]["written"] == len(pages) and rows["download_wiki"]["outputs"]["missing"] == 1
    docs = tmp_path/"target"/"data"/"wiki"/"docs.jsonl"            # configs/ingest/wiki.yaml's input, under the working directory
    assert sum(1 for _ in iter_jsonl(docs)) == len(pages)
    assert rows["ingest"]["outputs"]["output_dir"] == str(tmp_path/"target"/"wiki"/"ingest")
    assert list((tmp_path/"target"/"cache"/"parses").rglob("*")) or list((ws/"cache"/"parses").rglob("*"))   # spaCy parses cached
    assert rows["package"]["outputs"]["verified"] and Path(rows["package"]["outputs"]["package"]).is_file()
    shipped = report(tmp_path)["manifest"]["content"]["components"]
    assert set(shipped) == {c for c in ("embedding", "relation", "gnn") if registered(c)}
    assert shipped["embedding"]["onnx"]["int8"]                       # configs/export/wiki.yaml requires it
    import sqlite3
    runs = sqlite3.connect(str(ws/"mlruns"/"mlflow.db")).execute("select count(*) from runs").fetchone()[0]
    assert runs == len(trained)                                       # MLflow on for every training
