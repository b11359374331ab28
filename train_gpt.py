"""Parameter golf: "Late Soft-Round QAT + Score-First Backward-Looking TTT" (docs/recipe.md §1-§8).

    torchrun --standalone --nproc_per_node=8 train_gpt.py    # the record's run on 8xH100
    python train_gpt.py                                      # one process: CPU or one GPU

Every knob is an environment variable (class Hyperparameters). The file reads top to bottom:
hyperparameters -> data -> bits per byte -> model -> optimisers -> training -> artifact ->
evaluation -> main(). Importing it has no side effects.
"""
from __future__ import annotations

import copy, difflib, io, itertools, json, math, os, re, shutil, signal, subprocess, sys, threading, time, uuid
from collections import deque
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn.functional as F
import zstandard
from torch import Tensor, nn

try:  # FlashAttention-3 on Hopper; PyTorch SDPA everywhere else
    from flash_attn_interface import flash_attn_func as flash_attn_3
except ImportError:
    flash_attn_3 = None

# ----------------------------------------------------------------------------- hyperparameters
MICRO_BATCHES = 8  # micro-batches per optimiser step: world_size x grad_accum_steps (the record's 8 GPUs x 1)

class RunError(Exception):
    """The run cannot go on: it stops with this one-line message, logged and printed (by rank 0), and exit_code."""
    exit_code = 1
class InputError(RunError):
    """Bad input (environment, data, tokenizer, artifact), found before it can cost a run."""
class Stopped(RunError):
    """A signal stopped the run: Ctrl-C (SIGINT), or SIGTERM (from torchrun when another rank failed, or a scheduler)."""
    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum
def need(ok, message: str, error: type[RunError] = InputError):
    """Stops the run with error(message) unless ok: every check of the input, and the run's own stops."""
    if not ok: raise error(message)

class Hyperparameters:
    """Every knob of a run (§8), the record's defaults: from upper-case environment variables (keyword args win); read-only."""
    # data and run
    data_path: str = "./data/datasets/fineweb10B_sp1024"
    tokenizer_path: str = "./data/tokenizers/fineweb_1024_bpe.model"
    run_id: str = ""  # empty: a fresh uuid
    seed: int = 1337
    compile: str = "auto"  # auto: torch.compile on CUDA only; 1 or 0 to force
    attention: str = "auto"  # auto: FlashAttention-3 where it imports, on CUDA; fa3 or sdpa to insist
    eval_artifact: str = ""  # path of a final_model.int6.ptz: skip training, evaluate it (§7)
    passthrough_max_numel: int = 65_536  # tensors this small stay fp16 in the artifact (§6)
    compressor: str = "zstd"  # zstd: level 22 (the record) | brotli: quality 11 over the byte-shuffled container
    allow_over_limit: bool = False  # 1: train even where the size estimate at start is over the 16,000,000-byte limit
    fit: bool = False  # 1: an artifact that would put the total at or over the limit is pruned until it fits (§6)
    # training length and batch
    iterations: int = 20_000
    max_wallclock_seconds: float = 600.0  # 0: no cap
    warmup_steps: int = 20
    warmdown_iters: int = 3500
    train_batch_tokens: int = 786_432
    train_seq_len: int = 2048
    train_log_every: int = 500
    loader: str = "stream"  # stream: the shards in order (the record) | coprime: each step from many shards | shuffled (§2)
    coprime_ramp_steps: int = 1800  # coprime: steps over which shards per step go 8 -> 64 and alpha 0.9 -> 0.5
    # evaluation
    val_batch_size: int = 524_288
    val_loss_every: int = 4000  # 0: only at the end
    val_tokens: int = 0  # > 0: evaluate on the first VAL_TOKENS targets only (a fixed subset; 0: all, the record)
    eval_seq_len: int = 2048
    eval_stride: int = 64
    # model (§4)
    vocab_size: int = 1024
    num_layers: int = 11
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: float = 3.0
    tie_embeddings: bool = True
    tied_embed_init_std: float = 0.005
    rope_base: float = 10000.0
    rope_dims: int = 16
    rope_reference_len: int = 1024  # longer sequences NTK-rescale RoPE's base (the SP8192 record: 2048, none at 2048)
    logit_softcap: float = 30.0
    qk_gain_init: float = 1.5
    ln_scale: bool = True
    xsa_last_n: int = 4
    parallel_from: int = 0  # > 0: blocks from this one on keep two residual lanes (a later record's; 0: off)
    recur_layers: tuple = ()  # consecutive blocks run a second time, with their own MLPs (a later record's; empty: off)
    recur_step: int = 3000  # the step at which those repeats switch on
    parallel_form: str = "lanes"  # lanes: two residual lanes | gptj: one stream, attention and MLP read the same input
    loop_layers: tuple = ()  # consecutive blocks run LOOP_PASSES times in a row, the same weights (SP8192; empty: off)
    loop_passes: int = 3
    loop_start_frac: float = 0.35  # the loop switches on at this fraction of the training clock (or of ITERATIONS)
    skip_gates: bool = False  # 1: each U-Net skip is mixed in through a learned sigmoid gate per channel (SP8192)
    bigram_enabled: bool = True
    smear_enabled: bool = True
    bigram_vocab_size: int = 3072
    bigram_dim: int = 128
    ve_enabled: bool = True
    ve_dim: int = 128
    ve_layers: tuple = (9, 10)
    # optimisers (§5)
    matrix_lr: float = 0.025
    tied_embed_lr: float = 0.035
    scalar_lr: float = 0.025
    muon_momentum: float = 0.99
    muon_momentum_warmup_start: float = 0.92
    muon_momentum_warmup_steps: int = 1500
    muon_backend_steps: int = 5
    muon_row_norm: bool = False  # 1: MuonEq-R, each row of the update direction normalised before Newton-Schulz (SP8192)
    muon_wd: float = 0.04
    adam_wd: float = 0.04
    embed_wd: float = -1.0  # AdamW weight decay of the embedding tables; < 0: ADAM_WD's
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.3
    warmdown_frac: float = 0.0  # > 0: the lr falls linearly to 0 over this last fraction of the training clock (SP8192)
    min_lr: float = 0.0  # with WARMDOWN_FRAC: the lr multiplier never falls below this
    # weight averaging, late QAT and the late burst (§5)
    weight_avg: str = "ema"  # ema | swa: the average applied after training
    ema_decay: float = 0.997
    swa_enabled: bool = True
    swa_every: int = 50
    swa_trigger: float = 0.2
    late_qat_threshold: float = 0.15
    soft_round_threshold: float = 0.02
    soft_round_tau: float = 0.1
    ttt_burst_enabled: bool = True
    ttt_burst_epochs: int = 2
    ttt_burst_lr_factor: float = 0.1
    ttt_burst_steps: int = 100
    ttt_burst_trigger: float = 0.2
    # artifact quantiser (§6)
    quant_method: str = "clip"  # clip: per-row clip search (the record) | gptq: full-Hessian GPTQ for the int6 matrices
    gptq_calibration: str = "train"  # train: training batches inside the wallclock | self: text the model generates
    gptq_sequences: int = 512  # calibration sequences of TRAIN_SEQ_LEN, shared out over ranks (docs/recipe.md §11)
    gptq_reserve_seconds: float = 14.0  # train calibration: training stops this much before MAX_WALLCLOCK_SECONDS
    int6_matrices: int = 0  # > 0 (with gptq): only this many int6 matrices, those of largest trace(H); the rest int5
    gptq_scales: str = "search"  # search: each row's best clip quantile | sdclip: k x std(row) (SP8192)
    sdclip_k_int6: float = 12.85
    sdclip_k_int8: float = 20.0
    gptq_embed: bool = False  # 1: GPTQ for the int8 embedding too, by the Hessian of the tied head's input (SP8192)
    # score-first test-time training (§7)
    ttt_enabled: bool = True
    ttt_lr: float = 0.002
    ttt_epochs: int = 3
    ttt_chunk_tokens: int = 32_768
    ttt_momentum: float = 0.9
    ttt_freeze_blocks: int = 0
    ttt_train_batch_seqs: int = 32
    ttt_grad_clip: float = 1.0

    def __init__(self, **overrides):
        for name, default in self.defaults().items():
            raw = overrides.pop(name, os.environ.get(name.upper()))
            object.__setattr__(self, name, default if raw is None else _parse(name.upper(), raw, type(default)))
        if overrides: raise TypeError(f"unknown hyperparameters: {sorted(overrides)}")
        if not self.run_id: object.__setattr__(self, "run_id", str(uuid.uuid4()))
        self._check()

    @classmethod
    def defaults(cls) -> dict:
        return {name: getattr(cls, name) for name in cls.__annotations__}

    def __setattr__(self, name, value=None):
        raise AttributeError("Hyperparameters are read-only: set the environment variable instead")
    __delattr__ = __setattr__

    @property
    def train_seconds(self) -> float:
        """The wallclock of the training loop: MAX_WALLCLOCK_SECONDS less the calibration's reserve."""
        reserve = self.gptq_reserve_seconds if self.quant_method == "gptq" and self.gptq_calibration == "train" else 0
        return max(self.max_wallclock_seconds - reserve, 0.0) if self.max_wallclock_seconds else 0.0

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    def _check(self):
        for name in ("vocab_size num_layers model_dim num_heads num_kv_heads train_seq_len eval_seq_len "
                     "train_batch_tokens val_batch_size eval_stride muon_backend_steps swa_every bigram_vocab_size "
                     "bigram_dim ve_dim ttt_burst_steps ttt_chunk_tokens ttt_train_batch_seqs mlp_mult "
                     "soft_round_tau logit_softcap rope_base passthrough_max_numel gptq_sequences adam_eps rope_reference_len "
                     "sdclip_k_int6 sdclip_k_int8").split():
            need(getattr(self, name) > 0, f"{name.upper()} must be > 0, got {getattr(self, name)}")
        for name in ("iterations max_wallclock_seconds warmup_steps warmdown_iters train_log_every val_loss_every val_tokens "
                     "xsa_last_n parallel_from coprime_ramp_steps recur_step muon_momentum_warmup_steps ttt_burst_epochs ttt_epochs ttt_freeze_blocks "
                     "matrix_lr tied_embed_lr scalar_lr muon_wd adam_wd grad_clip_norm ttt_lr ttt_grad_clip "
                     "ttt_burst_lr_factor tied_embed_init_std qk_gain_init late_qat_threshold "
                     "soft_round_threshold swa_trigger ttt_burst_trigger gptq_reserve_seconds int6_matrices").split():
            need(getattr(self, name) >= 0, f"{name.upper()} must be >= 0, got {getattr(self, name)}")
        for name in "muon_momentum muon_momentum_warmup_start beta1 beta2 ema_decay ttt_momentum warmdown_frac min_lr".split():
            need(0 <= getattr(self, name) < 1, f"{name.upper()} must be in [0, 1), got {getattr(self, name)}")
        need(0 <= self.loop_start_frac <= 1, f"LOOP_START_FRAC must be in [0, 1], got {self.loop_start_frac}")
        need(re.fullmatch(r"[\w.-]+", self.run_id) is not None, f"RUN_ID={self.run_id!r} may hold only letters, digits, '.', '_' and '-'")
        for name, *choices in (spec.split() for spec in ("compile auto 0 1", "attention auto fa3 sdpa", "weight_avg ema swa",
                               "quant_method clip gptq", "compressor zstd brotli", "loader stream coprime shuffled",
                               "gptq_calibration train self", "parallel_form lanes gptj", "gptq_scales search sdclip")):
            need(getattr(self, name) in choices, f"{name.upper()} must be {', '.join(choices[:-1])} or {choices[-1]}, got {getattr(self, name)!r}")
        for name, on in (("int6_matrices", self.int6_matrices), ("gptq_embed", self.gptq_embed), ("gptq_scales", self.gptq_scales != "search")):
            need(not on or self.quant_method == "gptq", f"{name.upper()}={getattr(self, name)} is a setting of GPTQ: it needs QUANT_METHOD=gptq")
        need(not self.max_wallclock_seconds or self.train_seconds > 0,
             f"GPTQ_RESERVE_SECONDS={self.gptq_reserve_seconds} leaves no training time in MAX_WALLCLOCK_SECONDS={self.max_wallclock_seconds}")
        need(self.tie_embeddings, "TIE_EMBEDDINGS=0 is not supported: this recipe ties the output head to tok_emb")
        need(self.vocab_size <= 65536, f"VOCAB_SIZE must be <= 65536 (uint16 shards), got {self.vocab_size}")
        need(self.model_dim % self.num_heads == 0, f"MODEL_DIM={self.model_dim} must be a multiple of NUM_HEADS={self.num_heads}")
        need(self.num_heads % self.num_kv_heads == 0, f"NUM_HEADS={self.num_heads} must be a multiple of NUM_KV_HEADS={self.num_kv_heads}")
        need(self.rope_dims % 2 == 0 and 4 <= self.rope_dims <= self.head_dim,
             f"ROPE_DIMS must be even and in [4, head dim {self.head_dim}], got {self.rope_dims}")
        need(self.ttt_freeze_blocks <= self.num_layers, f"TTT_FREEZE_BLOCKS={self.ttt_freeze_blocks} exceeds NUM_LAYERS={self.num_layers}")
        need(self.xsa_last_n <= self.num_layers, f"XSA_LAST_N={self.xsa_last_n} exceeds NUM_LAYERS={self.num_layers}")
        need(not (self.recur_layers and self.loop_layers), "RECUR_LAYERS and LOOP_LAYERS are two forms of depth recurrence: set one")
        for name, blocks in (("RECUR_LAYERS", self.recur_layers), ("LOOP_LAYERS", self.loop_layers)):
            need(not blocks or self.warmup_steps >= 4, f"{name} needs WARMUP_STEPS >= 4 (priming builds each graph: QAT "
                 "off and on, the repeats off and on)")
            need(list(blocks) == list(range(blocks[0], blocks[-1] + 1)) and 0 <= blocks[0] and
                 blocks[-1] < (self.parallel_from or self.num_layers) if blocks else True,
                 f"{name}={','.join(map(str, blocks))} must be consecutive blocks from 0 on, before PARALLEL_FROM "
                 f"(or NUM_LAYERS={self.num_layers})")
        need(self.loop_passes >= 2, f"LOOP_PASSES must be >= 2 (the blocks run that many times in a row), got {self.loop_passes}")
        need(self.parallel_from == 0 or self.num_layers // 2 <= self.parallel_from < self.num_layers,
             f"PARALLEL_FROM={self.parallel_from} must be 0 (off) or a decoder block in [{self.num_layers // 2}, {self.num_layers})")
        need(not self.ve_enabled or (self.ve_layers and len(set(self.ve_layers)) == len(self.ve_layers)
                                     and all(0 <= i < self.num_layers for i in self.ve_layers)),
             f"VE_LAYERS={','.join(map(str, self.ve_layers))} must name distinct layers in [0, {self.num_layers})")
        need(self.train_batch_tokens % (MICRO_BATCHES * self.train_seq_len) == 0,
             f"TRAIN_BATCH_TOKENS={self.train_batch_tokens} must be a multiple of {MICRO_BATCHES} x TRAIN_SEQ_LEN="
             f"{MICRO_BATCHES * self.train_seq_len} (world_size x grad_accum_steps = {MICRO_BATCHES} micro-batches per step)")
        need(self.eval_seq_len % self.eval_stride == 0,
             f"EVAL_STRIDE={self.eval_stride} must divide EVAL_SEQ_LEN={self.eval_seq_len} (windows stay inside TTT chunks)")
        need(self.ttt_chunk_tokens % self.eval_seq_len == 0,
             f"TTT_CHUNK_TOKENS={self.ttt_chunk_tokens} must be a multiple of EVAL_SEQ_LEN={self.eval_seq_len}")

