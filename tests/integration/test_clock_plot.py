"""Figure 3 with a clock (prsgd.plots.figure3 / prsgd.plots.clock): modelled panel (b) says so on its face,
contended CPU clocks say so, the time-to-target table, and what the summary's byte and comm
columns hold. Small run directories written here; no training, no timing."""

import pandas as pd
import pytest

from conftest import ROOT, run_python, toy_calibration_file


def test_plot_figure3_clock_flag(toy_sweep, tmp_path):
    out = tmp_path / "fig"
    run_python([str(ROOT / "scripts" / "plot_figure3.py"), str(toy_sweep), "--out", str(out),
                "--clock", str(toy_calibration_file(tmp_path))])
    table = pd.read_csv(out / "summary.csv")
    assert list(table["modelled_speedup_vs_I1"]) == pytest.approx([1.0, 3 * 24.16 / (3 * 6.16)])
    assert "MODELLED" in (out / "summary.md").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("[1")
    p = run_python([str(ROOT / "scripts" / "plot_figure3.py"), str(toy_sweep), "--out",
                    str(tmp_path / "x"), "--clock", str(bad)], check=False)
    assert p.returncode == 2 and f"{bad}: not valid JSON" in p.stderr
