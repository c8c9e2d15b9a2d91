"""Release pipeline end to end through the CLI: train (tiny BERT, toy pairs) -> export -> package -> package verify;
reproducible tarballs, tampered packages, parity samples through a standalone ONNX Runtime script, promote gates,
diff, concurrent exports, failed exports and packages that leave the previous files alone."""
import io, json, os, shutil, subprocess, sys, tarfile
from pathlib import Path
import pytest
from conftest import ROOT, BIN, run_cli as cli

pytest.importorskip("onnxruntime")
from sphana_trainer.hub import tiny_bert
from sphana_trainer.testing import write_toy_pairs
from sphana_trainer.release.manifest import read_manifest, validate_manifest

CLI = str(BIN/"sphana-trainer")




@pytest.fixture(scope="module")
def release(tmp_path_factory):
    "A workspace with embedding 0.1.0 (exported, int8) and 0.2.0 (other learning rate, no export); a release config."
    d = tmp_path_factory.mktemp("release")
    data, words = write_toy_pairs(d/"data")
    base = {"model_name": str(tiny_bert(d/"tiny", words)), "dataset_path": str(data), "epochs": 1, "batch_size": 4,
            "max_length": 16, "device": "cpu", "learning_rate": 1.0e-3, "progress_log_interval": 0}
    (d/"v1.yaml").write_text(json.dumps({**base, "version": "0.1.0", "export": {"parity_samples": 4}}))
    v2 = {**base, "version": "0.2.0", "learning_rate": 3.0e-3, "export": {"enabled": False}}
    (d/"v2.yaml").write_text(json.dumps(v2))
    ws = d/"ws"
    cli(["train", "embedding", "--config", str(d/"v1.yaml")], ws)
    cli(["train", "embedding", "--config", str(d/"v2.yaml")], ws)
    (d/"rel.yaml").write_text("components: [embedding]\nversions:\n  embedding: 0.1.0\n")
    return d, ws


def art(ws): return Path(ws)/"artifacts"/"embedding"


def test_export_package_verify(release):
    d, ws = release
    r = cli(["export", "--config", str(d/"rel.yaml")], ws)
    print(r.stdout)
    man = read_manifest(ws/"manifests"/"latest.json")
    e = man["components"]["embedding"]
    assert e["version"] == "0.1.0" and e["onnx"]["fp32"]["opset"] and e["onnx"]["int8"]
    assert [i["name"] for i in e["onnx"]["fp32"]["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    roles = {f["role"] for f in e["files"]}
    assert roles >= {"onnx_fp32", "onnx_fp32_data", "onnx_int8", "tokenizer", "parity_samples"}
    assert e["dataset"]["fingerprint"] and e["versions"]["onnxruntime"]
    assert e["parity"]["samples"]["max_rel_drift"] < 0.01
    shas = []
    for _ in range(2):
        r = cli(["package", "--config", str(d/"rel.yaml")], ws)
        print(r.stdout)
        shas.append(next(l for l in r.stdout.splitlines() if l.startswith("sha256:")))
    assert shas[0] == shas[1]
    tgz = ws/"manifests"/"latest.tar.gz"
    with tarfile.open(tgz, "r:gz") as t:
        ms = t.getmembers()
    assert ms[0].name == "manifest.json" and [m.name for m in ms[1:]] == sorted(m.name for m in ms[1:])
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in ms)
    assert tgz.read_bytes()[3] == 0 and tgz.read_bytes()[4:8] == b"\0\0\0\0"  # gzip: no file name, mtime 0
    listed = {f["path"] for f in e["files"]} | {"manifest.json"}
    assert {m.name for m in ms} == listed
    r = cli(["package", "verify", str(tgz)], ws)
    print(r.stdout)
    assert r.stdout.rstrip().endswith("OK") and "embedding 0.1.0" in r.stdout


def _rewrite(src, dest, edit):
    with tarfile.open(src, "r:gz") as t, tarfile.open(dest, "w:gz") as out:
        for m in t.getmembers():
            for info, data in edit(m, t.extractfile(m).read() if m.isreg() else None):
                out.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def _add(kind, name, link=""):
    def edit(m, data):
        out = [(m, data)]
        if m.name == "manifest.json":
            ti = tarfile.TarInfo(name); ti.type, ti.linkname = kind, link
            ti.size = 4 if kind == tarfile.REGTYPE else 0
            out.append((ti, b"evil" if kind == tarfile.REGTYPE else None))
        return out
    return edit


def _flip(m, data):
    if m.name == "embedding/model.onnx": data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    return [(m, data)]


def test_tampered_packages(release, tmp_path):
    d, ws = release
    tgz = ws/"manifests"/"latest.tar.gz"
    if not tgz.is_file():
        cli(["export", "--config", str(d/"rel.yaml")], ws); cli(["package", "--config", str(d/"rel.yaml")], ws)
    box = tmp_path/"box"; tmpdir = box/"tmp"; tmpdir.mkdir(parents=True)
    abs_target = box/"abs-evil"
    cases = {"byte": (_flip, "member 'embedding/model.onnx': sha256"),
             "dotdot": (_add(tarfile.REGTYPE, "../evil"), "member '../evil': path leaves the target folder"),
             "absolute": (_add(tarfile.REGTYPE, str(abs_target)), f"member '{abs_target}': absolute path"),
             "symlink": (_add(tarfile.SYMTYPE, "embedding/evil", "/etc/passwd"),
                         "member 'embedding/evil': link (to '/etc/passwd')"),
             "hardlink": (_add(tarfile.LNKTYPE, "embedding/hard", "manifest.json"), "member 'embedding/hard': link")}
    for name, (edit, msg) in cases.items():
        bad = _rewrite(tgz, box/f"{name}.tar.gz", edit)
        r = cli(["package", "verify", str(bad)], ws, check=False, env_extra={"TMPDIR": str(tmpdir)})
        print(name, "->", r.stderr.strip())
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)
    # nothing was written outside the extraction folder, and the extraction folders are gone
    assert sorted(p.name for p in box.iterdir()) == sorted([f"{n}.tar.gz" for n in cases] + ["tmp"])
    assert list(tmpdir.iterdir()) == [] and not abs_target.exists()


