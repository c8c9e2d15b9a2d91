"""The installed console script, as a user runs it."""
import json, subprocess, sys
from conftest import ROOT, BIN

def run(*args, **kw):
    return subprocess.run([*args], capture_output=True, text=True, cwd=kw.get("cwd", ROOT))

def test_help_lists_commands():
    for cmd in ([str(BIN/"sphana-trainer"), "--help"], [sys.executable, "-m", "sphana_trainer.cli", "--help"]):
        r = run(*cmd)
        assert r.returncode == 0, r.stderr
        assert "dataset-validate" in r.stdout and "dataset-stats" in r.stdout

def test_validate_reports_every_bad_line(tmp_path):
    good = {"text": "Ada founded Lumen.", "entity1": {"text": "Ada", "start": 0, "end": 3},
            "entity2": {"text": "Lumen", "start": 12, "end": 17}, "label": "founded_by"}
    lines = [json.dumps(good), '{"text": "broken', json.dumps({k: v for k, v in good.items() if k != "label"}),
             json.dumps(good), json.dumps({**good, "entity1": "Ada"})]
    f = tmp_path/"rel.jsonl"; f.write_text("\n".join(lines) + "\n")
    r = run(str(BIN/"sphana-trainer"), "dataset-validate", str(f), "--type", "relation")
    assert r.returncode == 2
    bad = [l for l in r.stdout.splitlines() if l.startswith(str(f) + ":") and l.split(":")[1].isdigit()]
    assert [l.split(":")[1] for l in bad] == ["2", "3", "5"], r.stdout
    assert "invalid JSON" in bad[0] and "label" in bad[1] and "entity1" in bad[2]
    assert "Traceback" not in r.stderr

def test_validate_bundled_data_ok():
    data = ROOT/"sphana_trainer/sample_data"
    for kind in ("embedding", "relation", "gnn", "ner", "llm"):
        r = run(str(BIN/"sphana-trainer"), "dataset-validate", str(data/kind/"train.jsonl"), "--type", kind)
        assert r.returncode == 0, r.stdout + r.stderr

def test_bad_config_key_one_line_error(tmp_path):
    for cmd, text, key, right in ((["train", "embedding"], "epochs: 1\nbatch_szie: 4\n", "batch_szie", "batch_size"),
                                  (["ingest"], "chunk_size: 64\nchunk_overlab: 8\n", "chunk_overlab", "chunk_overlap")):
        cfg = tmp_path/"c.yaml"; cfg.write_text(text)
        r = run(str(BIN/"sphana-trainer"), *cmd, "--config", str(cfg))
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip() == f"error: {cfg}:2: unknown key '{key}'; did you mean '{right}'?", r.stderr
        assert "Traceback" not in r.stderr

def test_stats_json():
    r = run(str(BIN/"sphana-trainer"), "dataset-stats", str(ROOT/"sphana_trainer/sample_data/relation/train.jsonl"))
    st = json.loads(r.stdout)
    assert st["kind"] == "relation" and st["records"] > 0 and sum(st["labels"].values()) == st["records"]
