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

def _all_commands():
    "(path, click command) for every command and sub-command of the app, as the console script builds them."
    import typer.main
    from sphana_trainer.cli import app
    def walk(cmd, path):
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()): yield from walk(sub, path + (name,))
    return list(walk(typer.main.get_command(app), ()))

def test_help_at_80_columns_every_command():
    "Every --help (commands added later included): whole option names, no line over 80 columns, defaults shown, no <bool>."
    import os, click
    cmds = _all_commands()
    assert len(cmds) >= 10 and ("train", "embedding") in [p for p, _ in cmds]
    from typer.testing import CliRunner
    from sphana_trainer.cli import app
    for path, cmd in cmds:
        if path in ((), ("train", "embedding")):   # as a user runs it
            r = subprocess.run([str(BIN/"sphana-trainer"), *path, "--help"], capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "COLUMNS": "80"})
            assert r.returncode == 0, (path, r.stderr)
        else:
            r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
            assert r.exit_code == 0, (path, r.output)
        lines = r.stdout.splitlines()
        assert max(map(len, lines)) <= 80, (path, [l for l in lines if len(l) > 80])
        assert "<bool>" not in r.stdout and "…" not in r.stdout, (path, r.stdout)
        for p in cmd.params:
            if not isinstance(p, click.Option): continue
            for o in p.opts + p.secondary_opts: assert o in r.stdout, (path, o, r.stdout)
            if p.show_default and not p.is_flag and p.default not in (None, "", ()) and not callable(p.default):
                d = p.default.value if hasattr(p.default, "value") else p.default
                assert f"[default: {d}" in " ".join(r.stdout.split()) or f"default: {d}" in " ".join(r.stdout.split()), (path, p.name, r.stdout)
    wiki = subprocess.run([str(BIN/"sphana-trainer"), "ingest-validate", "--help"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "80"}).stdout
    assert "[default: the packaged one]" in wiki      # a default written in the help text is kept

def test_dataset_validate_folder_and_utf16(tmp_path):
    "A folder: one clear line naming a .jsonl to pass. UTF-16 / UTF-8 BOM: the encoding and the iconv fix; no phantom record."
    good = json.dumps({"query": "a", "positive": "b"})
    (tmp_path/"train.jsonl").write_text(good + "\n")
    r = run(str(BIN/"sphana-trainer"), "dataset-validate", str(tmp_path), "--type", "embedding")
    assert r.returncode == 2 and r.stderr.strip() == (f"error: {tmp_path}: is a folder; pass a .jsonl file such as "
                                                      f"{tmp_path/'train.jsonl'} (here: train.jsonl)"), r.stderr
    for enc, needle in (("utf-16", "iconv -f UTF-16 -t UTF-8"), ("utf-8-sig", "UTF-8 with a byte-order mark")):
        f = tmp_path/f"{enc}.jsonl"; f.write_text(good + "\n" + good + "\n", encoding=enc)
        r = run(str(BIN/"sphana-trainer"), "dataset-validate", str(f), "--type", "embedding")
        assert r.returncode == 2, r.stdout + r.stderr
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "records" not in r.stdout, r.stdout      # no "3 records, ..." counted from the bytes of a UTF-16 file
        r = run(str(BIN/"sphana-trainer"), "dataset-stats", str(f))
        assert r.returncode == 2 and needle in r.stderr, r.stderr

def test_verbose_switch():
    r = run(str(BIN/"sphana-trainer"), "--verbose", "dataset-validate", "--help")
    assert r.returncode == 0 and "--type" in r.stdout
    assert "-v, --verbose" in run(str(BIN/"sphana-trainer"), "--help").stdout

def test_config_ranges_checked_before_work(tmp_path):
    "Out-of-range values stop the command before any work: one line `file:line: key 'x': ...`, exit 2."
    cases = [(["ingest"], "chunk_size: 64\nchunk_overlap: 64\n", 2, "chunk_overlap", "must be smaller than chunk_size (64)"),
             (["ingest"], "seed: 1\nrelation_threshold: 1.5\n", 2, "relation_threshold", "less than or equal to 1"),
             (["ingest"], "chunk_overlap: -4\n", 1, "chunk_overlap", "greater than or equal to 0"),
             (["train", "embedding"], "seed: 1\nepochs: 0\n", 2, "epochs", "greater than or equal to 1"),
             (["train", "embedding"], "learning_rate: 0\n", 1, "learning_rate", "greater than 0"),
             (["train", "embedding"], "batch_size: 0\n", 1, "batch_size", "greater than or equal to 1"),
             (["train", "embedding"], "seed: 1\n\ntemperature: -0.1\n", 3, "temperature", "greater than 0"),
             (["train", "embedding"], "warmup_ratio: 1\n", 1, "warmup_ratio", "less than 1"),
             (["train", "embedding"], "max_seq_length: 1\n", 1, "max_seq_length", "greater than or equal to 2")]
    from typer.testing import CliRunner
    from sphana_trainer.cli import app
    for i, (cmd, text, line, key, msg) in enumerate(cases):
        cfg = tmp_path/"r.yaml"; cfg.write_text(text)
        if i in (0, 3): r = run(str(BIN/"sphana-trainer"), *cmd, "--config", str(cfg))   # the console script ...
        else:                                                                            # ... and the same app in-process
            r = CliRunner().invoke(app, [*cmd, "--config", str(cfg)]); r.returncode = r.exit_code
        assert r.returncode == 2, (text, r.stdout + r.stderr)
        assert r.stderr.startswith(f"error: {cfg}:{line}: key '{key}': ") and msg in r.stderr, (text, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr

def test_input_dir_means_input_and_hints_keep_meaning(tmp_path):
    "`input_dir` is the ingest input; a misspelled input key is never answered with an output key."
    docs = tmp_path/"docs"; docs.mkdir(); (docs/"a.txt").write_text("Ada Lovelace wrote the first program.\n")
    cfg = tmp_path/"i.yaml"
    cfg.write_text(f"input_dir: {docs}\noutput_dir: {tmp_path/'out'}\ncache_dir: {tmp_path/'cache'}\n")
    r = run(str(BIN/"sphana-trainer"), "ingest", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/"out"/"ingest_meta.json").read_text())["input"]["path"] == str(docs)
    assert [p.name for p in docs.iterdir()] == ["a.txt"]
    for key in ("input_folder", "inputdir", "imput_dir"):
        cfg.write_text(f"{key}: {docs}\n")
        r = run(str(BIN/"sphana-trainer"), "ingest", "--config", str(cfg))
        assert r.returncode == 2 and "unknown key" in r.stderr and "output" not in r.stderr, r.stderr
        assert "did you mean 'input" in r.stderr, r.stderr
    cfg.write_text(f"input_dir: {docs}\ninput: {docs}\n")
    r = run(str(BIN/"sphana-trainer"), "ingest", "--config", str(cfg))
    assert r.returncode == 2 and f"{cfg}:1: key 'input_dir': 'input_dir' and 'input' are the same setting" in r.stderr, r.stderr
