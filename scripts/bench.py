#!/usr/bin/env python
"""Speed benchmark (docs/recipe.md §9, §10.6): our path against a baseline, timed in one run.

    python scripts/bench.py                                      # one process (CPU or one GPU)
    torchrun --standalone --nproc_per_node=2 scripts/bench.py    # 2 ranks (gloo on CPU, NCCL on GPUs)
    COMPILE=1 torchrun --standalone --nproc_per_node=2 scripts/bench.py  # CPU, compiled as on a GPU (slow to compile)
    python scripts/bench.py --config default --chunks 50 --repeat 1  # the record's model (needs FineWeb)

Prints one table: training ms/step, the training ms/step of each of the later records' options
against the default (raced in the same run, placed by depth: parallel residuals from block 7 of 11,
depth recurrence of blocks 4,5 of 11 with the repeats on, the coprime-stride loader), with several ranks the bytes each rank sends per step, tokens/s
of the standard, sliding and TTT evaluations, and the time to quantise and compress the weights; for
each, ours, the baseline and the ratio, and what both reach. Below it, the arithmetic floor of a
training step.

The baselines are written here and nowhere else:
  training    this project's previous step, weaker than the record's: DDP all-reduces every
              gradient, then Muon all-reduces a full-size buffer of updates (about twice the
              traffic of the record, which reduce-scatters the gradients and all-gathers the
              updates, as ours does). Same attention and compilation as ours.
  standard    the record's evaluation: consecutive sequences, forward_logits compiled where
              training compiles;
  sliding     the same compiled forward_logits on batches built window by window from host
              tokens, scored window by window;
  TTT         that scoring uncompiled, training on unpadded batches, one all-reduce per parameter.
Both paths start from the same weights and data; the evaluations must reach the same val_bpb.
Each evaluation's first call (on 2 chunks: compilation, allocation) is timed apart, as its warm-up.

--config smoke (the default on CPU) is scripts/smoke.env on the bundled sample (built if missing);
--config default (the default on CUDA) is the record's hyperparameters, with DATA_PATH and
TOKENIZER_PATH pointing at the FineWeb shards. Environment variables override either, as for
train_gpt.py.
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402


# ----------------------------------------------------------------------------- the previous training step

class AllReduceMuon(torch.optim.Optimizer):
    """This project's previous Muon: every rank holds the mean gradients (DDP all-reduced them); each
    orthogonalises the matrices i % world_size == rank, matrices of one shape together, then one
    all-reduce of a full-size buffer shares the updates."""

    def __init__(self, params, lr, momentum, backend_steps, weight_decay, update_dtype):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, weight_decay=weight_decay))
        self.update_dtype = update_dtype

    @torch.no_grad()
    def step(self):
        rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        group = self.param_groups[0]
        params, lr, mu = group["params"], group["lr"], group["momentum"]
        offsets = [0]
        for p in params:
            offsets.append(offsets[-1] + p.numel())
        updates = torch.zeros(offsets[-1], device=params[0].device, dtype=self.update_dtype)
        by_shape = {}
        for i, p in enumerate(params):
            by_shape.setdefault(p.shape, []).append(i)
        for shape, indices in by_shape.items():
            mine = indices[rank::world_size]
            if not mine:
                continue
            directions = []
            for i in mine:
                grad = params[i].grad
                buf = self.state[params[i]].setdefault("momentum_buffer", torch.zeros_like(grad))
                buf.mul_(mu).add_(grad)
                directions.append(grad.add(buf, alpha=mu))
            ortho = tg.newton_schulz5(torch.stack(directions), group["backend_steps"], self.update_dtype)
            for i, u in zip(mine, ortho * max(1, shape[0] / shape[1]) ** 0.5):
                updates[offsets[i]:offsets[i + 1]] = u.flatten()
        if world_size > 1:
            dist.all_reduce(updates)
        for i, p in enumerate(params):
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(updates[offsets[i]:offsets[i + 1]].view_as(p).to(p.dtype), alpha=-lr)


def previous_optimizers(model, args, rt):
    """Our optimisers with the Muon above in place of ours."""
    optimizers = tg.build_optimizers(model, args, rt)
    muon = AllReduceMuon(optimizers.muon.matrices, args.matrix_lr, args.muon_momentum_warmup_start,
                         args.muon_backend_steps, args.muon_wd, optimizers.muon.update_dtype)
    muon.param_groups[0]["base_lr"] = optimizers.muon.param_groups[0]["base_lr"]
    return tg.Optimizers(muon, optimizers.adam)


def data_parallel(model, rt):
    """DDP over the ranks, buffers not synced at each forward (the QAT switches are set alike on
    every rank); torch 2.13 renamed broadcast_buffers to forward_sync_buffers."""
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                      else {"broadcast_buffers": False})
    return DDP(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None, **no_buffer_sync)


def previous_train_step(model, batches, optimizers, grad_clip, rt):
    """This project's previous training step: DDP all-reduces every gradient once, after the last
    micro-batch; clipping by clip_grad_norm_; then the optimisers (AllReduceMuon)."""
    total = torch.zeros((), device=rt.device)
    for i, (x, y) in enumerate(batches):
        last = i == len(batches) - 1
        with nullcontext() if last or not isinstance(model, DDP) else model.no_sync():
            with rt.autocast():
                loss = model(x, y)
            (loss / len(batches)).backward()
        total += loss.detach()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return total / len(batches)


class CollectiveBytes:
    """Counts the bytes each rank sends in collectives while inside, as a ring sends them: an
    all-reduce of n bytes 2 (W-1)/W n, a reduce-scatter or all-gather of n bytes in all (W-1)/W n.
    Wraps torch.distributed.all_reduce and train_gpt's reduce_scatter and all_gather."""

    def __init__(self, world_size: int):
        self.world_size, self.sent, self.calls = world_size, 0.0, []

    def count(self, kind: str, tensor: Tensor):
        share = (self.world_size - 1) / self.world_size
        self.sent += (2 if kind == "all_reduce" else 1) * share * tensor.numel() * tensor.element_size()
        self.calls.append(kind)

    @staticmethod
    def watch(ddp):
        """ddp with its buckets all-reduced through torch.distributed.all_reduce (the default hook in
        Python rather than C++), where the counter sees them."""
        ddp.register_comm_hook(None, allreduce_hook)
        return ddp

    def __enter__(self):
        self.saved = dist.all_reduce, tg.reduce_scatter, tg.all_gather
        all_reduce, reduce_scatter, all_gather = self.saved

        def counted(kind, fn, which):
            def wrapper(*args, **kwargs):
                self.count(kind, args[which])
                return fn(*args, **kwargs)
            return wrapper
        dist.all_reduce = counted("all_reduce", all_reduce, 0)
        tg.reduce_scatter = counted("reduce_scatter", reduce_scatter, 1)
        tg.all_gather = counted("all_gather", all_gather, 0)
        return self

    def __exit__(self, *exc):
        dist.all_reduce, tg.reduce_scatter, tg.all_gather = self.saved


