"""Training end to end through the CLI: exact resume after SIGKILL, pruning, the metric gate, torchrun DDP (gloo), MLflow server."""
import json, os, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from conftest import ROOT, BIN, run_cli as cli

torch = pytest.importorskip("torch")
from safetensors.torch import load_file
from sphana_trainer.hub import tiny_bert
from sphana_trainer.testing import write_toy_pairs

CLI = str(BIN/"sphana-trainer")

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    "Toy pairs (12 train / 4 validation) and a tiny BERT."
    d = tmp_path_factory.mktemp("toy")
    data, words = write_toy_pairs(d/"data")
    return data, tiny_bert(d/"tiny", words)

def write_cfg(path, toy, **extra):
    data, model = toy
    base = {"model_name": str(model), "dataset_path": str(data), "epochs": 2, "batch_size": 2, "max_length": 16, "device": "cpu",
            "learning_rate": 1.0e-3, "eval_every_steps": 2, "checkpoint_keep": 1, "progress_log_interval": 0, "version": "v1",
            "export": {"enabled": False}}
    base.update(extra)
    path.write_text(json.dumps(base))  # JSON is valid YAML
    return path


def art(ws): return Path(ws)/"artifacts"/"embedding"

def weights(folder): return load_file(str(Path(folder)/"model.safetensors"))

def ckpt_names(ws, version="v1"): return sorted(p.name for p in (art(ws)/".runs"/version/"checkpoints").glob("step-*"))

