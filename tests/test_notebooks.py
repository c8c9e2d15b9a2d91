"""Run each notebook's inline tests with `nbdev_test`, one pytest test per notebook.

Cells flagged `slow` or `cuda` are skipped unless SPHANA_TEST_FLAGS (e.g. "slow") asks for them."""
import os, subprocess
import pytest
from conftest import ROOT, BIN

NOTEBOOKS = sorted(p for p in (ROOT/"nbs").rglob("*.ipynb")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(ROOT/"nbs").parts))

@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.relative_to(ROOT/"nbs").as_posix() for p in NOTEBOOKS])
def test_notebook(nb, tmp_path):
    cmd = [str(BIN/"nbdev_test"), "--path", str(nb), "--do_print"]
    if os.environ.get("SPHANA_TEST_FLAGS"): cmd += ["--flags", os.environ["SPHANA_TEST_FLAGS"]]
    env = {**os.environ, "SPHANA_WORKSPACE": str(tmp_path/"ws"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
