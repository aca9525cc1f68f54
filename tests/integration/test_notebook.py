"""The committed notebook is executed and current: every code cell has its outputs, and they are
what re-executing it on the committed results gives (as text: images are not compared). It is
re-executed from another folder of the repository than its own, so it finds the repository itself.
`make notebook` rewrites the outputs."""
from __future__ import annotations

import runpy

import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "figure3.ipynb"


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(str(ROOT / "scripts" / "execute_notebook.py"))


@pytest.mark.slow
def test_committed_notebook_has_fresh_outputs(tool, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    for var in ("PRSGD_REPO", "PRSGD_SWEEP", "PRSGD_SWEEP_B", "PRSGD_CLOCK", "PRSGD_LAB_SWEEP",
                "PRSGD_LAB_CLOCK", "PRSGD_HIER_RUN", "PRSGD_DIAG_RUNS"):
        monkeypatch.delenv(var, raising=False)     # the committed defaults only
    saved = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    empty = [i for i, c in enumerate(code, start=1) if not c.get("outputs")]
    assert not empty, f"code cells {empty} were committed without outputs: run `make notebook`"
    fresh = tool["execute"](NOTEBOOK, cwd=ROOT / "src")
    errors = [t for cell in tool["text_outputs"](fresh) for t in cell if t.startswith("error: ")]
    assert not errors
    stale = tool["stale_cells"](saved, fresh)
    assert not stale, "the committed notebook is stale (run `make notebook`):\n" + "\n".join(stale)


def test_stale_outputs_are_noticed(tool):
    """The comparison itself: a changed number or a missing output is a difference."""
    nbformat = pytest.importorskip("nbformat")
    from nbformat.v4 import new_code_cell, new_notebook, new_output
    def nb(text):
        outputs = [new_output("stream", name="stdout", text=text)] if text else []
        return new_notebook(cells=[new_code_cell("print(x)", outputs=outputs)])
    assert tool["stale_cells"](nb("0.8756\n"), nb("0.8756\n")) == []
    assert tool["stale_cells"](nb("0.8756\n"), nb("0.8757\n")) == [
        "code cell 1: saved outputs differ from re-execution"]
    assert tool["stale_cells"](nb(""), nb("0.8756\n")) == ["code cell 1: saved without outputs"]
    assert nbformat  # imported for the skip above
