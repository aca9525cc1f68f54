"""Every number that enters the clock (issue 21 §1): a calibration file, a part `combine` builds
from, a flag. Each bad one is refused with one line naming the file and the field, a non-zero
exit and no file written; a directory that is not a run is named as such. In-process, no timing."""
import copy
import json
import math

import pytest

from prsgd.clock.cli import main
from prsgd.clock.model import KIND, Calibration, CalibrationError

GOOD = {"kind": KIND, "name": "good", "compute": {"seconds_per_step": 0.1,
                                                   "per_rank_seconds_per_step": [0.1, 0.09]},
        "network": {"ranks_per_node": 2, "overhead_s": 1e-3, "cycle_time_ms": 1.0, "levels": {
            "intra": {"alpha_s": 1e-5, "bandwidth_Bps": 1e9},
            "inter": {"alpha_s": 0.0, "bandwidth_Bps": 1e8}}}}

# (field path, bad value, a fragment of the message): every numeric field of a calibration,
# with each way a number can be wrong (sign, zero where it must be > 0, NaN, inf, type).
BAD_FIELDS = [
    (("compute", "seconds_per_step"), -0.1, "compute.seconds_per_step must be a number > 0"),
    (("compute", "seconds_per_step"), 0, "compute.seconds_per_step must be a number > 0"),
    (("compute", "seconds_per_step"), "0.1", "compute.seconds_per_step must be a number > 0, "
                                             'not "0.1"'),
    (("compute", "seconds_per_step"), True, "compute.seconds_per_step must be a number > 0"),
    (("compute", "seconds_per_step"), math.inf, "compute.seconds_per_step must be a number > 0"),
    (("compute", "per_rank_seconds_per_step"), [0.1, -1], "per_rank_seconds_per_step[1] must be"),
    (("compute", "per_rank_seconds_per_step"), 0.1, "per_rank_seconds_per_step must be a list"),
    (("network", "ranks_per_node"), 0, "network.ranks_per_node must be an integer >= 1"),
    (("network", "ranks_per_node"), 1.5, "network.ranks_per_node must be an integer >= 1"),
    (("network", "overhead_s"), -1e-3, "network.overhead_s must be a number >= 0"),
    (("network", "cycle_time_ms"), -5, "network.cycle_time_ms must be a number >= 0"),
    (("network", "levels", "inter", "bandwidth_Bps"), 0, "network.levels.inter.bandwidth_Bps "
                                                         "must be a number > 0"),
    (("network", "levels", "inter", "bandwidth_Bps"), -1e8, "levels.inter.bandwidth_Bps must"),
    (("network", "levels", "intra", "alpha_s"), -1e-5, "network.levels.intra.alpha_s must be a "
                                                       "number >= 0"),
    (("network", "levels", "intra", "alpha_s"), None, "network.levels.intra.alpha_s must be"),
    (("network", "levels", "intra"), [1, 2], "network.levels.intra must be a JSON object"),
    (("network", "levels"), "x", "network.levels must be a JSON object"),
    (("compute",), [0.1], "compute must be a JSON object"),
]


def with_field(path, value) -> dict:
    doc = copy.deepcopy(GOOD)
    d = doc
    for key in path[:-1]:
        d = d[key]
    d[path[-1]] = value
    return doc


def clock(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:      # argparse's refusals
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_good_calibration_loads(tmp_path):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(GOOD))
    c = Calibration.load(path)
    assert (c.compute_s, c.ranks_per_node, c.links["inter"].bandwidth_Bps) == (0.1, 2, 1e8)


@pytest.mark.parametrize("path,value,message", BAD_FIELDS,
                         ids=[f"{'.'.join(p)}={v!r}" for p, v, _ in BAD_FIELDS])
