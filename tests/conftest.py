import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

@pytest.fixture
def workspace(tmp_path, monkeypatch):
    "A fresh SPHANA_WORKSPACE for one test."
    ws = tmp_path/"ws"
    monkeypatch.setenv("SPHANA_WORKSPACE", str(ws))
    return ws

def run_cli(args, ws, env_extra=None, check=True):
    "Run `sphana-trainer ARGS` offline in workspace `ws`; asserts exit 0 unless `check=False`."
    import subprocess
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    r = subprocess.run([str(BIN/"sphana-trainer"), *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r
