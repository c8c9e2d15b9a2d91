"""The documentation site: `python -m sphana_trainer.docs` (what `make docs` runs) builds it without a warning, and a real
browser (Debian's Chromium through Playwright) finds its pages, sidebar, code, images, search and links, offline."""
import ast, functools, http.server, os, re, shutil, subprocess, sys, threading, time
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit
import pytest
from conftest import ROOT, BIN


def build_site(out):
    "Build the site into `out` as `make docs` does; the build must pass and print no warning."
    t0 = time.time()
    r = subprocess.run([str(BIN/"python"), "-m", "sphana_trainer.docs", str(out)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1200)
    assert r.returncode == 0, f"docs build failed:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
    assert "0 warnings" in r.stdout and not re.search(r"warn", r.stderr, re.I), f"the build printed warnings:\n{r.stderr[-4000:]}"
    print(f"{r.stdout.strip()} [{time.time() - t0:.1f} s]")


@pytest.fixture(scope="session")
def site(tmp_path_factory, worker_id):
    "The site, built once per test run (pytest-xdist workers share it), as `make docs` builds it into `_docs/`."
    if worker_id == "master":
        out = tmp_path_factory.mktemp("docs")/"site"; build_site(out); return out
    from filelock import FileLock
    shared = tmp_path_factory.getbasetemp().parent   # the same folder for every worker of this run
    out, done = shared/"docs-site", shared/"docs-site.done"
    with FileLock(str(shared/"docs-site.lock")):
        if not done.exists():
            build_site(out); done.touch()
    return out


@pytest.fixture(scope="session")
def server(site):
    "The site served on 127.0.0.1 on a free port; yields its base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown(); httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    "Headless Debian Chromium driven by Playwright (`make test` installs chromium when it is missing)."
    exe = shutil.which("chromium")
    if exe is None: pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium, as root)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def public_symbols():
    "{page: [names]}: the functions and classes each module exports (`__all__` and nbdev's index), by doc page."
    from sphana_trainer._modidx import d
    pages = {}
    for mod, syms in d["syms"].items():
        src = ROOT/syms[next(iter(syms))][1] if syms else None
        tree = ast.parse(src.read_text()) if src and src.is_file() else None
        exported = next((ast.literal_eval(n.value) for n in (tree.body if tree else []) if isinstance(n, ast.Assign)
                         and any(getattr(t, "id", "") == "__all__" for t in n.targets)), [])
        for sym, (url, _) in syms.items():
            name = sym[len(mod) + 1:]
            if "." not in name and not name.startswith("_") and name in exported:
                pages.setdefault(url.split("#")[0], []).append(name)
    return pages


def cli_commands():
    "Every command path of the CLI, e.g. 'sphana-trainer train embedding'."
    import typer
    from sphana_trainer.cli import app
    def walk(cmd, path):
        yield " ".join(path)
        if hasattr(cmd, "list_commands"):
            ctx = cmd.context_class(cmd, info_name=path[-1])
            for n in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, n)
                if sub is not None and not sub.hidden: yield from walk(sub, path + [n])
    return list(walk(typer.main.get_command(app), ["sphana-trainer"]))


class Links(HTMLParser):
    "The href/src attributes and the ids of an HTML page."
    def __init__(self):
        super().__init__(); self.links, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        for k in ("href", "src"):
            if a.get(k): self.links.append(a[k])


def test_internal_links(site):
    pages = {p: Links() for p in site.rglob("*.html")}
    for p, parser in pages.items(): parser.feed(p.read_text(encoding="utf-8"))
    broken = []
    for p, parser in pages.items():
        for link in parser.links:
            u = urlsplit(link)
            if u.scheme or u.netloc or link.startswith(("mailto:", "javascript:")): continue
            target = (p.parent/unquote(u.path)).resolve() if u.path else p
            if target.is_dir(): target = target/"index.html"
            if not target.exists(): broken.append(f"{p.relative_to(site)} -> {link}")
            elif u.fragment and target.suffix == ".html" and target in pages and unquote(u.fragment) not in pages[target].ids:
                broken.append(f"{p.relative_to(site)} -> {link} (no such anchor)")
    assert len(pages) > 10 and not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:50])


def headings(html:str) -> set:
    "The texts of the headings of a page (output headings are rubrics in myst-nb)."
    found = re.findall(r'<(?:h[1-6]|p class="rubric")[^>]*>(.*?)</(?:h[1-6]|p)>', html, re.S)
    return {re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", h))).strip(" ¶#") for h in found}


def test_api_pages_cover_exports(site):
    missing, n = [], 0
    for page, names in public_symbols().items():
        hs = headings((site/page).read_text(encoding="utf-8")) if (site/page).exists() else set()
        missing += [f"{page}: {name}" for name in names if name not in hs]; n += len(names)
    assert n > 50 and not missing, f"{len(missing)} of {n} exported symbols have no section on their API page:\n" + "\n".join(missing[:50])


def test_cli_reference_lists_every_command(site):
    hs, cmds = headings((site/"tutorials"/"cli_reference.html").read_text(encoding="utf-8")), cli_commands()
    assert len(cmds) > 5 and "sphana-trainer train embedding" in cmds
    assert [c for c in cmds if c not in hs] == [], sorted(hs)


def test_site_in_browser(server, browser, tmp_path):
    host = urlsplit(server).netloc
    requests, outside = [], []
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    def route(r):
        if urlsplit(r.request.url).netloc == host or r.request.url.startswith(("data:", "blob:")): return r.continue_()
        outside.append(r.request.url); r.abort()
    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("request", lambda req: requests.append(req.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # home page: title, sidebar with the guides and the API reference, a rendered code block
    page.goto(server + "index.html")
    assert "sphana-trainer" in page.title()
    side = page.locator(".sidebar-tree")
    assert side.is_visible()
    side_text = side.inner_text().lower()   # captions are upper-cased by CSS
    for s in ("Guides", "API reference", "Quick start", "CLI reference", "core"): assert s.lower() in side_text, side_text
    assert page.locator("div.highlight pre").first.is_visible()
    shot = tmp_path/"home.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")

    # an internal link: the sidebar's quick start
    page.locator(".sidebar-tree a", has_text="Quick start").first.click()
    page.wait_for_load_state()
    assert page.url.endswith("tutorials/quick_start.html") and page.locator("h1").first.inner_text().startswith("Quick start")

    # an API page: the documented symbol with its signature block
    page.goto(server + "core.html")
    assert page.locator("p.rubric#sphanaerror").inner_text().strip(" ¶#") == "SphanaError"   # show_doc headings: rubrics
    assert page.locator("div.highlight-python pre").first.is_visible()
    page.screenshot(path=str(tmp_path/"core.png"), full_page=True)

    # a plot rendered by a guide
    page.goto(server + "tutorials/data_formats.html")
    img = page.locator("img").first
    img.scroll_into_view_if_needed()
    assert img.evaluate("i => i.complete && i.naturalWidth > 100"), img.get_attribute("src")

    # the offline search finds a known function
    page.goto(server + "search.html?q=resolve_model")
    page.wait_for_selector("#search-results ul.search li a", timeout=30_000)
    hits = page.locator("#search-results ul.search li a").all_inner_texts()
    assert any("hub" in h for h in hits), hits

    assert not outside and all(urlsplit(u).netloc == host or u.startswith(("data:", "blob:")) for u in requests), outside
    assert not errors, errors
    ctx.close()
