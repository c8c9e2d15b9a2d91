"""Write README.md from nbs/index.ipynb (markdown cells verbatim, code cells as python blocks).

Works offline; `nbdev_readme` (Quarto) gives the same content where Quarto is installed.
`--check` exits 1 when README.md is stale."""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
nb = json.loads((root/"nbs/index.ipynb").read_text())
parts = []
for c in nb["cells"]:
    src = "".join(c["source"]).strip()
    if not src or src.startswith("#| hide"): continue
    parts.append(src if c["cell_type"] == "markdown" else f"```python\n{src}\n```")
text = "<!-- Generated from nbs/index.ipynb: edit the notebook, then run `make readme`. -->\n\n" + "\n\n".join(parts) + "\n"
if "--check" in sys.argv:
    current = (root/"README.md").read_text() if (root/"README.md").exists() else ""
    if current != text:
        sys.exit("README.md is out of date with nbs/index.ipynb: run `make readme`")
else:
    (root/"README.md").write_text(text)
