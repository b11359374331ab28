#!/usr/bin/env python3
"""Preflight: the first command on a rented machine, before paying for a run on eight GPUs.

    python scripts/preflight.py              # one GPU (or the CPU), the configuration of the environment

It checks the software (torch, CUDA, the GPU, FlashAttention-3, zstandard, brotli where COMPRESSOR=brotli), the data (every shard's
header and token ids, the tokenizer's vocabulary) and the disk, then runs the configured model on
one device: a few training steps with all 8 micro-batches (as on 8 GPUs, serially), what the fake
quantiser adds to a step once late QAT is on, the quantisation and compression of its weights, and
a few TTT chunks; it projects the steps that fit in MAX_WALLCLOCK_SECONDS on 8 GPUs and the full
TTT time. One line per check:

    ok       NAME: what was found
    FAIL     NAME: what is wrong
    skipped  NAME (why)

and a non-zero exit if any check failed. On a machine without CUDA the CUDA checks are skipped and
the rest runs on the CPU (with, say, scripts/smoke.env's variables in the environment).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RECORD_STEPS = 7034  # the record's mean steps in 600 s on 8xH100 (7041, 7025, 7035)
RECORD_TTT_SECONDS = 398  # its mean TTT time on 8xH100 (404.6, 404.0, 385.0 s)
MIN_FREE_DISK_BYTES = 2 * 10**9  # artifacts, logs and a compile cache
GPUS = 8


class Report:
    """Prints each check's line as it comes; remembers whether any failed."""

    def __init__(self):
        self.failed = []

    def ok(self, name: str, detail: str):
        print(f"ok       {name}: {detail}", flush=True)

    def fail(self, name: str, detail: str):
        self.failed.append(name)
        print(f"FAIL     {name}: {detail}", flush=True)

    def skip(self, name: str, why: str):
        print(f"skipped  {name} ({why})", flush=True)


def check_software(report: Report, torch, tg):
    report.ok("torch", torch.__version__)
    if not torch.cuda.is_available():
        for name in ("cuda", "gpu", "flash_attn_3"):
            report.skip(name, "no CUDA device")
    else:
        report.ok("cuda", f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)")
        props = torch.cuda.get_device_properties(0)
        report.ok("gpu", f"{props.name}, {props.total_memory / 2**30:.1f} GiB")
        if tg.flash_attn_3 is not None:
            report.ok("flash_attn_3", "flash_attn_interface imports")
        else:
            report.fail("flash_attn_3", "flash_attn_interface does not import: attention would run on SDPA, "
                                        "slower than the record's step times assume")
    try:
        import zstandard
        report.ok("zstandard", zstandard.__version__)
    except ImportError:
        report.fail("zstandard", "not installed: pip install zstandard")


def check_data(report: Report, args, tg, rt):
    """The tokenizer, every shard's header and token ids; the validation tokens, or None."""
    try:
        sp = tg.load_tokenizer(args.tokenizer_path, args.vocab_size)
        report.ok("tokenizer", f"{args.tokenizer_path}: {sp.vocab_size()} pieces = VOCAB_SIZE")
        token_bytes = tg.TokenBytes(sp)
        files = {split: tg.list_shards(args.data_path, split) for split in ("train", "val")}
        t0 = time.perf_counter()
        tg.check_token_ids(files["train"] + files["val"], args.vocab_size, rt)
        counts = {split: sum(tg.shard_token_count(f) for f in fs) for split, fs in files.items()}
        report.ok("data", f"{args.data_path}: {len(files['train'])} train shards ({counts['train']:,} tokens), "
                          f"{len(files['val'])} val ({counts['val']:,}); headers and token ids checked in "
                          f"{time.perf_counter() - t0:.1f} s")
        return files, token_bytes
    except tg.InputError as e:
        report.fail("data", str(e))
        return None, None