def test_parity_samples_standalone_script(release, tmp_path):
    d, ws = release
    out = tmp_path/"samples.json"
    cli(["artifacts", "parity-samples", "embedding", "0.1.0", "--output", str(out), "--samples", "3"], ws)
    s = json.loads(out.read_text())
    assert s["records"] == 3 and set(s["models"].values()) == {"model.onnx", "model.quant.onnx"}
    script = [sys.executable, str(ROOT/"scripts"/"parity_check.py")]
    r = subprocess.run(script + [str(out), "--model-dir", str(art(ws)/"0.1.0"/"onnx")], capture_output=True, text=True)
    print(r.stdout)
    assert r.returncode == 0 and r.stdout.count(": max drift") == 2, r.stdout + r.stderr
    # the script can fail: outputs that are not what the model gives
    t = s["batches"][0]["outputs"]["model.onnx"]; name = next(iter(t)); t[name]["data"][0] += 0.5
    out.write_text(json.dumps(s))
    r = subprocess.run(script + [str(out), "--model-dir", str(art(ws)/"0.1.0"/"onnx")], capture_output=True, text=True)
    assert r.returncode == 1 and "model.onnx: max drift" in r.stdout and "FAIL" in r.stdout
    # an unpacked package, as the runtime sees it
    tgz = ws/"manifests"/"latest.tar.gz"
    if tgz.is_file():
        with tarfile.open(tgz, "r:gz") as t: t.extractall(tmp_path/"pkg", filter="data")
        r = subprocess.run(script + [str(tmp_path/"pkg")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_promote_refuses_failed_gate(release, tmp_path):
    d, ws = release
    bad = art(ws)/"0.1.0-bad"
    if not bad.exists():
        shutil.copytree(art(ws)/"0.1.0", bad)
        meta = json.loads((bad/"metadata.json").read_text())
        meta.update(version="0.1.0-bad",
                    gates={"passed": False, "failures": ["validation ndcg@10 = 0.2 < metric_threshold 0.5"]})
        (bad/"metadata.json").write_text(json.dumps(meta))
    man = tmp_path/"promoted.json"; where = ["--artifact-root", str(ws/"artifacts"), "--manifest", str(man)]
    r = cli(["artifacts", "promote", "embedding", "0.1.0-bad", *where], ws, check=False)
    print(r.stderr)
    assert r.returncode == 2 and "failed its gates (validation ndcg@10 = 0.2 < metric_threshold 0.5)" in r.stderr
    assert not man.exists()
    r = cli(["artifacts", "promote", "embedding", "0.1.0", *where, "--reason", "first release"], ws)
    assert read_manifest(man)["components"]["embedding"]["promotion"]["reason"] == "first release"
    r = cli(["artifacts", "promote", "embedding", "0.1.0-bad", *where, "--force", "--reason", "hotfix"], ws)
    e = read_manifest(man)["components"]["embedding"]
    assert e["version"] == "0.1.0-bad" and e["promotion"]["forced"] and e["promotion"]["reason"] == "hotfix"
    r = cli(["artifacts", "list", "--artifact-root", str(ws/"artifacts")], ws)
    print(r.stdout)
    row = next(l for l in r.stdout.splitlines() if l.split()[:2] == ["embedding", "0.1.0-bad"])
    assert "promoted" in row and "gates-failed" in row
    r = cli(["artifacts", "bundle", "embedding", "0.1.0", str(tmp_path/"bundle"), *where[:2]], ws)
    b = read_manifest(tmp_path/"bundle"/"manifest.json")
    assert (tmp_path/"bundle"/"embedding"/"metadata.json").is_file()
    assert b["components"]["embedding"]["version"] == "0.1.0"


def test_diff_shows_metric_change(release):
    d, ws = release
    best = lambda v: json.loads((art(ws)/v/"metadata.json").read_text())["metrics"]["best"]["ndcg@10"]
    m1, m2 = best("0.1.0"), best("0.2.0")
    r = cli(["artifacts", "diff", "embedding", "0.1.0", "0.2.0", "--artifact-root", str(ws/"artifacts")], ws)
    print(r.stdout)
    assert "config:" in r.stdout and "learning_rate: 0.001 -> 0.003" in r.stdout
    if m1 != m2: assert f"ndcg@10: {m1:.4g} -> {m2:.4g} ({m2 - m1:+.4g})" in r.stdout
    r = cli(["artifacts", "diff", "embedding", "0.1.0", "0.2.0", "--artifact-root", str(ws/"artifacts"), "--json"], ws)
    df = json.loads(r.stdout)
    deltas = {k: dl for k, a, b, dl in df["metrics"]}
    assert any(abs(v) > 0 for v in deltas.values() if v is not None), df["metrics"]
    assert "onnx/model.onnx" in df["files"]["removed"]


def test_missing_components_one_error(release, tmp_path):
    d, ws = release
    (tmp_path/"all.yaml").write_text("components: [embedding, relation, gnn]\n")
    r = cli(["export", "--config", str(tmp_path/"all.yaml")], ws, check=False)
    assert r.returncode == 2 and "2 component(s) not trained" in r.stderr, r.stderr
    for c in ("relation", "gnn"): assert f"`sphana-trainer train {c} --config configs/{c}/base.yaml`" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_failed_export_and_package_keep_previous_files(release, tmp_path):
    d, ws = release
    cli(["export", "--config", str(d/"rel.yaml")], ws); cli(["package", "--config", str(d/"rel.yaml")], ws)
    man, tgz = ws/"manifests"/"latest.json", ws/"manifests"/"latest.tar.gz"
    before_man, before_tgz = man.read_bytes(), tgz.read_bytes()
    (tmp_path/"strict.yaml").write_text("components: [embedding]\nversions: {embedding: 0.1.0}\n"
                                        "max_fp32_drift: 1.0e-12\n")
    r = cli(["export", "--config", str(tmp_path/"strict.yaml")], ws, check=False)
    assert r.returncode == 2 and "the manifest is unchanged" in r.stderr and man.read_bytes() == before_man
    # a file that changed after export stops the package: the previous tarball stays, no partial file is left
    src = art(ws)/"0.1.0"/"onnx"/"parity_samples.json"; keep = src.read_bytes()
    try:
        src.write_bytes(keep + b" ")
        r = cli(["package", "--config", str(d/"rel.yaml")], ws, check=False)
        assert r.returncode == 2 and "changed since export" in r.stderr
    finally: src.write_bytes(keep)
    assert tgz.read_bytes() == before_tgz
    assert not [p for p in tgz.parent.iterdir() if p.name.startswith(".latest.tar.gz")]


def test_concurrent_exports_leave_a_valid_manifest(release):
    d, ws = release
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    (ws/"manifests"/"latest.json").unlink(missing_ok=True)
    (art(ws)/"0.1.0"/"onnx"/"parity_samples.json").unlink(missing_ok=True)  # both processes race to write it
    ps = [subprocess.Popen([CLI, "export", "--config", str(d/"rel.yaml")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], outs
    man = validate_manifest(json.loads((ws/"manifests"/"latest.json").read_text()))
    assert man["components"]["embedding"]["version"] == "0.1.0"
    assert not [p for p in (ws/"manifests").iterdir() if p.name.endswith(".tmp")]
