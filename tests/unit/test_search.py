"""Search spaces for `tsforge tune`: parsing and checks, sampling with conditions, points as
overrides, the study's record and database URL.

    python -m pytest tests/unit/test_search.py
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from tsforge.config.search import load_search, searches
from tsforge.errors import UserError
from tsforge.tune.space import as_labels, as_overrides, suggest, value_text
from tsforge.tune.study import check_url, new_record, read_record, same_space, write_record

SPACE = """
metric: mse
params:
  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  data.input_size: {type: int, low: 48, high: 96, step: 24}
  model: {type: choice, choices: [nhits, dlinear]}
  model.mlp_units: {type: choice, choices: [[[8, 8], [8, 8]], [[16, 16], [16, 16]]],
                    when: {model: nhits}}
  model.moving_avg_window: {type: choice, choices: [13, 25], when: {model: [dlinear]}}
enqueue:
  - {optim.lr: 1.0e-3, model: nhits, model.mlp_units: [[8, 8], [8, 8]]}
trials: 7
"""


def write_search(folder: Path, name: str, text: str) -> list[str]:
    (folder / "search").mkdir(parents=True, exist_ok=True)
    (folder / "search" / f"{name}.yaml").write_text(text)
    return [str(folder)]


def test_a_search_file_reads_typed(tmp_path):
    search = load_search("mine", write_search(tmp_path, "mine", SPACE))
    assert search.trials == 7 and search.metric == "mse" and search.pruner == "median"
    assert search.params["optim.lr"].log is True
    assert search.params["model.mlp_units"].when == {"model": "nhits"}
    assert list(search.params) == ["optim.lr", "data.input_size", "model", "model.mlp_units",
                                   "model.moving_avg_window"]  # fmt: skip


def test_the_shipped_searches_read():
    names = searches()
    assert {"dlinear", "nhits", "patchtst"} <= set(names)
    for name in names:
        assert load_search(name).params


@pytest.mark.parametrize("text, says", [
    ("metric: mse\n", "no params"),
    ("params: {optim.lr: {type: float, low: 2, high: 1}}\n", "low <= high"),
    ("params: {optim.lr: {type: float, low: 0, high: 1, log: true}}\n", "low > 0"),
    ("params: {optim.lr: {type: real, low: 0, high: 1}}\n", "use one of float, int, choice"),
    ("params: {model: {type: choice}}\n", "needs choices"),
    ("params: {model: {type: choice, choices: [{a: 1}]}}\n", "choices are numbers"),
    ("params: {data.input_size: {type: int, low: 1.5, high: 9}}\n", "whole low and high"),
    ("params: {launcher.nodes: {type: int, low: 1, high: 2}}\n", "cannot vary"),
    ("params: {hydra.run.dir: {type: choice, choices: [a]}}\n", "cannot vary"),
    ("params: {'optim.lr; rm': {type: choice, choices: [1]}}\n", "not a config key"),
    ("params: {a.b: {type: choice, choices: [1], when: {c.d: 1}}, c.d: {type: choice, "
     "choices: [1]}}\n", "must be a param listed before"),
    ("metric: accuracy\nparams: {a.b: {type: choice, choices: [1]}}\n", "metric=accuracy"),
    ("pruner: magic\nparams: {a.b: {type: choice, choices: [1]}}\n", "pruner=magic"),
    ("trials: 0\nparams: {a.b: {type: choice, choices: [1]}}\n", "trials=0"),
    ("cpu_minutes: .nan\nparams: {a.b: {type: choice, choices: [1]}}\n", "positive number"),
    ("overrides: ['--config-dir=/x']\nparams: {a.b: {type: choice, choices: [1]}}\n",
     "not a key=value override"),
    ("enqueue: [{x.y: 1}]\nparams: {a.b: {type: choice, choices: [1]}}\n", "x.y is not one"),
    ("params: {a.b: {type: choice, choices: [1]}}\nsurprise: 1\n", "surprise"),
    ("- a list\n", "mapping"),
    ("data: !!python/object/apply:os.system ['touch pwned']\n", "not a readable YAML"),
])  # fmt: skip
def test_a_bad_search_is_refused_naming_the_problem(tmp_path, text, says):
    folders = write_search(tmp_path, "bad", text)
    with pytest.raises(UserError, match=says):
        load_search("bad", folders)
    assert not Path("pwned").exists()


def test_a_search_that_does_not_exist_lists_those_that_do(tmp_path):
    with pytest.raises(UserError, match=r"no search named 'nope' \(searches: .*dlinear"):
        load_search("nope")
    with pytest.raises(UserError, match="not a search name"):
        load_search("../../etc/passwd")


def test_conditions_sample_only_the_active_params(tmp_path):
    search = load_search("mine", write_search(tmp_path, "mine", SPACE))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(as_labels(search.enqueue[0]))
    points = [suggest(study.ask(), search) for _ in range(30)]
    assert points[0] == {"optim.lr": 1e-3, "data.input_size": points[0]["data.input_size"],
                         "model": "nhits", "model.mlp_units": [[8, 8], [8, 8]]}  # fmt: skip
    for point in points:
        assert 1e-4 <= point["optim.lr"] <= 1e-2
        assert point["data.input_size"] in (48, 72, 96)
        assert ("model.mlp_units" in point) == (point["model"] == "nhits")
        assert ("model.moving_avg_window" in point) == (point["model"] == "dlinear")
    assert {p["model"] for p in points} == {"nhits", "dlinear"}
    assert {json.dumps(p["model.mlp_units"]) for p in points if "model.mlp_units" in p} == {
        "[[8, 8], [8, 8]]", "[[16, 16], [16, 16]]"}


@pytest.mark.parametrize("value", [0.000123, 1e-7, 3, True, None, "nhits", "a b", "it's",
                                   "true", "x=y", [[256, 256], [2, 1]], ["a", "b c"]])
def test_a_value_reads_back_through_hydras_grammar(value):
    (override,) = OverridesParser.create().parse_overrides([f"k={value_text(value)}"])
    assert override.value() == value


def test_points_become_overrides_in_order():
    assert as_overrides({"optim.lr": 0.001, "model": "dlinear", "data.scale_by": "a b"}) == [
        "optim.lr=0.001", "model=dlinear", "data.scale_by='a b'"]


@pytest.mark.parametrize("url, says", [
    ("mysql+pymysql://u:secret@host/db", "password"),
    ("not a url", "not a database URL"),
    ("oracle://host/db", "not a database tune keeps"),
])  # fmt: skip
def test_storage_urls_are_checked(url, says):
    with pytest.raises(UserError, match=says):
        check_url(url)
    check_url("mysql+pymysql:///?read_default_file=/etc/tsforge/study-db.cnf")
    check_url("sqlite:////tmp/study.db")


def test_the_study_record_is_read_as_untrusted(tmp_path):
    search = load_search("mine", write_search(tmp_path, "mine", SPACE))
    record = new_record(tmp_path, "mine", search, ["data.horizon=12"], [])
    write_record(tmp_path, record)
    assert read_record(tmp_path)["overrides"] == ["data.horizon=12"]
    same_space(read_record(tmp_path), search, tmp_path)
    search.params["optim.lr"].high = 1.0
    with pytest.raises(UserError, match="other params"):
        same_space(read_record(tmp_path), search, tmp_path)
    for bad in ({**record, "overrides": ["--config-dir=/etc"]}, {**record, "space": []},
                {k: v for k, v in record.items() if k != "study_name"}):  # fmt: skip
        (tmp_path / "study.json").write_text(json.dumps(bad))
        with pytest.raises(UserError, match="study.json"):
            read_record(tmp_path)


def test_a_recorded_search_keeps_its_params_in_order(tmp_path):
    """study.json is written with sorted keys; a condition still follows its parameter."""
    from dataclasses import asdict

    from tsforge.tune.study import search_of

    search = load_search("cond", write_search(tmp_path, "cond", """
params:
  model: {type: choice, choices: [nhits, dlinear]}
  a.b: {type: float, low: 0.0, high: 1.0, when: {model: nhits}}
"""))
    record = new_record(tmp_path, "cond", search, [], [])
    record.update(search_config=asdict(search), param_order=list(search.params))
    write_record(tmp_path, record)
    again = search_of(read_record(tmp_path), tmp_path)
    assert list(again.params) == ["model", "a.b"]