def _parse(env_name: str, raw, kind: type):
    """One environment value as the type of its default; InputError naming the variable otherwise."""
    text = ",".join(map(str, raw)) if isinstance(raw, (tuple, list)) else str(raw).strip()
    try:
        if kind is tuple: return tuple(int(v) for v in text.split(",")) if text else ()  # "4,,5" and "4," are refused
        value = {"1": True, "true": True, "0": False, "false": False}[text.lower()] if kind is bool else kind(text)
        if kind is float and not math.isfinite(value): raise ValueError
        return value
    except (ValueError, KeyError):
        expected = {bool: "0 or 1", tuple: "comma-separated integers", int: "an integer", float: "a finite number"}[kind]
        raise InputError(f"{env_name}={text!r} is not valid: expected {expected}") from None

OTHER_VARIABLES = {"SEEDS", "NPROC", "CONFIG", "RUN_PREFIX"}  # scripts/run_seeds.sh's own, close to SEED

def check_variable_names(environ):
    """Stops on a variable that looks like a misspelt hyperparameter (MATIX_LR=...), which would otherwise be ignored."""
    known = [name.upper() for name in Hyperparameters.defaults()]
    for name in sorted(set(environ) - set(known) - OTHER_VARIABLES):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        need(not close, f"{name} is not a hyperparameter: did you mean {close[0] if close else ''}? (unset it to go on)")

# ----------------------------------------------------------------------------- data (§2)
SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_BYTES = 20240520, 1, 256 * 4

