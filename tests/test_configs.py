"""configs/: the record's configuration stated in full, and every configuration file readable by
train_gpt.py's Hyperparameters."""
import functools
import re
from pathlib import Path

import pytest

import train_gpt as tg
from conftest import REPO, load_tool

NOT_CONFIGURATION = {"run_id", "seed", "eval_artifact"}  # they name a run


def read(path: Path) -> dict:
    """A configuration file's hyperparameters (scripts/run_seeds.sh's own variables, such as SEEDS, left out)."""
    env = load_tool("scripts/proxy.py", "proxy").read_env_file(path)
    return {k: v for k, v in env.items() if k not in tg.OTHER_VARIABLES}


@functools.cache
def packed_code_bytes() -> int:
    """The bytes of train_gpt.py packed as scripts/run_seeds.sh submits and runs it (scripts/pack.py)."""
    pack = load_tool("scripts/pack.py", "pack")
    return len(pack.packed_text(pack.minify(pack.read_source(REPO / "train_gpt.py"))).encode())


def test_record_env_states_every_hyperparameter_at_its_default():
    env = read(REPO / "configs" / "record.env")
    assert set(env) == {name.upper() for name in tg.Hyperparameters.defaults()} - {n.upper() for n in NOT_CONFIGURATION}
    args = tg.Hyperparameters(**{k.lower(): v for k, v in env.items()}, run_id="record")
    assert {k: v for k, v in vars(args).items() if k not in NOT_CONFIGURATION} == \
        {k: v for k, v in tg.Hyperparameters.defaults().items() if k not in NOT_CONFIGURATION}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.env")), ids=lambda p: p.name)
def test_every_configuration_is_valid_and_passes_the_check_at_start(path):
    """With the packed code it runs as (scripts/run_seeds.sh packs), every configuration's estimate passes the check at
    the start of a run: below the limit, or with FIT within its margin."""
    args = tg.Hyperparameters(**{k.lower(): v for k, v in read(path).items()}, run_id="config")
    estimate, _ = tg.estimate_size(tg.build_model(args).state_dict(), args)
    assert estimate + packed_code_bytes() < tg.SUBMISSION_LIMIT_BYTES * (1 + tg.FIT_MARGIN * args.fit)


def test_the_estimate_stated_in_beyond_env_is_its_own():
    """The size that configs/beyond.env states (in MB, to 0.01) is what the start of a run of the packed
    script with it estimates."""
    args = tg.Hyperparameters(**{k.lower(): v for k, v in read(REPO / "configs" / "beyond.env").items()}, run_id="config")
    estimate = tg.estimate_size(tg.build_model(args).state_dict(), args)[0] + packed_code_bytes()
    stated = re.search(r"Estimated at start: about ([\d.]+) MB with the packed code", (REPO / "configs" / "beyond.env").read_text())
    assert stated and abs(float(stated[1]) * 1e6 - estimate) < 0.005e6


def test_beyond_env_is_the_combination_measured_on_the_proxy():
    """configs/beyond.env sets exactly the options of the combination arm in docs/proxy.md (less the
    proxy's own step counts, scaled to its length), to the same values."""
    proxy = load_tool("scripts/proxy.py", "proxy")
    env = read(REPO / "configs" / "beyond.env")
    arm = re.search(r"--arm (beyond:\S+?)[`\s]", (REPO / "docs" / "proxy.md").read_text())
    assert arm, "docs/proxy.md shows no --arm beyond:... command"
    _, measured = proxy.parse_arm(arm[1])
    assert {k: v for k, v in measured.items() if k not in ("COPRIME_RAMP_STEPS", "RECUR_STEP")} == env
