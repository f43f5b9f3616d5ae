"""Config loading (issue 21): a string field gets the text as written, no `${...}` interpolation, no duplicate keys,
bounded YAML, whole numbers within 64 bits, and overrides into list entries, each a one-line ConfigError."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from gte_model.core.config import ConfigError, bounded, config_from_argv, dump_config, field_problems, load_config
from gte_model.core.config_yaml import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH


@dataclass
class Item:
    name: str = ""
    path: str = ""
    note: str | None = None


@dataclass
class Section:
    dir: str = "runs/x"
    prompt: str = ""
    steps: int = 10
    lr: float = 1e-3
    flag: bool = False


@dataclass
class Schema:
    run: Section = field(default_factory=Section)
    models: list[str] = field(default_factory=list)
    dims: list[int] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    caps: dict[str, int] = field(default_factory=dict)
    label: str | None = None
    seed: int = 0


def _load(*overrides: str, text: str | None = None, tmp_path=None) -> Schema:
    path = None
    if text is not None:
        path = tmp_path / "c.yaml"
        path.write_text(text)
    return load_config(Schema, path, list(overrides))


def test_a_string_override_gets_the_text_after_the_equals_sign():
    assert _load("run.dir=2024.10").run.dir == "2024.10"
    assert _load("run.dir=0123").run.dir == "0123"
    assert _load("run.dir=yes").run.dir == "yes"
    assert _load("run.prompt= query: ").run.prompt == " query: "
    assert _load("run.prompt=a # b").run.prompt == "a # b"
    assert _load("run.dir=''").run.dir == "" and _load("run.dir=").run.dir == ""
    assert _load('run.prompt="  x  "').run.prompt == "  x  "


def test_a_string_field_in_a_file_keeps_the_text_as_written(tmp_path):
    cfg = _load(text="run:\n  dir: 2024.10\n  prompt: yes\nmodels: [a, 2024.10, on, 0123]\n", tmp_path=tmp_path)
    assert (cfg.run.dir, cfg.run.prompt, cfg.models) == ("2024.10", "yes", ["a", "2024.10", "on", "0123"])


def test_other_fields_still_read_yaml_and_whole_numbers_are_decimal():
    cfg = _load("run.steps=0123", "run.lr=1e-4", "run.flag=true", "dims=[64, 32]", "models=[a, 2024.10]",
                "items=[{name: a, path: 2024.10}]", "caps={x: 5}")
    assert (cfg.run.steps, cfg.run.lr, cfg.run.flag, cfg.dims) == (123, 1e-4, True, [64, 32])
    assert cfg.models == ["a", "2024.10"] and cfg.items == [Item("a", "2024.10")] and cfg.caps == {"x": 5}


def test_null_unsets_only_a_field_that_may_be_unset():
    assert _load("label=x", "label=null").label is None
    assert _load("run.dir=null").run.dir == "null"
    with pytest.raises(ConfigError, match=r"run\.steps"):
        _load("run.steps=many")


@pytest.mark.parametrize("value", ["${oc.env:GTE_TEST_SECRET}", "pre-${oc.env:GTE_TEST_SECRET}", "${run.dir}"])
def test_interpolation_is_refused_and_no_environment_value_is_read(tmp_path, monkeypatch, value):
    monkeypatch.setenv("GTE_TEST_SECRET", "s3cr3t-key")
    for kwargs, overrides in (({}, [f"run.dir={value}"]), ({}, [f"models=['{value}']"]),
                              ({"text": f"run:\n  prompt: '{value}'\n", "tmp_path": tmp_path}, [])):
        with pytest.raises(ConfigError, match=r"interpolation is not supported") as err:
            _load(*overrides, **kwargs)
        assert "s3cr3t-key" not in str(err.value)


def test_a_duplicate_key_is_refused_naming_file_line_and_key(tmp_path):
    text = "run:\n  steps: 5\n  lr: 0.1\nseed: 1\nrun:\n  steps: 9\n"
    with pytest.raises(ConfigError) as err:
        _load(text=text, tmp_path=tmp_path)
    assert str(err.value) == (f"{tmp_path / 'c.yaml'}:5: key run appears twice (first at line 1); YAML would "
                              "silently keep only the last; merge them into one")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: key run\.lr appears twice"):
        _load(text="run:\n  lr: 0.1\n  lr: 0.2\n", tmp_path=tmp_path)


def test_aliases_merge_keys_and_tags_are_refused_quickly(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"c\.yaml:2: YAML aliases \(\*name\) are not supported"):
        _load(text=bomb, tmp_path=tmp_path)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ConfigError, match=r"c\.yaml:2: YAML merge keys"):
        _load(text="run:\n  <<: {steps: 3}\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match=r"c\.yaml:1: seed: could not determine a constructor"):
        _load(text="seed: !!python/object:os.system 1\n", tmp_path=tmp_path)


def test_an_oversized_crowded_or_deep_config_is_refused_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: [\d,]+ bytes, more than a config may hold"):
        _load(text="models: [" + "a, " * MAX_CONFIG_BYTES + "]\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match=r"c\.yaml:1: more than 10,000 values"):
        _load(text="dims: [" + "1, " * 20_000 + "]\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match=rf"nested more than {MAX_CONFIG_DEPTH} levels"):
        _load(text="models: " + "[" * 5000 + "]" * 5000 + "\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match=r"override 'dims=\[\[\[.*nested more than"):
        _load("dims=" + "[" * 5000 + "]" * 5000)


def test_a_whole_number_beyond_64_bits_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"seed=1234567890123456789012345: out of range") as err:
        _load("seed=1234567890123456789012345", "dims=[1, 99999999999999999999]")
    assert "dims.1=99999999999999999999: out of range" in str(err.value)
    assert _load(f"seed={2**63 - 1}").seed == 2**63 - 1


def test_an_override_into_a_list_entry_changes_it_or_names_the_list():
    cfg = _load("items=[{name: a, path: x}, {name: b, path: y}]", "items.1.path=z", "items.0.note=n")
    assert cfg.items == [Item("a", "x", "n"), Item("b", "z")]
    for overrides, message in (
        (["items.0.path=x"], r"items\.0: items has no entries; set the whole list .* items=\[\.\.\.\]"),
        (["items=[{name: a}]", "items.1.path=x"], r"items\.1: items has entries items\.0 to items\.0"),
        (["items=[{name: a}]", "items.first.path=x"], r"items\.first: items has entries"),
        (["items=[{name: a}]", "items.0.paht=x"], r"unknown key items\.0\.paht; did you mean items\.0\.path\?"),
        (["items=[{name: a, paht: x}]"], r"items\.0\.paht"),
        (["items=5"], r"override 'items=5'"),
        (["run=x"], r"override 'run=x'"),
        (["run..dir=x"], r"is not key=value"),
    ):
        with pytest.raises(ConfigError, match=message):
            _load(*overrides)


def test_the_saved_config_reads_back_as_the_same_config(tmp_path):
    cfg = _load("run.dir=2024.10", "run.prompt= yes ", "models=[on, '0123']", "label=null")
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    assert load_config(Schema, tmp_path / "c.yaml") == cfg


@dataclass
class Part:
    size: int = bounded(1, ge=1)
    kind: str = bounded("a", choices=("a", "b"), hint="a = one, b = the other")


@dataclass
class Bounded:
    rate: float = bounded(0.5, gt=0, le=1, hint="0.5 is usual")
    scale: float = bounded(1.0, ge=0)
    part: Part = field(default_factory=Part)
    parts: list[Part] = field(default_factory=list)
    limit: int | None = bounded(None, ge=0)

    def validate(self) -> list[str]:
        return field_problems(self)


def test_bounds_declared_on_fields_report_every_field_at_once_in_override_spelling():
    assert load_config(Bounded, None, ["parts=[{size: 3}]"]).parts == [Part(3)]
    with pytest.raises(ConfigError) as err:
        load_config(Bounded, None, ["rate=0", "scale=.inf", "part.size=0", "part.kind=c",
                                    "parts=[{size: 2}, {size: -1, kind: b}]", "limit=-2"])
    assert str(err.value).splitlines()[1:] == [
        "  rate=0.0: must be a finite number in (0, 1] (0.5 is usual)",
        "  scale=inf: must be a finite number >= 0",
        "  part.size=0: must be >= 1",
        "  part.kind=c: choose one of a, b (a = one, b = the other)",
        "  parts.1.size=-1: must be >= 1",
        "  limit=-2: must be >= 0",
    ]
    assert field_problems(Bounded(rate=float("nan"))) == ["rate=nan: must be a finite number in (0, 1] (0.5 is usual)"]


@pytest.mark.parametrize("override, message", [
    ("models=abc", "models: takes a list, not a value; write [a, b] (e.g. models=[abc])"),
    ("models=[[a]]", "models.0: takes a value, not a list"),
    ("run=x", "run: takes a mapping, not a value"),
    ("caps=[1]", "caps: takes a mapping, not a list"),
    ("run.steps=12:30", "run.steps=12:30: YAML 1.1 reads this as a base-60 number"),
    ("run.lr=" + "9" * 400, "run.lr: int too large to convert to float"),
])
def test_a_value_of_the_wrong_shape_or_size_is_one_problem_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        _load(override)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 2


def test_a_flag_given_to_a_config_command_names_the_key_to_write_instead():
    with pytest.raises(ConfigError, match=r"--steps: this command takes key=value overrides, not flags; write "
                                          r"run\.steps=VALUE"):
        config_from_argv(Schema, ["--steps", "3"], "usage")
    with pytest.raises(ConfigError, match=r"--nope: .* write KEY=VALUE"):
        config_from_argv(Schema, ["c.yaml", "--nope"], "usage")
