"""Every notebook in nbs/ (nbs/benchmarks and nbs/tutorials included) executed top to bottom in a fresh Jupyter
kernel started from the registered kernelspec `sphana-trainer` by name, in the notebook's folder: one test a notebook.

The cells left out are the ones `nbdev_test` leaves out (nbdev's own directive parser and frontmatter processor
decide): cells flagged with a `tst_flags` flag of settings.ini (`#| slow`, `#| cuda`) unless SPHANA_TEST_FLAGS
(e.g. "slow") asks for them, `#| eval: false` cells, cells calling `nbdev_export(`, and whole notebooks whose
frontmatter says `skip_exec: true`. A failing cell fails the test with the cell's source and the traceback."""
import copy, fcntl, json, os, re, subprocess, sys
from pathlib import Path
import nbformat, pytest
from fastcore.basics import str2bool
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbdev.config import get_config
from nbdev.doclinks import nbglob
from nbdev.frontmatter import FrontmatterProc
from nbdev.process import NBProcessor, extract_directives, nb_lang
from nbdev.test import _keep_file
from conftest import ROOT
from sphana_trainer.lab import KERNEL_NAME, kernel_python

NBS = ROOT/"nbs"
NOTEBOOKS = sorted(p for p in nbglob(NBS, as_path=True) if _keep_file(p, ".notest"))   # the ones nbdev_test runs
SKIP_FLAGS = set(get_config(path=ROOT).tst_flags.split()) - set(os.environ.get("SPHANA_TEST_FLAGS", "").split())

def nbdev_skips(cell, lang="python") -> bool:
    "True for a cell `nbdev_test` does not run (the rule of `nbdev.test.test_nb`)."
    if cell.cell_type != "code" or "nbdev_export(" in cell.source: return True
    direc = extract_directives(copy.deepcopy(cell), remove=False, lang=lang)
    return direc.get("eval:", [""])[0].lower() == "false" or bool(SKIP_FLAGS & direc.keys())

def skip_exec(path:Path) -> bool:
    "True when nbdev_test skips the whole notebook (frontmatter `skip_exec: true`, or not Python)."
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb
    return str2bool(getattr(nb, "frontmatter_", {}).get("skip_exec", False)) or nb_lang(nb) != "python"

@pytest.fixture(scope="session")
def kernel(tmp_path_factory) -> str:
    "The `sphana-trainer` kernelspec, registered the way `make install` / `make lab` do when it is missing."
    if kernel_python(KERNEL_NAME) != Path(sys.executable):
        with open(tmp_path_factory.getbasetemp().parent/"kernelspec.lock", "w") as lock:   # one registration, any -n
            fcntl.flock(lock, fcntl.LOCK_EX)
            if kernel_python(KERNEL_NAME) != Path(sys.executable):
                subprocess.run([sys.executable, "-m", "sphana_trainer.lab", "--register_only"], cwd=ROOT, check=True)
    assert kernel_python(KERNEL_NAME) == Path(sys.executable), \
        f"kernel {KERNEL_NAME!r} starts {kernel_python(KERNEL_NAME)}, not {sys.executable} (a kernelspec of that " \
        f"name earlier on Jupyter's path shadows {sys.prefix}/share/jupyter/kernels; remove it)"
    return KERNEL_NAME

# Run after the notebook's cells: how the kernel process was started, to compare with the kernelspec's argv.
PROBE = "import sys as _sys, os as _os; print(__import__('json').dumps([_sys.orig_argv, _os.getpid()]))"

def group_alive(pgid:int) -> bool:
    "True while any process of process group `pgid` is alive (Linux /proc)."
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try: fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError): continue
        if int(fields[2]) == pgid and fields[0] != "Z": return True
    return False

def run_in_kernel(path:Path, # notebook to run; the kernel starts in its folder
                  kernel_name:str=KERNEL_NAME, # kernelspec to start, by name
                  env:dict|None=None, # extra environment variables for the kernel
                  timeout:int=1200, # seconds per cell
                 ):
    "Run the cells of `path` that nbdev_test runs, top to bottom, in a fresh kernel; (notebook run, kernel argv)."
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if not nbdev_skips(c, nb_lang(nb))] + [nbformat.v4.new_code_cell(PROBE)]
    run = nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata)
    client = NotebookClient(run, kernel_name=kernel_name, timeout=timeout,
                            resources={"metadata": {"path": str(path.parent)}})
    try: client.execute(env={**os.environ, **(env or {})})
    except CellExecutionError as e:
        name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e))      # the cell's source and the traceback, without colours
        pytest.fail(f"{name} failed in a {kernel_name!r} kernel:\n{msg}", pytrace=False)
    argv, pid = json.loads(run.cells[-1].outputs[0]["text"])
    assert not group_alive(pid), f"processes of the {kernel_name!r} kernel (pid {pid}) outlived its shutdown"
    return run, argv

