"""Shared fixtures and helpers: a tiny sample dataset, a tiny model configuration and its builders,
environments without the model's variables, readers of run logs, a way to run the script, and a way
to run a function on several gloo ranks. Test files import the plain helpers with
`from conftest import ...`. train_gpt is imported where it is used, not here: a file that does not
need it (test_summarize.py) still runs while train_gpt.py cannot be imported."""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

if TYPE_CHECKING:
    import train_gpt as tg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_tool(relative_path: str, name: str):
    """Imports a script of the repo (e.g. data/make_sample.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def make_sample():
    """data/make_sample.py as a module, loaded once: the sample builder and the shard writer."""
    return load_tool("data/make_sample.py", "make_sample")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Speed only: the tests' tiny matmuls are far faster on one OpenMP thread than on two, which
    mostly synchronise (and stall badly when the 2-core machine is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- the tiny configuration

TINY_VOCAB = 512
TINY_TOKENIZER = f"sample_{TINY_VOCAB}_bpe.model"  # in tiny_data, beside the shards

# A model of the record's topology at toy size: 4 blocks (2 encoder, 2 decoder), XSA on the last 2,
# value embeddings on blocks 2 and 3, bigram hash, smear gate, partial RoPE, GQA 2:1. BIGRAM_DIM and
# PASSTHROUGH_MAX_NUMEL make its artifact quantise the same tensors as the full-size model's.
TINY_CONFIG = dict(
    VOCAB_SIZE=str(TINY_VOCAB), NUM_LAYERS="4", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1",
    ROPE_DIMS="8", XSA_LAST_N="2", VE_LAYERS="2,3", VE_DIM="16", BIGRAM_VOCAB_SIZE="256", BIGRAM_DIM="8",
    TRAIN_SEQ_LEN="32", EVAL_SEQ_LEN="32", EVAL_STRIDE="8", TRAIN_BATCH_TOKENS="512", VAL_BATCH_SIZE="2048",
    ITERATIONS="12", WARMDOWN_ITERS="6", MAX_WALLCLOCK_SECONDS="0", WARMUP_STEPS="2", VAL_LOSS_EVERY="0",
    TRAIN_LOG_EVERY="1", MUON_MOMENTUM_WARMUP_STEPS="5", SWA_EVERY="2", TTT_BURST_STEPS="3",
    TTT_CHUNK_TOKENS="256", EMA_DECAY="0.5", COMPILE="0", PASSTHROUGH_MAX_NUMEL="256",
)
TINY = {k.lower(): v for k, v in TINY_CONFIG.items()}  # the same, as Hyperparameters keyword arguments
# The tiny evaluation geometry: window length, sliding stride, TTT chunk (32, 8, 256 targets).
SEQ_LEN, STRIDE, CHUNK = int(TINY["eval_seq_len"]), int(TINY["eval_stride"]), int(TINY["ttt_chunk_tokens"])

CPU = torch.device("cpu")


def __getattr__(name: str):
    """ONE: the Runtime of one process on the CPU, no process group (built on first import)."""
    if name == "ONE":
        import train_gpt as tg
        return tg.Runtime(0, 1, CPU)
    raise AttributeError(f"module 'conftest' has no attribute {name!r}")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A directory with fineweb_train_00000{0,1}.bin, fineweb_val_000000.bin and sample_512_bpe.model
    (byte fallback on), built by data/make_sample.py from a slice of the stdlib docstrings."""
    out = tmp_path_factory.mktemp("tiny_data")
    make_sample().build_sample(out, vocab_size=TINY_VOCAB, max_chars=150_000)
    return out


def tiny_run_env(data: Path, **overrides) -> dict:
    """The environment of a tiny run (TINY_CONFIG, RUN_ID tiny) on the data directory `data`, whose
    sample_512_bpe.model is the tokenizer; overrides on top."""
    return {**TINY_CONFIG, "DATA_PATH": str(data), "TOKENIZER_PATH": str(data / TINY_TOKENIZER), "RUN_ID": "tiny",
            **overrides}


def write_shard(path, tokens):
    """A shard in the challenge format (the writer of data/make_sample.py), written as train_gpt writes files."""
    import train_gpt as tg
    tg.atomic_write({path: make_sample().shard_bytes(tokens)})


# ----------------------------------------------------------------------------- environments

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def model_env_names() -> set[str]:
    """The environment variables the model reads: every hyperparameter's name in upper case."""
    import train_gpt as tg
    return {name.upper() for name in tg.Hyperparameters.defaults()}


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict) -> dict:
    """Sets env on os.environ through monkeypatch, torchrun's variables removed first; returns env."""
    for key in TORCHRUN_VARS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@contextmanager
def model_env_removed():
    """os.environ without the model's or torchrun's variables while inside; yields the MonkeyPatch."""
    with pytest.MonkeyPatch.context() as patch:
        for name in model_env_names() | set(TORCHRUN_VARS):
            patch.delenv(name, raising=False)
        yield patch