def test_every_bad_number_in_a_file_is_refused_naming_file_and_field(tmp_path, capsys, path,
                                                                     value, message):
    cal = tmp_path / "bad.json"
    cal.write_text(json.dumps(with_field(path, value)))
    with pytest.raises(CalibrationError) as e:
        Calibration.load(cal)
    assert str(e.value).startswith(f"{cal}: ") and message in str(e.value)
    # through the command line: one line, exit 2, no traceback
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"algorithm": "prsgd",
                                                            "interval": 1}}))
    code, out = clock(["predict", run, "--clock", cal], capsys)
    assert code == 2 and out.strip().splitlines() == [f"prsgd.clock: error: {e.value}"], out


def test_nan_in_a_file_is_refused_not_read_as_a_number(tmp_path):
    cal = tmp_path / "nan.json"
    cal.write_text(json.dumps(GOOD).replace("0.1,", "NaN,", 1))
    with pytest.raises(CalibrationError, match=r"nan.json: compute.seconds_per_step must be a "
                                               r"number > 0, not nan"):
        Calibration.load(cal)


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"), ("[1, 2]", "a JSON list, not an object"),
    ('{"kind": "other"}', "not a clock calibration (kind must be"),
    ("\xff\xfe", "not valid JSON")])
def test_malformed_calibration_files_give_one_line(tmp_path, capsys, text, message):
    cal = tmp_path / "cal.json"
    cal.write_bytes(text.encode("latin-1"))
    (tmp_path / "run").mkdir()
    code, out = clock(["predict", tmp_path / "run", "--clock", cal], capsys)
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith(f"prsgd.clock: error: {cal}: ") and message in out, out


def test_a_calibration_path_that_is_a_directory_or_missing(tmp_path, capsys):
    code, out = clock(["predict", tmp_path, "--clock", tmp_path], capsys)
    assert (code, out.strip()) == (2, f"prsgd.clock: error: {tmp_path}: is a directory, not a "
                                      "calibration JSON file")
    code, out = clock(["predict", tmp_path, "--clock", tmp_path / "no.json"], capsys)
    assert code == 2 and "no.json: cannot be read (No such file or directory)" in out


def test_a_directory_that_is_not_a_run_is_named_as_such(tmp_path, capsys):
    cal = tmp_path / "good.json"
    cal.write_text(json.dumps(GOOD))
    (tmp_path / "notarun").mkdir()
    code, out = clock(["predict", tmp_path / "notarun", "--clock", cal], capsys)
    assert (code, out.strip()) == (2, f"prsgd.clock: error: {tmp_path / 'notarun'}: not a run "
                                      "directory (it has no config.json)")
    code, out = clock(["predict", tmp_path / "gone", "--clock", cal], capsys)
    assert (code, out.strip()) == (2, f"prsgd.clock: error: {tmp_path / 'gone'}: no such run "
                                      "directory")


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "five"])
def test_combine_refuses_a_bad_cycle_time_and_writes_nothing(tmp_path, capsys, value):
    comp = tmp_path / "c.json"
    comp.write_text(json.dumps({"kind": KIND, "compute": {"seconds_per_step": 0.1}}))
    out_path = tmp_path / "cal.json"
    code, out = clock(["combine", "--compute", comp, "--network", "preset:pcie3-box",
                       "--cycle-time-ms", value, "--name", "x", "--out", out_path], capsys)
    assert code == 2 and "argument --cycle-time-ms: must be a number >= 0" in out, out
    assert not out_path.exists()


def test_predict_refuses_negative_ranks_per_node(tmp_path, capsys):
    code, out = clock(["predict", tmp_path, "--clock", "x.json", "--ranks-per-node", "-2"], capsys)
    assert code == 2 and "--ranks-per-node: must be an integer >= 0, not -2" in out


@pytest.mark.parametrize("path,value,message", BAD_FIELDS[:6] + BAD_FIELDS[9:15],
                         ids=[f"{'.'.join(p)}={v!r}" for p, v, _ in BAD_FIELDS[:6] + BAD_FIELDS[9:15]])