def check_disk(report: Report):
    free = shutil.disk_usage(REPO).free
    detail = f"{free / 1e9:.1f} GB free in {REPO}"
    if free >= MIN_FREE_DISK_BYTES:
        report.ok("disk", detail)
    else:
        report.fail("disk", f"{detail}, need {MIN_FREE_DISK_BYTES / 1e9:.0f} GB")


def timed(fn, rt=None):
    """fn's result and its seconds, the device synchronised around it (with rt)."""
    if rt is not None:
        rt.synchronize()
    t0 = time.perf_counter()
    result = fn()
    if rt is not None:
        rt.synchronize()
    return result, time.perf_counter() - t0


def check_training(report: Report, args, tg, torch, rt, files, steps: int):
    """A few steps of the configured model with all micro-batches on this device; its weights."""
    model = tg.compile_model(tg.place_model(tg.build_model(args), rt), args, rt.device)
    optimizers = tg.build_optimizers(model, args, rt)
    loader = tg.DistributedTokenLoader(files["train"], 0, 1, rt.device)
    local_tokens = args.train_batch_tokens // tg.MICRO_BATCHES

    def step():
        batches = [loader.next_batch(local_tokens, args.train_seq_len) for _ in range(rt.grad_accum_steps)]
        return tg.train_step(model, batches, optimizers, args.grad_clip_norm, rt)

    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first_loss, first = timed(step, rt)
    report.ok("compile", f"first step {first:.1f} s (compilation and warm-up; COMPILE={args.compile})")
    losses, seconds = timed(lambda: [step() for _ in range(steps)], rt)
    losses = [first_loss.item()] + [loss.item() for loss in losses]
    ms = 1000 * seconds / steps
    per_gpu_ms = ms / GPUS  # each of 8 GPUs runs one of the 8 micro-batches
    projected = int(1000 * args.max_wallclock_seconds / per_gpu_ms) if args.max_wallclock_seconds else None
    detail = f"{ms:.1f} ms per step of {tg.MICRO_BATCHES} micro-batches ({steps} steps), loss {losses[-1]:.3f}"
    if projected is not None:
        detail += (f"; on {GPUS} GPUs about {per_gpu_ms:.1f} ms/step, {projected:,} steps in "
                   f"{args.max_wallclock_seconds:.0f} s (the record: {RECORD_STEPS:,})")
    diverged = [i + 1 for i, loss in enumerate(losses) if not math.isfinite(loss)]
    if diverged:
        report.fail("step", f"training loss is not finite from step {diverged[0]} (losses {losses})")
    else:
        report.ok("step", detail)
    if rt.device.type == "cuda":
        report.ok("memory", f"peak {torch.cuda.max_memory_allocated() // 2**20:,} MiB allocated "
                            f"(one GPU of {GPUS} holds 1/{GPUS} of the activations)")
    else:
        report.skip("memory", "no CUDA device")
    return model, ms


def check_fake_quant(report: Report, args, tg, torch, rt, model, step_ms: float, repeat: int = 5):
    """What the fake quantiser adds to a step once late QAT is on (before, the model runs its graph
    without it). Timed as its forward and backward over every linear weight, compiled as the model
    is, less the plain cast that it replaces, once per micro-batch of a step."""
    weights = [m.weight for m in model.modules() if isinstance(m, tg.CastedLinear)]
    soft_round, dtype = weights[0].new_tensor([0.0, 1.0]), torch.bfloat16 if rt.bf16 else torch.float32

    def forward_backward(quantise: bool):
        outs = [(tg.fake_quant_int6(w, soft_round) if quantise else w).to(dtype) for w in weights]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    seconds = []
    for quantise in (True, False):
        fn = torch.compile(forward_backward, dynamic=False) if tg.compiles(args, rt.device) else forward_backward
        fn(quantise)  # compilation
        seconds.append(min(timed(lambda: fn(quantise), rt)[1] for _ in range(repeat)))
    for w in weights:
        w.grad = None
    ms = 1000 * max(seconds[0] - seconds[1], 0.0) * rt.grad_accum_steps
    report.ok("fake_quant", f"{ms:.2f} ms per step once late QAT is on, {100 * ms / step_ms:.2f} % of a step "
                            f"(none before: that graph has no fake quantiser)")