@pytest.fixture
def clean_env():
    """No hyperparameter (or torchrun) variable in the environment; the MonkeyPatch to set some."""
    with model_env_removed() as patch:
        yield patch


def clean_environ(**overrides) -> dict:
    """For a subprocess: os.environ without any hyperparameter or torchrun variable, the directory of
    this interpreter first on PATH (`python` = this interpreter), plus overrides."""
    drop = model_env_names() | set(TORCHRUN_VARS) | {"NPROC"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(overrides)
    return env


@pytest.fixture
def tiny_env(tiny_data, tmp_path, monkeypatch) -> dict:
    """The environment of a tiny run on tiny_data, applied to os.environ and returned; cwd is tmp_path
    (the run writes logs/ there). Variables of torchrun are removed."""
    env = apply_env(monkeypatch, tiny_run_env(tiny_data))
    monkeypatch.chdir(tmp_path)
    return env


def run_and_reread(monkeypatch: pytest.MonkeyPatch, **env) -> list[str]:
    """A tiny run through main() with these variables (in tiny_env's directory), then EVAL_ARTIFACT
    on the artifact it wrote; asserts both give the same roundtrip line. Returns the run's log lines."""
    import train_gpt as tg
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    tg.main()
    lines = run_lines(f"logs/{os.environ['RUN_ID']}.txt")
    roundtrip = one(lines, r"final_int6_roundtrip_exact val_loss:[\d.]+ val_bpb:[\d.]+")[0]
    monkeypatch.setenv("EVAL_ARTIFACT", "final_model.int6.ptz")
    monkeypatch.setenv("RUN_ID", "reread")
    tg.main()
    assert one(run_lines("logs/reread.txt"), r"final_int6_roundtrip_exact val_loss:[\d.]+ val_bpb:[\d.]+")[0] == roundtrip
    return lines


GOLDEN = Path(__file__).parent / "data" / "golden.json"
GOLDEN_LINE = re.compile(r"^(step:\d+/\d+ (?:train_loss|val_loss):\S+|DIAGNOSTIC \S+ val_loss:\S+ val_bpb:\S+|\w+_exact .*)")
GOLDEN_NUMBER = re.compile(r"\d+\.(\d+)")
# How far a figure may move from the stored one, by the decimals it is printed with. Another processor
# sums in another order (other vector widths, other BLAS kernels): on two AMD EPYC machines with
# AVX-512 the tiny run's figures differed by one unit of the 8th decimal (5.27734438 against
# 5.27734439), the same size as the 2-process run against the 1-process one (at most 6e-7,
# test_smoke.py). So: the 4-decimal lines one printed unit plus slack, the 8-decimal `_exact` lines
# 2e-5 (30x the largest difference measured). A change of the default path moves them by 1e-3 and
# more (test_smoke.py breaks one on purpose).
GOLDEN_TOLERANCE = {4: 1.5e-4, 8: 2e-5}


def golden_differences(name: str, log_lines: list[str]) -> list[str]:
    """The figures of a run (training losses, evaluations, DIAGNOSTIC and every _exact line, timings cut
    off) that differ from those stored under name in tests/data/golden.json beyond GOLDEN_TOLERANCE, as
    'stored | found' lines; a line of another shape, or another count of lines, is a difference too. The
    stored figures were written by the default path before the options existed, so an option switched
    off that changes anything shows here. UPDATE_GOLDEN=1 rewrites the entry instead (only for a
    deliberate change of the default path, said in its commit)."""
    import json
    found = [m[1] for m in map(GOLDEN_LINE.match, log_lines) if m]
    stored = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("UPDATE_GOLDEN") == "1":
        stored[name] = dict(lines=found, torch=torch.__version__)
        GOLDEN.write_text(json.dumps(stored, indent=1) + "\n")
    assert found and name in stored, f"no golden figures for {name}: run with UPDATE_GOLDEN=1"
    expected = stored[name]["lines"]
    if len(found) != len(expected):
        return [f"{len(expected)} lines stored | {len(found)} found"]
    differences = []
    for want, got in zip(expected, found):
        numbers = [list(GOLDEN_NUMBER.finditer(line)) for line in (want, got)]
        close = GOLDEN_NUMBER.sub("#", want) == GOLDEN_NUMBER.sub("#", got) and all(
            len(a[1]) == len(b[1]) and abs(float(a[0]) - float(b[0])) <= GOLDEN_TOLERANCE[len(a[1])] for a, b in zip(*numbers))
        if not close:
            differences.append(f"{want} | {got}")
    return differences


def check_golden(name: str, log_lines: list[str]):
    """Asserts that a run's figures are those stored under name, within GOLDEN_TOLERANCE."""
    differences = golden_differences(name, log_lines)
    assert not differences, "figures differ from tests/data/golden.json (stored | found):\n" + "\n".join(differences)


# ----------------------------------------------------------------------------- hyperparameters and models

def make_args(base: dict | None = None, **overrides) -> tg.Hyperparameters:
    """Hyperparameters read with no model variable in the environment: the defaults, then base
    (e.g. TINY), then overrides (strings or typed values)."""
    import train_gpt as tg
    with model_env_removed():
        return tg.Hyperparameters(**{**(base or {}), **overrides})


def tiny_args(**overrides) -> tg.Hyperparameters:
    """The tiny configuration's hyperparameters, with overrides."""
    return make_args(TINY, **overrides)


def filled_model(args: tg.Hyperparameters, seed: int = 1, scale: float = 0.2, also=()) -> tg.GPT:
    """build_model(args) whose all-zero parameters (output projections, bigram table, smear gate),
    and the parameters named in `also`, are replaced by randn x scale (generator seeded with seed),
    so that every weight matters."""
    import train_gpt as tg
    model = tg.build_model(args)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.any() or name in also:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def scoring_model(seed: int = 1) -> tg.GPT:
    """The tiny model made non-trivial for evaluations, in eval mode: zero-initialised tensors and
    tok_emb filled with large random values, so that every target's loss depends on its context."""
    return filled_model(tiny_args(seed=seed), seed, scale=0.5, also=("tok_emb.weight",)).eval()


def load_inputs(tiny_data: Path, n_targets: int):
    """The first n_targets targets of tiny_data's validation tokens (n_targets + 1 tokens), and the
    byte counts of its tokenizer."""
    import train_gpt as tg
    token_bytes = tg.TokenBytes(tg.load_tokenizer(tiny_data / TINY_TOKENIZER, TINY_VOCAB))
    val = tg.load_validation_tokens(tg.list_shards(tiny_data, "val"), SEQ_LEN)
    assert val.numel() > n_targets
    return val[:n_targets + 1].clone(), token_bytes


# ----------------------------------------------------------------------------- run logs

RULE = "=" * 100  # the log's separators around the versions; the run's own lines follow the last one


def run_lines(path: Path) -> list[str]:
    """The lines of the run log at path after the embedded source and versions (recipe §8)."""
    path = Path(path)
    assert path.is_file(), f"no log {path}"
    lines = path.read_text(encoding="utf-8").splitlines()
    rules = [i for i, line in enumerate(lines) if line == RULE]
    assert rules, f"{path}: no line of 100 '='"
    return lines[rules[-1] + 1:]


def index_of(lines: list[str], pattern: str) -> tuple[int, re.Match]:
    """The index and match of the one line that matches pattern in full."""
    found = [(i, m) for i, m in ((i, re.fullmatch(pattern, line)) for i, line in enumerate(lines)) if m]
    assert len(found) == 1, f"{pattern!r}: {len(found)} matching lines"
    return found[0]


def one(lines: list[str], pattern: str) -> re.Match:
    """The match of the one line that matches pattern in full."""
    return index_of(lines, pattern)[1]


# ----------------------------------------------------------------------------- running processes

def run_script(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a command (e.g. [sys.executable, train_gpt.py]) with env on top of os.environ."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.update(env)
    return subprocess.run(args, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def torchrun_cmd() -> list[str]:
    """torchrun, or the module it runs where the script is not on PATH."""
    exe = shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


def _gloo_rank(rank, fn, world_size, tmp, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(f"{tmp}/store", world_size), rank=rank, world_size=world_size)
    try:
        torch.save(fn(rank, world_size, *args), f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn, world_size: int, *args) -> list:
    """Runs fn(rank, world_size, *args) in world_size processes, each a rank of one gloo process group
    (a FileStore in a temporary directory, one thread per process); returns what each returned (saved
    with torch.save), by rank. The processes are forked where possible, so they inherit the imported
    torch (a spawned child spends ~10 s importing it): import what fn needs before calling this."""
    method = "fork" if "fork" in torch.multiprocessing.get_all_start_methods() else "spawn"
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.start_processes(_gloo_rank, args=(fn, world_size, tmp, args), nprocs=world_size,
                                              join=True, start_method=method)
        return [torch.load(f"{tmp}/rank{rank}.pt") for rank in range(world_size)]


# ----------------------------------------------------------------------------- the published tokenizer

FINEWEB_TOKENIZER_SKIP = "set FINEWEB_TOKENIZER to the published fineweb_1024_bpe.model to run this check"


def fineweb_tokenizer() -> Path:
    """The published fineweb_1024_bpe.model named by the environment variable FINEWEB_TOKENIZER. Called
    in a test: the test is skipped when the variable is unset, and fails when it names no file."""
    value = os.environ.get("FINEWEB_TOKENIZER", "")
    if not value:
        pytest.skip(FINEWEB_TOKENIZER_SKIP)
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"FINEWEB_TOKENIZER={value}: no such file (it must name the published fineweb_1024_bpe.model)")
    return path
