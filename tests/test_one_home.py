"""Each rule of the project is written in one module (a second copy drifts): the teacher rule, the DeepSpeed
launch flag, the splitmix64 constants and the n^alpha mixing law are spelled only in their home."""

from __future__ import annotations

import re

import pytest

from tests.test_layers import ROOT, project_modules

HOMES = {  # what the rule looks like in source -> the one module that may spell it
    r"distill_weight\s*>\s*0": "train/config.py",
    r"(environ|getenv)\W.*ACCELERATE_USE_DEEPSPEED": "train/config.py",  # a reading, not a message naming it
    r"0xBF58476D1CE4E5B9": "gte_model/core/text.py",
    r"\*\*\s*(float\()?(self\.)?alpha\b": "gte_model/core/mixing.py",
}


@pytest.mark.parametrize("pattern", sorted(HOMES))
def test_each_rule_is_written_in_its_one_home(pattern):
    spelled = sorted(str(path.relative_to(ROOT)) for path in project_modules().values()
                     if re.search(pattern, path.read_text()))
    assert spelled == [HOMES[pattern]]


def test_each_gte_command_is_served_by_its_own_module():
    """A command's main sits beside the code it runs, not in a module shared by several command lines."""
    from train.app.cli import COMMANDS

    modules = [target.partition(":")[0] for target in COMMANDS.values()]
    assert sorted(m for m in set(modules) if modules.count(m) > 1) == []
    assert set(modules) <= set(project_modules())
