"""Every figure the project makes, drawn from the committed runs: no text box outside the canvas
(a clipped title or a legend off the edge is unreadable), and every log axis with at least three
tick labels (two labels a decade apart say little about a curve).

The figures are drawn in memory, never written: the committed data is the test's input only.
"""
from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from matplotlib.text import Text

from conftest import ROOT

RESULTS = ROOT / "results"
H100 = RESULTS / "figure3-h100-packed"
LAB = RESULTS / "figure3-lab"
DEMO = RESULTS / "figure3-cpu-demo"
CAL = RESULTS / "wallclock" / "calibration"


def _lab_levels():
    spec = importlib.util.spec_from_file_location("lab_levels", ROOT / "scripts" / "lab_levels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sweep(path):
    from prsgd.plots.figure3 import select
    from prsgd.records.results import load_sweep
    return select(load_sweep(path))


def figure3_modelled():
    from prsgd.plots.figure3 import figure3
    return figure3(_sweep(H100 / "sweep"), clock=CAL / "h100-pcie3-box.json",
                   sweep_dir=H100 / "sweep")


def figure3_lab():
    from prsgd.plots.figure3 import figure3
    return figure3(_sweep(LAB / "sweep"), sweep_dir=LAB / "sweep")


def figure3_demo():
    from prsgd.plots.figure3 import figure3
    return figure3(_sweep(DEMO / "sweep"), sweep_dir=DEMO / "sweep")


def accuracy_h100():
    from prsgd.plots.figure3 import accuracy_figure
    return accuracy_figure(_sweep(H100 / "sweep"))


def accuracy_lab():
    from prsgd.plots.figure3 import accuracy_figure
    return accuracy_figure(_sweep(LAB / "sweep"))


def accuracy_demo():
    from prsgd.plots.figure3 import accuracy_figure
    return accuracy_figure(_sweep(DEMO / "sweep"))


def compare_lab_demo():
    from prsgd.plots.figure3 import compare_figure
    return compare_figure({"lab": _sweep(LAB / "sweep"), "CPU demo": _sweep(DEMO / "sweep")})


def time_to_target():
    from prsgd.clock.model import Calibration
    from prsgd.plots import clock
    df = _sweep(H100 / "sweep")
    # two of figure3-clock's five networks (each costs a model of every epoch): the longest
    # name, and the one whose times span the most
    clocks = {name: Calibration.load(CAL / f) for name, f in (
        ("PCIe gen3 box, 2018 Horovod (5 ms cycle)", "h100-pcie3-box-cycle5ms.json"),
        ("1 GbE, 8 nodes", "h100-1gbe.json"))}
    target, epoch = clock.target_loss(df)
    return clock.time_to_target_figure([
        (clock.time_to_target(df, clocks, target), f"I = 1's loss at epoch {epoch}"),
        (clock.time_to_target(df, clocks, clock.reachable_target(df)), "the largest final loss")])


def family():
    from prsgd.plots import family as fam
    return fam.family_figure(fam.load_family(RESULTS / "family" / "runs"))


def compression():
    from prsgd.plots import compression as comp
    from prsgd.plots.family import load_family
    return comp.compression_figure(load_family(RESULTS / "compress-cpu" / "runs"))


def consensus():
    from prsgd.plots import theory
    return theory.consensus_figure(sorted((RESULTS / "theory" / "consensus").glob("I*")))


def consensus_resnet20():
    from prsgd.plots import theory
    return theory.consensus_figure(sorted((RESULTS / "theory" / "consensus-resnet20").glob("I*")))


def stich_speedup():
    from prsgd.experiments.stich import fit_theory
    from prsgd.plots import theory
    rows = pd.read_csv(RESULTS / "theory" / "stich" / "speedup.csv").to_dict("records")
    return theory.speedup_figure(rows, fit_theory(rows), title="Stich's speed-up")


def clock_validation():
    from prsgd.clock import validate
    return validate.figure(pd.read_csv(RESULTS / "wallclock" / "validation" / "table.csv"))


def lab_levels():
    levels = _lab_levels()
    return levels.figure(LAB, levels.table(LAB))


FIGURES = [figure3_modelled, figure3_lab, figure3_demo, accuracy_h100, accuracy_lab,
           accuracy_demo, compare_lab_demo, time_to_target, family, compression, consensus,
           consensus_resnet20, stich_speedup, clock_validation, lab_levels]


def drawn_texts(fig, monkeypatch) -> list[Text]:
    """The text artists that a full draw of `fig` actually draws (tick labels of ticks outside
    the view exist as artists but are not drawn), with text."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)            # what savefig draws with; a bare Figure's canvas draws nothing
    drawn = []
    original = Text.draw

    def record(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return original(self, renderer)

    monkeypatch.setattr(Text, "draw", record)
    fig.canvas.draw()
    monkeypatch.setattr(Text, "draw", original)
    return drawn


@pytest.mark.parametrize("make", FIGURES, ids=[f.__name__ for f in FIGURES])
def test_every_text_inside_the_canvas_and_log_axes_labelled(make, monkeypatch):
    fig = make()
    texts = drawn_texts(fig, monkeypatch)
    assert texts, "nothing drawn"
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    outside = []
    for t in texts:
        box = t.get_window_extent(renderer)
        if box.x0 < canvas.x0 - 1 or box.y0 < canvas.y0 - 1 or \
                box.x1 > canvas.x1 + 1 or box.y1 > canvas.y1 + 1:
            outside.append(f"{t.get_text()[:60]!r} at {box.bounds} (canvas {canvas.bounds})")
    assert not outside, "text outside the canvas:\n" + "\n".join(outside)
    drawn = set(map(id, texts))
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                labels = [t.get_text() for t in axis.get_ticklabels(which="both")
                          if id(t) in drawn]
                assert len(labels) >= 3, f"{ax.get_title()!r}: log axis labelled {labels}"


@pytest.mark.parametrize("lo, hi", [(0.03, 3), (0.6, 2), (1.1, 1.9), (1e-3, 1e5), (0.02, 0.09),
                                    (0.5, 40), (80, 200), (14, 68)])
def test_log_ticks_label_a_log_axis_at_least_three_times_inside_its_range(lo, hi):
    from prsgd.plots.style import log_ticks
    ticks = log_ticks(lo, hi)
    assert 3 <= len(ticks) <= 9, ticks
    assert all(lo <= t * (1 + 1e-9) and t <= hi * (1 + 1e-9) for t in ticks), ticks
    assert ticks == sorted(set(ticks))