def atomic_write(files: dict):
    """Writes {path: bytes} all or none (temporary files, then renamed); a failure is a RunError."""
    temps, replaced = {}, []
    try:
        for path, data in files.items():
            path = Path(path)
            if path.is_dir(): raise IsADirectoryError(21, "it is a directory")
            temps[path] = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(temps[path], "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in temps.items():
            os.replace(tmp, path)
            replaced.append(str(path))
    except OSError as e:
        done = f"{', '.join(replaced)} already replaced" if replaced else "nothing was written"
        raise RunError(f"cannot write {path}: {e.strerror or e}; {done}") from None
    finally:
        for tmp in temps.values():
            with suppress(OSError): tmp.unlink(missing_ok=True)  # e.g. a read-only folder, where none was made

def shard_token_count(path) -> int:
    """Checks a shard's header and size; returns its token count."""
    size = Path(path).stat().st_size
    need(size >= SHARD_HEADER_BYTES, f"shard {path}: {size} bytes, shorter than the {SHARD_HEADER_BYTES}-byte header")
    magic, version, count = map(int, np.fromfile(path, dtype="<i4", count=3))  # Python ints: no overflow in 2 * count
    need(magic == SHARD_MAGIC, f"shard {path}: magic {magic}, expected {SHARD_MAGIC} (not a challenge shard)")
    need(version == SHARD_VERSION, f"shard {path}: version {version}, expected {SHARD_VERSION}")
    need(count >= 0 and size == SHARD_HEADER_BYTES + 2 * count, f"shard {path}: {size} bytes, but its header promises "
         f"{count} tokens ({SHARD_HEADER_BYTES + 2 * count} bytes): truncated or corrupt")
    return count

def read_shard(path) -> np.ndarray:
    """A shard's tokens, mapped from disk (read as they are used)."""
    return np.memmap(path, dtype="<u2", mode="r", offset=SHARD_HEADER_BYTES, shape=(shard_token_count(path),))

def existing_file(path, what: str) -> Path:
    path = Path(path)
    need(not path.is_dir(), f"{what} {path} is a directory, not a file")
    need(path.is_file(), f"{what} {path} does not exist")
    return path

def list_shards(data_path, split: str) -> list[Path]:
    """The sorted `fineweb_{split}_*.bin` files under DATA_PATH, every header checked."""
    root = Path(data_path)
    need(root.is_dir(), f"DATA_PATH {root} is not a directory (download the data, or build the sample with: "
         "python data/make_sample.py)")
    files = [existing_file(f, "shard") for f in sorted(root.glob(f"fineweb_{split}_*.bin"))]
    need(files, f"DATA_PATH {root} holds no fineweb_{split}_*.bin shards")
    need(sum(shard_token_count(f) for f in files) > 0, f"the fineweb_{split}_*.bin shards in {root} hold no tokens")
    return files

def check_token_ids(files, vocab_size: int, rt: Runtime):
    """Stops at start on a token id >= VOCAB_SIZE; each rank reads its share of the shards."""
    largest = torch.zeros(len(files), dtype=torch.float64)
    for i in range(rt.rank, len(files), rt.world_size): largest[i] = float(read_shard(files[i]).max(initial=0))
    for f, top in zip(files, rt.all_reduce(largest.to(rt.device), "MAX").tolist()):
        need(top < vocab_size, f"shard {f} holds token id {top:.0f}, not below VOCAB_SIZE={vocab_size} (another tokenizer's data?)")

def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor on the device, copied without waiting (pinned, non-blocking) on CUDA."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t

class DistributedTokenLoader:
    """The shards as one stream in file order: each micro-step takes world_size x (local_tokens + 1) tokens; rank r's slice."""
    def __init__(self, files, rank: int, world_size: int, device: torch.device):
        self.files, self.rank, self.world_size, self.device = list(files), rank, world_size, device
        self.file_idx, self.pos, self.tokens = 0, 0, read_shard(self.files[0])

    def take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            if self.pos == len(self.tokens):
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = read_shard(self.files[self.file_idx]), 0
            k = min(n, len(self.tokens) - self.pos)
            parts.append(self.tokens[self.pos:self.pos + k])
            self.pos, n = self.pos + k, n - k
        return np.concatenate(parts)

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[Tensor, Tensor]:
        span = local_tokens + 1
        chunk = self.take(span * self.world_size)[self.rank * span:(self.rank + 1) * span]
        local = to_device(torch.from_numpy(chunk.astype(np.int64)), self.device)
        return local[:-1].view(-1, seq_len), local[1:].view(-1, seq_len)

    def state(self) -> tuple[int, int]:
        return self.file_idx, self.pos
    def restore(self, state: tuple[int, int]):
        self.tokens, (self.file_idx, self.pos) = read_shard(self.files[state[0]]), state

class CoprimeLoader:
    """A later record's loader (§2): steps from 8 -> 64 shards read in coprime-stride passes; the same at any world size."""
    def __init__(self, files, rank: int, world_size: int, device: torch.device, seed: int, ramp_steps: int):
        self.shards, self.rank, self.world_size, self.device = [read_shard(f) for f in files], rank, world_size, device
        self.rng, self.ramp_steps, self.draws, self.passes, self.pending = np.random.default_rng(seed), ramp_steps, 0, {}, []

    def _start_pass(self, i: int, span: int):
        phase = int(self.rng.integers(span))
        blocks = max(len(self.shards[i]) - phase, 0) // span
        stride = int(self.rng.integers(1, max(blocks, 2)))
        while math.gcd(stride, blocks) != 1: stride = int(self.rng.integers(1, blocks))
        self.passes[i] = [phase, blocks, int(self.rng.integers(max(blocks, 1))), stride, 0]  # ..., blocks read

    def _draw(self, count: int, span: int) -> list[tuple[int, int]]:
        """(shard, token offset) of the next `count` windows, interleaved across the chosen shards."""
        ramp = min(self.draws / self.ramp_steps, 1.0) if self.ramp_steps else 1.0
        alpha, per_draw, self.draws = 0.9 - 0.4 * ramp, round(8 + 56 * ramp), self.draws + 1
        columns = []
        while count > 0:
            for i in range(len(self.shards)):
                if i not in self.passes: self._start_pass(i, span)
            left = np.array([b - read for _, b, _, _, read in (self.passes[i] for i in range(len(self.shards)))], dtype=float)
            if not left.any():  # every shard read through: a new pass of each
                need(any(read for *_, read in self.passes.values()), f"no training shard holds a sequence of {span} tokens")
                self.passes.clear()
                continue
            chosen = self.rng.choice(len(left), size=min(per_draw, int((left > 0).sum())), replace=False,
                                     p=left ** alpha / (left ** alpha).sum())
            for n, i in enumerate(chosen):
                phase, blocks, start, stride, read = self.passes[i]
                take = min(count // len(chosen) + (n < count % len(chosen)), blocks - read)
                columns.append([(i, phase + (start + k * stride) % blocks * span) for k in range(read, read + take)])
                self.passes[i][4] += take
            count -= sum(map(len, columns[-len(chosen):]))
        return [w for row in itertools.zip_longest(*columns) for w in row if w is not None]

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[Tensor, Tensor]:
        n = local_tokens // seq_len
        if not self.pending or len(self.pending[0]) != n:
            windows = self._draw(n * MICRO_BATCHES, seq_len + 1)
            self.pending = [windows[m::MICRO_BATCHES] for m in range(self.rank, MICRO_BATCHES, self.world_size)]
        batch = np.stack([self.shards[i][o:o + seq_len + 1] for i, o in self.pending.pop(0)]).astype(np.int64)
        local = to_device(torch.from_numpy(batch), self.device)
        return local[:, :-1], local[:, 1:]

    def state(self):
        return copy.deepcopy((self.rng.bit_generator.state, self.draws, self.passes, self.pending))
    def restore(self, state):
        self.rng.bit_generator.state, self.draws, self.passes, self.pending = copy.deepcopy(state)

class ShuffledLoader:
    """The SP8192 record's loader (§2): rank r owns the shards sorted(files)[r::world_size], each read as windows of
    seq_len + 1 tokens from a random phase in a random order; each sequence comes from a shard drawn with probability
    proportional to its windows left, and all start a new pass when all are read. Seeded by the rank alone."""
    def __init__(self, files, rank: int, world_size: int, device: torch.device):
        self.shards, self.device = [read_shard(f) for f in list(files)[rank::world_size]], device
        self.rng, self.windows, self.span = np.random.default_rng(rank), [], 0

    def _start_pass(self):
        self.windows = []
        for shard in self.shards:  # [window starts in reading order, how many read]
            phase = int(self.rng.integers(max(min(self.span - 1, len(shard) - self.span), 1)))  # [0, seq_len), a window left
            self.windows.append([phase + self.rng.permutation(max(len(shard) - phase, 0) // self.span) * self.span, 0])

    def next_batch(self, local_tokens: int, seq_len: int) -> tuple[Tensor, Tensor]:
        if self.span != seq_len + 1:
            self.span = seq_len + 1
            self._start_pass()
        rows = []
        for _ in range(local_tokens // seq_len):
            left = np.array([len(starts) - read for starts, read in self.windows], dtype=float)
            if not left.any():
                self._start_pass()
                left = np.array([len(starts) for starts, _ in self.windows], dtype=float)
            need(left.any(), f"LOADER=shuffled: no training shard of this rank holds a sequence of {self.span} tokens")
            i = int(self.rng.choice(len(left), p=left / left.sum()))
            starts, read = self.windows[i]
            rows.append(self.shards[i][starts[read]:starts[read] + self.span])
            self.windows[i][1] += 1
        local = to_device(torch.from_numpy(np.stack(rows).astype(np.int64)), self.device)
        return local[:, :-1], local[:, 1:]

    def state(self):
        return copy.deepcopy((self.rng.bit_generator.state, self.windows, self.span))
    def restore(self, state):
        self.rng.bit_generator.state, self.windows, self.span = copy.deepcopy(state)

def make_loader(files, args: Hyperparameters, rt: Runtime):
    if args.loader != "stream":
        need(any(shard_token_count(f) > args.train_seq_len for f in files), f"LOADER={args.loader} reads each sequence from one "
             f"shard, and no training shard holds TRAIN_SEQ_LEN + 1 = {args.train_seq_len + 1} tokens")
    if args.loader == "coprime": return CoprimeLoader(files, rt.rank, rt.world_size, rt.device, args.seed, args.coprime_ramp_steps)
    if args.loader == "shuffled":  # each rank's own shards, checked for every rank on every rank: all stop together
        for rank in range(rt.world_size):
            need(any(shard_token_count(f) > args.train_seq_len for f in files[rank::rt.world_size]), f"LOADER=shuffled gives "
                 f"each rank shards of its own, and rank {rank}'s ({len(files[rank::rt.world_size])} of {len(files)}) hold no "
                 f"sequence of TRAIN_SEQ_LEN + 1 = {args.train_seq_len + 1} tokens")
        return ShuffledLoader(files, rt.rank, rt.world_size, rt.device)
    return DistributedTokenLoader(files, rt.rank, rt.world_size, rt.device)

def load_validation_tokens(files, seq_len: int, limit: int = 0) -> Tensor:
    """The val shards (their first `limit` targets if limit > 0), cut to whole sequences plus one token."""
    tokens = np.concatenate([read_shard(f) for f in files])
    usable = (min(len(tokens) - 1, limit or len(tokens)) // seq_len) * seq_len
    need(usable > 0, f"the validation shards hold {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
    return torch.from_numpy(tokens[:usable + 1].astype(np.int32))

# ----------------------------------------------------------------------------- bits per byte (§3)
def load_tokenizer(path, vocab_size: int) -> spm.SentencePieceProcessor:
    existing_file(path, "TOKENIZER_PATH")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise InputError(f"TOKENIZER_PATH {path} is not a SentencePiece model ({e})") from None
    need(sp.vocab_size() == vocab_size, f"tokenizer {path} has {sp.vocab_size()} pieces but VOCAB_SIZE={vocab_size}")
    return sp

class TokenBytes:
    """How many UTF-8 bytes each target token stands for, from the SentencePiece model (§3)."""
    def __init__(self, sp: spm.SentencePieceProcessor):
        n = sp.vocab_size()
        self.base, self.leading_space, self.boundary = (torch.zeros(n, dtype=d) for d in (torch.int64, torch.bool, torch.bool))
        for i in range(n):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                self.boundary[i] = True
            elif sp.is_byte(i):
                self.base[i] = 1
            else:
                piece = sp.id_to_piece(i)
                self.leading_space[i] = piece.startswith("\u2581")
                self.base[i] = len(piece.removeprefix("\u2581").encode("utf-8"))

    def to(self, device) -> TokenBytes:
        other = copy.copy(self)
        other.base, other.leading_space, other.boundary = (t.to(device) for t in (self.base, self.leading_space, self.boundary))
        return other
    def count(self, prev: Tensor, target: Tensor) -> Tensor:
        """Bytes of each target: its base bytes, plus its leading space unless it follows a boundary."""
        space = self.leading_space[target] & ~self.boundary[prev]
        return (self.base[target] + space).to(torch.float64)

class BpbMeter:
    """Sums NLL (nats), targets and bytes in float64 across ranks; every evaluation reports here."""
    def __init__(self, token_bytes: TokenBytes, device):
        self.token_bytes, self.sums = token_bytes.to(device), torch.zeros(3, dtype=torch.float64, device=device)
    def add(self, nll: Tensor, prev: Tensor, target: Tensor):
        self.sums[0] += nll.double().sum()
        self.sums[1] += nll.numel()  # a Python number: no copy to the device
        self.sums[2] += self.token_bytes.count(prev, target).sum()
    def result(self) -> tuple[float, float]:
        """(val_loss, val_bpb) summed over every rank."""
        if dist.is_initialized(): dist.all_reduce(self.sums)
        return loss_and_bpb(self.sums)

def loss_and_bpb(sums: Tensor) -> tuple[float, float]:
    """(nats per target, bits per byte) from sums of [nll, targets, bytes]; a non-finite loss stops the run."""
    nll, targets, nbytes = sums.tolist()
    need(math.isfinite(nll), f"evaluation loss is {nll}: the model's weights are not finite", RunError)
    return nll / targets, nll / math.log(2) / nbytes

# ----------------------------------------------------------------------------- model (§4)
def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))

def fake_quant_int6(w: Tensor, soft_round: Tensor) -> Tensor:
    """Late QAT (§5): per-row int6 rounding forward; backward straight-through, or soft-round once soft_round[0] > 0."""
    on, tau = soft_round[0], soft_round[1]
    s = (w.detach().abs().amax(dim=1, keepdim=True) / 31).clamp_min(1 / 31)
    u = w / s
    floor_u = torch.floor(u.detach())
    hard = torch.clamp(torch.round(u.detach()), -31, 31) * s
    surrogate = torch.clamp(floor_u + torch.sigmoid((u - floor_u - 0.5) / tau), -31, 31) * s
    grad_path = torch.where(on > 0, surrogate, w)
    return grad_path + (hard - grad_path).detach()

class CastedLinear(nn.Linear):
    """Bias-free fp32 linear, int6 fake quantised while qat (a Python flag: compiled graphs with and without, both primed)."""
    def __init__(self, in_features: int, out_features: int, zero_init: bool = False):
        super().__init__(in_features, out_features, bias=False)
        self.zero_init, self.qat = zero_init, False
        self.register_buffer("soft_round", torch.tensor([0.0, 1.0]), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = fake_quant_int6(self.weight, self.soft_round) if self.training and self.qat else self.weight
        return F.linear(x, w.to(x.dtype))

def rotary(seq_len: int, rope_dims: int, base: float, device, reference_len: int = 1024) -> tuple[Tensor, Tensor]:
    """cos, sin (fp32) of partial RoPE; past the reference length (ROPE_REFERENCE_LEN) the base is NTK-scaled."""
    if seq_len > reference_len: base = base * (seq_len / reference_len) ** (rope_dims / (rope_dims - 2))
    inv_freq = base ** (-torch.arange(0, rope_dims, 2, device=device, dtype=torch.float32) / rope_dims)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]

def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotates pairs (x[j], x[j + half]) of the first rope_dims dims: (a cos + b sin, b cos - a sin)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = cos.size(-1)
    a, b, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    return torch.cat((a * cos + b * sin, b * cos - a * sin, rest), dim=-1)

def attention_backend(choice: str, device: torch.device) -> str:
    """The kernel ATTENTION=choice runs on this device: fa3 (FlashAttention-3, where it imports) or sdpa."""
    need(choice != "fa3" or flash_attn_3 is not None, "ATTENTION=fa3 but flash_attn_interface (FlashAttention-3) does not import")
    return ("fa3" if flash_attn_3 is not None and device.type == "cuda" else "sdpa") if choice == "auto" else choice

def causal_attention(q: Tensor, k: Tensor, v: Tensor, choice: str = "auto") -> Tensor:
    """q (B, T, H, D), k and v (B, T, Hkv, D); query head h reads KV head h // (H / Hkv)."""
    if attention_backend(choice, q.device) == "fa3":
        out = flash_attn_3(q, k, v, causal=True)  # FA3 releases differ: a tensor, or (out, lse)
        return out[0] if isinstance(out, tuple) else out
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True)
    return y.transpose(1, 2)

def remove_value_direction(y: Tensor, v: Tensor) -> Tensor:
    """XSA: subtract from each head's output its projection on its KV head's unit value vector."""
    B, T, H, D = y.shape
    y = y.view(B, T, v.size(2), -1, D)
    vn = F.normalize(v, dim=-1).unsqueeze(3)
    return (y - (y * vn).sum(-1, keepdim=True) * vn).view(B, T, H, D)

class CausalSelfAttention(nn.Module):
    def __init__(self, args: Hyperparameters, use_xsa: bool):
        super().__init__()
        dim, kv_dim = args.model_dim, args.num_kv_heads * args.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = args.num_heads, args.num_kv_heads, args.head_dim
        self.attention, self.use_xsa = args.attention, use_xsa
        self.c_q, self.c_k, self.c_v = CastedLinear(dim, dim), CastedLinear(dim, kv_dim), CastedLinear(dim, kv_dim)
        self.proj = CastedLinear(dim, dim, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((args.num_heads,), args.qk_gain_init))

    def forward(self, x: Tensor, ve: Tensor | None, rope: tuple[Tensor, Tensor], q_gain: Tensor | None = None) -> Tensor:
        B, T, _ = x.shape
        q = rms_norm(self.c_q(x).view(B, T, self.num_heads, self.head_dim))
        k = rms_norm(self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim))
        v = self.c_v(x)
        v = (v if ve is None else v + ve).view(B, T, self.num_kv_heads, self.head_dim)
        q = apply_rotary(q, *rope) * (self.q_gain if q_gain is None else q_gain).to(q.dtype)[:, None]
        y = causal_attention(q, apply_rotary(k, *rope), v, self.attention)
        if self.use_xsa: y = remove_value_direction(y, v)
        return self.proj(y.reshape(B, T, -1))

class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc, self.proj = CastedLinear(dim, hidden), CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.leaky_relu(self.fc(x), 0.5).square())

class Block(nn.Module):
    def __init__(self, args: Hyperparameters, index: int):
        super().__init__()
        dim = args.model_dim
        self.attn_scale, self.mlp_scale = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(dim), torch.zeros(dim)]))
        self.attn = CausalSelfAttention(args, use_xsa=index >= args.num_layers - args.xsa_last_n)
        self.mlp = MLP(dim, int(args.mlp_mult * dim))
        self.ln_scale = 1 / math.sqrt(index + 1) if args.ln_scale else 1.0  # damps deeper blocks' inputs
        self.gptj = 0 < args.parallel_from <= index and args.parallel_form == "gptj"
        self.parallel = 0 < args.parallel_from <= index and args.parallel_form == "lanes"
        if self.parallel:  # what attention and MLP write into lanes A and M, and how much of each lane stays
            self.lane_writes = nn.Parameter(torch.ones(2, 2))
            self.lane_keeps = nn.Parameter(torch.full((2,), math.sqrt(1.1)))

    def mixed(self, own: nn.Module, x: Tensor, x0: Tensor) -> Tensor:
        mix = own.resid_mix.to(x.dtype)
        return mix[0] * x + mix[1] * x0

    def forward(self, x: Tensor, x0: Tensor, ve: Tensor | None, rope: tuple[Tensor, Tensor],
                repeat: Repeat | None = None, ln_scale: float | None = None) -> Tensor:
        """With a Repeat: this block's attention weights with the repeat's MLP and scalars."""
        own, f = repeat or self, self.ln_scale if ln_scale is None else ln_scale
        x = self.mixed(own, x, x0)
        n = rms_norm(x) * f
        a = own.attn_scale.to(x.dtype) * self.attn(n, ve, rope, getattr(own, "q_gain", None))
        if self.gptj: return x + a + own.mlp_scale.to(x.dtype) * own.mlp(n)  # GPT-J: both read the block's input
        x = x + a
        return x + own.mlp_scale.to(x.dtype) * own.mlp(rms_norm(x) * f)

    def forward_lanes(self, lanes: tuple[Tensor, Tensor], x0: Tensor, ve: Tensor | None, rope: tuple[Tensor, Tensor],
                      ln_scale: float | None = None) -> tuple[Tensor, Tensor]:
        """Parallel residuals (§4): attention reads lane A, the MLP lane M; each writes into both."""
        (A, M), p, r = lanes, self.lane_writes.to(lanes[0].dtype), self.lane_keeps.to(lanes[0].dtype)
        f = self.ln_scale if ln_scale is None else ln_scale
        a = self.attn_scale.to(A.dtype) * self.attn(rms_norm(self.mixed(self, A, x0)) * f, ve, rope)
        A, M = r[0] * A + p[0, 0] * a, r[0] * M + p[0, 1] * a
        m = self.mlp_scale.to(M.dtype) * self.mlp(rms_norm(self.mixed(self, M, x0)) * f)
        return r[1] * A + p[1, 0] * m, r[1] * M + p[1, 1] * m

class Repeat(nn.Module):
    """Depth recurrence (§4): a second pass's own MLP and scalars, copied from its block at switch-on."""
    def __init__(self, args: Hyperparameters):
        super().__init__()
        dim = args.model_dim
        self.attn_scale, self.mlp_scale = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))
        self.resid_mix = nn.Parameter(torch.stack([torch.ones(dim), torch.zeros(dim)]))
        self.q_gain = nn.Parameter(torch.full((args.num_heads,), args.qk_gain_init))
        self.mlp = MLP(dim, int(args.mlp_mult * dim))

def bigram_hash(ids: Tensor, table_size: int) -> Tensor:
    """(36313 * cur XOR 27191 * prev) mod (table_size - 1) in int32; position 0 gets table_size - 1."""
    t = ids.to(torch.int32)
    h = torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]) % (table_size - 1)
    return torch.cat([torch.full_like(t[:, :1], table_size - 1), h], dim=1)

class ProjectedEmbedding(nn.Module):
    """A scaled embedding projected to another width: of hashed token pairs (input), of tokens (added to late values)."""
    def __init__(self, table_size: int, dim: int, out_dim: int, scale: float):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.embed, self.proj = nn.Embedding(table_size, dim), CastedLinear(dim, out_dim)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.proj(self.embed(ids))
        return x * self.scale.to(x.dtype)

class SmearGate(nn.Module):
    """Mixes each position with the previous one through a learned per-channel gate."""
    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))
        return (1 - g) * x + g * F.pad(x[:, :-1], (0, 0, 1, 0))