def test_combine_names_the_part_file_and_field_and_writes_nothing(tmp_path, capsys, path, value,
                                                                  message):
    part = tmp_path / "part.json"
    part.write_text(json.dumps(with_field(path, value)))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(GOOD))
    comp, net = (part, good) if path[0] == "compute" else (good, part)
    out_path = tmp_path / "cal.json"
    code, out = clock(["combine", "--compute", comp, "--network", net, "--name", "x",
                       "--out", out_path], capsys)
    assert code == 2 and out.startswith(f"prsgd.clock: error: {part}: ") and message in out, out
    assert len(out.strip().splitlines()) == 1 and not out_path.exists()


def test_combine_of_a_bench_file_with_a_bad_step_time(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"rows": [{"variant": "eager", "ms_per_step": -3, "steps": 5}]}))
    code, out = clock(["combine", "--compute", bench, "--compute-variant", "eager", "--network",
                       "preset:pcie3-box", "--name", "x", "--out", tmp_path / "o.json"], capsys)
    assert code == 2 and "rows['eager'].ms_per_step must be a number > 0, not -3" in out, out


def test_no_nan_is_ever_written(tmp_path):
    """The writers refuse a NaN instead of writing JSON's non-standard bare `NaN`."""
    from prsgd.clock import calibrate, checks
    with pytest.raises(ValueError):
        checks.dumps({"x": float("nan")})
    with pytest.raises(ValueError):
        calibrate._write(str(tmp_path / "n.json"), {"network": {"overhead_s": float("nan")}})
    assert not (tmp_path / "n.json").exists()


def test_combine_averages_compute_measurements_rank_by_rank(tmp_path, capsys):
    """--compute-also: a lab's step measured before and after its runs; each rank's mean, the
    slowest rank's mean as the step (not the mean of the two slowest), the first's codecs kept."""
    after = {"kind": KIND, "compute": {"seconds_per_step": 0.30,
                                       "per_rank_seconds_per_step": [0.30, 0.20],
                                       "codecs": {"numel": 10, "per_compressor": {}},
                                       "provenance": {"time": "T2"}}}
    before = {"kind": KIND, "compute": {"seconds_per_step": 0.28,
                                        "per_rank_seconds_per_step": [0.20, 0.28],
                                        "provenance": {"time": "T1"}}}
    paths = []
    for name, doc in (("after", after), ("before", before)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(doc))
    net = tmp_path / "net.json"
    net.write_text(json.dumps(GOOD))
    out = tmp_path / "cal.json"
    code, text = clock(["combine", "--compute", paths[0], "--compute-also", paths[1],
                        "--network", net, "--name", "x", "--out", out], capsys)
    assert code == 0, text
    comp = json.loads(out.read_text())["compute"]
    assert comp["per_rank_seconds_per_step"] == pytest.approx([0.25, 0.24])
    assert comp["seconds_per_step"] == pytest.approx(0.25)      # not (0.30 + 0.28) / 2
    assert comp["codecs"]["numel"] == 10
    assert [m["time"] for m in comp["measurements"]] == ["T2", "T1"]
    # a measurement of other ranks, or a bad one, is refused and nothing is written
    before["compute"]["per_rank_seconds_per_step"] = [0.2, 0.2, 0.2]
    paths[1].write_text(json.dumps(before))
    out.unlink()
    code, text = clock(["combine", "--compute", paths[0], "--compute-also", paths[1],
                        "--network", net, "--name", "x", "--out", out], capsys)
    assert code == 2 and "different numbers of ranks (2, 3)" in text and not out.exists()
    before["compute"]["per_rank_seconds_per_step"] = [0.2, -1]
    paths[1].write_text(json.dumps(before))
    code, text = clock(["combine", "--compute", paths[0], "--compute-also", paths[1],
                        "--network", net, "--name", "x", "--out", out], capsys)
    assert code == 2 and f"{paths[1]}: compute.per_rank_seconds_per_step[1]" in text
    assert not out.exists()
