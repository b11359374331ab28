"""Bad input stops train_gpt.py before training with exit status 1 and ONE line `error: ...` on
stderr that names the problem (recipe §2, §8), never a traceback.

One case of each kind of check (data directory, shards, header fields, size, tokenizer, world size,
environment values) runs the real script as a subprocess: the `__main__` guard is what turns
InputError into the one-line message. The subprocesses are started by one module fixture, three at
a time, so the file stays fast. Further variants of the same checks, and the invalid environment
values, are checked in-process (the InputError and its message), which is much cheaper.
"""
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import train_gpt
from conftest import (REPO, TINY_CONFIG, TINY_TOKENIZER as TOKENIZER, TINY_VOCAB, apply_env, run_script, tiny_run_env,
                      write_shard)

SCRIPT = REPO / "train_gpt.py"
TRAIN0, TRAIN1, VAL0 = "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"


# ----------------------------------------------------------------------------- case builders
# Each builder gets (data_dir, env) -- a private copy of tiny_data and the run's environment -- and
# breaks one thing. It returns the fragments the single error line must contain.

def _set_header_field(path: Path, index: int, value: int):
    data = bytearray(path.read_bytes())
    data[4 * index:4 * index + 4] = np.array([value], dtype="<i4").tobytes()
    path.write_bytes(bytes(data))


def missing_data_dir(d, env):
    env["DATA_PATH"] = str(d / "no_such_dir")
    return ["DATA_PATH", "no_such_dir"]


def no_train_shards(d, env):
    for f in d.glob("fineweb_train_*.bin"):
        f.unlink()
    return ["fineweb_train_", str(d)]


def no_val_shards(d, env):
    (d / VAL0).unlink()
    return ["fineweb_val_", str(d)]


def bad_magic(d, env):
    _set_header_field(d / TRAIN1, 0, 12345)
    return [str(d / TRAIN1), "magic", "12345"]


def bad_version(d, env):
    _set_header_field(d / VAL0, 1, 2)
    return [str(d / VAL0), "version"]


def truncated_shard(d, env):
    path = d / TRAIN0
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # the header still promises the full count
    return [str(path), str(len(data) - 3)]


def oversized_shard(d, env):
    path = d / VAL0
    data = path.read_bytes()
    path.write_bytes(data + b"\0\0")  # one token more than the header says
    return [str(path), str(len(data) + 2)]


def shorter_than_header(d, env):
    path = d / TRAIN1
    path.write_bytes(path.read_bytes()[:100])
    return [str(path), "100"]


def empty_val_shard(d, env):
    write_shard(d / VAL0, np.zeros(0, dtype=np.uint16))
    return ["fineweb_val_", "no tokens"]


def val_shorter_than_a_sequence(d, env):
    write_shard(d / VAL0, np.ones(10, dtype=np.uint16))  # TRAIN/EVAL_SEQ_LEN are 32
    return ["validation", "10 tokens"]


def vocab_mismatch(d, env):
    env["VOCAB_SIZE"] = "1024"
    return ["VOCAB_SIZE", "1024", str(TINY_VOCAB)]


def missing_tokenizer(d, env):
    (d / TOKENIZER).unlink()
    return ["TOKENIZER_PATH", TOKENIZER]


def tokenizer_not_a_model(d, env):
    (d / TOKENIZER).write_bytes(b"this is not a sentencepiece model\n" * 10)
    return ["TOKENIZER_PATH", TOKENIZER]


def world_size_3(d, env):
    env.update(WORLD_SIZE="3", RANK="0", LOCAL_RANK="0")
    return ["WORLD_SIZE", "3", "divide 8"]


def num_layers_abc(d, env):
    env["NUM_LAYERS"] = "abc"
    return ["NUM_LAYERS", "abc"]


def tie_embeddings_0(d, env):
    env["TIE_EMBEDDINGS"] = "0"
    return ["TIE_EMBEDDINGS"]


# Run as subprocesses: each kind of check once, through the real exit path.
CASES = [missing_data_dir, no_train_shards, no_val_shards, bad_magic, bad_version, truncated_shard, vocab_mismatch,
         missing_tokenizer, world_size_3, num_layers_abc, tie_embeddings_0]
# Variants of the same checks, run in-process on the script's pre-training checks (cheaper).
IN_PROCESS_CASES = [oversized_shard, shorter_than_header, empty_val_shard, val_shorter_than_a_sequence,
                    tokenizer_not_a_model]