class GPT(nn.Module):
    def __init__(self, args: Hyperparameters):
        super().__init__()
        n, dim = args.num_layers, args.model_dim
        self.logit_softcap, self.rope_dims, self.rope_base = args.logit_softcap, args.rope_dims, args.rope_base
        self.rope_reference_len = args.rope_reference_len
        self.recur_layers, self.loop_layers, self.loop_passes = list(args.recur_layers), list(args.loop_layers), args.loop_passes
        most = n + len(self.loop_layers) * (self.loop_passes - 1)  # passes once a loop is on: it has skip pairs of its own
        self.skip_weights = nn.Parameter(torch.ones(min(most // 2, most - most // 2), dim))
        self.skip_gates = nn.Parameter(torch.zeros(self.skip_weights.shape)) if args.skip_gates else None
        self.tok_emb = nn.Embedding(args.vocab_size, dim)
        self.bigram = ProjectedEmbedding(args.bigram_vocab_size, args.bigram_dim, dim, 0.05) if args.bigram_enabled else None
        self.smear = SmearGate(dim) if args.smear_enabled else None
        self.blocks = nn.ModuleList(Block(args, i) for i in range(n))
        self.ve_index = {layer: j for j, layer in enumerate(args.ve_layers)} if args.ve_enabled else {}
        if self.ve_index:
            self.ve_shared = ProjectedEmbedding(args.vocab_size, args.ve_dim, args.num_kv_heads * args.head_dim, 0.1)
            self.ve_layer_scales = nn.ParameterList(nn.Parameter(torch.ones(1)) for _ in self.ve_index)
        self._init_weights(args)
        self.recurring, self.ln_scale = False, args.ln_scale
        if self.recur_layers:  # after the initialisation: copied from their blocks when they switch on
            self.repeats = nn.ModuleList(Repeat(args) for _ in self.recur_layers)
            self.register_buffer("config_recur_layers", torch.tensor(self.recur_layers))  # in the artifact: checked on load
        if self.loop_layers:
            self.register_buffer("config_loop_layers", torch.tensor(self.loop_layers))
            self.register_buffer("config_loop_passes", torch.tensor([self.loop_passes]))

    @torch.no_grad()
    def _init_weights(self, args: Hyperparameters):
        nn.init.normal_(self.tok_emb.weight, std=args.tied_embed_init_std)
        if self.bigram is not None: nn.init.zeros_(self.bigram.embed.weight)
        for module in (m for m in self.modules() if isinstance(m, CastedLinear)):
            if module.zero_init: nn.init.zeros_(module.weight)
            elif min(module.weight.shape) >= 64: nn.init.orthogonal_(module.weight)
        if self.ve_index: nn.init.normal_(self.ve_shared.embed.weight, std=0.01)
        for embedding in (e for e in (self.bigram, self.ve_shared if self.ve_index else None) if e is not None):
            embedding.proj.weight.mul_(1 / math.sqrt(2 * args.num_layers))

    def set_qat(self, enabled: bool, soft_round: bool, tau: float):
        """Late QAT switches (§5): QAT selects the compiled graph, soft-round is read inside it."""
        for module in self.modules():
            if isinstance(module, CastedLinear):
                module.qat = enabled
                module.soft_round.copy_(torch.tensor([float(soft_round), tau]))

    @property
    def recurs(self) -> bool:
        """Depth recurrence is configured: repeats with their own MLPs (RECUR_LAYERS), or a shared loop (LOOP_LAYERS)."""
        return bool(self.recur_layers or self.loop_layers)

    def recurrence_copies(self) -> list[tuple[str, str]]:
        """(repeat's state-dict name, its block's) of every tensor copied when the repeats switch on."""
        names = ["attn_scale", "mlp_scale", "resid_mix", "mlp.fc.weight", "mlp.proj.weight"]
        return [(f"repeats.{j}.{n}", f"blocks.{i}.{n}") for j, i in enumerate(self.recur_layers) for n in names] + \
            [(f"repeats.{j}.q_gain", f"blocks.{i}.attn.q_gain") for j, i in enumerate(self.recur_layers)]

    @torch.no_grad()
    def start_recurrence(self):
        """The recurrence switches on (a Python flag: the compiled model holds a graph for each); repeats as copies."""
        for repeat, block in self.recurrence_copies(): self.get_parameter(repeat).copy_(self.get_parameter(block))
        self.recurring = True

    def passes(self) -> list[tuple[int, Repeat | None, bool, int | None]]:
        """The passes in the order they run: (block index, the Repeat of a second pass or None, whether its output is
        kept for a U-Net skip, the skip it takes or None). The first half of the passes are the encoder, pushing their
        outputs; decoder pass k takes skip k, the last output pushed. Repeats (RECUR_LAYERS) stay out of the U-Net."""
        order = [(i, None) for i in range(len(self.blocks))]
        if self.recurring and self.recur_layers:
            last = self.recur_layers[-1]
            order = order[:last + 1] + [(i, self.repeats[j]) for j, i in enumerate(self.recur_layers)] + order[last + 1:]
        elif self.recurring:
            first, last = self.loop_layers[0], self.loop_layers[-1]
            order = order[:first] + [(i, None) for i in self.loop_layers] * self.loop_passes + order[last + 1:]
        places = [v if not self.recur_layers else i for v, (i, repeat) in enumerate(order)]  # U-Net position
        half = len(places) // 2 if not self.recur_layers else len(self.blocks) // 2
        return [(i, repeat, repeat is None and p < half, p - half if repeat is None and half <= p < 2 * half else None)
                for (i, repeat), p in zip(order, places)]

    def with_skip(self, x: Tensor, skip: tuple[int, Tensor] | None) -> Tensor:
        """x with U-Net skip k's encoder output added (x + w_k out), or mixed in through its gate: lerp(w_k out, x, sigmoid(g_k))."""
        if skip is None: return x
        k, out = skip
        out = self.skip_weights[k].to(x.dtype) * out
        if self.skip_gates is None: return x + out
        gate = torch.sigmoid(self.skip_gates[k].to(x.dtype))
        return gate * x + (1 - gate) * out

    def forward_logits(self, ids: Tensor) -> Tensor:
        return self.head(self.hidden(ids))

    def hidden(self, ids: Tensor) -> Tensor:
        x = self.tok_emb(ids)
        if self.bigram is not None: x = x + self.bigram(bigram_hash(ids, self.bigram.embed.num_embeddings))
        x = rms_norm(x)
        if self.smear is not None: x = self.smear(x)
        x0, skips, lanes = x, [], None
        ve = self.ve_shared(ids) if self.ve_index else None
        rope = rotary(ids.size(1), self.rope_dims, self.rope_base, ids.device, self.rope_reference_len)  # once per forward
        by_virtual_index = self.recurring and self.recur_layers  # the repeats' form: LN scale 1/sqrt(v + 1) of pass v
        for v, (i, repeat, push, skip) in enumerate(self.passes()):
            block, j = self.blocks[i], self.ve_index.get(i)
            block_ve = None if j is None else ve * self.ve_layer_scales[j].to(ve.dtype)
            f = (1 / math.sqrt(v + 1) if self.ln_scale else 1.0) if by_virtual_index else None
            skip = None if skip is None else (skip, skips.pop())
            if block.parallel:  # two lanes from here on, both starting as x; a skip goes into both
                lanes = block.forward_lanes(tuple(self.with_skip(lane, skip) for lane in lanes or (x, x)), x0, block_ve, rope, f)
                continue
            x = block(self.with_skip(x, skip), x0, block_ve, rope, repeat, f)
            if push: skips.append(x)
        return x if lanes is None else 0.5 * (lanes[0] + lanes[1])

    def head(self, x: Tensor) -> Tensor:
        """Soft-capped logits in float32 through the tied embedding."""
        logits = F.linear(rms_norm(x), self.tok_emb.weight.to(x.dtype)).float()
        return self.logit_softcap * torch.tanh(logits / self.logit_softcap)

    def forward(self, ids: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy (-100 ignored): mean, sum or per target ("none"); fewer targets: the head runs on the last positions."""
        logits = self.head(self.hidden(ids)[:, ids.size(1) - targets.size(1):])
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)
        return nll.view_as(targets) if reduction == "none" else nll

def build_model(args: Hyperparameters) -> GPT:
    """The model for these hyperparameters, initialised from SEED: fp32, on the CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return GPT(args)

def place_model(model: GPT, rt: Runtime) -> GPT:
    """Moves the model to the device; where training runs in bf16 the embedding tables are bf16 (§4)."""
    model.to(rt.device)
    if rt.bf16: model.apply(lambda m: m.bfloat16() if isinstance(m, nn.Embedding) else None)
    return model

def compiles(args: Hyperparameters, device: torch.device) -> bool:
    return args.compile == "1" or (args.compile == "auto" and device.type == "cuda")

def compile_model(model: GPT, args: Hyperparameters, device: torch.device) -> GPT:
    """Compiles the model in place where COMPILE says so (static shapes: the evaluations pad their batches)."""
    if compiles(args, device): model.compile(dynamic=False, fullgraph=True)
    return model

# ----------------------------------------------------------------------------- optimisers (§5)
def newton_schulz5(g: Tensor, steps: int, dtype: torch.dtype = torch.float32, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalises each matrix of g by the quintic Newton-Schulz iteration, in dtype."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = x.size(-2) > x.size(-1)
    if transposed: x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x

def deal_out(sizes: list[int], world_size: int) -> list[list[int]]:
    """Each rank's matrices: largest first, each to the rank with the fewest elements so far."""
    loads, shares = [0] * world_size, [[] for _ in range(world_size)]
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        rank = loads.index(min(loads))
        shares[rank].append(i)
        loads[rank] += sizes[i]
    return [sorted(share) for share in shares]

# torch 2.13 renamed the single-tensor collectives; earlier versions have only the old names
reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

class Muon(torch.optim.Optimizer):
    """Nesterov momentum, orthogonalised (Newton-Schulz), scaled by sqrt(max(1, rows/cols)), decoupled decay; sharded over ranks."""
    def __init__(self, params, lr: float, momentum: float, backend_steps: int, weight_decay: float,
                 update_dtype: torch.dtype = torch.float32, compiled: bool = False, row_norm: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, weight_decay=weight_decay))
        self.rank, self.world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        sizes = [p.numel() for p in self.matrices]
        self.shares = deal_out(sizes, self.world_size)
        self.share_numel = max(sum(sizes[i] for i in share) for share in self.shares)
        self.pads = [self.share_numel - sum(sizes[i] for i in share) for share in self.shares]
        self.offsets = {i: rank * self.share_numel + offset  # matrix index -> its place in the flat layout
                        for rank, share in enumerate(self.shares)
                        for i, offset in zip(share, np.cumsum([0] + [sizes[i] for i in share]).tolist())}
        self.update_dtype, self.row_norm = update_dtype, row_norm
        self.orthogonalise = torch.compile(newton_schulz5, dynamic=False, fullgraph=True) if compiled else newton_schulz5
        self.summed = None  # this rank's share of the gradients, summed over ranks, flat

    @property
    def matrices(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    def _flat(self, tensors: dict[int, Tensor], ranks, dtype: torch.dtype) -> Tensor:
        """The tensors (one per matrix) of these ranks' shares in the flat layout, each share padded."""
        pad = {rank: torch.zeros(self.pads[rank], dtype=dtype, device=self.matrices[0].device) for rank in ranks}
        return torch.cat([t for rank in ranks for t in [tensors[i].flatten() for i in self.shares[rank]] + [pad[rank]]])

    @torch.no_grad()
    def sum_gradients(self) -> Tensor:
        """Reduce-scatters the gradients: this rank holds its share summed over ranks; returns its squared norm."""
        grads = {i: p.grad if p.grad is not None else torch.zeros_like(p) for i, p in enumerate(self.matrices)}
        dtype = self.matrices[0].dtype
        if self.world_size == 1:
            self.summed = self._flat(grads, [0], dtype)
        else:
            self.summed = torch.empty(self.share_numel, dtype=dtype, device=self.matrices[0].device)
            reduce_scatter(self.summed, self._flat(grads, range(self.world_size), dtype))
        return self.summed.float().square().sum()

    @torch.no_grad()
    def step(self):
        if self.summed is None: self.sum_gradients()  # used on its own: sum the gradients first
        group, params, mine = self.param_groups[0], self.matrices, self.shares[self.rank]
        lr, mu, base = group["lr"], group["momentum"], self.rank * self.share_numel
        by_shape, updates = {}, {}
        for i in mine: by_shape.setdefault(params[i].shape, []).append(i)
        for shape, indices in by_shape.items():
            directions = []
            for i in indices:
                grad = self.summed[self.offsets[i] - base:][:params[i].numel()].view(shape)
                buf = self.state[params[i]].setdefault("momentum_buffer", torch.zeros_like(grad))
                buf.mul_(mu).add_(grad)
                direction = grad.add(buf, alpha=mu)
                if self.row_norm: direction = direction / direction.float().norm(dim=1, keepdim=True).clamp_min(1e-7)  # MuonEq-R
                directions.append(direction)
            ortho = self.orthogonalise(torch.stack(directions), group["backend_steps"], self.update_dtype)
            updates.update(zip(indices, ortho * max(1, shape[0] / shape[1]) ** 0.5))
        flat = self._flat(updates, [self.rank], self.update_dtype)
        if self.world_size > 1:
            gathered = torch.empty(self.world_size * self.share_numel, dtype=flat.dtype, device=flat.device)
            all_gather(gathered, flat)
            flat = gathered
        flat = flat.to(params[0].dtype)
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        torch._foreach_add_(params, [flat[self.offsets[i]:][:p.numel()].view_as(p) for i, p in enumerate(params)], alpha=-lr)
        self.summed = None

# Muon for the matrices, AdamW for the rest; iterating gives both
Optimizers = NamedTuple("Optimizers", [("muon", Muon), ("adam", torch.optim.AdamW)])

def build_optimizers(model: GPT, args: Hyperparameters, rt: Runtime) -> Optimizers:
    """Muon for every linear weight; fused AdamW for the embedding tables and for all the rest."""
    matrices = [m.weight for m in model.modules() if isinstance(m, CastedLinear)]
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    taken = {id(p) for p in matrices + tables}
    scalars = [p for p in model.parameters() if id(p) not in taken]
    muon = Muon(matrices, args.matrix_lr, args.muon_momentum_warmup_start, args.muon_backend_steps, args.muon_wd,
                update_dtype=torch.bfloat16 if rt.bf16 else torch.float32, compiled=compiles(args, rt.device),
                row_norm=args.muon_row_norm)
    embed_wd = args.adam_wd if args.embed_wd < 0 else args.embed_wd
    adam = torch.optim.AdamW([dict(params=tables, lr=args.tied_embed_lr, weight_decay=embed_wd),
                              dict(params=scalars, lr=args.scalar_lr)],
                             betas=(args.beta1, args.beta2), eps=args.adam_eps, weight_decay=args.adam_wd, fused=True)
    for group in muon.param_groups + adam.param_groups: group["base_lr"] = group["lr"]
    return Optimizers(muon, adam)

def set_lr_scale(optimizers, scale: float):
    for opt in optimizers:
        for group in opt.param_groups: group["lr"] = group["base_lr"] * scale

# ----------------------------------------------------------------------------- training (§5)
@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    bf16: bool = False  # bf16 embedding tables, autocast and Newton-Schulz: on CUDA, as in the record

    @property
    def is_main(self) -> bool:
        return self.rank == 0
    @property
    def grad_accum_steps(self) -> int:
        return MICRO_BATCHES // self.world_size
    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
    def synchronize(self):
        if self.device.type == "cuda": torch.cuda.synchronize(self.device)
    def all_reduce(self, t: Tensor, op: str = "SUM") -> Tensor:
        """t reduced (SUM or MAX) over the ranks in place, nothing to do in one process; returns t."""
        if self.world_size > 1: dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return t
    def agree_max(self, *values) -> list[float]:
        """The largest of each value over all ranks, in one all-reduce: ranks take the same decisions."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(self.device) for v in values])
        return self.all_reduce(t, "MAX").tolist()

    @contextmanager
    def agreed(self):
        """Checks that may fail on some ranks alone (the log, files): every rank learns every rank's error, and all stop
        together with them, rather than waiting for a peer in the next collective. No collective may run inside."""
        error = None
        try:
            yield
        except InputError as e:
            error = e
        if self.world_size > 1:
            found = [None] * self.world_size
            dist.all_gather_object(found, None if error is None else str(error))
            failed = {rank: message for rank, message in enumerate(found) if message is not None}
            if len(failed) == self.world_size and len(set(found)) == 1: raise InputError(found[0])
            if failed: raise InputError("; ".join(f"rank {rank}: {message}" for rank, message in failed.items()))
        if error is not None: raise error

    # Another rank's error reaches rank 0, which reports it, through the process group's key-value store.
    def publish(self, message: str):
        with suppress(Exception): dist.distributed_c10d._get_default_store().set(f"run_error/{self.rank}", message)
    def peer_errors(self) -> str:
        """'rank r: message; ...' of the errors other ranks published ('' where none did, or there is no store)."""
        found = []
        with suppress(Exception):
            store = dist.distributed_c10d._get_default_store()
            for rank in (r for r in range(self.world_size) if r != self.rank):
                if store.check([f"run_error/{rank}"]): found.append(f"rank {rank}: {store.get(f'run_error/{rank}').decode()}")
        return "; ".join(found)

    def wait_for_all(self, name: str):
        """Every rank reaches this point, met through the store rather than the backend: once past it, no message of
        the backend is in flight, so a process that leaves at once cannot cut off a peer's last collective."""
        store = dist.distributed_c10d._get_default_store()
        store.set(f"{name}/{self.rank}", "1")
        store.wait([f"{name}/{rank}" for rank in range(self.world_size)])

def setup_runtime() -> Runtime:
    """Rank, world size and device from torchrun's environment; joins the process group."""
    try:
        world_size, rank, local_rank = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    except ValueError:
        raise InputError("WORLD_SIZE, RANK and LOCAL_RANK must be integers") from None
    need(world_size >= 1 and MICRO_BATCHES % world_size == 0,
         f"WORLD_SIZE={world_size} must divide {MICRO_BATCHES} (grad_accum_steps = {MICRO_BATCHES} / WORLD_SIZE)")
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return Runtime(rank, world_size, device, bf16=device.type == "cuda")

def lr_scale(step: int, elapsed_ms: float, args: Hyperparameters) -> float:
    """Warmdown factor (§5): linear to 0 over the last WARMDOWN_ITERS steps (in time, with a wallclock cap); with
    WARMDOWN_FRAC, linear to 0 over that last fraction of the training clock (of ITERATIONS without one), never below MIN_LR."""
    if args.warmdown_frac:
        done = elapsed_ms / (1000 * args.train_seconds) if args.max_wallclock_seconds else step / args.iterations
        return max(min((1 - done) / args.warmdown_frac, 1.0), args.min_lr)
    if args.warmdown_iters == 0: return 1.0
    if args.max_wallclock_seconds == 0: return min(max((args.iterations - step) / args.warmdown_iters, 0.0), 1.0)
    warmdown_ms = args.warmdown_iters * elapsed_ms / max(step, 1)
    remaining_ms = max(1000 * args.train_seconds - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0

def sum_gradients(params: list[Tensor], rt: Runtime) -> Tensor:
    """Sums the gradients over ranks, one flat all-reduce per dtype; returns their squared norm."""
    square = torch.zeros((), device=rt.device)
    for dtype in dict.fromkeys(p.dtype for p in params):  # the same order on every rank
        group = [p for p in params if p.dtype == dtype]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in group])
        for p, grad in zip(group, rt.all_reduce(flat).split([p.numel() for p in group])): p.grad = grad.view_as(p)
        square += flat.float().square().sum()
    return square

def clip_gradients(grads: list[Tensor], square: Tensor, max_norm: float):
    """Scales the gradients by max_norm / (norm + 1e-6) where that is below 1, as clip_grad_norm_."""
    if max_norm > 0: torch._foreach_mul_(grads, (max_norm / (square.sqrt() + 1e-6)).clamp(max=1.0))

def train_step(model: GPT, batches, optimizers: Optimizers, grad_clip: float, rt: Runtime) -> Tensor:
    """One optimiser step over this rank's micro-batches; returns their mean loss."""
    total = torch.zeros((), device=rt.device)
    for x, y in batches:
        with rt.autocast(): loss = model(x, y)
        (loss / (len(batches) * rt.world_size)).backward()
        total += loss.detach()
    rest = [p for group in optimizers.adam.param_groups for p in group["params"]]
    square, muon_square = sum_gradients(rest, rt), optimizers.muon.sum_gradients()
    if grad_clip > 0:  # muon_square: this rank's share of the matrices, summed over ranks
        clip_gradients([optimizers.muon.summed] + [p.grad for p in rest], square + rt.all_reduce(muon_square), grad_clip)
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return total / len(batches)

def warmup_prime(model: GPT, optimizers: Optimizers, loader: DistributedTokenLoader | CoprimeLoader | ShuffledLoader, args: Hyperparameters,
                 rt: Runtime):
    """WARMUP_STEPS real steps building every compiled graph; weights, optimiser states, switches and data then restored."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states, stream = [copy.deepcopy(opt.state_dict()) for opt in optimizers], loader.state()
    local_tokens = args.train_batch_tokens // MICRO_BATCHES
    for i in range(args.warmup_steps):
        model.set_qat(i % 2 == 1 and args.late_qat_threshold > 0, False, args.soft_round_tau)  # only graphs that will run
        model.recurring = model.recurs and i // 2 % 2 == 1
        batches = [loader.next_batch(local_tokens, args.train_seq_len) for _ in range(rt.grad_accum_steps)]
        train_step(model, batches, optimizers, args.grad_clip_norm, rt)
    model.set_qat(False, False, args.soft_round_tau)
    model.recurring = False
    model.load_state_dict(weights)
    for opt, state in zip(optimizers, states): opt.load_state_dict(state)
    loader.restore(stream)

def recurrence_due(step: int, elapsed_ms: float, args: Hyperparameters) -> bool:
    """RECUR_LAYERS switch on at step RECUR_STEP; LOOP_LAYERS at LOOP_START_FRAC of the training clock (of ITERATIONS without one)."""
    if args.recur_layers: return step >= args.recur_step
    if args.max_wallclock_seconds: return elapsed_ms >= args.loop_start_frac * 1000 * args.train_seconds
    return step >= args.loop_start_frac * args.iterations

def start_recurrence(model: GPT, ema: EMA, log, when: str):
    """The recurrence switches on: the repeats as copies of their blocks, in the model and in its EMA; or the loop."""
    model.start_recurrence()
    for repeat, block in model.recurrence_copies(): ema.weights[repeat] = ema.weights[block].clone()
    layers = model.recur_layers or model.loop_layers
    log(f"recurrence:enabled {when} layers:{','.join(map(str, layers))} virtual_layers:{len(model.passes())}")

def float_weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().float() for k, v in model.state_dict().items()}

class EMA:
    """Exponential moving average of all weights, in fp32."""
    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.weights = decay, {k: v.clone() for k, v in float_weights(model).items()}
    @torch.no_grad()
    def update(self, model: nn.Module):
        torch._foreach_lerp_(list(self.weights.values()), list(float_weights(model).values()), 1 - self.decay)

class SWA:
    """Plain average of the weight snapshots it is given, in fp32."""
    def __init__(self):
        self.sums, self.count = None, 0
    @torch.no_grad()
    def add(self, model: nn.Module):
        self.sums = {k: v.clone() if self.sums is None else self.sums[k] + v for k, v in float_weights(model).items()}
        self.count += 1
    @property
    def weights(self) -> dict[str, Tensor]:
        return {k: v / self.count for k, v in self.sums.items()}

# ----------------------------------------------------------------------------- artifact (§6)
SUBMISSION_LIMIT_BYTES = 16_000_000
FIT_MARGIN = 0.02  # FIT=1: the estimate at start may be this much over the limit: its error on the records' artifacts is -4.2 % to +1.1 %
ARTIFACT_PATH, RAW_MODEL_PATH = Path("final_model.int6.ptz"), Path("final_model.pt")
INT6_CLIP_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
INT8_CLIP_QUANTILE = 0.9999984

def quant_kind(name: str, t: Tensor, passthrough_max_numel: int = Hyperparameters.passthrough_max_numel) -> str:
    """passthrough (small or non-float), int6 (attention and MLP matrices) or int8 (the rest)."""
    if not t.is_floating_point() or t.numel() <= passthrough_max_numel or t.ndim != 2: return "passthrough"
    return "int6" if any(part in name for part in (".attn.", ".mlp.", ".proj.")) else "int8"

def best_scale_per_row(w: Tensor, max_q: int, clip_quantiles, levels, error) -> tuple[Tensor, Tensor]:
    """Per row, the fp16 scale of the clip quantile of |w| whose levels(scale) give the least error."""
    best_q, best_scale, best_err = torch.zeros_like(w), w.new_zeros(len(w), dtype=torch.half), w.new_full((len(w),), math.inf)
    for i, quantile in enumerate(clip_quantiles):
        clip = w.abs().amax(dim=1) if quantile == 1.0 else torch.quantile(w.abs(), quantile, dim=1)
        scale = (clip / max_q).clamp_min(1 / max_q).half()
        q = levels(scale.float())
        err = error(w - q * scale.float()[:, None])
        better = (err < best_err) | (i == 0)  # the first candidate whatever its error (even NaN)
        best_q, best_scale, best_err = torch.where(better[:, None], q, best_q), torch.where(better, scale, best_scale), torch.minimum(err, best_err)
    return best_q.to(torch.int8), best_scale

def quantize_rows(w: Tensor, max_q: int, clip_quantiles) -> tuple[Tensor, Tensor]:
    """Per-row symmetric rounding; each row keeps the clip quantile with the lowest squared error."""
    w = w.float()
    return best_scale_per_row(w, max_q, clip_quantiles, lambda s: torch.clamp(torch.round(w / s[:, None]), -max_q, max_q),
                              lambda e: e.square().sum(dim=1))

def gptq_levels(w: Tensor, u: Tensor, scale: Tensor, max_q: int, block: int = 128) -> Tensor:
    """GPTQ's levels of w (act order): each rounding error spread over later columns via U = chol(H^-1) (upper), blockwise."""
    w, q = w.clone(), torch.zeros_like(w)
    for start in range(0, w.shape[1], block):
        stop = min(start + block, w.shape[1])
        errors = torch.zeros(w.shape[0], stop - start)
        for j in range(start, stop):
            q[:, j] = torch.clamp(torch.round(w[:, j] / scale), -max_q, max_q)
            errors[:, j - start] = (w[:, j] - q[:, j] * scale) / u[j, j]
            w[:, j:stop] -= errors[:, j - start, None] * u[j, j:stop]
        w[:, stop:] -= errors @ u[start:stop, stop:]
    return q

def sdclip_scale(w: Tensor, k: float, max_q: int) -> Tensor:
    """SDClip (the SP8192 record's scales): per row k x std(row) / max_q in fp16, the unbiased std of the unquantised row."""
    return (k * w.float().std(dim=1) / max_q).clamp_min(torch.finfo(torch.half).tiny).half()

def gptq_quantize(w: Tensor, h: Tensor, max_q: int, clip_quantiles, sdclip_k: float | None = None) -> tuple[Tensor, Tensor] | None:
    """Full-Hessian GPTQ (§6), H = mean X^T X: 1 % damping, act order; scales chosen per row by H-weighted error among the
    clip quantiles, or with sdclip_k the SDClip scales in one pass; None if H fails Cholesky."""
    scale = None if sdclip_k is None else sdclip_scale(w, sdclip_k, max_q)
    w, h = w.float().clone(), h.float().cpu().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    damped = h + 0.01 * h.diagonal().mean() * torch.eye(len(h))
    order = torch.argsort(damped.diagonal(), descending=True)
    try:
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped[order][:, order])), upper=True)
    except torch.linalg.LinAlgError:
        return None
    def levels(scale: Tensor) -> Tensor:
        q = torch.empty_like(w)
        q[:, order] = gptq_levels(w[:, order], u, scale, max_q)
        return q
    if scale is not None: return levels(scale.float()).to(torch.int8), scale
    return best_scale_per_row(w, max_q, clip_quantiles, levels, lambda e: ((e @ h) * e).sum(dim=1))

@torch.no_grad()
def collect_hessians(model: GPT, batches, rt: Runtime | None = None) -> dict[str, Tensor]:
    """H = mean X^T X of each linear layer's input, keyed by its weight's name, and of the tied head's input (the final norm's
    output) under tok_emb.weight; averaged over ranks with rt."""
    sums, tokens = {}, 0
    names = {module: name + ".weight" for name, module in model.named_modules() if isinstance(module, CastedLinear)}
    def hook(module, inputs):
        x = inputs[0].detach().flatten(0, -2).float()
        sums[names[module]] = sums.get(names[module], 0) + x.T @ x
    handles = [module.register_forward_pre_hook(hook) for module in names]
    try:
        for ids in batches:
            with rt.autocast() if rt else nullcontext():
                x = rms_norm(model.hidden(ids)).flatten(0, -2).float()  # the uncompiled method: the hooks see every layer
            sums["tok_emb.weight"] = sums.get("tok_emb.weight", 0) + x.T @ x
            tokens += ids.numel()
    finally:
        for handle in handles: handle.remove()
    hessians = {name: h / max(tokens, 1) for name, h in sums.items()}
    if rt is not None and rt.world_size > 1:
        for h in hessians.values(): rt.all_reduce(h).div_(rt.world_size)
    return hessians

def gptq_shared(state_dict: dict[str, Tensor], hessians: dict[str, Tensor], settings: dict[str, tuple], rt: Runtime | None) -> dict:
    """GPTQ of the matrices in settings (name: gptq_quantize's max_q, clip_quantiles, sdclip_k), dealt out to ranks by
    cost; every rank gets all."""
    (world_size, rank), names = ((rt.world_size, rt.rank) if rt else (1, 0)), list(settings)
    if not names: return {}  # clip search only (every rank agrees: the Hessians are the same on all): no collective
    shares = deal_out([state_dict[n].shape[0] * state_dict[n].shape[1] ** 2 for n in names], world_size)
    mine = {names[i]: gptq_quantize(state_dict[names[i]].detach().cpu(), hessians[names[i]], *settings[names[i]])
            for i in shares[rank]}
    if world_size == 1: return mine
    parts = [None] * world_size
    dist.all_gather_object(parts, mine)
    return {name: found for part in parts for name, found in part.items()}

def quantize_state_dict(state_dict: dict[str, Tensor], passthrough_max_numel: int = Hyperparameters.passthrough_max_numel,
                        hessians: dict[str, Tensor] | None = None, log=None, bits: int = 6, rt: Runtime | None = None,
                        int6_matrices: int = 0, scale_rule: str = "search", sdclip_k: tuple[float, float] = (12.85, 20.0),
                        gptq_embed: bool = False) -> dict:
    """The artifact container {"w": tensors, "m": meta} (§6): int6 matrices by GPTQ where hessians has them
    (every rank of rt calls this), else clip search; gptq_embed: the int8 tables too where hessians has them;
    scale_rule search (clip quantiles) or sdclip (k x std(row), sdclip_k for int6 and int8); int6_matrices > 0 narrows
    all but that many: the matrices of repeated blocks stay int6 first (a later record's rule: they run twice), then
    the largest traces of H."""
    weights, meta, max_q = {}, {}, 2 ** (bits - 1) - 1
    names = [n for n, t in state_dict.items() if n in (hessians or {}) and quant_kind(n, t, passthrough_max_numel) == "int6"]
    tables = [n for n, t in state_dict.items() if gptq_embed and n in (hessians or {})
              and quant_kind(n, t, passthrough_max_numel) == "int8"]
    repeated = ("repeats.",) + tuple(f"blocks.{int(i)}." for i in state_dict.get("config_recur_layers", torch.zeros(0)).tolist())
    rank = lambda n: (not n.startswith(repeated), -float(hessians[n].trace()))
    narrowed = sorted(names, key=rank)[int6_matrices:] if int6_matrices else []
    max_qs = {n: max_q // 2 if n in narrowed else max_q for n in names}
    if narrowed and log is not None:
        log(f"quantize:mixed int{bits}:{len(names) - len(narrowed)} int{bits - 1}:{len(narrowed)} (repeated blocks first, "
            "then by trace of H)")
    sdclip = scale_rule == "sdclip"
    settings = {**{n: (max_qs[n], INT6_CLIP_QUANTILES, sdclip_k[0] if sdclip else None) for n in names},
                **{n: (127, (INT8_CLIP_QUANTILE,), sdclip_k[1] if sdclip else None) for n in tables}}
    by_gptq = gptq_shared(state_dict, hessians, settings, rt)
    for name, t in state_dict.items():
        t = t.detach().cpu()
        kind = quant_kind(name, t, passthrough_max_numel)
        if kind == "passthrough":
            weights[name], meta[name] = (t.half() if t.is_floating_point() else t), "passthrough"
            continue
        if name in by_gptq and by_gptq[name] is None and log is not None:
            log(f"gptq: {name}: H is not positive definite after damping; clip search instead")
        found = by_gptq.get(name) or (quantize_rows(t, max_qs.get(name, max_q), INT6_CLIP_QUANTILES) if kind == "int6"
                                      else quantize_rows(t, 127, (INT8_CLIP_QUANTILE,)))
        weights[name + ".q"], weights[name + ".scale"], meta[name] = *found, {"type": kind}
    return {"w": weights, "m": meta}

def dequantize_state_dict(container: dict, template: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict with the names, shapes and dtypes of `template` from an artifact container."""
    weights, meta = container["w"], container["m"]
    missing, extra = sorted(set(template) - set(meta)), sorted(set(meta) - set(template))
    need(not missing and not extra, f"artifact does not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
    def tensor(name: str, ref: Tensor) -> Tensor:
        if meta[name] == "passthrough":
            t = weights.get(name)
        else:
            q, scale = weights.get(name + ".q"), weights.get(name + ".scale")
            t = None if q is None or scale is None or q.ndim != 2 or scale.shape != q.shape[:1] else q.float() * scale.float()[:, None]
        need(t is not None and t.shape == ref.shape,
             f"artifact tensor {name} is missing or has the wrong shape (the model expects {list(ref.shape)})")
        return t.to(ref.dtype)
    for name in (n for n in template if n.startswith("config_")):  # the settings a model records, before any shape
        setting = lambda t: f"{name.removeprefix('config_').upper()}={','.join(map(str, t.long().flatten().tolist()))}"
        found = weights.get(name)
        need(found is not None and torch.equal(found.to(template[name].dtype), template[name].cpu()),
             f"the artifact was trained with {setting(found) if found is not None else 'other settings'}, and this run "
             f"has {setting(template[name])}")
    return {name: tensor(name, ref) for name, ref in template.items()}

def serialize(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()

BROTLI_HEADER, ZSTD_MAGIC = b"BSHF", b"\x28\xb5\x2f\xfd"  # what a brotli artifact of ours starts with, and a zstd one

def brotli_module(why: str):
    """The brotli package, imported only where it is used; an InputError saying why if missing."""
    try:
        import brotli
    except ImportError:
        raise InputError(f"{why} needs the brotli package: pip install brotli") from None
    return brotli

def byte_shuffle(raw: bytes, undo: bool = False, stride: int = 2) -> bytes:
    """The bytes at positions 0 mod stride, then 1 mod stride, ... (with stride 2: even, then odd); undo: back again."""
    if not undo: return b"".join(raw[i::stride] for i in range(stride))
    out, start = bytearray(len(raw)), 0
    for i in range(stride):
        count = len(range(i, len(raw), stride))
        out[i::stride], start = raw[start:start + count], start + count
    return bytes(out)

def compress_artifact(container: dict, compressor: str = "zstd") -> bytes:
    """torch.save, then zstd level 22, or the 'BSHF' header and brotli quality 11 of the byte-shuffled bytes."""
    raw = serialize(container)
    if compressor == "brotli": return BROTLI_HEADER + brotli_module("COMPRESSOR=brotli").compress(byte_shuffle(raw), quality=11)
    return zstandard.ZstdCompressor(level=22).compress(raw)

def artifact_compressor(path) -> str:
    with open(path, "rb") as f: return "zstd" if f.read(len(ZSTD_MAGIC)) == ZSTD_MAGIC else "brotli"

def record_brotli(data: bytes) -> bytes | None:
    """The later records' brotli framing, read too: 'BSHF' and a stride byte inside the brotli stream, before the
    shuffled bytes; the serialised container, or None where data is not that (or brotli does not import)."""
    with suppress(Exception):
        import brotli
        raw = brotli.decompress(data)
        if raw.startswith(BROTLI_HEADER) and len(raw) > 4 and raw[4] > 0: return byte_shuffle(raw[5:], undo=True, stride=raw[4])
    return None

def kind_counts(container: dict) -> str:
    kinds = [m if m == "passthrough" else m["type"] for m in container["m"].values()]
    return " ".join(f"{kind}:{kinds.count(kind)}" for kind in ("int6", "int8", "passthrough"))

# compressed bytes per payload byte by compressor and GPTQ_SCALES (clip search's scales are "search"'s), measured on trained
# proxy artifacts (docs/proxy.md): search's the mean over 3; SDClip's wide clips leave fewer levels in use, fewer bytes
COMPRESSION_RATIO = {("zstd", "search"): 0.7180, ("brotli", "search"): 0.6659, ("zstd", "sdclip"): 0.6378, ("brotli", "sdclip"): 0.5740}

def estimate_size(state_dict: dict[str, Tensor], args: Hyperparameters) -> tuple[int, str]:
    """The artifact's bytes estimated from shapes: the payload times the compressor's measured ratio (an upper
    bound with INT6_MATRICES: the int5 matrices taken to be the smallest); and the arithmetic, for the log."""
    counts, payload_bits, int6 = {"int6": 0, "int5": 0, "int8": 0, "passthrough": 0}, 0, []
    for name, t in state_dict.items():
        kind = quant_kind(name, t, args.passthrough_max_numel)
        counts[kind] += t.numel()
        if kind == "int6": int6.append(t.numel())
        bits = {"int6": 6, "int8": 8}.get(kind) or (16 if t.is_floating_point() else 8 * t.element_size())
        payload_bits += t.numel() * bits + (16 * t.shape[0] if kind != "passthrough" else 0)  # and fp16 row scales
    need(args.int6_matrices <= len(int6), f"INT6_MATRICES={args.int6_matrices} is more than the {len(int6)} int6 matrices of this model")
    narrowed = sum(sorted(int6)[:len(int6) - args.int6_matrices]) if args.int6_matrices else 0
    counts["int6"], counts["int5"], payload_bits = counts["int6"] - narrowed, narrowed, payload_bits - narrowed
    ratio = COMPRESSION_RATIO[args.compressor, args.gptq_scales]
    estimate = round(payload_bits / 8 * ratio)
    return estimate, (" ".join(f"{k}:{v}" for k, v in counts.items() if v or k != "int5") + f" params, payload "
                      f"{payload_bits // 8} bytes x {ratio} ({args.compressor}, {args.gptq_scales} scales) = {estimate} bytes")

def zeroing_costs(container: dict, weights: dict[str, Tensor], hessians: dict[str, Tensor]) -> list[tuple[str, Tensor, Tensor]]:
    """(name, flat indices of its +-1 values, what zeroing each adds to its row's error (w - q s) H (w - q s)^T) per
    quantised tensor; H its Hessian, or I where it has none: 2 d (E H)_ij + d^2 H_jj with d = q_ij s_i, E = w - q s."""
    found = []
    for name, meta in container["m"].items():
        if meta == "passthrough": continue
        q, s = container["w"][name + ".q"].float(), container["w"][name + ".scale"].float()[:, None]
        ones = (q.abs() == 1).flatten().nonzero().squeeze(1)
        h = hessians.get(name, None)
        h = torch.eye(q.shape[1]) if h is None else h.float().cpu()
        d = (q * s).flatten()[ones]
        pull = ((weights[name].float().cpu() - q * s) @ h).flatten()[ones]
        found.append((name, ones, 2 * d * pull + d.square() * h.diagonal()[ones % q.shape[1]]))
    return found

def fit_artifact(container: dict, weights: dict[str, Tensor], hessians: dict[str, Tensor], room: int, compressor: str,
                 log) -> bytes:
    """FIT (§6): the artifact with the k +-1 values of least cost (zeroing_costs) set to 0, for the fewest k, within 2 %,
    that brings it to at most `room` bytes; k is searched over real compressions (the size is not additive), by
    interpolation kept inside a bisection bracket. The container is changed in place to what the bytes hold."""
    before = compress_artifact(container, compressor)
    if len(before) <= room: return before
    found = zeroing_costs(container, weights, hessians)
    order = torch.argsort(torch.cat([cost for *_, cost in found]))
    owner = torch.cat([torch.full_like(ones, i) for i, (_, ones, _) in enumerate(found)])[order]
    flat = torch.cat([ones for _, ones, _ in found])[order]
    original = {name: container["w"][name + ".q"] for name, _, _ in found}
    def prune(k: int) -> dict:
        """The container with its k cheapest +-1 values set to 0 (in place)."""
        for i, (name, _, _) in enumerate(found):
            container["w"][name + ".q"] = original[name].clone()
            container["w"][name + ".q"].view(-1)[flat[:k][owner[:k] == i]] = 0
        return container
    lo, lo_bytes, hi = 0, len(before), len(order)
    blob, compressions = compress_artifact(prune(hi), compressor), 2
    need(len(blob) <= room, f"FIT: the artifact is {len(blob)} bytes with all {hi} of its +-1 values pruned, over the "
         f"{room} bytes left by the code", RunError)
    while hi - lo > max(1, hi // 50):
        guess = lo + round((hi - lo) * (lo_bytes - room) / max(lo_bytes - len(blob), 1) * 1.05)
        k = min(max(guess, lo + (hi - lo) // 8, lo + 1), hi - max((hi - lo) // 8, 1))
        candidate, compressions = compress_artifact(prune(k), compressor), compressions + 1
        if len(candidate) <= room: hi, blob = k, candidate
        else: lo, lo_bytes = k, len(candidate)
    prune(hi)  # the container holds what blob holds
    log(f"fit: pruned {hi} of {len(order)} +-1 values (least H-weighted error); artifact {len(before)} -> {len(blob)} "
        f"bytes, room {room}; {compressions} compressions")
    return blob

def load_artifact(path) -> dict:
    """Reads an artifact safely (weights_only: tensors, strings, numbers and dicts, nothing that runs)."""
    path = existing_file(path, "artifact")
    data = path.read_bytes()
    need(not data.startswith(b"PK\x03\x04"), f"artifact {path} is a torch.save file (the raw weights, {RAW_MODEL_PATH}?), "
         f"not a compressed artifact ({ARTIFACT_PATH})")
    brotli = data.startswith(BROTLI_HEADER) and brotli_module(f"artifact {path} is brotli-compressed: loading it")
    name, error = ("brotli", brotli.error) if brotli else ("zstd", zstandard.ZstdError)
    raw = None if brotli or data.startswith(ZSTD_MAGIC) else record_brotli(data)
    try:
        raw = raw or (byte_shuffle(brotli.decompress(data[len(BROTLI_HEADER):]), undo=True) if brotli
                      else zstandard.ZstdDecompressor().decompress(data))
    except error as e:
        raise InputError(f"artifact {path} is not a complete {name} stream (truncated or corrupt: {e})") from None
    try:
        container = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses any object that is not plain data
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f"a Python object ({found[1]}) that loading would create" if found else "data other than tensors and plain values"
        raise InputError(f"artifact {path} refused: it holds {what}; only tensors, numbers, strings and dicts are loaded") from None
    meta_ok = lambda m: m == "passthrough" or (isinstance(m, dict) and m.get("type") in ("int6", "int8") and len(m) == 1)
    need(isinstance(container, dict) and set(container) == {"w", "m"} and isinstance(container["w"], dict)
         and isinstance(container["m"], dict) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in container["w"].items())
         and all(isinstance(k, str) and meta_ok(v) for k, v in container["m"].items()),
         f"artifact {path} refused: not a {{'w': tensors, 'm': meta}} container of this format")
    return container

def code_bytes() -> int:
    return len(Path(__file__).read_bytes())  # in a packed submission (scripts/pack.py): the packed file's

def own_source() -> str:
    """The source that runs, for the log: this file's text, or in a packed submission the source it unpacked."""
    return globals().get("UNPACKED_SOURCE") or Path(__file__).read_text(encoding="utf-8")

# ----------------------------------------------------------------------------- evaluation (§7)
def rank_share(n: int, rt: Runtime) -> slice:
    return slice(n * rt.rank // rt.world_size, n * (rt.rank + 1) // rt.world_size)

def sliding_windows(n_targets: int, seq_len: int, stride: int) -> tuple[Tensor, Tensor]:
    """Window starts and each window's first scored target: every target scored once, with >= seq_len - stride context."""
    ends = torch.cat([torch.tensor([seq_len]), torch.arange(seq_len + stride, n_targets + stride, stride).clamp_max(n_targets)])
    return ends - seq_len, seq_len - ends.diff(prepend=torch.tensor([0]))

@torch.inference_mode()
def score_windows(model: GPT, val_tokens: Tensor, starts: Tensor, score_from: Tensor, seq_len: int,
                  meter: BpbMeter, batch: int, rt: Runtime, stride: int | None = None):
    """Adds to meter the NLL and bytes of each window's targets from score_from on, `batch` windows at a time
    (padded: one shape for the compiled forward); with a stride, the head runs on the last `stride` positions alone."""
    was_training = model.training
    model.eval()
    offsets = torch.arange(seq_len + 1, device=rt.device)
    for i in range(0, len(starts), batch):
        pad = batch - len(starts[i:i + batch])
        first = to_device(F.pad(starts[i:i + batch], (0, pad)), rt.device)
        score_first = F.pad(score_from[i:i + batch], (0, pad), value=seq_len)
        tail = stride if stride and score_first.min() >= seq_len - stride else seq_len
        scored = torch.arange(seq_len - tail, seq_len) >= score_first[:, None]
        scored = to_device(scored.flatten().nonzero().squeeze(1), rt.device)
        windows = val_tokens[first[:, None] + offsets].long()
        x, y = windows[:, :-1], windows[:, -tail:]
        with rt.autocast(): nll = model(x, y, reduction="none")
        meter.add(*(t.flatten()[scored] for t in (nll, x[:, -tail:], y)))
    model.train(was_training)

def evaluate(model: GPT, val_tokens: Tensor, token_bytes: TokenBytes, args: Hyperparameters, rt: Runtime,
             stride: int | None = None) -> tuple[float, float]:
    """(val_loss, val_bpb): consecutive EVAL_SEQ_LEN sequences (§7.1), or with a stride sliding windows (§7.2)."""
    seq_len, n_targets = args.eval_seq_len, val_tokens.numel() - 1
    starts = torch.arange(n_targets // seq_len) * seq_len
    starts, score_from = (starts, torch.zeros_like(starts)) if stride is None else sliding_windows(n_targets, seq_len, stride)
    mine, meter = rank_share(len(starts), rt), BpbMeter(token_bytes, rt.device)
    score_windows(model, val_tokens.to(rt.device), starts[mine], score_from[mine], seq_len, meter,
                  max(1, args.val_batch_size // (rt.world_size * seq_len)), rt, stride)
    return meter.result()

def ttt_train_chunk(model: GPT, optimizer, params: list[Tensor], tokens: Tensor, args: Hyperparameters, rt: Runtime):
    """TTT_EPOCHS epochs of SGD on a chunk: global batches of TTT_TRAIN_BATCH_SEQS split over ranks (padded)."""
    seq_len, n_seqs = args.eval_seq_len, (tokens.numel() - 1) // args.eval_seq_len
    step_seqs = min(args.ttt_train_batch_seqs, n_seqs)
    rows = -(-step_seqs // rt.world_size)
    tokens = F.pad(tokens, (0, rows * seq_len))  # room for the padding rows of the last step
    for _ in range(args.ttt_epochs):
        for first in range(0, n_seqs, step_seqs):
            count = min(step_seqs, n_seqs - first)
            mine = rank_share(count, rt)
            seqs = tokens[(first + mine.start) * seq_len:(first + mine.start + rows) * seq_len + 1].long()
            x, y = seqs[:-1].view(rows, seq_len), seqs[1:].view(rows, seq_len).clone()
            y[mine.stop - mine.start:] = -100  # padding rows: ignored by the loss
            with rt.autocast():
                loss = model(x, y, reduction="sum") / (count * seq_len)  # summed over ranks: the batch mean
            loss.backward()
            square = sum_gradients(params, rt)  # replaces each .grad by its sum over ranks
            clip_gradients([p.grad for p in params], square, args.ttt_grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

def evaluate_ttt(model: GPT, val_tokens: Tensor, token_bytes: TokenBytes, args: Hyperparameters, rt: Runtime,
                 log=None) -> tuple[float, float, Tensor]:
    """Score-first TTT (§7.3): each chunk scored, then trained on; (val_loss, val_bpb, per-chunk [nll, targets, bytes] sums)."""
    seq_len, chunk_tokens, n_targets = args.eval_seq_len, args.ttt_chunk_tokens, val_tokens.numel() - 1
    starts, score_from = sliding_windows(n_targets, seq_len, args.eval_stride)
    n_chunks = -(-n_targets // chunk_tokens)
    bounds = torch.searchsorted((starts + score_from) // chunk_tokens, torch.arange(n_chunks + 1)).tolist()
    frozen = tuple(f"blocks.{i}." for i in range(args.ttt_freeze_blocks))
    for name, p in model.named_parameters(): p.requires_grad_(not name.startswith(frozen))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.ttt_lr, momentum=args.ttt_momentum)
    model.eval()  # QAT is off, and the fake quantiser is all that eval mode turns off
    val_tokens, token_bytes = val_tokens.to(rt.device), token_bytes.to(rt.device)
    batch = max(1, args.val_batch_size // (rt.world_size * seq_len))
    sums, t0 = torch.zeros(n_chunks, 3, dtype=torch.float64, device=rt.device), time.perf_counter()
    for c in range(n_chunks):
        mine = rank_share(bounds[c + 1] - bounds[c], rt)
        window_ids = slice(bounds[c] + mine.start, bounds[c] + mine.stop)
        meter = BpbMeter(token_bytes, rt.device)
        score_windows(model, val_tokens, starts[window_ids], score_from[window_ids], seq_len, meter, batch, rt, args.eval_stride)
        sums[c] = meter.sums
        if c < n_chunks - 1 and args.ttt_epochs > 0:
            optimizer.param_groups[0]["lr"] = args.ttt_lr * 0.5 * (1 + math.cos(math.pi * c / max(n_chunks - 1, 1)))
            ttt_train_chunk(model, optimizer, params, val_tokens[c * chunk_tokens:(c + 1) * chunk_tokens + 1], args, rt)
        if log is not None and ((c + 1) % 10 == 0 or c == n_chunks - 1):
            running = rt.all_reduce(sums[:c + 1].sum(dim=0))
            log(f"ttt:chunk {c + 1}/{n_chunks} running_val_bpb:{loss_and_bpb(running)[1]:.4f} "
                f"elapsed:{time.perf_counter() - t0:.1f}s")
    return *loss_and_bpb(rt.all_reduce(sums).sum(dim=0)), sums

# ----------------------------------------------------------------------------- main
class Logger:
    """Rank 0 writes logs/<RUN_ID>.txt and echoes to stdout; other ranks stay silent."""
    def __init__(self, run_id: str, enabled: bool):
        self.file = None
        path = Path("logs") / f"{run_id}.txt"
        if enabled:
            need(not path.parent.exists() or path.parent.is_dir(), "logs exists but is not a directory: each run writes "
                 "logs/<RUN_ID>.txt")
            try:
                path.parent.mkdir(exist_ok=True)
                self.file = open(path, "w", buffering=1, encoding="utf-8")
            except OSError as e:
                raise InputError(f"cannot write the log {path}: {e.strerror or e}") from None

    def __call__(self, message: str, console: bool = True):
        if self.file is not None:
            try:
                self.file.write(message + "\n")
            except OSError as e:
                raise RunError(f"cannot write the log {self.file.name}: {e.strerror or e}") from None
            if console: print(message, flush=True)

    @contextmanager
    def failures(self, rt: Runtime):
        """Every way a run stops early ends the log with one ERROR line and leaves as a RunError: this rank's own
        error (another rank's is published for rank 0 to report), a peer that stopped in a collective, a signal."""
        try:
            yield
        except Stopped as e:  # every rank gets the signal: a peer's own error, if one came first, is the cause
            error = RunError(f"{peers} (then {e})") if (peers := rt.peer_errors()) else e
        except RunError as e:
            error = e
            if not rt.is_main: rt.publish(str(e))  # a rank's own error only: never one it learnt from a peer
        except RuntimeError as e:  # the backend's error when a peer process is gone
            if not re.search(r"(closed|reset) by peer|Broken pipe", str(e)): raise
            error = RunError(rt.peer_errors() or "another rank stopped during a collective (its own output says why)")
        else:
            return
        with suppress(RunError): self(f"ERROR: {error}", console=False)
        raise error

@contextmanager
def signals_stop_the_run():
    """SIGINT (Ctrl-C) and SIGTERM raise Stopped, so that a stopped run says so in one line and at the end of its log."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def stop(signum, frame): raise Stopped(signum)
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items(): signal.signal(signum, handler)

def train(args: Hyperparameters, rt: Runtime, train_files, val_tokens: Tensor, token_bytes: TokenBytes, log,
          clock) -> tuple[str, dict[str, Tensor], dict[str, Tensor] | None]:
    """Trains (§5); returns the average to apply (ema or swa), its fp32 weights, and with GPTQ its Hessians."""
    loader = make_loader(train_files, args, rt)
    model = compile_model(place_model(build_model(args), rt), args, rt.device)
    optimizers = build_optimizers(model, args, rt)
    log(f"model_params:{sum(p.numel() for p in model.parameters())}")
    log(f"world_size:{rt.world_size} grad_accum_steps:{rt.grad_accum_steps}")
    t0 = clock()
    warmup_prime(model, optimizers, loader, args, rt)
    rt.synchronize()
    log(f"warmup_prime steps:{args.warmup_steps} time:{1000 * (clock() - t0):.0f}ms")  # compiling every graph, on CUDA

    ema, swa, qat_on, soft_round_on = EMA(model, args.ema_decay), SWA(), False, False
    burst = deque(maxlen=args.ttt_burst_steps)  # (step, micro-batches) of the last steps, for the burst
    local_tokens = args.train_batch_tokens // MICRO_BATCHES
    step, stop_after, training_ms, elapsed_ms, t0 = 0, None, 0.0, 0.0, clock()
    while True:
        last = step == args.iterations or step == stop_after
        if last or (args.val_loss_every and step % args.val_loss_every == 0):
            rt.synchronize()
            training_ms += 1000 * (clock() - t0)
            val_loss, val_bpb = evaluate(model, val_tokens, token_bytes, args, rt)
            log(f"step:{step}/{args.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
                f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")
            t0 = clock()
        if last:
            if stop_after is not None:
                log(f"stopping_early: wallclock_cap train_time:{training_ms:.0f}ms step:{step}/{args.iterations}")
            break
        scale = lr_scale(step, elapsed_ms, args)
        if model.recurs and not model.recurring and recurrence_due(step, elapsed_ms, args):
            start_recurrence(model, ema, log, f"step:{step}")
        if not qat_on and scale < args.late_qat_threshold:
            qat_on = True
            model.set_qat(True, soft_round_on, args.soft_round_tau)
            log(f"late_qat:enabled step:{step} scale:{scale:.4f}")
        if qat_on and not soft_round_on and scale < args.soft_round_threshold:
            soft_round_on = True
            model.set_qat(True, True, args.soft_round_tau)
            log(f"soft_round:enabled step:{step} scale:{scale:.4f} tau:{args.soft_round_tau}")
        set_lr_scale(optimizers, scale)
        warm = min(step / args.muon_momentum_warmup_steps, 1.0) if args.muon_momentum_warmup_steps else 1.0
        optimizers.muon.param_groups[0]["momentum"] = (1 - warm) * args.muon_momentum_warmup_start + warm * args.muon_momentum
        batches = [loader.next_batch(local_tokens, args.train_seq_len) for _ in range(rt.grad_accum_steps)]
        if args.ttt_burst_enabled and scale < args.ttt_burst_trigger: burst.append((step, batches))
        train_loss = train_step(model, batches, optimizers, args.grad_clip_norm, rt)
        ema.update(model)
        step += 1
        if args.swa_enabled and scale < args.swa_trigger and step % args.swa_every == 0:
            if swa.count == 0: log(f"swa:start step:{step}")
            swa.add(model)
        # one all-reduce: ranks agree on the clock, and stop together on a diverged loss
        elapsed_ms, diverged = rt.agree_max(training_ms + 1000 * (clock() - t0), ~torch.isfinite(train_loss))
        need(not diverged, f"training loss is not finite at step {step}: the run diverged (learning rates too high?); "
             "no model or artifact was written", RunError)
        if args.train_log_every and (step <= 10 or step % args.train_log_every == 0):
            log(f"step:{step}/{args.iterations} train_loss:{train_loss.item():.4f} "
                f"train_time:{elapsed_ms:.0f}ms step_avg:{elapsed_ms / step:.2f}ms")
        if stop_after is None and args.max_wallclock_seconds and elapsed_ms >= 1000 * args.train_seconds:
            stop_after = step

    if model.recurs and not model.recurring:  # the artifact is evaluated with the recurrence on
        when = f"RECUR_STEP={args.recur_step}" if args.recur_layers else f"LOOP_START_FRAC={args.loop_start_frac}"
        start_recurrence(model, ema, log, f"at_end step:{step} ({when} not reached)")
    if rt.device.type == "cuda":
        log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
            f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB")
    if burst:  # replay the last steps' batches at a tenth of the learning rates (§5)
        log(f"ttt_burst:start steps:{len(burst)} epochs:{args.ttt_burst_epochs} "
            f"first_step:{burst[0][0]} last_step:{burst[-1][0]}")
        set_lr_scale(optimizers, args.ttt_burst_lr_factor)
        finite = torch.ones((), dtype=torch.bool, device=rt.device)
        for _ in range(args.ttt_burst_epochs):
            for _, batches in burst:
                finite &= torch.isfinite(train_step(model, batches, optimizers, args.grad_clip_norm, rt))
                ema.update(model)
        need(not rt.agree_max(~finite)[0], "training loss is not finite in the late burst: the run diverged; "
             "no model or artifact was written", RunError)
        log("ttt_burst:done")

    if args.weight_avg == "swa" and swa.count == 0:
        log("weight_avg: WEIGHT_AVG=swa but no SWA snapshot was taken; applying the EMA instead")
    average = "swa" if args.weight_avg == "swa" and swa.count > 0 else "ema"
    log(f"weight_avg:swa snapshots:{swa.count}" if average == "swa" else f"weight_avg:ema decay:{args.ema_decay}")
    weights = swa.weights if average == "swa" else ema.weights
    if args.quant_method != "gptq": return average, weights, None
    model.load_state_dict(weights)
    return average, weights, calibrate(model, loader, training_ms, args, rt, log, clock)

@torch.no_grad()
def generate(model: GPT, n: int, args: Hyperparameters, rt: Runtime) -> Tensor:
    """n sequences sampled from the model at temperature 0.8 from random first tokens: calibration without data."""
    g = torch.Generator(device=rt.device).manual_seed(args.seed + rt.rank)
    ids = torch.randint(args.vocab_size, (n, 1), generator=g, device=rt.device)
    for _ in range(args.train_seq_len - 1):
        with rt.autocast(): logits = model.forward_logits(ids)[:, -1].float()
        ids = torch.cat([ids, torch.multinomial(torch.softmax(logits / 0.8, dim=-1), 1, generator=g)], dim=1)
    return ids

def calibrate(model: GPT, loader: DistributedTokenLoader | CoprimeLoader | ShuffledLoader, training_ms: float, args: Hyperparameters, rt: Runtime,
              log, clock) -> dict[str, Tensor]:
    """GPTQ's Hessians (§6): from the next training sequences while the wallclock allows, or generated text."""
    model.eval()
    per_rank, t0 = -(-args.gptq_sequences // rt.world_size), clock()
    if args.gptq_calibration == "self":
        hessians = collect_hessians(model, [generate(model, per_rank, args, rt)], rt)
        log(f"gptq:calibration source:self sequences:{per_rank * rt.world_size} time:{1000 * (clock() - t0):.0f}ms")
        return hessians
    taken, longest = [0], 0.0
    def stream():
        nonlocal longest
        while taken[0] < per_rank:
            start, count = clock(), min(8, per_rank - taken[0])
            past = bool(args.max_wallclock_seconds) and training_ms + 1000 * (start - t0 + longest) > 1000 * args.max_wallclock_seconds
            if rt.agree_max(float(past))[0]: return  # one more batch could end past the cap on some rank: all stop
            yield loader.next_batch(count * args.train_seq_len, args.train_seq_len)[0]
            rt.synchronize()
            taken[0] += count
            longest = max(longest, clock() - start)
    hessians = collect_hessians(model, stream(), rt)
    calibration_ms = 1000 * (clock() - t0)
    log(f"gptq:calibration source:train sequences:{taken[0]} per rank time:{calibration_ms:.0f}ms "
        f"train_time:{training_ms + calibration_ms:.0f}ms")
    return hessians

def save_model(averaged: dict[str, Tensor], artifact: Path, args: Hyperparameters, rt: Runtime, log,
               hessians: dict[str, Tensor] | None = None):
    """Rank 0 writes the raw weights and the artifact (§6), both or neither; every rank learns whether it worked."""
    failure, t0 = "", time.perf_counter()
    container = (quantize_state_dict(averaged, args.passthrough_max_numel, hessians, log, rt=rt, int6_matrices=args.int6_matrices,
                                     scale_rule=args.gptq_scales, sdclip_k=(args.sdclip_k_int6, args.sdclip_k_int8),
                                     gptq_embed=args.gptq_embed)
                 if hessians or rt.is_main else None)
    if rt.is_main:
        seconds = time.perf_counter() - t0
        try:
            room = SUBMISSION_LIMIT_BYTES - code_bytes() - 1  # the total must stay below the limit
            blob = (fit_artifact(container, averaged, hessians or {}, room, args.compressor, log) if args.fit
                    else compress_artifact(container, args.compressor))
            atomic_write({RAW_MODEL_PATH: serialize(averaged), artifact: blob})
        except RunError as e:
            failure = str(e)
        else:
            log(f"Serialized model: {RAW_MODEL_PATH.stat().st_size} bytes")
            log(f"Code size: {code_bytes()} bytes")
            log(f"quantized_tensors: {kind_counts(container)}")
            log(f"quantize:{'gptq' if hessians else 'clip'} time:{1000 * seconds:.0f}ms")
    need(not rt.agree_max(float(bool(failure)))[0], failure or "rank 0 could not write the model files", RunError)

def main(clock=time.perf_counter):
    args = Hyperparameters()
    check_variable_names(os.environ)
    with signals_stop_the_run():
        rt = setup_runtime()
        with rt.agreed(): log = Logger(args.run_id, rt.is_main)
        with log.failures(rt):
            run(args, rt, log, clock)
        if rt.world_size > 1: rt.wait_for_all("finished")

def run(args: Hyperparameters, rt: Runtime, log: Logger, clock):
    """The run after its start-up: checks of the input, training, the artifact, the scored evaluations (§7)."""
    log("\n".join([own_source(), "=" * 100, f"Running Python {sys.version}",
                   f"Running PyTorch {torch.__version__}"]), console=False)  # the source, versions and GPUs (§8)
    if shutil.which("nvidia-smi"): log(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout, console=False)
    log("=" * 100, console=False)
    log("hyperparameters: " + json.dumps(vars(args)))
    attention = attention_backend(args.attention, rt.device)
    if rt.device.type == "cuda" and attention == "sdpa" and args.attention == "auto":
        log("WARNING: flash_attn_interface (FlashAttention-3) does not import: attention runs on PyTorch SDPA, "
            "and the record's step times (85 ms on 8xH100) assume FlashAttention-3")
    with rt.agreed():  # files every rank reads for itself
        artifact = existing_file(args.eval_artifact, "EVAL_ARTIFACT") if args.eval_artifact else ARTIFACT_PATH
        if args.compressor == "brotli" and not args.eval_artifact: brotli_module("COMPRESSOR=brotli")  # now, not after training
        token_bytes = TokenBytes(load_tokenizer(args.tokenizer_path, args.vocab_size)).to(rt.device)
        val_files = list_shards(args.data_path, "val")
        train_files = [] if args.eval_artifact else list_shards(args.data_path, "train")
    check_token_ids(val_files + train_files, args.vocab_size, rt)
    val_tokens = load_validation_tokens(val_files, max(args.train_seq_len, args.eval_seq_len), args.val_tokens).to(rt.device)
    log(f"val_tokens:{val_tokens.numel() - 1} device:{rt.device} attention:{attention}")
    model = compile_model(place_model(build_model(args), rt), args, rt.device)  # for the evaluations
    model.recurring = model.recurs  # a run's recurrence is on by the end of its training
    if args.eval_artifact:  # eval-only: score an existing artifact with the current hyperparameters
        log(f"eval_artifact:{artifact}")
    else:
        estimate, arithmetic = estimate_size(model.state_dict(), args)
        estimate += code_bytes()
        log(f"size_estimate: {arithmetic}; with the code {estimate} bytes")
        allowed = SUBMISSION_LIMIT_BYTES * (1 + FIT_MARGIN * args.fit)
        remedies = ["make the model smaller"] + ([] if "UNPACKED_SOURCE" in globals() else ["run the packed file (scripts/pack.py)"]) \
            + ([] if args.fit else ["set FIT=1 to prune what is over"])
        need(estimate < allowed or args.allow_over_limit, f"estimated submission size {estimate} bytes is not below the "
             f"{SUBMISSION_LIMIT_BYTES}-byte limit" + (f" plus FIT's {FIT_MARGIN:.0%} margin" if args.fit else "") +
             f": {', '.join(remedies)}, or set ALLOW_OVER_LIMIT=1")
        average, averaged, hessians = train(args, rt, train_files, val_tokens, token_bytes, log, clock)
        model.load_state_dict(averaged)
        t_eval = clock()
        val_loss, val_bpb = evaluate(model, val_tokens, token_bytes, args, rt)
        log(f"DIAGNOSTIC post_{average} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
            f"eval_time:{1000 * (clock() - t_eval):.0f}ms")
        save_model(averaged, artifact, args, rt, log, hessians)
    with rt.agreed():  # every rank reads the artifact from disk
        model_bytes, compressor = existing_file(artifact, "artifact").stat().st_size, artifact_compressor(artifact)
        weights = dequantize_state_dict(load_artifact(artifact), model.state_dict())
    total_bytes = model_bytes + code_bytes()
    log(f"Serialized model int6+{compressor}: {model_bytes} bytes")
    log(f"Total submission size int6+{compressor}: {total_bytes} bytes")
    over_limit = f"total submission size {total_bytes} bytes is not below the {SUBMISSION_LIMIT_BYTES}-byte limit"
    if total_bytes >= SUBMISSION_LIMIT_BYTES: log(f"ERROR: {over_limit}; evaluating anyway, the run will exit with an error")
    model.load_state_dict(weights)
    evaluations = [("final_int6_roundtrip", lambda: evaluate(model, val_tokens, token_bytes, args, rt)),
                   ("final_int6_sliding_window", lambda: evaluate(model, val_tokens, token_bytes, args, rt, args.eval_stride))]
    if args.ttt_enabled:
        evaluations.append(("final_ttt", lambda: evaluate_ttt(model, val_tokens, token_bytes, args, rt, log)[:2]))
    for name, score in evaluations:  # the scored evaluations of the artifact's weights (§7), each timed
        rt.synchronize()
        t0 = time.perf_counter()
        val_loss, val_bpb = score()
        rt.synchronize()
        log(f"{name} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{1000 * (time.perf_counter() - t0):.0f}ms")
        log(f"{name}_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")
    need(total_bytes < SUBMISSION_LIMIT_BYTES, over_limit, RunError)

if __name__ == "__main__":
    try:
        main()
        exit_code = 0
    except RunError as e:
        if os.environ.get("RANK", "0") == "0": print(f"error: {e}", file=sys.stderr)  # rank 0 reports every rank's error
        exit_code = e.exit_code
    if dist.is_initialized():  # leave without tearing the process group down: its threads can abort a process at exit
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(exit_code)
    sys.exit(exit_code)