def started_from_spec(argv:list, name:str=KERNEL_NAME) -> bool:
    "True when a kernel's command line `argv` is the kernelspec `name`'s argv (any connection file, extra arguments)."
    spec = KernelSpecManager().get_kernel_spec(name).argv
    i = spec.index("{connection_file}")
    return argv[:i] == spec[:i] and argv[i + 1:len(spec)] == spec[i + 1:] and argv[i].endswith(".json")

@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.relative_to(NBS).as_posix() for p in NOTEBOOKS])
def test_notebook(nb, kernel, tmp_path):
    if skip_exec(nb): pytest.skip("skip_exec in its frontmatter (nbdev_test skips it too)")
    _, argv = run_in_kernel(nb, kernel, env={"SPHANA_WORKSPACE": str(tmp_path/"ws"), "HF_HUB_OFFLINE": "1"})
    assert started_from_spec(argv, kernel), f"{nb.name} ran in a kernel started as {argv}, not from {kernel!r}"

def test_kernel_is_the_registered_one(kernel, tmp_path):
    "The kernel runs the venv's python, started from the registered spec's command line, in the notebook's folder."
    src = "import os, sys; print(sys.executable, os.getcwd(), os.environ['PROBE_ENV'])"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)]), tmp_path/"probe.ipynb")
    run, argv = run_in_kernel(tmp_path/"probe.ipynb", kernel, env={"PROBE_ENV": "seen"})
    assert run.cells[0].outputs[0]["text"].split() == [sys.executable, str(tmp_path), "seen"]
    assert Path(argv[0]) == Path(sys.executable) == kernel_python(kernel) and started_from_spec(argv, kernel)
    assert not started_from_spec(["python", "-m", "ipykernel_launcher", "-f", "k.json"], kernel)   # python3 spec
    with pytest.raises(NoSuchKernel): run_in_kernel(tmp_path/"probe.ipynb", "sphana-trainer-no-such-kernel")

def test_a_failing_cell_fails_with_its_source_and_traceback(kernel, tmp_path):
    flagged = [f"#| {f}\nraise RuntimeError('flagged cells are left out')" for f in sorted(SKIP_FLAGS)]
    cells = ["x = 1", *flagged, "#| eval: false\n1/0", "def boom(): raise ValueError('bad value 42')\nboom()",
             "print('not reached')"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells]), tmp_path/"bad.ipynb")
    with pytest.raises(pytest.fail.Exception) as e: run_in_kernel(tmp_path/"bad.ipynb", kernel)
    msg = str(e.value)
    assert "def boom(): raise ValueError" in msg and "ValueError: bad value 42" in msg and "Traceback" in msg, msg
    assert "RuntimeError" not in msg and "ZeroDivisionError" not in msg and "\x1b[" not in msg

# What nbdev_test itself runs (nbdev.test.test_nb with the shell's cell runner recording sources instead of running
# them), in a subprocess so the recording shell stays out of the pytest worker.
NBDEV_RUNS = """
import json, sys
from pathlib import Path
from execnb.shell import CaptureShell
from nbdev.test import test_nb
seen = {}
for fn in map(Path, json.loads(sys.argv[2])):
    seen[str(fn)] = []
    CaptureShell.cell = lambda self, cell, **kw: seen[str(fn)].append(cell.source)
    test_nb(fn, skip_flags=json.loads(sys.argv[1]), showerr=True)
print(json.dumps(seen))
"""

def test_cells_run_are_the_cells_nbdev_test_runs():
    r = subprocess.run([sys.executable, "-c", NBDEV_RUNS, json.dumps(sorted(SKIP_FLAGS)),
                        json.dumps([str(p) for p in NOTEBOOKS])], cwd=NBS, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    nbdev = json.loads(r.stdout.splitlines()[-1])
    for p in NOTEBOOKS:
        ours = [] if skip_exec(p) else [c for c in nbformat.read(p, as_version=4).cells if not nbdev_skips(c)]
        for c in ours: extract_directives(c, remove=True)    # nbdev runs the source without its `#|` lines
        assert [c.source for c in ours] == nbdev[str(p)], p.name
    assert sum(map(len, nbdev.values())) > 500      # the comparison covered the notebooks' cells
