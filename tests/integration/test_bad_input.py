"""Bad input: a message naming the argument and what is allowed, a non-zero exit, no run files;
and the table of every case in docs/reliability.md, regenerated from the real messages."""
from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT
from helpers import bad_inputs

TABLE_DOC = ROOT / "docs" / "reliability.md"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    cwd = tmp / "cwd"   # a run that got as far as a default --out would show up here
    cwd.mkdir()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        yield bad_inputs.collect(tmp), tmp
    finally:
        os.chdir(old)


@pytest.mark.horovod
def test_every_bad_input_is_refused_with_its_message(results):
    res, tmp = results
    assert len(res) == len(bad_inputs.CASES)
    for case, code, text, _ in res:
        assert code == case.exit if case.exit is not None else code != 0, (case.shown, text)
        assert case.expect in text, (case.shown, text)
    # Nothing was started: no run directory besides the ones the setup made on purpose, none
    # outside --out (a run id with '..'), no sweep run.
    assert list((tmp / "cwd").iterdir()) == []
    assert sorted(p.name for p in (tmp / "runs").iterdir()) == [
        "badcfg", "broken", "cut", "done", "nockpt", "owned"]
    assert not (tmp / "escape").exists() and not (tmp / "sweep" / "runs").exists()
    # The refused resumes left the finished runs as they were.
    for rid in ("done", "nockpt"):
        done = json.loads((tmp / "runs" / rid / "status.json").read_text())
        assert (done["status"], done["epoch"]) == ("done", 1)


@pytest.mark.horovod
def test_no_bad_input_ends_in_a_traceback(results):
    """Every case's whole output (stdout and stderr, the launcher's too) holds no traceback."""
    res, _ = results
    shown = [f"### {case.shown} (exit {code})\n{output}" for case, code, _, output in res
             if "Traceback" in output]
    assert not shown, "\n".join(shown)


@pytest.mark.horovod
def test_docs_table_lists_every_case_with_its_current_message(results):
    res, _ = results
    assert bad_inputs.table(res) in TABLE_DOC.read_text(), (
        "docs/reliability.md's bad-input table is out of date; regenerate it with "
        "`PYTHONPATH=src python tests/helpers/bad_inputs.py`:\n" + bad_inputs.table(res))
