"""`bench report`: one self-contained, escaped HTML page (and md/csv/parquet) from result records."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fwbench.records.results import write_record
from fwbench.report import load_for_report, render, write_report
from fwbench.report.cells import backend_color, short_settings_label, sort_records, sweeps
from fwbench.report.html import SECTION_IDS
from fwbench.report.microbench_figures import gflops_ci, scaling_points
from fwbench.report.tables import markdown_summary, summary_groups
from record_samples import conv2d_record, example_record, example_records

XSS = "<script>alert(1)</script>"


class Page(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in_script: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}

    def attrs(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


@pytest.fixture(scope="module")
def full_html() -> str:
    """The report of records that give every section data (rendered once for the module)."""
    return render(example_records(), "html", load_warnings=["skipping /x/broken.json: not a readable record"])


def test_every_section_has_an_id_a_heading_and_data(full_html):
    page = Page(full_html)
    assert set(SECTION_IDS) <= page.ids()
    sections = [a["id"] for a in page.attrs("section")]
    assert sections == list(SECTION_IDS)
    assert len(page.attrs("h2")) == len(SECTION_IDS)
    # every section has data here, so none says that its data is absent
    assert 'class="empty"' not in full_html
    toc = [a["href"] for a in page.attrs("a") if a.get("href", "").startswith("#")]
    assert [f"#{sid}" for sid in SECTION_IDS] == toc[:len(SECTION_IDS)]


def test_figures_are_embedded_png_data_uris(full_html):
    images = Page(full_html).attrs("img")
    assert len(images) >= 12  # bars x3, curves, conv2d, optimizers x2, sweeps x2, cnn x2, scaling
    for img in images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):])[:8] == b"\x89PNG\r\n\x1a\n"
        assert img.get("alt")


def test_nothing_is_fetched_from_the_network(full_html):
    page = Page(full_html)
    for tag, attrs in page.tags:
        for name in ("src", "href", "action", "poster", "data"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (tag, name, value[:80])
    assert not page.attrs("link")  # no external stylesheet or font
    assert all("src" not in attrs for attrs, _ in page.scripts)
    assert "@import" not in full_html and "url(http" not in full_html


def test_embedded_json_holds_the_records(full_html):
    page = Page(full_html)
    (data_text,) = [text for attrs, text in page.scripts if attrs.get("type") == "application/json"]
    data = json.loads(data_text)
    records = example_records()
    assert len(data["records"]) == len(records)
    assert {r["cell_id"] for r in data["records"]} == {r["cell_id"] for r in records}
    torch_mlp = next(r for r in data["records"] if r["backend"] == "torch" and r["task"] == "mlp_mnist"
                     and r["overrides"] == {"dataset.name": "digits"})
    assert len(torch_mlp["metrics"]["step_time_s"]["raw"]) == 40


def test_summary_marks_the_best_and_gives_failure_reasons(full_html):
    groups = {g["label"]: g for g in summary_groups(sort_records(example_records()))}
    cnn = groups["cnn_mnist · digits · cpu"]["rows"]
    by_backend = {row["backend"]: row for row in cnn}
    throughput = 2  # index of the samples/s column
    assert by_backend["jax"]["cells"][throughput]["best"]  # jax is twice as fast in the samples
    assert not by_backend["torch"]["cells"][throughput]["best"]
    assert by_backend["numpy"]["status"] == "skipped" and by_backend["numpy"]["reason"] == "numpy is not installed"
    assert "RuntimeError: example failure" in full_html
    assert full_html.count('class="num best"') >= 4


def test_missing_data_is_said_in_one_sentence_per_section():
    html = render([example_record("torch", "mlp_mnist")], "html")
    page = Page(html)
    assert set(SECTION_IDS) <= page.ids()
    for phrase in ("No conv2d sweep records", "No optimizer benchmark records", "No sweep:",
                   "No convolutional model", "No records vary the input size"):
        assert phrase in html
    assert "<code>bench run --task cnn_mnist --dataset digits</code>" in html


def test_strings_from_results_are_escaped_never_markup():
    evil = example_record("torch", XSS, overrides={"optimizer.lr": '"><img src=x onerror=alert(2)>'},
                          warnings=["<b>bold</b> & <i>x</i>"], conv=True)
    evil["backend_version"] = "</script><script>alert(3)</script>"
    evil["env"]["backend"]["device_name"] = "<iframe src=javascript:alert(4)>"
    html = render([evil, example_record("jax", XSS, conv=True)], "html",
                  load_warnings=["skipping <svg onload=alert(5)>.json"])
    page = Page(html)
    assert XSS not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert len(page.scripts) == 2  # the JSON data and the report's own script, nothing injected
    assert not page.attrs("iframe") and not page.attrs("svg")
    assert all("onerror" not in a and "onload" not in a for _, a in page.tags)
    assert all(a["src"].startswith("data:image/png;base64,") for a in page.attrs("img"))
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;i&gt;x&lt;/i&gt;" in html
    (data_text,) = [text for attrs, text in page.scripts if attrs.get("type") == "application/json"]
    assert json.loads(data_text)["records"][0]["task"] == XSS  # the data survives, escaped for HTML


def test_markdown_summary_for_ci_comments(tmp_path):
    records = example_records() + [example_record("torch", "pipe|task")]
    path = write_report(records, tmp_path / "summary.md", "md", load_warnings=["skipping broken.json"])
    text = path.read_text()
    assert text.startswith("## fwbench results")
    assert "| backend | task · dataset · device | settings | status |" in text
    assert "RuntimeError: example failure" in text and "numpy is not installed" in text
    assert "pipe\\|task" in text  # a | in a name does not break the table
    assert "### Warnings" in text and "skipping broken.json" in text and "unstable" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "backend |" not in line]
    assert len(rows) == len(records)
    assert markdown_summary([]).startswith("## fwbench results")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_exports(tmp_path, fmt):
    records = example_records()
    path = write_report(records, tmp_path / f"results.{fmt}", fmt)
    frame = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    assert len(frame) == len(records)
    assert {"backend", "task", "status", "test_accuracy", "throughput_samples_per_s", "step_time_median"} <= set(frame)
    ok = frame[(frame.backend == "jax") & (frame.task == "cnn_mnist")]
    assert ok.test_accuracy.iloc[0] == pytest.approx(0.94)


def test_format_follows_the_suffix_and_unknown_format_is_a_usage_error(tmp_path):
    from fwbench.errors import UsageError

    assert write_report([example_record()], tmp_path / "x.md", None).read_text().startswith("## fwbench")
    with pytest.raises(UsageError, match="expected one of: html, md, csv, parquet"):
        write_report([example_record()], tmp_path / "x.pdf", "pdf")


def _results_dir(tmp_path: Path) -> Path:
    run = tmp_path / "results" / "run1"
    for record in (example_record("torch", "cnn_mnist"), example_record("jax", "cnn_mnist", step_time=0.005)):
        write_record(record, run)
    (run / "truncated.json").write_text(json.dumps(example_record("jax", "mlp_mnist"))[:200])
    (run / "not_a_record.json").write_text('{"hello": 1}')
    return tmp_path / "results"


def test_corrupt_records_are_skipped_with_a_warning_naming_the_file(tmp_path):
    records, skipped = load_for_report(_results_dir(tmp_path))
    assert len(records) == 2
    assert len(skipped) == 2
    assert any("truncated.json" in s for s in skipped) and any("not_a_record.json" in s for s in skipped)
    html = render(records, "html", skipped)
    warnings_section = html[html.index('id="warnings"'):]
    assert "truncated.json" in warnings_section and "unreadable file" in warnings_section


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fwbench.cli", *args], capture_output=True, text=True,
                          check=False, cwd=cwd, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_cli_report_end_to_end(tmp_path):
    results = _results_dir(tmp_path)
    out = _cli("report", str(results), "-o", str(tmp_path / "out" / "report.html"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "truncated.json" in out.stderr and "warning" in out.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert set(SECTION_IDS) <= Page(html).ids()
    assert "report.html" in out.stdout and "2 record(s)" in out.stdout

    md = _cli("report", str(results), "--format", "md", cwd=tmp_path)  # default name from the format
    assert md.returncode == 0, md.stderr
    assert (tmp_path / "report.md").read_text().startswith("## fwbench results")

    missing = _cli("report", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2
    (line,) = missing.stderr.strip().splitlines()
    assert line.startswith("bench: error: ") and "nope" in line


def test_backend_colours_are_fixed():
    assert backend_color("torch") == "#D9482B" and backend_color("jax") == "#2A9D6E"
    assert backend_color("someplugin") == backend_color("someplugin")
    assert backend_color("someplugin").startswith("#")


def test_sweeps_are_cells_that_differ_only_in_overrides():
    records = [example_record(b, "mlp_mnist", overrides={"optimizer.lr": lr}) for b in ("torch", "jax")
               for lr in (0.1, 0.001, 0.01)]
    records.append(example_record("torch", "cnn_mnist"))
    (sweep,) = sweeps(records)
    assert sweep["keys"] == ["optimizer.lr"] and len(sweep["records"]) == 6
    lrs = [r["overrides"]["optimizer.lr"] for r in sweep["records"] if r["backend"] == "torch"]
    assert lrs == [0.001, 0.01, 0.1]  # numeric order, not text order
    assert short_settings_label(sweep["records"][0], ["optimizer.lr"]) == "lr=0.001"
    # a cell that kept the task's value shows it, marked as the default
    assert short_settings_label(example_record("torch"), ["optimizer.lr"]) == "lr=0.001 (default)"


def test_conv2d_confidence_interval_in_gflops_or_seconds():
    assert gflops_ci({"gflops": 10.0, "median_s": 0.1, "ci95": [9.0, 11.0]}) == (9.0, 11.0)
    lo, hi = gflops_ci({"gflops": 10.0, "median_s": 0.1, "ci95": [0.08, 0.125]})  # seconds
    assert lo == pytest.approx(8.0) and hi == pytest.approx(12.5)
    assert gflops_ci({"gflops": 10.0, "median_s": 0.1}) == (None, None)
    record = conv2d_record("torch")
    assert all("gflops" in c for c in record["metrics"]["cases"])


def test_scaling_points_come_from_cases_or_from_varied_input_sizes():
    small = example_record("torch", "mlp_mnist", overrides={"dataset.shape": [1, 8, 8]})
    large = example_record("torch", "mlp_mnist", overrides={"dataset.shape": [1, 28, 28]}, step_time=0.02)
    large["data"]["input_shape"] = [1, 28, 28]
    points = scaling_points([small, large])
    assert sorted(p["input"] for p in points) == [8, 28]
    assert scaling_points([small]) == []  # one size is no study


@pytest.mark.parametrize("width", [3.6, 5.0, 13.0])
def test_backend_legend_fits_inside_the_figure(width):
    from fwbench.report.plotting import backend_legend, new_figure

    fig = new_figure(width, 3.0)
    fig.subplots(1, 1)
    backend_legend(fig, ["jax", "numpy", "tensorflow", "torch", "keras-jax", "flax"])
    fig.canvas.draw()
    box, legend = fig.bbox, fig.legends[0].get_window_extent()
    assert box.x0 - 1 <= legend.x0 and legend.x1 <= box.x1 + 1, (legend, box)


def test_backend_colours_are_far_apart():
    import itertools

    from fwbench.report.cells import BACKEND_COLORS, EXTRA_COLORS

    def lab(color: str) -> np.ndarray:  # sRGB → CIELAB (D65)
        rgb = np.array([int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
        f = np.cbrt(np.maximum(xyz / np.array([0.95047, 1.0, 1.08883]), 0.008856))
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])
    colours = list(BACKEND_COLORS.values()) + list(EXTRA_COLORS)
    assert {"torch", "flax", "keras", "jax"} <= set(BACKEND_COLORS)
    for a, b in itertools.combinations(colours, 2):
        assert np.linalg.norm(lab(a) - lab(b)) >= 30, (a, b)


def test_an_interval_from_two_repeats_is_marked_and_a_wide_whisker_never_squashes_the_bars():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fwbench.report.figures import _throughput_value
    from fwbench.report.plotting import WHISKER_CLIP, grouped_bars

    two = example_record("torch", repeats=2, repeat_cv=0.3, seed=3)
    value = _throughput_value(two)
    assert len(value) == 4 and value[1] is None and "n=2" in value[3]
    fig, ax = plt.subplots()
    grouped_bars(ax, ["defaults"], ["torch", "jax", "flax"],
                 {("defaults", "torch"): value, ("defaults", "jax"): (100_000.0, 50_000.0, 1_200_000.0),
                  ("defaults", "flax"): (105_000.0, 100_000.0, 110_000.0)}, lambda v: f"{v:,.0f}")
    assert ax.get_ylim()[1] <= WHISKER_CLIP * 105_000 * 1.1  # not 1.2M
    texts = [t.get_text() for t in ax.texts]
    assert "▲" in texts and "▲ interval clipped" in texts
    assert any("n=2: no usable interval" in t.get_text() for t in ax.texts)  # the bar says so
    plt.close(fig)
