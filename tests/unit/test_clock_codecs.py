"""The codec part of the clock (prsgd.clock.codecs): a compressed round's encode/decode CPU time,
measured through the round's own code and costed per round by the model. Arithmetic against
hand-computed values; the measurement's structure, never its speed."""

import json

import pytest

from conftest import toy_clock
from prsgd.clock import codecs
from prsgd.clock.checks import CalibrationError, check_calibration
from prsgd.clock.model import KIND, RunShape, model_counts
from prsgd.compress import make_compressor
from unit.test_clock_collectives import meta_of

PART = {"numel": 5_120, "workers": 4, "per_compressor": {
    "int8/1024": {"collective": "allgather", "encode_s": 2e-3, "decode_s": 5e-4},
    "fp16": {"collective": "allreduce", "encode_s": 1e-3, "decode_s": 3e-4},
    "top-0.01": {"collective": "allgather", "encode_s": 4e-3, "decode_s": 1e-4}}}


def with_codecs(cal, part=PART):
    cal.codecs = part
    return cal


@pytest.mark.parametrize("compressor, ratio, per_round", [
    # the runs have 10,240 params, the calibration 5,120: x2. An allgather's worker decodes all
    # 4 payloads, a cast's decodes the one sum.
    ("int8", None, 2 * (2e-3 + 4 * 5e-4)),
    ("fp16", None, 2 * (1e-3 + 1 * 3e-4)),
    ("topk", 0.01, 2 * (4e-3 + 4 * 1e-4)),
])
def test_each_round_pays_encode_and_the_decodes_it_does(compressor, ratio, per_round):
    shape = RunShape.from_config(meta_of(compressor=compressor, topk_ratio=ratio))
    plain = model_counts(toy_clock(), shape, 24, 6)
    costed = model_counts(with_codecs(toy_clock()), shape, 24, 6)
    assert costed["comm_global_s"] - plain["comm_global_s"] == pytest.approx(6 * per_round)
    assert costed["compute_s"] == plain["compute_s"]
    assert costed["seconds"] - plain["seconds"] == pytest.approx(6 * per_round)


def test_overlap_hides_the_collective_not_the_codec():
    meta = meta_of(compressor="int8", overlap_delay=2)
    shape = RunShape.from_config(meta)
    assert shape.overlap_steps == 2          # 2 x 0.1 s of steps hide the toy's ~20 ms round
    m = model_counts(with_codecs(toy_clock()), shape, 24, 6)
    assert m["comm_global_s"] == pytest.approx(6 * 2 * (2e-3 + 4 * 5e-4))


def test_uncompressed_rounds_and_old_calibrations_cost_no_codec_time():
    plain = RunShape.from_config(meta_of())
    assert plain.codec == ()
    a = model_counts(with_codecs(toy_clock()), plain, 24, 6, bytes_global=6e6)
    assert a == model_counts(toy_clock(), plain, 24, 6, bytes_global=6e6)


def test_a_compressor_the_calibration_did_not_time_is_refused():
    shape = RunShape.from_config(meta_of(compressor="topk", topk_ratio=0.05))
    with pytest.raises(CalibrationError, match=r"no codec timing for 'top-0.05' \(measured: "
                                               r"int8/1024, fp16, top-0.01\)"):
        model_counts(with_codecs(toy_clock()), shape, 24, 6)


@pytest.mark.parametrize("bad, field", [
    ({"numel": 0}, "compute.codecs.numel"),
    ({"per_compressor": {"fp16": {"encode_s": -1, "decode_s": 0}}},
     "compute.codecs.per_compressor.fp16.encode_s"),
    ({"per_compressor": {"fp16": {"encode_s": 1e-3, "decode_s": float("nan")}}},
     "compute.codecs.per_compressor.fp16.decode_s"),
])
def test_bad_codec_numbers_are_refused_naming_the_field(bad, field):
    doc = {"kind": KIND, "compute": {"seconds_per_step": 0.1, "codecs": {**PART, **bad}}}
    with pytest.raises(CalibrationError, match=field.replace(".", r"\.")):
        check_calibration(doc, "cal.json", KIND)


def test_time_codec_runs_the_rounds_code_and_counts_decodes():
    for name, opts in (("fp16", {}), ("int8", {}), ("topk", {"ratio": 0.01})):
        t = codecs.time_codec(make_compressor(name, **opts), 4_096, workers=3, repeats=2,
                              warmup=1)
        assert set(t) == {"encode_s", "decode_s"} and t["encode_s"] > 0 and t["decode_s"] > 0
    assert codecs.decoded_payloads("allgather", 8) == 8
    assert codecs.decoded_payloads("allreduce", 8) == 1


