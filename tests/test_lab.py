"""JupyterLab as the front end: the registered `sphana-trainer` kernel, `make lab`, notebooks executed in that kernel
the way the lab runs them, and a run notebook driven through the JupyterLab UI in headless Chromium."""
import json, logging, os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import nbformat, pytest
from nbclient import NotebookClient
from conftest import ROOT, BIN
from sphana_trainer.lab import KERNEL_NAME, KERNEL_DISPLAY_NAME, kernel_python

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT/"target"/"test_lab"   # screenshots of the browser run, kept for people to look at

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def http_get(url, timeout=5):
    "(status, body) of a GET; HTTP errors give their status instead of raising."
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r: return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e: return e.code, ""

def wait_http_ok(url, proc, timeout=90):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        assert proc.poll() is None, f"JupyterLab exited with {proc.returncode}"
        try:
            st, body = http_get(url)
            if st == 200: return body
        except (urllib.error.URLError, ConnectionError, TimeoutError): pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")

def stop(proc):
    "End a server started with `start_new_session=True` (its whole process group)."
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)

def test_kernelspec_starts_the_venv_python():
    assert kernel_python(KERNEL_NAME) == Path(sys.executable), \
        f"kernel {KERNEL_NAME!r} is missing or starts another interpreter; run `make install`"
    spec = json.loads((Path(sys.prefix)/"share/jupyter/kernels"/KERNEL_NAME/"kernel.json").read_text())
    assert spec["display_name"] == KERNEL_DISPLAY_NAME

# Notebooks executed in a fresh kernel started by name, the way the lab runs them: cwd = the notebook's folder, and
# the cells nbdev_test skips (`#| slow`, `#| cuda`, `#| eval: false`, `nbdev_export(`) are left out here as well.
SKIP_FLAGS = set(next(l.split("=", 1)[1].split() for l in (ROOT/"settings.ini").read_text().splitlines()
                      if l.replace(" ", "").startswith("tst_flags=")))

def skipped(src:str) -> bool:
    if "nbdev_export(" in src: return True
    for line in src.splitlines():
        m = re.match(r"\s*#\s*\|\s*(.*)", line)
        if not m: break
        words = m.group(1).split()
        if words and (words[0] in SKIP_FLAGS or (words[0] == "eval:" and words[1:2] == ["false"])): return True
    return False

def test_skipped_matches_nbdev_directives():
    assert skipped("#| slow\nx = 1") and skipped("#|cuda\nx") and skipped("#| eval: false\nx")
    assert not skipped("#| export\nx = 1") and not skipped("x = 1  #| slow")

def run_in_kernel(path:Path, timeout=600):
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if not (c.cell_type == "code" and skipped(c.source))]
    NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb

def outputs(nb): return [o for c in nb.cells for o in c.get("outputs", [])]

def test_kernel_is_the_venv_and_progress_draws_a_widget(tmp_path):
    src = ["import sys, os; print(sys.prefix); print(os.getcwd())",
           "import logging\nfrom sphana_trainer.core import Progress\n"
           "log = logging.getLogger('lab-progress'); log.setLevel(logging.DEBUG); seen = []\n"
           "h = logging.Handler(); h.emit = lambda r: seen.append(r.levelno); log.addHandler(h)\n"
           "with Progress(4, 'Testing', log_interval=25, logger=log) as p:\n    for _ in range(4): p.update()\n"
           "from tqdm.notebook import tqdm as widget_bar\n"
           "print(isinstance(p.bar, widget_bar), p.quiet, sorted(set(seen)), len(p.lines))"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in src])
    path = tmp_path/"probe.ipynb"; nbformat.write(nb, path)
    nb = run_in_kernel(path)
    prefix, cwd = nb.cells[0].outputs[0]["text"].split()
    assert Path(prefix) == Path(sys.prefix) and Path(cwd) == tmp_path
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert text.split() == ["True", "True", f"[{logging.DEBUG}]", "4"], text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb.cells[1].outputs)

# Every notebook is run by tests/test_notebooks.py (nbdev_test, in-process); in a kernel, on 2 cores, the whole set
# would double that time, so these cover what the lab adds: the kernel, cwd = notebook folder, widget bars, plots.
KERNEL_NBS = ["00_core.ipynb", "01_config.ipynb", "04_lab.ipynb", "15_ingest.validate.ipynb", "tutorials/jupyterlab.ipynb"]

@pytest.mark.parametrize("name", KERNEL_NBS)
def test_notebook_runs_top_to_bottom_in_the_kernel(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SPHANA_WORKSPACE", str(tmp_path/"ws"))
    nb = run_in_kernel(ROOT/"nbs"/name)
    assert not [o for o in outputs(nb) if o["output_type"] == "error"]
