"""HTML report: self-contained structure (always) and a headless-Chromium screenshot (when installed)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ns_compile.verify.metrics import compare_traces
from ns_compile.verify.report import write_html

from _verify_helpers import copy_trace, make_integer_trace


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.refs.append(v)


def _report(tmp_path) -> Path:
    a = make_integer_trace("emulator")
    b = copy_trace(a, "lava-sim-fixed")
    b.entries["layers.1.block.hidden"].arrays["v_int"][0, 1, 2, 3] += 1
    b.entries["layers.1.block.hidden"].arrays["spikes"][0, 1, 2, 3] ^= 1
    r = compare_traces(a, b)
    sweep = [{"bits": 8, "kl": 1e-4, "top1_disagreement": 0.0, "rel_rms_median": 0.01},
             {"bits": 4, "kl": 1e-2, "top1_disagreement": 0.2, "rel_rms_median": 0.2}]
    return write_html(tmp_path / "rep", [r], [a, b], bits_sweep=sweep, meta={"artifact": "<x>&"},
                      tolerance_failures=[])


def assert_self_contained(index: Path) -> _Refs:
    """Every referenced file exists next to index.html, nothing points outside (no network, no ..)."""
    text = index.read_text(encoding="utf-8")
    p = _Refs()
    p.feed(text)
    assert not re.search(r"(https?:|//|file:|@import|<script)", text, re.IGNORECASE), "external reference in report"
    for ref in p.refs:
        assert not ref.startswith(("/", "..")) and ":" not in ref, ref
        f = index.parent / ref
        assert f.is_file() and f.stat().st_size > 0, f"missing {ref}"
        if ref.endswith(".png"):
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return p


def test_report_structure(tmp_path):
    index = _report(tmp_path)
    assert index.name == "index.html"
    p = assert_self_contained(index)
    pngs = {r for r in p.refs if r.endswith(".png")}
    assert {"membrane.png", "raster.png", "bits.png", "pair0_errors.png"} <= pngs
    text = index.read_text()
    assert "layers.1.block.hidden" in text and "&lt;x&gt;&amp;" in text   # chosen population; escaped meta
    assert (index.parent / "results.json").is_file()
    assert oct(index.parent.stat().st_mode & 0o777) == "0o755"


def test_report_replaces_atomically(tmp_path):
    index = _report(tmp_path)
    (index.parent / "stale.txt").write_text("old")
    index = _report(tmp_path)
    assert not (index.parent / "stale.txt").exists()
    assert [x.name for x in tmp_path.iterdir()] == ["rep"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def screenshot(index: Path, out: Path, size=(1200, 1600)) -> None:
    exe = chromium()
    with tempfile.TemporaryDirectory() as prof:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={prof}",
               f"--screenshot={out}", f"--window-size={size[0]},{size[1]}", index.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install -y chromium); "
                                              "the structure test above still runs")
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.image as mpimg

    index = _report(tmp_path)
    shot = tmp_path / "shot.png"
    screenshot(index, shot)
    img = mpimg.imread(str(shot))
    assert img.shape[0] == 1600 and img.shape[1] == 1200
    # the page is not blank: the plots and tables put plenty of non-white pixels on it
    rgb = img[..., :3]
    nonwhite = (rgb < 0.95).any(axis=-1).mean()
    assert nonwhite > 0.05, nonwhite
    # and images loaded: a broken <img> renders as a small icon, the raster/plots as large grey/colour areas
    keep = os.environ.get("NS_COMPILE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