def test_kill_resume_exact_and_pruning(tmp_path, toy):
    cfg = write_cfg(tmp_path/"c.yaml", toy)
    # uninterrupted: 2 epochs x 6 steps, evaluation + checkpoint every 2 steps
    cli(["train", "embedding", "--config", str(cfg)], tmp_path/"a")
    # killed with SIGKILL right after step 5 (mid-epoch 1; the last checkpoint is step 4), then resumed
    r = cli(["train", "embedding", "--config", str(cfg)], tmp_path/"b", {"SPHANA_TRAIN_KILL_AFTER_STEP": "5"}, check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (art(tmp_path/"b")/"latest.json").exists()
    assert "step-0000004" in ckpt_names(tmp_path/"b") and len(ckpt_names(tmp_path/"b")) <= 2
    r = cli(["train", "embedding", "--config", str(cfg), "--resume", "latest"], tmp_path/"b")
    assert "resumed from" in r.stderr
    # same final weights (last checkpoint) and same published (best) weights
    la = torch.load(art(tmp_path/"a")/".runs"/"v1"/"checkpoints"/"step-0000012"/"state.pt", weights_only=True)["model"]
    lb = torch.load(art(tmp_path/"b")/".runs"/"v1"/"checkpoints"/"step-0000012"/"state.pt", weights_only=True)["model"]
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)
    wa, wb = weights(art(tmp_path/"a")/"v1"/"checkpoint"), weights(art(tmp_path/"b")/"v1"/"checkpoint")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # pruning: the best and the last `checkpoint_keep` (1) survive
    evals = [json.loads(l) for l in (art(tmp_path/"a")/"v1"/"metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4, 6, 8, 10, 12]
    best = max(evals, key=lambda e: (e["metric"], -e["step"]))["step"]
    assert ckpt_names(tmp_path/"a") == sorted({f"step-{best:07d}", "step-0000012"})
    meta = json.loads((art(tmp_path/"a")/"v1"/"metadata.json").read_text())
    assert meta["metrics"]["best_step"] == best

def test_threshold_miss_keeps_latest(tmp_path, toy):
    ws = tmp_path/"ws"
    (art(ws)/"v1").mkdir(parents=True)  # a previously published version
    before = json.dumps({"component": "embedding", "version": "v1", "path": str(art(ws)/"v1")}).encode()
    (art(ws)/"latest.json").write_bytes(before)
    bad = write_cfg(tmp_path/"bad.yaml", toy, epochs=1, eval_every_steps=None, version="v2", metric_threshold=1.01)
    r = cli(["train", "embedding", "--config", str(bad)], ws, check=False)
    assert r.returncode == 2, r.stderr
    assert "validation ndcg@10 = " in r.stderr and "metric_threshold 1.01" in r.stderr and "Traceback" not in r.stderr
    assert (art(ws)/"latest.json").read_bytes() == before and not (art(ws)/"v2").exists()

def test_torchrun_ddp_gloo_one_artifact(tmp_path, toy):
    ws = tmp_path/"ws"
    cfg = write_cfg(tmp_path/"ddp.yaml", toy, ddp=True, epochs=1, eval_every_steps=None, version=None)
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([str(BIN/"torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), CLI, "train", "embedding", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try: out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); out, err = p.communicate()  # the ranks too, not just the launcher
        pytest.fail("torchrun run timed out: " + err[-3000:])
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    versions = [p for p in art(ws).iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(versions) == 1, versions
    meta = json.loads((versions[0]/"metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["metrics"]["steps"] == 3  # 12 pairs / 2 ranks / batch 2
    assert json.loads((art(ws)/"latest.json").read_text())["version"] == versions[0].name
    assert r.stdout.count("artifact:") == 1

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def test_mlflow_server_roundtrip(tmp_path, toy):
    port = free_port(); uri = f"http://127.0.0.1:{port}"
    srv = subprocess.Popen([str(BIN/"mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                            "--backend-store-uri", f"sqlite:///{tmp_path/'mlflow.db'}", "--default-artifact-root", str(tmp_path/"mlartifacts")],
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path/"server.log", "w"), start_new_session=True)
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=1).status == 200: break
            except OSError: time.sleep(0.25)
        else: pytest.fail("mlflow server did not start: " + (tmp_path/"server.log").read_text()[-2000:])
        cfg = write_cfg(tmp_path/"m.yaml", toy, epochs=1, eval_every_steps=None, mlflow_tracking_uri=uri,
                        mlflow_experiment="sphana-test", mlflow_run_name="tiny-run")
        cli(["train", "embedding", "--config", str(cfg), "--log-to-mlflow"], tmp_path/"ws")
        from mlflow.tracking import MlflowClient
        c = MlflowClient(uri)
        exp = c.get_experiment_by_name("sphana-test")
        runs = c.search_runs([exp.experiment_id])
        assert len(runs) == 1 and runs[0].info.run_name == "tiny-run" and runs[0].info.status == "FINISHED"
        run = runs[0]
        assert run.data.params["learning_rate"] == "0.001" and run.data.params["batch_size"] == "2" and run.data.params["dataset_fingerprint"]
        assert "ndcg_at_10" in run.data.metrics and "best_ndcg_at_10" in run.data.metrics
        assert len(c.get_metric_history(run.info.run_id, "loss")) == 6  # one point per optimizer step
        assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"metadata.json", "metrics.jsonl"}
        # a sweep: one parent run, one nested run per trial
        sw = write_cfg(tmp_path/"s.yaml", toy, epochs=1, batch_size=4, eval_every_steps=None, mlflow_tracking_uri=uri, mlflow_experiment="sphana-sweep")
        cli(["train", "sweep", "embedding", "--config", str(sw), "--lr", "1e-4", "--lr", "1e-3", "--name", "grid", "--log-to-mlflow"], tmp_path/"ws")
        runs = c.search_runs([c.get_experiment_by_name("sphana-sweep").experiment_id])
        parent = [r for r in runs if r.info.run_name == "grid"]
        assert len(parent) == 1 and "best_ndcg_at_10" in parent[0].data.metrics
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
        assert sorted(r.info.run_name for r in kids) == ["grid-trial-00", "grid-trial-01"]
    finally:
        os.killpg(srv.pid, signal.SIGTERM); srv.wait(timeout=30)

def popen(args, ws, env_extra=None):
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

def test_parallel_runs_default_version(tmp_path, toy):
    "Two runs started together on the default version: both published under distinct versions, both complete."
    ws = tmp_path/"ws"
    cfg = write_cfg(tmp_path/"c.yaml", toy, epochs=1, eval_every_steps=None, version=None)
    ps = [popen(["train", "embedding", "--config", str(cfg)], ws) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], [o[1][-2000:] for o in outs]
    vs = sorted(p.name for p in art(ws).iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(vs) == 2 and all((art(ws)/v/"metadata.json").is_file() for v in vs), vs
    for v in vs:
        lines = [json.loads(l) for l in (art(ws)/v/"metrics.jsonl").read_text().splitlines()]
        assert [l["step"] for l in lines if l["type"] == "step"] == list(range(1, 7))  # one run's steps, not interleaved
    assert json.loads((art(ws)/"latest.json").read_text())["version"] in vs
    assert not list(art(ws).glob(".*.partial*"))

def test_version_in_use_is_refused(tmp_path, toy):
    ws = tmp_path/"ws"
    slow = write_cfg(tmp_path/"slow.yaml", toy, epochs=40, eval_every_steps=None, version="v1")
    a = popen(["train", "embedding", "--config", str(slow)], ws)
    lock = art(ws)/".locks"/"v1.lock"
    for _ in range(600):
        if lock.is_file() and "pid" in lock.read_text(): break
        time.sleep(0.1)
    r = cli(["train", "embedding", "--config", str(slow)], ws, check=False)
    assert r.returncode == 2 and "is in use by pid" in r.stderr and "Traceback" not in r.stderr, r.stderr
    out, err = a.communicate(timeout=600)
    assert a.returncode == 0, err[-2000:]
    assert (art(ws)/"v1"/"metadata.json").is_file()

def test_resume_messages_and_zero_epochs(tmp_path, toy):
    ws = tmp_path/"ws"
    cfg = write_cfg(tmp_path/"c.yaml", toy, epochs=1, eval_every_steps=None)
    for arg, msg in (("lastest", "no such run or checkpoint"), ("/no/such/step", "no such run or checkpoint"),
                     ("latest", "no interrupted run")):
        r = cli(["train", "embedding", "--config", str(cfg), "--resume", arg], ws, check=False)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    cli(["train", "embedding", "--config", str(cfg)], ws)
    before = (art(ws)/"latest.json").read_bytes()
    r = cli(["train", "embedding", "--config", str(cfg), "--resume", "latest"], ws, check=False)
    assert r.returncode == 2 and "nothing to resume: v1 is already published" in r.stderr, r.stderr
    zero = write_cfg(tmp_path/"z.yaml", toy, epochs=0, version="v0")
    r = cli(["train", "embedding", "--config", str(zero)], ws, check=False)
    assert r.returncode == 2 and "epochs" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (art(ws)/"latest.json").read_bytes() == before and not (art(ws)/"v0").exists()

def test_train_report_beside_artifact(tmp_path, toy):
    "`train embedding --report` runs the run notebook and leaves report.ipynb/.html/.json beside the artifact."
    ws = tmp_path/"ws"
    cfg = write_cfg(tmp_path/"c.yaml", toy, epochs=1, eval_every_steps=None, version="rep")
    r = cli(["train", "embedding", "--config", str(cfg), "--report"], ws)
    assert "report:" in r.stdout, r.stdout
    for f in ("report.ipynb", "report.html", "report.json"): assert (art(ws)/"rep"/f).is_file(), f
    assert "data:image/png;base64" in (art(ws)/"rep"/"report.html").read_text()