def record_forward(model, args, rt):
    """The record's evaluation forward: forward_logits, compiled where the training forward is."""
    if args.compile == "1" or (args.compile == "auto" and rt.device.type == "cuda"):
        return torch.compile(model.forward_logits, dynamic=False, fullgraph=True)
    return model.forward_logits


def score_window_by_window(forward, val_tokens, starts, score_from, seq_len, meter, batch, rt):
    """The record's sliding loop: each batch built window by window from the host tokens, and
    scored window by window."""
    for i in range(0, len(starts), batch):
        batch_starts = starts[i:i + batch]
        x = torch.zeros(len(batch_starts), seq_len, dtype=torch.int64, device=rt.device)
        y = torch.zeros_like(x)
        for j, start in enumerate(batch_starts):
            window = val_tokens[start:start + seq_len + 1].to(rt.device, torch.int64)
            x[j], y[j] = window[:-1], window[1:]
        with rt.autocast():
            logits = forward(x)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view_as(y)
        for j, first in enumerate(score_from[i:i + batch]):
            meter.add(nll[j, first:], x[j, first:], y[j, first:])


@torch.inference_mode()
def straightforward_evaluate(model, val_tokens, token_bytes, args, rt, stride=None):
    """The record's standard (consecutive sequences) or sliding evaluation, val_tokens on the host."""
    model.eval()
    forward, meter = record_forward(model, args, rt), tg.BpbMeter(token_bytes, rt.device)
    seq_len, n_targets = args.eval_seq_len, val_tokens.numel() - 1
    batch = max(1, args.val_batch_size // (rt.world_size * seq_len))
    if stride is None:
        mine = tg.rank_share(n_targets // seq_len, rt)
        for first in range(mine.start, mine.stop, batch):
            local = val_tokens[first * seq_len:min(first + batch, mine.stop) * seq_len + 1].to(rt.device, torch.int64)
            x, y = local[:-1].view(-1, seq_len), local[1:].view(-1, seq_len)
            with rt.autocast():
                logits = forward(x)
            meter.add(F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none"), x, y)
    else:
        starts, score_from = tg.sliding_windows(n_targets, seq_len, stride)
        mine = tg.rank_share(len(starts), rt)
        score_window_by_window(forward, val_tokens, starts[mine].tolist(), score_from[mine].tolist(), seq_len, meter,
                               batch, rt)
    return meter.result()


def straightforward_ttt(model, val_tokens, token_bytes, args, rt):
    """The record's TTT: the same chunks and schedule, uncompiled, one all-reduce per parameter."""
    seq_len, chunk_tokens, n_targets = args.eval_seq_len, args.ttt_chunk_tokens, val_tokens.numel() - 1
    starts, score_from = tg.sliding_windows(n_targets, seq_len, args.eval_stride)
    n_chunks = -(-n_targets // chunk_tokens)
    bounds = torch.searchsorted((starts + score_from) // chunk_tokens, torch.arange(n_chunks + 1)).tolist()
    params = [p for p in model.parameters()]
    optimizer = torch.optim.SGD(params, lr=args.ttt_lr, momentum=args.ttt_momentum)
    model.set_qat(False, False, args.soft_round_tau)
    batch = max(1, args.val_batch_size // (rt.world_size * seq_len))
    sums = torch.zeros(3, dtype=torch.float64, device=rt.device)
    for c in range(n_chunks):
        mine = tg.rank_share(bounds[c + 1] - bounds[c], rt)
        ids = slice(bounds[c] + mine.start, bounds[c] + mine.stop)
        meter = tg.BpbMeter(token_bytes, rt.device)
        model.eval()
        with torch.inference_mode():
            score_window_by_window(model.forward_logits, val_tokens, starts[ids].tolist(), score_from[ids].tolist(),
                                   seq_len, meter, batch, rt)
        sums += meter.sums
        if c == n_chunks - 1:
            break
        for group in optimizer.param_groups:
            group["lr"] = args.ttt_lr * 0.5 * (1 + math.cos(math.pi * c / max(n_chunks - 1, 1)))
        tokens = val_tokens[c * chunk_tokens:(c + 1) * chunk_tokens + 1]
        n_seqs = chunk_tokens // seq_len
        model.eval()  # the record's linear layers skip the fake quantiser while QAT is off; eval mode does here
        for _ in range(args.ttt_epochs):
            for first in range(0, n_seqs, args.ttt_train_batch_seqs):
                count = min(args.ttt_train_batch_seqs, n_seqs - first)
                share = tg.rank_share(count, rt)
                if share.stop > share.start:
                    seqs = tokens[(first + share.start) * seq_len:(first + share.stop) * seq_len + 1].to(rt.device, torch.int64)
                    with rt.autocast():
                        loss = model(seqs[:-1].view(-1, seq_len), seqs[1:].view(-1, seq_len))
                    (loss * (share.stop - share.start) / count).backward()
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    if rt.world_size > 1:
                        dist.all_reduce(p.grad)
                if args.ttt_grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, args.ttt_grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    if rt.world_size > 1:
        dist.all_reduce(sums)
    return tg.loss_and_bpb(sums)


# ----------------------------------------------------------------------------- measuring

def timed(fn, rt):
    """(fn(), seconds on the slowest rank)."""
    rt.synchronize()
    if dist.is_initialized():
        dist.barrier()
    t0 = time.perf_counter()
    result = fn()
    rt.synchronize()
    return result, rt.agree_max(time.perf_counter() - t0)[0]


def race(fns, repeat: int, rt, reset=lambda i: None):
    """Times fns[0] and fns[1] `repeat` times each, interleaved in alternating order, reset(i) before
    each call; per fn, (its first result, its fastest time): the fastest counts, as load only slows."""
    runs = ([], [])
    for r in range(repeat):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            reset(i)
            runs[i].append(timed(fns[i], rt))
    return [(results[0][0], min(seconds for _, seconds in results)) for results in runs]


def trainer(model, args, rt, previous: bool = False):
    """run(n): n training steps of a path on its own stream (LOADER's), from the start; their mean loss.
    Ours (train_step), or with previous=True this project's previous step (DDP, AllReduceMuon)."""
    loader = tg.make_loader(tg.list_shards(args.data_path, "train"), args, rt)
    optimizers, runner, step = tg.build_optimizers(model, args, rt), model, tg.train_step
    if previous:
        optimizers, step = previous_optimizers(model, args, rt), previous_train_step
        if rt.world_size > 1:
            runner = CollectiveBytes.watch(data_parallel(model, rt))

    def run(n: int) -> float:
        losses = [step(runner, [loader.next_batch(args.train_batch_tokens // tg.MICRO_BATCHES, args.train_seq_len)
                                for _ in range(rt.grad_accum_steps)], optimizers, args.grad_clip_norm, rt)
                  for _ in range(n)]
        return torch.stack(losses).mean().item()
    return run


def options(args) -> dict:
    """The later records' options at this depth, as they placed them in 11 blocks: parallel residuals
    from block 7, the repeats of blocks 4 and 5 (switched on), and the coprime loader."""
    lanes_from, middle = max(args.num_layers - 4, args.num_layers // 2), args.num_layers // 2
    return {f"PARALLEL_FROM={lanes_from}": dict(parallel_from=lanes_from),
            f"RECUR_LAYERS={middle - 1},{middle} (on)": dict(recur_layers=(middle - 1, middle), warmup_steps=4),
            "LOADER=coprime": dict(loader="coprime")}


def option_setups(args, rt) -> dict:
    """Per option: (its hyperparameters, a model built with them as a run builds it), the repeats on."""
    setups = {}
    for name, overrides in options(args).items():
        option_args = tg.Hyperparameters(**{**vars(args), **overrides})
        model = tg.compile_model(tg.place_model(tg.build_model(option_args), rt), option_args, rt.device)
        if option_args.recur_layers:
            model.start_recurrence()
        setups[name] = option_args, model
    return setups


def matmul_rate(device: torch.device) -> float:
    """FLOP/s of a large square matmul in the dtype training uses on this device."""
    n, dtype, reps = (8192, torch.bfloat16, 20) if device.type == "cuda" else (1024, torch.float32, 5)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def step_flops(model, args) -> float:
    """Forward + backward FLOPs of one optimiser step: 6 x tokens x matmul weights (the linear layers
    and the tied output head), plus causal attention (QK^T and AV over half the square, x3 for the
    backward)."""
    matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, tg.CastedLinear))
    matmul_params += model.tok_emb.weight.numel()
    tokens = args.train_batch_tokens
    attention = 3 * 2 * 2 * args.num_layers * tokens * args.train_seq_len * args.model_dim / 2
    return 6 * tokens * matmul_params + attention


# ----------------------------------------------------------------------------- main

def configure(config: str):
    """Environment defaults of the configuration (variables already set win); builds the sample."""
    if config != "smoke":
        return
    for line in (REPO / "scripts" / "smoke.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            os.environ.setdefault(key.strip(), value.strip())
    for key in ("DATA_PATH", "TOKENIZER_PATH"):
        if not Path(os.environ[key]).is_absolute():
            os.environ[key] = str(REPO / os.environ[key])
    if not Path(os.environ["TOKENIZER_PATH"]).is_file() and int(os.environ.get("RANK", "0")) == 0:
        subprocess.run([sys.executable, str(REPO / "data" / "make_sample.py")], check=True, cwd=REPO)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("smoke", "default"),
                        help="hyperparameter defaults: smoke (default on CPU) or the record's (default on CUDA)")
    parser.add_argument("--steps", type=int, help="timed training steps per repeat (default: 6 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before them (compilation)")
    parser.add_argument("--chunks", type=int, help="evaluate the first N TTT chunks of the validation tokens "
                                                    "(default: all with --config smoke, 50 with --config default)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs of each path, interleaved; the fastest counts")
    parser.add_argument("--skip", default="", help="comma-separated rows to leave out: "
                                                   "train,options,standard,sliding,ttt,quantise")
    opts = parser.parse_args(argv)
    unknown = set(filter(None, opts.skip.split(","))) - {"train", "options", "standard", "sliding", "ttt", "quantise"}
    if unknown:
        parser.error(f"--skip: unknown rows {sorted(unknown)}")
    return opts


def main(argv=None):
    opts = parse_args(argv)
    cuda = torch.cuda.is_available()
    config = opts.config or ("default" if cuda else "smoke")
    configure(config)
    rt = tg.setup_runtime()
    if rt.world_size > 1 and rt.device.type == "cpu":
        torch.set_num_threads(1)
    args = tg.Hyperparameters(run_id="bench")
    steps = opts.steps or (20 if cuda else 6)
    skip = set(filter(None, opts.skip.split(",")))
    token_bytes = tg.TokenBytes(tg.load_tokenizer(args.tokenizer_path, args.vocab_size)).to(rt.device)
    val_tokens = tg.load_validation_tokens(tg.list_shards(args.data_path, "val"), args.eval_seq_len)
    chunks = opts.chunks or (50 if config == "default" else None)
    if chunks:
        val_tokens = val_tokens[:chunks * args.ttt_chunk_tokens + 1]
    val_host, val_tokens = val_tokens, val_tokens.to(rt.device)  # the record keeps its validation tokens on the host
    n_targets = val_tokens.numel() - 1
    say = print if rt.is_main else (lambda *a, **k: None)
    say(f"bench: config={config} device={describe(rt.device)} world_size={rt.world_size} "
        f"grad_accum_steps={rt.grad_accum_steps} torch={torch.__version__} "
        f"attention={'flash_attn_3' if tg.flash_attn_3 is not None and cuda else 'sdpa'} COMPILE={args.compile}")
    say(f"bench: {n_targets} validation targets ({-(-n_targets // args.ttt_chunk_tokens)} TTT chunks), "
        f"{steps} timed training steps", flush=True)

    def ours():
        return tg.compile_model(tg.place_model(tg.build_model(args), rt), args, rt.device)

    def plain():
        return tg.place_model(tg.build_model(args), rt)

    rows, warmups = [], []
    if "train" not in skip:
        ours_run = trainer(ours(), args, rt)
        previous_run = trainer(ours(), args, rt, previous=True)
        if opts.warmup:  # compilation
            ours_run(opts.warmup), previous_run(opts.warmup)
        (ours_loss, ours_s), (previous_loss, previous_s) = race([lambda: ours_run(steps), lambda: previous_run(steps)],
                                                                opts.repeat, rt)
        rows.append(("training", "ms/step", 1000 * ours_s / steps, 1000 * previous_s / steps, previous_s / ours_s,
                     f"train_loss {ours_loss:.6f} / {previous_loss:.6f}"))
        if rt.world_size > 1:
            sent = []
            for run in (ours_run, previous_run):
                with CollectiveBytes(rt.world_size) as counter:
                    run(1)
                sent.append(counter.sent)
            rows.append(("collectives", "MB/step", sent[0] / 1e6, sent[1] / 1e6, sent[1] / sent[0],
                         f"bytes each rank sends, ring model; ours {sent[0] / sent[1]:.1%} of previous"))

    if "options" not in skip:  # each option against the default, raced: the step-time cost of each
        default_run = trainer(ours(), args, rt)
        if opts.warmup:
            default_run(opts.warmup)
        for name, (option_args, model) in option_setups(args, rt).items():
            option_run = trainer(model, option_args, rt)
            if opts.warmup:
                option_run(opts.warmup)
            (_, option_s), (_, default_s) = race([lambda: option_run(steps), lambda: default_run(steps)], opts.repeat, rt)
            rows.append((name, "ms/step", 1000 * option_s / steps, 1000 * default_s / steps, default_s / option_s,
                         f"training step; baseline: the default; {sum(p.numel() for p in model.parameters()):,} parameters"))

    model = plain()  # the evaluations score weights trained a few steps, the same for both paths
    trainer(model, args, rt)(3)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    evaluations = [("standard", lambda m, v: tg.evaluate(m, v, token_bytes, args, rt),
                    lambda m, v: straightforward_evaluate(m, v, token_bytes, args, rt)),
                   ("sliding", lambda m, v: tg.evaluate(m, v, token_bytes, args, rt, args.eval_stride),
                    lambda m, v: straightforward_evaluate(m, v, token_bytes, args, rt, args.eval_stride)),
                   ("ttt", lambda m, v: tg.evaluate_ttt(m, v, token_bytes, args, rt)[:2],
                    lambda m, v: straightforward_ttt(m, v, token_bytes, args, rt))]
    n_warmup = 2 * args.ttt_chunk_tokens + 1  # two TTT chunks: every shape the evaluations use
    for name, ours_fn, plain_fn in evaluations:
        if name in skip:
            continue
        models = ours(), plain()

        def reset(i):
            models[i].load_state_dict(weights)
        (_, ours_s), (_, plain_s) = race([lambda: ours_fn(models[0], val_tokens[:n_warmup]),
                                          lambda: plain_fn(models[1], val_host[:n_warmup])], 1, rt, reset)
        warmups.append((f"{name} warm-up", "s", ours_s, plain_s, plain_s / ours_s,
                        "first call, on 2 chunks: compilation, allocation"))
        ((_, ours_bpb), ours_s), ((_, plain_bpb), plain_s) = race([lambda: ours_fn(models[0], val_tokens),
                                                                   lambda: plain_fn(models[1], val_host)],
                                                                  opts.repeat, rt, reset)
        rows.append((f"{name} eval", "tokens/s", n_targets / ours_s, n_targets / plain_s, plain_s / ours_s,
                     f"val_bpb {ours_bpb:.8f} / {plain_bpb:.8f} (diff {abs(ours_bpb - plain_bpb):.1e})"))
    rows += warmups
    if "quantise" not in skip:
        (blob, seconds) = timed(lambda: tg.compress_artifact(tg.quantize_state_dict(weights, args.passthrough_max_numel)), rt)
        rows.append(("quantise+zstd", "s", seconds, math.nan, math.nan, f"{len(blob):,} bytes"))

    say(table(rows))
    if "train" not in skip:
        flops, rate = step_flops(plain(), args), matmul_rate(rt.device)
        floor_ms = 1000 * flops / (rate * rt.world_size)
        say(f"arithmetic floor: {flops / 1e12:.4g} TFLOP per step / ({rt.world_size} x {rate / 1e12:.4g} TFLOP/s "
            f"measured matmul) = {floor_ms:.4g} ms/step; ours takes {rows[0][2] / floor_ms:.3g}x the floor")
    if rt.world_size > 1:
        dist.destroy_process_group()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads per process)"


def table(rows) -> str:
    header = ("", "unit", "ours", "baseline", "speedup", "check")
    lines = [header] + [(name, unit, f"{ours:,.1f}" if ours >= 100 else f"{ours:.3f}",
                         "—" if math.isnan(plain) else (f"{plain:,.1f}" if plain >= 100 else f"{plain:.3f}"),
                         "—" if math.isnan(ratio) else f"{ratio:.2f}x", check)
                        for name, unit, ours, plain, ratio, check in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(l) for l in lines[1:]])


if __name__ == "__main__":
    try:
        main()
    except tg.InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
