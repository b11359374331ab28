"""Shared fixtures: a tiny sample dataset, a tiny model configuration, and a way to run the script."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"  # the project never needs it; some checks use it when present


def load_tool(relative_path: str, name: str):
    """Imports a script of the repo (e.g. data/make_sample.py) as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY_VOCAB = 512


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Speed only: the tests' tiny matmuls are far faster on one OpenMP thread than on two, which
    mostly synchronise (and stall badly when the 2-core machine is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# A model of the record's topology at toy size: 4 blocks (2 encoder, 2 decoder), XSA on the last 2,
# value embeddings on blocks 2 and 3, bigram hash, smear gate, partial RoPE, GQA 2:1.
TINY_CONFIG = dict(
    VOCAB_SIZE=str(TINY_VOCAB), NUM_LAYERS="4", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1",
    ROPE_DIMS="8", XSA_LAST_N="2", VE_LAYERS="2,3", VE_DIM="16", BIGRAM_VOCAB_SIZE="256", BIGRAM_DIM="16",
    TRAIN_SEQ_LEN="32", EVAL_SEQ_LEN="32", EVAL_STRIDE="8", TRAIN_BATCH_TOKENS="512", VAL_BATCH_SIZE="2048",
    ITERATIONS="12", WARMDOWN_ITERS="6", MAX_WALLCLOCK_SECONDS="0", WARMUP_STEPS="2", VAL_LOSS_EVERY="0",
    TRAIN_LOG_EVERY="1", MUON_MOMENTUM_WARMUP_STEPS="5", SWA_EVERY="2", TTT_BURST_STEPS="3",
    TTT_CHUNK_TOKENS="256", EMA_DECAY="0.5", COMPILE="0",
)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A directory with fineweb_train_00000{0,1}.bin, fineweb_val_000000.bin and sample_512_bpe.model
    (byte fallback on), built by data/make_sample.py from a slice of the stdlib docstrings."""
    out = tmp_path_factory.mktemp("tiny_data")
    load_tool("data/make_sample.py", "make_sample").build_sample(out, vocab_size=TINY_VOCAB, max_chars=150_000)
    return out


@pytest.fixture
def tiny_env(tiny_data, tmp_path, monkeypatch) -> dict:
    """The environment of a tiny run on tiny_data, applied to os.environ and returned; cwd is tmp_path
    (the run writes logs/ there). Variables of torchrun are removed."""
    env = dict(TINY_CONFIG, DATA_PATH=str(tiny_data), TOKENIZER_PATH=str(tiny_data / f"sample_{TINY_VOCAB}_bpe.model"),
               RUN_ID="tiny")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


def run_script(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a command (e.g. [sys.executable, train_gpt.py]) with env on top of os.environ."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    full_env.update(env)
    return subprocess.run(args, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