def check_artifact(report: Report, args, tg, model):
    estimate, arithmetic = tg.estimate_size(model.state_dict(), args)
    total = estimate + tg.code_bytes()
    (report.ok if total < tg.SUBMISSION_LIMIT_BYTES else report.fail)(
        "size_estimate", f"{arithmetic}; with the code {total:,} bytes, limit {tg.SUBMISSION_LIMIT_BYTES:,}")
    weights = tg.float_weights(model)
    container, quantise_s = timed(lambda: tg.quantize_state_dict(weights, args.passthrough_max_numel))
    blob, compress_s = timed(lambda: tg.compress_artifact(container, args.compressor))
    total = len(blob) + tg.code_bytes()
    report.ok("artifact", f"quantise {quantise_s:.1f} s + {args.compressor} {compress_s:.1f} s: {len(blob):,} bytes, total "
                          f"{total:,} with the code ({tg.kind_counts(container)}); these are near-initial weights, "
                          f"a trained model's size differs (the record's: 15.70-15.85 MB)")


def check_ttt(report: Report, args, tg, rt, model, files, token_bytes, chunks: int):
    val = tg.load_validation_tokens(files["val"], max(args.train_seq_len, args.eval_seq_len))
    n_chunks = -(-(val.numel() - 1) // args.ttt_chunk_tokens)
    _, warm_up = timed(lambda: tg.evaluate_ttt(model, val[:2 * args.ttt_chunk_tokens + 1], token_bytes, args, rt), rt)
    subset = val[:(chunks + 1) * args.ttt_chunk_tokens + 1]  # the last chunk is scored, not trained on
    _, seconds = timed(lambda: tg.evaluate_ttt(model, subset, token_bytes, args, rt), rt)
    per_chunk = seconds / chunks
    report.ok("ttt", f"2 chunks in {warm_up:.1f} s (compilation), then {chunks + 1} ({chunks} trained on) in {seconds:.1f} s; "
                     f"{n_chunks:,} chunks on {GPUS} GPUs: about {per_chunk * n_chunks / GPUS:.0f} s "
                     f"(the record: about {RECORD_TTT_SECONDS} s)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed training steps after the first")
    p.add_argument("--ttt-chunks", type=int, default=3, help="TTT chunks to time, after a first one")
    opts = p.parse_args(argv)
    report = Report()
    import torch  # after argument parsing: --help answers at once
    import train_gpt as tg
    check_software(report, torch, tg)
    try:
        args = tg.Hyperparameters()
    except tg.InputError as e:
        report.fail("hyperparameters", str(e))
        return 1
    if args.compressor == "brotli":
        try:
            report.ok("brotli", getattr(tg.brotli_module("COMPRESSOR=brotli"), "__version__", "imports"))
        except tg.InputError as e:
            report.fail("brotli", str(e))
    else:
        report.skip("brotli", f"COMPRESSOR={args.compressor}")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # one process, on the first GPU
        os.environ.pop(name, None)
    rt = tg.setup_runtime()
    files, token_bytes = check_data(report, args, tg, rt)
    check_disk(report)
    if files is None:
        for name in ("compile", "step", "memory", "fake_quant", "size_estimate", "artifact", "ttt"):
            report.skip(name, "the data check failed")
    else:
        try:
            model, step_ms = check_training(report, args, tg, torch, rt, files, opts.steps)
            check_fake_quant(report, args, tg, torch, rt, model, step_ms)
            check_artifact(report, args, tg, model)
            if args.ttt_enabled:
                check_ttt(report, args, tg, rt, model, files, token_bytes, opts.ttt_chunks)
            else:
                report.skip("ttt", "TTT_ENABLED=0")
        except (tg.RunError, RuntimeError) as e:
            report.fail("run", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    print(f"preflight: {'FAILED: ' + ', '.join(report.failed) if report.failed else 'all checks passed'}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
