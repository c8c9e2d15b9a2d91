"""JupyterLab as the front end: the registered `sphana-trainer` kernel, `make lab`, what the lab adds in that kernel
(widget progress bars), and a run notebook driven through the JupyterLab UI in headless Chromium. Every notebook of
nbs/ is executed in that kernel by tests/test_notebooks.py."""
import json, logging, os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import nbformat, pytest
from conftest import ROOT, BIN
from test_notebooks import kernel, run_in_kernel     # every notebook runs in that kernel: tests/test_notebooks.py
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

def test_kernelspec_starts_the_venv_python(kernel):
    assert kernel_python(KERNEL_NAME) == Path(sys.executable), \
        f"kernel {KERNEL_NAME!r} is missing or starts another interpreter; run `make install`"
    spec = json.loads((Path(sys.prefix)/"share/jupyter/kernels"/KERNEL_NAME/"kernel.json").read_text())
    assert spec["display_name"] == KERNEL_DISPLAY_NAME

def outputs(nb): return [o for c in nb.cells for o in c.get("outputs", [])]

def test_kernel_is_the_venv_and_progress_draws_a_widget(kernel, tmp_path):
    src = ["import sys, os; print(sys.prefix); print(os.getcwd())",
           "import logging\nfrom sphana_trainer.core import Progress\n"
           "log = logging.getLogger('lab-progress'); log.setLevel(logging.DEBUG); seen = []\n"
           "h = logging.Handler(); h.emit = lambda r: seen.append(r.levelno); log.addHandler(h)\n"
           "with Progress(4, 'Testing', log_interval=25, logger=log) as p:\n    for _ in range(4): p.update()\n"
           "from tqdm.notebook import tqdm as widget_bar\n"
           "print(isinstance(p.bar, widget_bar), p.quiet, sorted(set(seen)), len(p.lines))"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in src])
    path = tmp_path/"probe.ipynb"; nbformat.write(nb, path)
    nb, _ = run_in_kernel(path, kernel)
    prefix, cwd = nb.cells[0].outputs[0]["text"].split()
    assert Path(prefix) == Path(sys.prefix) and Path(cwd) == tmp_path
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert text.split() == ["True", "True", f"[{logging.DEBUG}]", "4"], text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in nb.cells[1].outputs)

def test_make_lab_prints_a_working_url(tmp_path):
    "`make lab PORT=...` prints the URL with its token, and that URL opens JupyterLab (the install step is taken as done)."
    port = free_port()
    env = {**os.environ, "JUPYTER_TOKEN": "", "JUPYTER_RUNTIME_DIR": str(tmp_path/"runtime")}
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "lab", f"PORT={port}"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        seen, url = [], None
        t = time.monotonic()
        while url is None and time.monotonic() - t < 90:
            line = proc.stdout.readline()
            if not line: break
            seen.append(line)
            m = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", line)
            if m: url, token = m.group(0), m.group(1)
        assert url, "no URL printed:\n" + "".join(seen)
        assert len(token) >= 32
        base = f"http://127.0.0.1:{port}"
        status = json.loads(wait_http_ok(f"{base}/api/status?token={token}", proc))
        assert "started" in status
        st, body = http_get(url, timeout=30)
        assert st == 200 and "JupyterLab" in body
        assert http_get(f"{base}/api/status")[0] == 403      # no token, no access
        specs = json.loads(http_get(f"{base}/api/kernelspecs?token={token}")[1])
        assert specs["default"] == KERNEL_NAME and KERNEL_NAME in specs["kernelspecs"]
        assert specs["kernelspecs"][KERNEL_NAME]["spec"]["display_name"] == KERNEL_DISPLAY_NAME
    finally: stop(proc)

# The browser run: a copy of runs/train_embedding.ipynb whose parameters cell names a tiny random model, served from a
# folder laid out like the repository (settings.ini, configs/, runs/) so the run notebook finds its project root.
def tiny_run_copy(tmp_path) -> Path:
    from sphana_trainer.hub import tiny_bert
    model = tiny_bert(tmp_path/"tiny", words="who founded helix labs where is varno".split())
    root = tmp_path/"repo"; (root/"runs").mkdir(parents=True)
    shutil.copy(ROOT/"settings.ini", root); shutil.copytree(ROOT/"configs", root/"configs")
    nb = nbformat.read(ROOT/"runs"/"train_embedding.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    overrides = {"model_name": str(model), "max_steps": 3, "batch_size": 8, "version": "lab-test",
                 "export": {"min_cosine_int8": 0.0, "max_metric_drop_int8": 1.0}}
    lines = params.source.splitlines()     # what a person does: edit the `overrides = ...` line, keep the rest
    i = next(i for i, l in enumerate(lines) if l.startswith("overrides ="))
    lines[i] = f"overrides = {overrides!r}"; params.source = "\n".join(lines)
    nbformat.write(nb, root/"runs"/"train_embedding.ipynb")
    # all cells in the DOM (no virtual scrolling), and settings/workspaces of this test only
    tracker = root.parent/"lab-settings"/"@jupyterlab"/"notebook-extension"/"tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True); tracker.write_text(json.dumps({"windowingMode": "none"}))
    news = root.parent/"lab-settings"/"@jupyterlab"/"apputils-extension"/"notification.jupyterlab-settings"
    news.parent.mkdir(parents=True); news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return root