@pytest.fixture(scope="module")
def cli_results(tiny_data, tmp_path_factory) -> dict:
    """Runs every case of CASES as a subprocess (3 at a time); name -> (result, fragments, cwd)."""
    jobs = {}
    for case in CASES:
        root = tmp_path_factory.mktemp(f"cli_{case.__name__}")
        data = root / "data"
        shutil.copytree(tiny_data, data)
        env = tiny_run_env(data, RUN_ID=f"cli_{case.__name__}", OMP_NUM_THREADS="1")
        fragments = case(data, env)
        jobs[case.__name__] = (env, root, fragments)

    def run(name):
        env, root, _ = jobs[name]
        return run_script([sys.executable, str(SCRIPT)], env, cwd=root, timeout=120)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(jobs, pool.map(run, jobs)))
    return {name: (results[name], jobs[name][2], jobs[name][1]) for name in jobs}


def assert_one_line_error(result: subprocess.CompletedProcess, fragments: list[str]) -> str:
    out = f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr + result.stdout, out
    assert result.returncode == 1, out
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, out
    line = lines[0]
    assert line.startswith("error: ") and len(line) > len("error: ") + 10, out
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.mark.parametrize("name", [c.__name__ for c in CASES])
def test_bad_input_is_one_line_error(cli_results, name):
    result, fragments, _ = cli_results[name]
    assert_one_line_error(result, fragments)


def test_bad_input_stops_before_training(cli_results):
    """No case gets as far as training: no training line, no diagnostic, no artifact in its cwd."""
    for name, (result, _, root) in cli_results.items():
        assert "train_loss" not in result.stdout and "DIAGNOSTIC" not in result.stdout, name
        assert not list(root.glob("final_model*")), name
        for log in (root / "logs").glob("*.txt"):
            text = log.read_text(encoding="utf-8")
            assert "\nstep:" not in text and "\nDIAGNOSTIC" not in text, (name, log)


def preflight():
    """What main() checks before it builds the model, in its order."""
    args = train_gpt.Hyperparameters()
    rt = train_gpt.setup_runtime()
    train_gpt.load_tokenizer(args.tokenizer_path, args.vocab_size)
    val = train_gpt.load_validation_tokens(train_gpt.list_shards(args.data_path, "val"),
                                           max(args.train_seq_len, args.eval_seq_len))
    train = train_gpt.list_shards(args.data_path, "train")
    return args, rt, val, train


@pytest.fixture
def broken_env(tiny_data, tiny_env, tmp_path, monkeypatch):
    """tiny_env on a private copy of tiny_data; call it with a case builder to break one thing."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)

    def apply(case):
        env = tiny_run_env(data)
        fragments = case(data, env)
        apply_env(monkeypatch, env)
        return fragments
    return apply


@pytest.mark.parametrize("case", IN_PROCESS_CASES, ids=lambda c: c.__name__)
def test_bad_input_raises_input_error(broken_env, case):
    fragments = broken_env(case)
    with pytest.raises(train_gpt.InputError) as info:
        preflight()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_good_input_passes_the_same_checks(broken_env):
    """Control: the unbroken tiny data and environment pass every check the cases above break, so
    each error really comes from the one thing its case changed."""
    broken_env(lambda d, env: [])
    args, rt, val, train = preflight()
    assert rt.world_size == 1 and rt.grad_accum_steps == 8
    assert len(train) == 2 and (val.numel() - 1) % 32 == 0 and val.numel() > 32


# ----------------------------------------------------------------------------- invalid environment values

BAD_VALUES = [
    ("NUM_LAYERS", "1.5"), ("NUM_LAYERS", "0"), ("WEIGHT_AVG", "foo"),
    ("EVAL_STRIDE", "-1"), ("EVAL_STRIDE", "64"),  # exceeds EVAL_SEQ_LEN=32
    ("TIE_EMBEDDINGS", "maybe"), ("MATRIX_LR", "nan"), ("MATRIX_LR", "-0.1"),
    ("EMA_DECAY", "1"), ("SEED", "x"), ("VE_LAYERS", "2,9"), ("VE_LAYERS", "a,b"), ("RUN_ID", "a/b"),
    ("VOCAB_SIZE", "70000"), ("TRAIN_BATCH_TOKENS", "100"), ("COMPILE", "yes"), ("NUM_KV_HEADS", "3"),
]


@pytest.mark.parametrize("name,value", BAD_VALUES)
def test_invalid_env_value_names_the_variable(tiny_env, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(train_gpt.InputError) as info:
        train_gpt.Hyperparameters()
    message = str(info.value)
    assert name in message, message
    assert "\n" not in message, message


def test_valid_tiny_env_is_accepted(tiny_env):
    args = train_gpt.Hyperparameters()
    assert args.num_layers == int(TINY_CONFIG["NUM_LAYERS"]) and args.eval_stride == int(TINY_CONFIG["EVAL_STRIDE"])
    assert args.weight_avg == "ema" and args.tie_embeddings is True
