"""Fail when the exported package or the notebooks are not what `nbdev_export` + `nbdev_clean` would make.

Works on a copy of the tree, so a dirty checkout is never modified."""
import hashlib, re, shutil, subprocess, sys, tempfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]
bindir = Path(sys.executable).parent

def files(base):
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=base, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if (base/p).is_file()]

def digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

def notebook_of(py):
    head = py.read_text(errors="replace").splitlines()[:3] if py.is_file() else []
    m = next((m for l in head if (m := re.search(r"File to edit: \.\./(\S+?\.ipynb)", l))), None)
    return m.group(1) if m else None

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    tracked = files(root)
    for p in tracked:
        (tmp/p).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(root/p, tmp/p)
    for cmd in ("nbdev_export", "nbdev_clean"):
        r = subprocess.run([str(bindir/cmd)], cwd=tmp, capture_output=True, text=True)
        if r.returncode: sys.exit(f"sync check: {cmd} failed:\n{r.stdout}{r.stderr}")
    lib = [p.relative_to(tmp).as_posix() for p in (tmp/"sphana_trainer").rglob("*.py")]
    changed = sorted(p for p in set(tracked) | set(lib) if digest(root/p) != digest(tmp/p))
    if changed:
        print("Out of sync with the notebooks (the notebooks are the source of truth):", file=sys.stderr)
        for p in changed:
            if p.endswith(".py"):
                nb = notebook_of(tmp/p) or notebook_of(root/p) or "its notebook"
                print(f"  {p} differs from {nb}: edit {nb} and run `nbdev_export` "
                      f"(or `nbdev_update` to move a hand edit of {p} into {nb}), then `nbdev_clean`", file=sys.stderr)
            else:
                print(f"  {p} is not clean: run `nbdev_clean`", file=sys.stderr)
        sys.exit(1)
r = subprocess.run([sys.executable, str(root/".ci/readme.py"), "--check"], capture_output=True, text=True)
if r.returncode: sys.exit(r.stderr.strip() or r.stdout.strip())
print(f"sync check: package and notebooks in sync ({len(lib)} modules)")
