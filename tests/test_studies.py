"""Studies are configuration: every benchmarks/studies/*.toml turns into landscape commands over files that exist,
and the results pages they feed regenerate from the archived reports, identically, without training."""

import importlib.util
import json
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "benchmarks" / "studies").glob("*.toml"))
REPORTING = [p for p in STUDIES if "report" in tomllib.loads(p.read_text())]


def _run_study():
    spec = importlib.util.spec_from_file_location("run_study", REPO / "benchmarks" / "run_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_expands_into_landscape_commands_over_existing_files(path):
    run_study = _run_study()
    landscapes = run_study.expand(run_study.load(str(path)))
    assert landscapes
    for _, one in landscapes:
        cmd = run_study.command(one)
        for flag, value in zip(cmd, cmd[1:]):
            if flag == "--gin":
                assert (REPO / value).exists(), value
        for gin_file in [b for name, b in one.get("solvers", {}).items() if b.endswith(".gin")]:
            assert (REPO / gin_file).exists(), gin_file


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_a_dry_run_prints_one_landscape_command_per_landscape_and_runs_nothing(path, capsys, monkeypatch):
    run_study = _run_study()
    monkeypatch.setattr(run_study.subprocess, "run", lambda *a, **k: pytest.fail("a dry run ran something"))
    assert run_study.main([str(path), "--dry-run"]) == 0
    commands = [line[2:] for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    assert len(commands) == len(run_study.expand(run_study.load(str(path))))
    assert all(shlex.split(c)[1] == "tools/landscape.py" and "--out" in shlex.split(c) for c in commands)


@pytest.mark.parametrize("path", REPORTING, ids=[p.stem for p in REPORTING])
def test_a_study_with_pages_has_every_landscape_archived(path):
    """All of them, or at least one for a study marked `partial` (one that runs over several sessions)."""
    run_study = _run_study()
    study = run_study.load(str(path))
    archived = {name: "measured" in one and (REPO / one["measured"]).exists() for name, one in run_study.expand(study)}
    if study["report"].get("partial"):
        assert any(archived.values()), f"{path.name}: no landscape has an archived report"
    else:
        assert all(archived.values()), f"{path.name}: {[n for n, a in archived.items() if not a]} have no archive"


@pytest.mark.parametrize("path", REPORTING, ids=[p.stem for p in REPORTING])
def test_the_pages_regenerate_from_the_archive_as_committed(path, tmp_path):
    """What `run_study.py STUDY --report` writes equals the committed page, byte for byte (markdown and JSON)."""
    run_study = _run_study()
    study = run_study.load(str(path))
    import study_report  # benchmarks/, put on sys.path by run_study

    written = study_report.write_pages(study["report"]["pages"], run_study.expand(study), from_runs=False,
                                       out=tmp_path, partial=bool(study["report"].get("partial", False)))
    pages = [p for p in written if p.suffix in (".md", ".json")]
    assert pages
    for page in pages:
        committed = REPO / "benchmarks" / "results" / page.relative_to(tmp_path)
        assert page.read_text() == committed.read_text(), f"{page.name} differs from the committed one: run " \
            f"python benchmarks/run_study.py {path.relative_to(REPO)} --report"


def test_a_resolved_cell_says_better_or_worse_even_where_the_archive_flagged_only_worse():
    _run_study()  # puts benchmarks/ on sys.path
    import study_report

    # Archived reports flagged only 'worse' (one-sided): a regret resolved below 0 was stored as not resolved.
    assert study_report.fmt_regret({"mean": -0.005, "half_width": 0.003, "resolved": False}) \
        == "**-0.0050 ± 0.0030 (better)**"
    assert study_report.fmt_regret({"mean": 0.0123, "half_width": 0.004, "resolved": True}) \
        == "**+0.0123 ± 0.0040 (worse)**"
    assert study_report.fmt_regret({"mean": 0.002, "half_width": 0.004, "resolved": True}) == "+0.0020 ± 0.0040"
    # a raw paired difference first − second: above 0 is better where higher is better (precision), worse elsewhere
    assert study_report.paired_text([0.9, 0.8, 0.85], [0.5, 0.45, 0.5], higher_is_better=True).endswith("(better)**")
    assert study_report.paired_text([0.9, 0.8, 0.85], [0.5, 0.45, 0.5]).endswith("(worse)**")


def test_a_matrix_makes_one_landscape_per_combination_with_its_own_bindings_and_baselines():
    run_study = _run_study()
    study = {"gin": ["g.gin"], "seeds": [0], "out": "runs/x/{name}", "bind": ["common = 1"],
             "matrix": {"a": {"p": ["a = 1"], "q": ["a = 2"]},
                        "b": {"r": {"bind": ["b = 1"], "baselines": {"wide": "w = 3"}}}}}
    out = dict(run_study.expand(study))
    assert list(out) == ["p-r", "q-r"]
    assert out["q-r"]["bind"] == ["a = 2", "b = 1", "common = 1"] and out["q-r"]["out"] == "runs/x/q-r"
    assert out["p-r"]["baselines"] == {"wide": "w = 3"}
    assert list(dict(run_study.expand(study, only=["q-r"]))) == ["q-r"]


def test_combinations_pick_landscapes_of_a_matrix_and_their_own_solvers_and_settings():
    run_study = _run_study()
    study = {"gin": ["g.gin"], "seeds": [0], "out": "runs/x/{name}", "solvers": {"s1": "a = 1", "s2": "b = 2"},
             "matrix": {"a": {"p": ["a = 1"], "q": ["a = 2"]}},
             "combinations": {"q": {"solvers": ["s2"], "seeds": [3, 4]}, "p": {}}}
    out = dict(run_study.expand(study))
    assert list(out) == ["q", "p"]
    assert out["q"]["solvers"] == {"s2": "b = 2"} and out["q"]["seeds"] == [3, 4] and out["q"]["bind"] == ["a = 2"]
    assert out["p"]["solvers"] == {"s1": "a = 1", "s2": "b = 2"} and out["p"]["seeds"] == [0]
    with pytest.raises(ValueError, match="not in the study's"):
        run_study.expand({**study, "combinations": {"p": {"solvers": ["nope"]}}})
    with pytest.raises(ValueError, match="not combinations of the"):
        run_study.expand({**study, "combinations": {"r": {}}})


def test_a_study_missing_a_setting_is_one_clear_error(tmp_path, capsys):
    run_study = _run_study()
    path = tmp_path / "bad.toml"
    path.write_text('gin = ["g.gin"]\nseeds = [0]\n[combinations.one]\nn = 2\n')
    assert run_study.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'one' lacks out" in err


def test_the_methods_table_scores_each_method_against_both_references(tmp_path):
    """benchmarks/methods_page.py on a made-up report: held-out regret against the best scratch split and the best
    warm-started split (chosen on seeds 0-1, scored on 2-3), the paired difference to uniform, the tally."""
    _run_study()  # puts benchmarks/ on sys.path
    import methods_page
    import study_report as sr

    seeds = [0, 1, 2, 3]
    values = {"N=1": ("single", [2.0] * 4, []), "uniform": ("uniform", [1.0] * 4, [0.5]),
              "b=0.300": ("grid", [0.5, 0.5, 0.5, 0.6], [0.3]), "wb0.3": ("solver", [0.4, 0.4, 0.45, 0.45], [0.3]),
              "warm_split": ("solver", [0.4, 0.4, 0.40, 0.50], [0.35])}
    configs = {label: {"kind": kind, "mean_boundaries": [0.0, *inner, 1.0],
                       "stats": {"sw": [sum(v) / 4, 0.01]},
                       "values": {str(s): {"sw": x} for s, x in zip(seeds, v)},
                       "boundaries": {str(s): [0.0, *inner, 1.0] for s in seeds}}
               for label, (kind, v, inner) in values.items()}
    report = {"command": "made up", "settings": {"primary": "sw", "seeds": seeds, "select_seeds": [0, 1]},
              "summary": {"configs": configs}}
    land = sr.Landscape("regime", {}, report, tmp_path / "r.json", None)
    md, js = methods_page.methods_page([land], tmp_path)
    rows = json.loads(js.read_text())["regimes"]["regime"]
    assert set(rows) == {"N=1", "uniform", "warm_split"}  # fixed splits and the warm-started landscape are references
    assert rows["warm_split"]["vs_scratch"]["best"] == "b=0.300"
    assert rows["warm_split"]["vs_scratch"]["mean"] == pytest.approx(-0.1)
    assert rows["warm_split"]["vs_warm"]["best"] == "wb0.3" and rows["warm_split"]["vs_warm"]["mean"] == pytest.approx(0)
    assert rows["warm_split"]["vs_uniform"]["mean"] == pytest.approx(-0.575)
    text = md.read_text()
    assert "**-0.1000 ± 0.0000 (better)** (b=0.300)" in text and "| warm_split | 1 | 1 / 0 | 1 / 0 |" in text


def test_the_deciding_warm_splits_choices_are_listed_beside_the_warm_starts_part():
    _run_study()
    import methods_page

    rows = {"warm_uniform": {"vs_uniform": {"mean": 0.01, "half_width": 0.002}}}
    one = [{"steps": 40, "affinity": 0.2}]
    decisions = {"warm_pilot": {"300": {"affinity": -0.1, "warm": False, "checks": one[:0], "shared_steps": 0}},
                 "warm_adaptive": {"300": {"affinity": 0.2, "warm": True, "shared_steps": 80,
                                           "checks": [*one, {"steps": 80, "affinity": -0.05}]}}}
    lines = methods_page.pilot_line(rows, decisions)
    assert lines[0] == "warm_pilot's cross-interval gradient affinity by seed: 300: -0.100 (scratch)."
    assert lines[1] == ("warm_adaptive's cross-interval gradient affinity by seed: 300: +0.200 (warm, 80 shared steps; "
                        "rechecks -0.050).")
    assert "**+0.0100 ± 0.0020 (worse)**" in lines[2]
    assert methods_page.pilot_line(rows, {"warm_pilot": {}}) == []


def test_each_race_is_set_beside_the_seeds_final_warm_start_part():
    """warm_transfer's choice per seed against the sign of that seed's warm_uniform − uniform (warm where below 0)."""
    _run_study()
    import methods_page

    races = {"300": {"difference": -0.002, "se": 0.0005, "warm": True},
             "301": {"difference": 0.001, "se": 0.0005, "warm": False}}
    part = {"300": 0.003, "301": 0.004}  # the warm start cost on both seeds: only 301's race chose as it turned out
    lines = methods_page.race_line("warm_transfer_end", races, part)
    assert lines[0] == ("warm_transfer_end's race (shared − scratch loss) by seed: 300: -0.0020 ± 0.0010 (warm), "
                        "301: +0.0010 ± 0.0010 (scratch). It chose as the seed's final warm-start part turned out on "
                        "1 of 2 seeds.")
    assert methods_page.race_line("warm_transfer", {}, part) == []
    report = {"settings": {"primary": "sw"}, "summary": {"configs": {
        "uniform": {"values": {"300": {"sw": 1.0}, "301": {"sw": 2.0}}},
        "warm_uniform": {"values": {"300": {"sw": 1.5}, "301": {"sw": 1.0}}}}}}
    assert methods_page.seed_part(report) == {"300": 0.5, "301": -1.0}
    late = methods_page.race_line("warm_race", races, {"300": -0.1, "301": 0.2}, late=True)  # both chose right
    assert late[0].startswith("warm_race's race (warm split − scratch at half the experts' steps loss) by seed")
    assert late[0].endswith("It chose as the seed's warm_split − uniform turned out on 2 of 2 seeds.")
    report["summary"]["configs"]["warm_split"] = {"values": {"300": {"sw": 0.5}, "301": {"sw": 2.5}}}
    assert methods_page.split_part(report) == {"300": -0.5, "301": 0.5}


def test_a_partial_studys_pages_name_the_landscapes_not_yet_run(tmp_path):
    _run_study()
    import study_report

    archived = "benchmarks/results/cifar/cifar8_capacity-landscape.json"
    landscapes = [("ran", {"out": "runs/ran", "measured": archived}),
                  ("later", {"out": "runs/later", "measured": "benchmarks/results/none.json"})]
    written = study_report.write_pages(["capacity"], landscapes, from_runs=False, out=tmp_path, partial=True)
    md = [p for p in written if p.suffix == ".md"]
    assert len(md) == 1 and md[0].read_text().rstrip().endswith("its command goes on where it stopped): later.*")
    again = study_report.write_pages(["capacity"], landscapes[:1], from_runs=False, out=tmp_path, partial=True)
    assert "Not yet run" not in [p for p in again if p.suffix == ".md"][0].read_text()


def test_the_methods_page_splits_the_warm_gain_at_the_best_scratch_boundary(tmp_path):
    """wb<b> − b=<b> at the best scratch boundary (chosen on the selection seeds), warm_split − warm_uniform."""
    _run_study()
    import methods_page
    import study_report as sr

    seeds = [0, 1, 2, 3]
    values = {"uniform": [1.0, 1.1, 1.0, 1.2], "b=0.300": [0.5, 0.6, 0.5, 0.6], "wb0.3": [0.7, 0.8, 0.7, 0.8],
              "warm_split": [0.6, 0.6, 0.6, 0.6], "warm_uniform": [0.9, 0.8, 0.9, 0.8]}
    configs = {label: {"values": {str(s): {"sw": x} for s, x in zip(seeds, v)}} for label, v in values.items()}
    land = sr.Landscape("r", {}, {"settings": {"primary": "sw"}, "summary": {"configs": configs}}, tmp_path, None)
    line = methods_page.attribution(land, {"uniform": {"vs_scratch": {"best": "b=0.300"}}})[0]
    assert line.startswith("Paired over all seeds (sw): wb0.3 − b=0.300 **+0.2 [")
    assert "warm_split − warm_uniform **-0.25 [" in line and "progressive" not in line


@pytest.mark.parametrize("race", ["warm_race", "warm_race_margin"])
def test_the_warm_race_page_applies_its_rule_and_sets_each_race_beside_the_seeds_outcome(tmp_path, race):
    """Study L's page and study M's (the margin race): the rule (race − uniform not resolved worse) per regime, and
    each seed's race choice against the sign of its warm_split − uniform."""
    _run_study()
    import study_report as sr

    seeds = ["0", "1", "2", "3"]
    values = {"uniform": [1.0, 1.1, 1.0, 1.2], "warm_split": [1.1, 1.0, 1.2, 1.3], race: [1.1, 1.2, 1.1, 1.3]}
    configs = {c: {"values": {s: {"sw": v} for s, v in zip(seeds, vs)}} for c, vs in values.items()}
    report = {"command": "python tools/landscape.py ...", "settings": {"primary": "sw"},
              "summary": {"configs": configs, "metrics": ["sw"]}}
    for s, diff in zip(seeds, [0.01, -0.01, 0.02, 0.01]):  # the race chose warm on seed 1 only
        path = tmp_path / "runs" / race / f"seed{s}" / "checkpoints" / "adaptation.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"decision": {"difference": diff, "se": 0.001, "warm": diff < 0}}))
    land = sr.Landscape("toy", {}, report, tmp_path / "landscape.json", tmp_path)
    sr.PAGES[race]([land], tmp_path)
    text, data = (tmp_path / f"{race}.md").read_text(), json.loads((tmp_path / f"{race}.json").read_text())
    assert f"**{race} − uniform on sw: +0.1000 ± 0.0000: the rule fails" in text and "It fails on 1 regime" in text
    assert ("21:15 UTC" if race == "warm_race" else "23:36 UTC") in text  # the addendum that fixed the rule
    other = "warm_race_margin" if race == "warm_race" else "warm_race"  # the other rule, read off the same races
    assert f"({other}; its run on a seed is" in text and "choose differently on 0 of 4 seeds." in text
    assert "| 1 | -0.0100 ± 0.0020 | warm | -0.1000 | +0.1000 |" in text
    assert data["regimes"]["toy"]["agree"] == 4 and not data["regimes"]["toy"]["holds"]  # seed 1's warm start paid


def test_the_one_table_sets_every_configuration_beside_every_regime():
    _run_study()
    import methods_page

    row = {"vs_scratch": {"mean": 0.01, "half_width": 0.002}, "extra_compute": 0.1, "extra_wall": 0.5}
    lines = methods_page.one_table({"a": {"uniform": dict(row, extra_compute=None, extra_wall=0.0), "cbs": row},
                                    "b": {"cbs": dict(row, extra_compute=0.3, vs_scratch=None)}})
    assert lines[4] == "| configuration | a | b | extra compute (median: counted / wall) |"
    assert lines[6] == "| uniform | **+0.0100 ± 0.0020 (worse)** | — | — / +0.0 % |"
    assert lines[7] == "| cbs | **+0.0100 ± 0.0020 (worse)** | — | +20.0 % / +50.0 % |"


def _default_choice():
    _run_study()  # puts benchmarks/ on the path
    import default_choice

    return default_choice


def _row(mean, half_width, extra_compute=None, extra_wall=0.0):
    return {"vs_scratch": {"mean": mean, "half_width": half_width}, "extra_compute": extra_compute,
            "extra_wall": extra_wall}


def test_the_default_is_the_cheapest_method_never_resolved_worse_than_the_best_fixed_split():
    """Point 5's preregistered rule: qualify by never being resolved worse on any regime, then the lowest median
    extra compute (counted, else wall); the toys' centred_light is CBS from scratch, as K's cbs_dirichlet."""
    dc = _default_choice()
    rows = {"methods_table:a": {"uniform": _row(0.01, 0.002), "cbs_dirichlet": _row(0.0, 0.01, extra_wall=0.3),
                                "successive_halving": _row(-0.01, 0.02, extra_compute=0.31, extra_wall=0.9)},
            "methods_cifar:k": {"uniform": _row(0.0, 0.01), "cbs_dirichlet": _row(0.001, 0.01, extra_wall=0.1),
                                "successive_halving": _row(0.0, 0.01, extra_compute=0.31)}}
    decision = dc.choose(rows)
    assert decision["qualifiers"] == ["cbs_dirichlet", "successive_halving"] and decision["step"] == 2
    assert decision["choice"] == "cbs_dirichlet" and not decision["provisional"]  # median 0.2 against 0.31
    assert decision["candidates"]["uniform"]["worse"] == ["methods_table:a"]
    # Nobody qualifies: the fewest regimes resolved worse, then the cost.
    rows["methods_cifar:k"]["cbs_dirichlet"] = _row(0.05, 0.01, extra_wall=0.1)
    rows["methods_cifar:k"]["successive_halving"] = _row(0.05, 0.01, extra_compute=0.31)
    rows["methods_cifar:k"]["uniform"] = _row(0.05, 0.01)  # worse on both regimes, though free
    decision = dc.choose(rows)
    assert decision["qualifiers"] == [] and decision["step"] == 3 and decision["choice"] == "cbs_dirichlet"


def test_the_default_choice_reads_the_toys_labels_under_their_family_names_and_says_when_k_is_missing(tmp_path):
    dc = _default_choice()
    (tmp_path / "methods_table.json").write_text(json.dumps({"regimes": {"a": {
        "centred_light": _row(0.0, 0.01, extra_wall=0.3), "acceleration": _row(0.0, 0.01, extra_wall=1.0),
        "N1x2steps": _row(0.0, 0.01), "uniform": _row(0.0, 0.01)}}}))
    all_rows = dc.regimes(tmp_path)
    assert set(all_rows["methods_table:a"]) == {"cbs_dirichlet", "cbs_acceleration", "uniform"}  # baselines are not
    decision = dc.choose(all_rows)
    assert decision["provisional"] and decision["choice"] == "uniform"
    assert any("Provisional" in line for line in dc.page(decision))


def test_the_committed_default_choice_page_is_what_its_command_writes_from_the_committed_tables():
    dc = _default_choice()
    text, decision = dc.render()
    assert text == (REPO / "benchmarks" / "results" / "default_choice.md").read_text()
    assert decision == json.loads((REPO / "benchmarks" / "results" / "default_choice.json").read_text())


def test_the_share_page_sets_each_share_against_the_uniform_split_paired_by_seed(tmp_path):
    _run_study()
    import study_report as sr

    seeds = ["0", "1", "2", "3"]
    values = {"uniform": [1.0, 1.1, 1.0, 1.2], "share0.5": [1.1, 1.2, 1.1, 1.3], "share0.125": [0.9, 1.0, 0.9, 1.1]}
    configs = {c: {"values": {s: {"sw": v} for s, v in zip(seeds, vs)}} for c, vs in values.items()}
    report = {"command": "python tools/landscape.py ...", "settings": {"primary": "sw"},
              "summary": {"configs": configs, "metrics": ["sw"]}}
    sr.warm_share_page([sr.Landscape("toy", {}, report, tmp_path / "landscape.json", None)], tmp_path)
    text, data = (tmp_path / "warm_share.md").read_text(), json.loads((tmp_path / "warm_share.json").read_text())
    assert text.index("| share0.125 |") < text.index("| share0.5 |")  # in order of the share
    assert "| share0.5 − share0.125 | **+0.2 [" in text  # the share's own effect: the largest minus the smallest
    assert data["regimes"]["toy"]["share0.5"]["sw"]["mean"] == pytest.approx(0.1)
    assert data["regimes"]["toy"]["share0.125"]["sw"]["mean"] == pytest.approx(-0.1)


def test_the_margin_race_is_read_off_the_plain_races_seed_by_seed():
    """Amendment to K: warm_race_margin's run is warm_race's where the race resolved the warm split, else uniform's."""
    _run_study()
    import methods_page

    seeds = ["0", "1", "2", "3"]
    values = {"uniform": [1.0, 1.0, 1.0, 1.0], "warm_race": [0.5, 2.0, 1.0, 3.0]}
    configs = {c: {"values": {s: {"fd": v} for s, v in zip(seeds, vs)}} for c, vs in values.items()}
    report = {"settings": {"primary": "fd"}, "summary": {"configs": configs}}
    races = {"0": {"difference": -0.1, "se": 0.01, "warm": True},  # resolved: warm_race's run (0.5)
             "1": {"difference": -0.01, "se": 0.01, "warm": True},  # unresolved: the uniform split's (1.0)
             "2": {"difference": 0.1, "se": 0.01, "warm": False},  # scratch: the same either way
             "3": {"difference": -0.019, "se": 0.01, "warm": True}}  # -0.019 + 0.02 > 0: uniform's (1.0)
    line = methods_page.margin_line(report, races)[0]
    assert "warm_race_margin − uniform on fd -0.1250 ± " in line  # only seed 0 moves: -0.5 / 4
    assert "differently on 2 of 4 seeds (1, 3)." in line  # lower but not resolved: the plain race went warm
    assert methods_page.margin_line(report, {}) == []


def test_the_other_late_race_rule_is_read_off_the_same_races():
    """On the plain race's page the margin rule keeps the uniform split's run where the race was lower but not
    resolved; on the margin race's page the plain rule takes the warm split's run wherever the race was lower."""
    _run_study()
    import study_report as sr

    seeds = ["0", "1"]
    values = {"uniform": [1.0, 1.0], "warm_split": [0.5, 0.8], "warm_race": [0.5, 0.8], "warm_race_margin": [0.5, 1.0]}
    report = {"summary": {"configs": {c: {"values": {s: {"sw": v} for s, v in zip(seeds, vs)}}
                                      for c, vs in values.items()}}}
    plain = {"0": {"difference": -0.1, "se": 0.01, "warm": True}, "1": {"difference": -0.01, "se": 0.01, "warm": True}}
    line = sr.other_rule(report, "warm_race", plain, seeds, "sw")[0]
    assert "warm_race_margin − uniform on sw -0.2500 ± " in line and "differently on 1 of 2 seeds (1)." in line
    margin = {s: dict(d, warm=s == "0") for s, d in plain.items()}
    line = sr.other_rule(report, "warm_race_margin", margin, seeds, "sw")[0]
    assert "warm_race − uniform on sw -0.3500 ± " in line  # the warm split's runs on both seeds, not resolved on 2
    assert "differently on 1 of 2 seeds (1)." in line


def test_the_shipped_configurations_include_the_split_the_default_rule_chose():
    """Issue 37, point 5: gin/splits/default.gin (included by the quickstart and the image configurations) includes
    the split file of the method benchmarks/results/default_choice.json chose, once K has made the choice final."""
    dc = _default_choice()
    decision = json.loads((REPO / "benchmarks" / "results" / "default_choice.json").read_text())
    if decision["provisional"]:
        pytest.skip("the default's rule has read the toys alone: CIFAR-10 (K) is not archived yet")
    assert f"include '{dc.SPLIT_FILE[decision['choice']]}'" in (REPO / "gin" / "splits" / "default.gin").read_text()
    for config in ("quickstart", "cifar10_unet", "jit_imagenet64", "sit_b2_imagenet256"):
        text = (REPO / "gin" / f"{config}.gin").read_text()
        assert "include 'gin/splits/default.gin'" in text and "include 'gin/splits/warm_split.gin'" not in text
