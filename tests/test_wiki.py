"""`dataset-download-wiki` end to end: the real CLI in a subprocess against a local MediaWiki API stand-in on 127.0.0.1
(throttling, a 500 and maxlag mid-run; a SIGKILL mid-download and a resume)."""
import json, os, signal, subprocess, time
from pathlib import Path
import pytest
from conftest import ROOT, BIN
from sphana_trainer.ingest.wiki import missing_path, read_titles
from sphana_trainer.testing import FakeWikiAPI, fake_corpus

CLI = str(BIN/"sphana-trainer")

@pytest.fixture
def corpus(tmp_path):
    pages, redirects, titles = fake_corpus(40)
    f = tmp_path/"titles.txt"; f.write_text("# test titles\n" + "\n".join(titles) + "\n")
    return pages, redirects, f

def download(api, titles, out, *extra, wait=True):
    cmd = [CLI, "dataset-download-wiki", "--titles-file", str(titles), "--output", str(out), "--api-url", api.url,
           "--full-content", "--batch-size", "10", "--contact", "tests@example.org", *extra]
    if not wait: return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)

def lines(p): return p.read_bytes().count(b"\n") if p.exists() else 0

def test_help_lists_command():
    r = subprocess.run([CLI, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "dataset-download-wiki" in r.stdout

def test_survives_throttling_500_and_maxlag(corpus, tmp_path):
    pages, redirects, titles = corpus
    out = tmp_path/"docs.jsonl"
    with FakeWikiAPI(pages, redirects, faults={3: 429, 8: 500, 15: "maxlag"}, retry_after="1") as api:
        t0 = time.monotonic(); r = download(api, titles, out, "--rate", "25")
        took = time.monotonic() - t0
    print(r.stdout, r.stderr[-1500:], f"wall {took:.1f}s", sep="\n")
    assert r.returncode == 0, r.stderr
    assert "HTTP 429" in r.stderr and "HTTP 500" in r.stderr and "API error maxlag" in r.stderr
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(recs) == 40 and len({d["id"] for d in recs}) == 40
    assert [d["title"] for d in recs] == [f"Topic {i:03d}" for i in range(40)]
    assert recs[5]["text"].endswith("Even more.")                       # whole articles
    assert read_titles([missing_path(out)]) == ["No such page", "Also missing", "Bad[title]"]
    # what the server saw: a descriptive User-Agent, maxlag, at most 25 requests/s, Retry-After honoured
    q, h = api.log[0]
    assert h["User-Agent"].startswith("sphana-trainer/") and "tests@example.org" in h["User-Agent"]
    assert q["maxlag"] == "5" and q["explaintext"] == "1" and "exintro" not in q and q["exlimit"] == "1"
    assert all(len(q["titles"].split("|")) <= 10 for q, _ in api.log)
    gaps = [b - a for a, b in zip(api.times, api.times[1:])]
    spans = [b - a for a, b in zip(api.times, api.times[20:])]           # any 21 requests span >= 20/25 s
    print(f"{len(api.log)} requests; shortest gap {min(gaps)*1000:.0f} ms, shortest 20-gap span {min(spans):.2f}s; "
          f"wait after the 429: {gaps[2]:.2f}s, after maxlag: {gaps[14]:.2f}s")
    assert min(spans) >= 0.7 and gaps[2] >= 1.0 and gaps[14] >= 1.0
    assert "40 pages written" in r.stdout and "3 retried" in r.stdout

def test_kill_and_resume_equals_uninterrupted(corpus, tmp_path):
    pages, redirects, titles = corpus
    ref, out = tmp_path/"ref.jsonl", tmp_path/"docs.jsonl"
    with FakeWikiAPI(pages, redirects) as api:
        r = download(api, titles, ref, "--rate", "0")
        assert r.returncode == 0, r.stderr
    with FakeWikiAPI(pages, redirects, faults={14: 500}, retry_after=None, slow_after=12, delay=0.3) as api:
        p = download(api, titles, out, "--rate", "0", wait=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lines(out) >= 1 and len(api.log) >= 16): time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL); p.wait(timeout=10)
        assert p.returncode == -signal.SIGKILL
        partial = out.read_bytes()
        print(f"killed after {len(api.log)} requests with {lines(out)} of {lines(ref)} lines written")
        assert 0 < lines(out) < lines(ref) and ref.read_bytes().startswith(partial)
        with open(out, "ab") as f: f.write(b'{"id": "wiki-10')          # and a torn line, as a crash mid-write leaves
        api.slow_after = None
        r = download(api, titles, out, "--rate", "0")
        print(r.stdout)
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == ref.read_bytes()
        assert "removed a torn last line" in r.stderr
        n = len(api.log)
        r = download(api, titles, out, "--rate", "0")                  # nothing left to do
        assert r.returncode == 0 and "0 pages written" in r.stdout and out.read_bytes() == ref.read_bytes()
        print(f"third run: {len(api.log) - n} requests, {r.stdout.splitlines()[0]}")

def test_errors_are_one_line(corpus, tmp_path):
    pages, redirects, titles = corpus
    out = tmp_path/"docs.jsonl"; out.write_text('{"id": "wiki-1", "title": "Kept", "text": "kept"}\n')
    before = out.read_bytes()
    r = subprocess.run([CLI, "dataset-download-wiki", "--output", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: no titles given") and "Traceback" not in r.stderr
    bad = tmp_path/"latin1.txt"; bad.write_bytes("Gödel\n".encode("latin-1"))
    r = subprocess.run([CLI, "dataset-download-wiki", "--titles-file", str(bad), "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and f"error: {bad}: not UTF-8" in r.stderr
    with FakeWikiAPI(pages, faults={i: 503 for i in range(1, 10)}, retry_after="0") as api:
        r = download(api, titles, out, "--max-retries", "2", "--rate", "0")
    print(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 2 and f"error: {api.url}: still failing after 3 attempts (last: HTTP 503" in r.stderr
    assert "Traceback" not in r.stderr and out.read_bytes() == before   # what was there is untouched

def _free_port():
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port

@pytest.mark.parametrize("api_url, needle", [
    (None, "connection refused by 127.0.0.1:"),                                   # a port where nothing listens
    ("http://wiki.example.invalid/w/api.php", "cannot resolve the host name 'wiki.example.invalid'")])
def test_dead_network_fails_fast_no_empty_file(corpus, tmp_path, api_url, needle):
    "Errors retrying cannot fix: exit 2 at once with one line, no 0-byte output; an earlier output stays as it was."
    pages, redirects, titles = corpus
    api_url = api_url or f"http://127.0.0.1:{_free_port()}/w/api.php"
    out, old = tmp_path/"new"/"docs.jsonl", tmp_path/"old.jsonl"
    old.write_text('{"id": "wiki-1", "title": "Kept", "text": "kept"}\n'); before = old.read_bytes()
    for o in (out, old):
        t0 = time.monotonic()
        r = subprocess.run([CLI, "dataset-download-wiki", "--titles-file", str(titles), "--output", str(o), "--api-url", api_url,
                            "--rate", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stdout + r.stderr
        err = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
        assert len(err) == 1 and needle in err[0] and "check --api-url" in err[0], r.stderr
        assert "retry" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert time.monotonic() - t0 < 60
    assert not out.exists(), "an empty output file was left behind"
    assert old.read_bytes() == before

def test_silent_server_times_out_and_says_it_waits(corpus, tmp_path):
    "A server that accepts and never answers: each request gives up after --timeout, a log line says it is waiting, exit 2."
    import socket
    pages, redirects, titles = corpus
    silent = socket.socket(); silent.bind(("127.0.0.1", 0)); silent.listen(16)
    try:
        out = tmp_path/"docs.jsonl"
        r = subprocess.run([CLI, "dataset-download-wiki", "--titles-file", str(titles), "--output", str(out), "--rate", "0",
                            "--api-url", f"http://127.0.0.1:{silent.getsockname()[1]}/w/api.php", "--timeout", "0.5",
                            "--max-retries", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally: silent.close()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "waiting for an answer" in r.stderr and "retry 1/1" in r.stderr, r.stderr
    assert "still failing after 2 attempts (last: no answer within 0.5s (--timeout))" in r.stderr, r.stderr
    assert not out.exists()

def test_seed_title_lists(tmp_path):
    "The title lists the user's guide names exist, are clean, and its download lines run up to the network."
    small, sdir, ldir = ROOT/"samples/ai-ml-wiki-titles.small.txt", ROOT/"samples/wiki-titles/small", ROOT/"samples/wiki-titles/large"
    files = [small, *sorted(sdir.glob("*.txt")), *sorted(ldir.glob("*.txt"))]
    assert len(files) >= 4
    for f in files:
        ts = [l for l in f.read_text(encoding="utf-8").splitlines() if l.strip() and not l.startswith("#")]
        assert ts and all(t == t.strip() and (t[0].isupper() or t[0].isdigit()) and not set(t) & set("[]{}<>|#") for t in ts), f
    assert len(read_titles([small])) >= 40 and len(read_titles(sorted(ldir.glob("*.txt")))) >= 2000
    titles = read_titles([small])
    with FakeWikiAPI({t: f"{t} is a topic.\n\nMore about {t}." for t in titles}) as api:   # the seed's line, on a local wiki
        out = tmp_path/"target/data/wiki/docs.jsonl"
        r = subprocess.run([CLI, "dataset-download-wiki", "--titles-file", "samples/ai-ml-wiki-titles.small.txt", "--output", str(out),
                            "--api-url", api.url, "--rate", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [json.loads(l)["title"] for l in out.read_text().splitlines()] == titles
    # the large line as written: the titles are read, then only the network can fail (here: nothing listens)
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    r = subprocess.run([CLI, "dataset-download-wiki", "--titles-dir", "samples/wiki-titles/large/", "--full-content",
                        "--output", str(tmp_path/"samples/wiki-docs/large/docs.jsonl"), "--limit", "500000",
                        "--api-url", f"http://127.0.0.1:{port}/w/api.php"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "connection refused" in r.stderr, r.stderr