def test_specs_parse_or_say_which_is_wrong():
    labels = [c.label() for c in codecs.parse_specs("fp16, int8,topk:0.05,topk")]
    assert labels == ["fp16", "int8/1024", "top-0.05", "top-0.01"]
    for bad, msg in (("zip", "unknown compressor 'zip'"), ("fp16:2", "fp16 takes no option"),
                     ("topk:0", "ratio must be in"), ("topk:x", "could not convert")):
        with pytest.raises(ValueError, match=msg):
            codecs.parse_specs(bad)


def test_calibrate_compute_writes_the_codec_part(tmp_path, capsys):
    from prsgd.clock.cli import main
    out = tmp_path / "c.json"
    assert main(["calibrate-compute", "--steps", "2", "--warmup", "1", "--codec-repeats", "2",
                 "--codecs", "bf16,topk:0.02", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    part = doc["compute"]["codecs"]
    assert part["numel"] == 269_722 and part["workers"] == 1     # ResNet20's parameters
    assert list(part["per_compressor"]) == ["bf16", "top-0.02"]
    assert part["per_compressor"]["top-0.02"]["collective"] == "allgather"
    check_calibration(doc, str(out), KIND)
    capsys.readouterr()
    assert main(["calibrate-compute", "--codecs", "zip", "--out", str(tmp_path / "y.json")]) == 2
    assert "--codecs 'zip': unknown compressor" in capsys.readouterr().err
    assert not (tmp_path / "y.json").exists()


# --- a collective fitted on its own (calibrate-network --allgather) -------------------------------
def test_the_fit_recovers_an_allgathers_own_alpha_and_bandwidth():
    from prsgd.clock.fit import fit_alpha_beta, level_fits
    from prsgd.clock.collectives import ring_allgather_seconds, ring_allreduce_seconds
    sizes = (4096, 65536, 262144, 1_000_000)
    gather = [(4, b, 5e-4 + ring_allgather_seconds(4, b, 4e-3, 2e6)) for b in sizes]
    fit = fit_alpha_beta(gather, 5e-4, collective="allgather")
    assert fit["alpha_s"] == pytest.approx(4e-3) and fit["bandwidth_Bps"] == pytest.approx(2e6)
    # the allreduce's model on the same points would be wrong: alpha counts 2(n-1) times there
    assert fit_alpha_beta(gather, 5e-4)["alpha_s"] != pytest.approx(4e-3)
    points = [{"level": "inter", "collective": "allgather", "n": n, "bytes": b, "mean_s": t}
              for n, b, t in gather] + \
             [{"level": "inter", "n": 4, "bytes": b,             # an old point: an allreduce
               "mean_s": 5e-4 + ring_allreduce_seconds(4, b, 1e-3, 5e6)} for b in sizes]
    fits = level_fits(points, "inter", 5e-4)
    assert fits["alpha_s"] == pytest.approx(1e-3) and fits["bandwidth_Bps"] == pytest.approx(5e6)
    assert fits["collectives"]["allgather"]["alpha_s"] == pytest.approx(4e-3)
    assert "collectives" not in level_fits(points[4:], "inter", 5e-4)


def test_a_link_costs_a_collective_with_its_own_fit_when_it_has_one():
    from prsgd.clock.collectives import ring_allgather_seconds, ring_allreduce_seconds
    from prsgd.clock.model import Calibration
    doc = {"kind": KIND, "compute": {"seconds_per_step": 0.1}, "network": {
        "ranks_per_node": 2, "overhead_s": 1e-3, "levels": {"inter": {
            "alpha_s": 1e-3, "bandwidth_Bps": 5e6,
            "collectives": {"allgather": {"alpha_s": 4e-3, "bandwidth_Bps": 2e6}}}}}}
    cal = Calibration.from_dict(doc)
    assert cal.collective_seconds((0, 1, 2, 3), 1e4, "allgather") == pytest.approx(
        1e-3 + ring_allgather_seconds(4, 1e4, 4e-3, 2e6))
    assert cal.collective_seconds((0, 1, 2, 3), 1e4, "allreduce") == pytest.approx(
        1e-3 + ring_allreduce_seconds(4, 1e4, 1e-3, 5e6))
    doc["network"]["levels"]["inter"]["collectives"]["allgather"]["bandwidth_Bps"] = 0
    with pytest.raises(CalibrationError,
                       match=r"network\.levels\.inter\.collectives\.allgather\.bandwidth_Bps"):
        Calibration.from_dict(doc, source="cal.json")
    doc["network"]["levels"]["inter"]["collectives"]["allgather"] = {"error": "too few points"}
    with pytest.raises(CalibrationError, match="allgather has no fit"):
        Calibration.from_dict(doc, source="cal.json")