PROMPTS_JS = "() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent)"
# JupyterLab 4 renders an error as stderr text; a traceback tells it from log lines
ERRORS = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']:has-text('Traceback (most recent call last)')"
IDLE = f".jp-StatusBar-TextItem:has-text('{KERNEL_DISPLAY_NAME} | Idle')"

def test_lab_runs_a_run_notebook_in_the_browser(tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium (the browser test drives JupyterLab with it)"
    from playwright.sync_api import sync_playwright
    root, port, token, ws = tiny_run_copy(tmp_path), free_port(), secrets.token_hex(24), tmp_path/"ws"
    env = {**os.environ, "SPHANA_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path/"runtime")}
    proc = subprocess.Popen([str(BIN/"jupyter"), "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
                             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--allow-root",
                             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={tmp_path/'lab-settings'}",
                             f"--LabApp.workspaces_dir={tmp_path/'lab-workspaces'}"],
                            env=env, stdout=open(tmp_path/"lab.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        wait_http_ok(f"{base}/api/status?token={token}", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 2400})
            try:
                page.goto(f"{base}/lab/tree/runs/train_embedding.ipynb?token={token}")
                page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
                page.wait_for_selector(f".jp-Toolbar-kernelName:has-text('{KERNEL_DISPLAY_NAME}')", timeout=60_000)
                page.wait_for_selector(IDLE, timeout=120_000)       # the kernel is up (Run All before that asks for one)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                t, quiet = time.monotonic(), 0
                while time.monotonic() - t < 420 and quiet < 3:    # until nothing is queued and the kernel is idle
                    prompts = page.evaluate(PROMPTS_JS)
                    quiet = quiet + 1 if "[*]:" not in prompts and page.locator(IDLE).count() else 0
                    time.sleep(1)
                print(f"run all: {time.monotonic() - t:.0f}s")
                page.screenshot(path=str(SHOTS/"train_embedding.png"), full_page=True)
                errors = page.locator(ERRORS).all_inner_texts()
                assert not errors, "\n".join(errors)[-3000:]
                assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), prompts
                assert page.locator(".jp-OutputArea .jp-RenderedImage img").count() >= 1
                assert page.locator(".jp-OutputArea .widget-hprogress .progress-bar").count() >= 1   # tqdm widget bars
                assert "lab-test" in " ".join(page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts())   # the version
                page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Save Notebook").first.click()
                page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=30_000)
            finally: browser.close()
        sessions = json.loads(http_get(f"{base}/api/sessions?token={token}")[1])
        assert [s["kernel"]["name"] for s in sessions] == [KERNEL_NAME]
        saved = nbformat.read(root/"runs"/"train_embedding.ipynb", as_version=4)    # the outputs, as saved by the lab
        assert all(c.execution_count for c in saved.cells if c.cell_type == "code")
        assert any("image/png" in o.get("data", {}) for o in outputs(saved))
        assert not [o for o in outputs(saved) if o["output_type"] == "error"]
        assert (ws/"artifacts"/"embedding"/"lab-test"/"onnx"/"model.quant.onnx").is_file()
        assert not (root/"runs"/"target").exists()      # the kernel worked from the project root, not runs/
    finally:
        stop(proc)

RUN_NBS = sorted((ROOT/"runs").glob("*.ipynb"))

@pytest.mark.parametrize("path", RUN_NBS, ids=[p.name for p in RUN_NBS])
def test_run_notebook_opens_in_the_lab_as_papermill_runs_it(path):
    "Each run notebook asks for the project's kernel and, right after its parameters, moves to the project root."
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL_NAME, f"{path.name}: set the kernelspec to {KERNEL_NAME!r}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    i = next((i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])), None)
    assert i is not None, f"{path.name}: no cell tagged `parameters`"
    assert i + 1 < len(code) and "use_project_root()" in code[i + 1].source, \
        f"{path.name}: call sphana_trainer.lab.use_project_root() in the cell after the parameters"
