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
