#!/usr/bin/env python3
"""CPU proxy benchmark: does a change to the recipe help? Runs arms x seeds of the proxy configuration
on the CPU, one after another, and prints one markdown table of mean +- std over seeds, with each
arm's paired difference to the first arm.

    python scripts/proxy.py --arm base: --arm swa:WEIGHT_AVG=swa --seeds 1337,42,7
    python scripts/proxy.py --quick                     # a small configuration, 1 arm x 1 seed (CI)
    python scripts/proxy.py quant --checkpoint PATH --bits 6,5,4 --val-tokens 0  # quantisers on one checkpoint

An arm is NAME:VAR=VALUE,VAR=VALUE (environment overrides on top of scripts/proxy.env, a list value
as RECUR_LAYERS=4,5; `base:`
overrides nothing). Each run keeps its directory logs/proxy/<ARM>/seed<SEED>/ (train_gpt.py's log,
model and artifact); a run whose log is complete is not run again, so an interrupted study resumes
where it stopped, and a finished run made with other settings is refused rather than mixed in. The
table and the same figures as JSON (logs/proxy/results.json) cover the arms and seeds asked for.

Figures per run, from its log: post-average val_bpb (DIAGNOSTIC line, 4 decimals), roundtrip,
sliding and TTT val_bpb (the _exact lines), the quantisation gap (roundtrip - post-average), the
TTT gain (TTT - sliding), steps, training seconds, artifact bytes. The paired difference of an arm
is its final val_bpb (TTT, or sliding where TTT is off) minus the first arm's, seed by seed; its
95 % interval is the mean +- t(0.975, n-1) x sd / sqrt(n) over seeds. --paired sliding (or
roundtrip, post) pairs that figure instead: sliding is the score the same runs get without TTT.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import patch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import summarize_logs  # noqa: E402  (the one reader of run logs)

PROXY_ENV, QUICK_ENV = REPO / "scripts" / "proxy.env", REPO / "scripts" / "proxy_quick.env"
OUT = REPO / "logs" / "proxy"
METRICS = [("post_val_bpb", "post-avg bpb", "{:.4f}"), ("roundtrip_val_bpb", "roundtrip bpb", "{:.5f}"),
           ("quant_gap", "quant gap", "{:+.5f}"), ("sliding_val_bpb", "sliding bpb", "{:.5f}"),
           ("ttt_val_bpb", "TTT bpb", "{:.5f}"), ("ttt_gain", "TTT gain", "{:+.5f}"), ("steps", "steps", "{:.0f}"),
           ("train_seconds", "train s", "{:.1f}"), ("model_bytes", "artifact bytes", "{:,.0f}")]


class ProxyError(Exception):
    """An expected failure, said in one line."""


def read_env_file(path: Path) -> dict:
    """VAR=VALUE lines of an env file; comments and blank lines skipped; relative paths kept as written."""
    env = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ProxyError(f"{path}:{number}: not VAR=VALUE: {line!r}")
        env[key.strip()] = value.strip()
    return env


def parse_arm(text: str) -> tuple[str, dict]:
    """NAME:VAR=VALUE,VAR=VALUE -> (name, overrides); an item without = continues the previous value
    (RECUR_LAYERS=4,5)."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ProxyError(f"--arm {text!r}: expected NAME:VAR=VALUE,... (NAME letters, digits, - or _)")
    overrides, key = {}, None
    for item in filter(None, rest.split(",")):
        name_part, sep, value = item.partition("=")
        if sep and name_part.isupper():
            key, overrides[name_part] = name_part, value
        elif not sep and key is not None:  # a list value: RECUR_LAYERS=4,5
            overrides[key] += "," + item
        else:
            raise ProxyError(f"--arm {text!r}: {item!r} is not VAR=VALUE")
    return name, overrides


def run_settings(config: dict, overrides: dict, seed: int) -> dict:
    """The environment variables of one run: the configuration, the arm's overrides, the seed."""
    settings = {**config, **overrides, "SEED": str(seed), "RUN_ID": "run"}
    for key in ("DATA_PATH", "TOKENIZER_PATH"):
        if key in settings and not Path(settings[key]).is_absolute():
            settings[key] = str(REPO / settings[key])
    return settings


def figures(log: dict) -> dict:
    """The table's figures of one parsed log."""
    final = log["ttt_val_bpb"] if log["ttt_enabled"] else log["sliding_val_bpb"]
    gap = None if log["post_val_bpb"] is None else log["roundtrip_val_bpb"] - log["post_val_bpb"]
    gain = log["ttt_val_bpb"] - log["sliding_val_bpb"] if log["ttt_enabled"] else None
    train_ms = log["val_curve"][-1][3] if log["val_curve"] else None
    return dict(post_val_bpb=log["post_val_bpb"], roundtrip_val_bpb=log["roundtrip_val_bpb"], quant_gap=gap,
                sliding_val_bpb=log["sliding_val_bpb"], ttt_val_bpb=log["ttt_val_bpb"] if log["ttt_enabled"] else None,
                ttt_gain=gain, steps=log["steps"], train_seconds=None if train_ms is None else train_ms / 1000,
                model_bytes=log["model_bytes"], final_val_bpb=final)


def finished(run_dir: Path, settings: dict) -> dict | None:
    """The figures of a complete earlier run in run_dir, None if there is none; refuses one made with
    other settings."""
    record, log_path = run_dir / "settings.json", run_dir / "logs" / "run.txt"
    if not record.is_file() or not log_path.is_file():
        return None
    if json.loads(record.read_text(encoding="utf-8")) != settings:
        raise ProxyError(f"{run_dir} holds a run with other settings: remove it or give the arm another name")
    try:
        log = summarize_logs.parse_log(log_path)
    except summarize_logs.LogError:
        return None
    done = log["sliding_val_bpb"] is not None and (log["ttt_val_bpb"] is not None or not log["ttt_enabled"])
    return figures(log) if done and not log["errors"] else None


def run_one(run_dir: Path, settings: dict, nproc: int) -> dict:
    """Runs train_gpt.py in run_dir with settings; its figures."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    script = str(REPO / "train_gpt.py")
    command = ([sys.executable, script] if nproc == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script])
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(settings, OMP_NUM_THREADS="1" if nproc > 1 else env.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)))
    result = subprocess.run(command, env=env, cwd=run_dir, capture_output=True, text=True)
    (run_dir / "output.txt").write_text(result.stdout + result.stderr, encoding="utf-8")
    done = finished(run_dir, settings)
    if result.returncode != 0 or done is None:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProxyError(f"the run in {run_dir} failed (exit {result.returncode}): {last}")
    return done


def mean_std(values: list) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def paired(values: list[float], reference: list[float]) -> dict:
    """Mean paired difference over seeds and its 95 % interval (t distribution; none for one seed)."""
    from scipy import stats
    diffs = [a - b for a, b in zip(values, reference)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return dict(diffs=diffs, mean=mean, low=None, high=None)
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return dict(diffs=diffs, mean=mean, low=mean - half, high=mean + half)


PAIRED = {"final": "final_val_bpb", "sliding": "sliding_val_bpb", "roundtrip": "roundtrip_val_bpb", "post": "post_val_bpb"}


def summarize(results: dict[str, dict[int, dict]], paired_key: str = "final_val_bpb") -> dict:
    """Per arm: mean and std of every figure, and the paired difference of one bpb (the final one by
    default) to the first arm."""
    arms = list(results)
    out = {}
    for arm in arms:
        seeds = sorted(results[arm])
        row = {key: mean_std([results[arm][s][key] for s in seeds]) for key, _, _ in METRICS}
        row["seeds"] = seeds
        if arm != arms[0]:
            common = [s for s in seeds if s in results[arms[0]]]
            row["vs_first"] = paired([results[arm][s][paired_key] for s in common],
                                     [results[arms[0]][s][paired_key] for s in common])
        out[arm] = row
    return out


def cell(stat, fmt: str) -> str:
    if stat is None:
        return "—"
    mean, std = stat
    return fmt.format(mean) + ("" if math.isnan(std) else " ± " + fmt.format(std).lstrip("+"))


def markdown(summary: dict, paired_name: str = "final") -> str:
    arms = list(summary)
    header = ["arm", "seeds"] + [title for _, title, _ in METRICS] + [f"{paired_name} bpb − {arms[0]} (95 % CI)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, row in summary.items():
        diff = "—"
        if "vs_first" in row:
            d = row["vs_first"]
            diff = f"{d['mean']:+.5f}" + ("" if d["low"] is None else f" [{d['low']:+.5f}, {d['high']:+.5f}]")
        lines.append("| " + " | ".join([arm, str(len(row["seeds"]))] + [cell(row[key], fmt) for key, _, fmt in METRICS]
                                        + [diff]) + " |")
    return "\n".join(lines)


def study(opts) -> int:
    config = read_env_file(QUICK_ENV if opts.quick else PROXY_ENV)
    arms = [parse_arm(a) for a in (opts.arm or ["base:"])]
    if len({name for name, _ in arms}) != len(arms):
        raise ProxyError("two arms share a name")
    try:
        seeds = [int(s) for s in opts.seeds.split(",")] if opts.seeds else ([1337] if opts.quick else [1337, 42, 7])
    except ValueError:
        raise ProxyError(f"--seeds {opts.seeds!r}: expected integers separated by commas") from None
    out = Path(opts.out) if opts.out else OUT / ("quick" if opts.quick else "")
    if not Path(config["TOKENIZER_PATH"] if Path(config["TOKENIZER_PATH"]).is_absolute()
                else REPO / config["TOKENIZER_PATH"]).is_file():
        builder = "data/make_sample.py" if opts.quick else "data/make_proxy.py"
        subprocess.run([sys.executable, str(REPO / builder)], check=True, cwd=REPO)
    results: dict[str, dict[int, dict]] = {}
    for name, overrides in arms:
        results[name] = {}
        for seed in seeds:
            run_dir, settings = out / name / f"seed{seed}", run_settings(config, overrides, seed)
            done = finished(run_dir, settings)
            if done is None:
                print(f"proxy: running {name} seed {seed} in {run_dir}", flush=True)
                t0 = time.perf_counter()
                done = run_one(run_dir, settings, opts.nproc)
                print(f"proxy: {name} seed {seed} done in {time.perf_counter() - t0:.0f} s, "
                      f"final val_bpb {done['final_val_bpb']:.5f}", flush=True)
            else:
                print(f"proxy: {name} seed {seed} already finished in {run_dir}", flush=True)
            results[name][seed] = done
    summary = summarize(results, PAIRED[opts.paired])
    print(markdown(summary, opts.paired))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(dict(arms=dict(arms), runs=results, summary=summary), indent=1,
                                                 default=lambda x: None) + "\n", encoding="utf-8")
    return 0


def by_weight_mse(best_scale_per_row):
    """train_gpt's per-row scale choice, judged by plain weight MSE whatever error it is given."""
    return lambda w, max_q, quantiles, levels, error: best_scale_per_row(w, max_q, quantiles, levels,
                                                                        lambda e: e.square().sum(dim=1))


def quant(opts) -> int:
    """Quantisers compared on one checkpoint: per bit width, clip search, GPTQ with either
    calibration, and GPTQ choosing each row's scale by plain weight MSE (the records' choice) rather
    than by the H-weighted error, and with --int6-matrices N GPTQ (train) keeping only the N matrices of
    largest trace(H) at the width and the rest one bit narrower; roundtrip val_bpb on the first --val-tokens held-out targets (the
    configuration's VAL_TOKENS by default, 0: all), its gap to the unquantised weights, artifact
    bytes, quantisation seconds. Deterministic: no seed noise."""
    import torch
    sys.path.insert(0, str(REPO))
    import train_gpt as tg
    config = run_settings(read_env_file(QUICK_ENV if opts.quick else PROXY_ENV), {}, 1337)
    os.environ.update({k: v for k, v in config.items() if k != "RUN_ID"})
    try:
        bits = [int(b) for b in opts.bits.split(",")]
        if not all(2 <= b <= 6 for b in bits):
            raise ValueError
    except ValueError:
        raise ProxyError(f"--bits {opts.bits!r}: expected widths from 2 to 6 separated by commas") from None
    try:
        args = tg.Hyperparameters()
        rt = tg.Runtime(0, 1, torch.device("cpu"))
        weights = torch.load(tg.existing_file(opts.checkpoint, "--checkpoint"), map_location="cpu", weights_only=True)
        model = tg.build_model(args)
        if not isinstance(weights, dict) or set(weights) != set(model.state_dict()):
            raise ProxyError(f"{opts.checkpoint} is not a final_model.pt of the {'quick' if opts.quick else 'proxy'} configuration")
        token_bytes = tg.TokenBytes(tg.load_tokenizer(args.tokenizer_path, args.vocab_size))
        limit = args.val_tokens if opts.val_tokens is None else opts.val_tokens
        val = tg.load_validation_tokens(tg.list_shards(args.data_path, "val"), args.eval_seq_len, limit)
        model.load_state_dict(weights)
        _, unquantised = tg.evaluate(model, val, token_bytes, args, rt)
        calibrations, loader = {}, tg.DistributedTokenLoader(tg.list_shards(args.data_path, "train"), 0, 1, rt.device)
        for source in ("train", "self"):
            t0 = time.perf_counter()
            batches = ([loader.next_batch(args.gptq_sequences * args.train_seq_len, args.train_seq_len)[0]] if source == "train"
                       else [tg.generate(model.eval(), args.gptq_sequences, args, rt)])
            calibrations[f"gptq ({source})"] = tg.collect_hessians(model.eval(), batches), time.perf_counter() - t0
    except (tg.RunError, RuntimeError, ValueError) as e:
        raise ProxyError(str(e).strip().splitlines()[0]) from None
    lines = [f"checkpoint {opts.checkpoint}: unquantised val_bpb {unquantised:.8f} on {val.numel() - 1:,} targets; "
             + ", ".join(f"{name} calibration {seconds:.1f} s" for name, (_, seconds) in calibrations.items()), "",
             "| bits | quantiser | roundtrip bpb | gap | artifact bytes | quantise s |", "|---|---|---|---|---|---|"]
    quantisers = [("clip", None, tg.best_scale_per_row, 0)] + [(n, h, tg.best_scale_per_row, 0) for n, (h, _) in calibrations.items()]
    quantisers.append(("gptq (train), MSE choice", calibrations["gptq (train)"][0], by_weight_mse(tg.best_scale_per_row), 0))
    if opts.int6_matrices:
        quantisers.append((f"gptq (train), {opts.int6_matrices} matrices at the width, the rest 1 bit less",
                           calibrations["gptq (train)"][0], tg.best_scale_per_row, opts.int6_matrices))
    for width in bits:
        for name, hessians, choose, keep in quantisers:
            t0 = time.perf_counter()
            with patch.object(tg, "best_scale_per_row", choose):
                container = tg.quantize_state_dict(weights, args.passthrough_max_numel, hessians, bits=width, int6_matrices=keep)
            seconds = time.perf_counter() - t0
            blob = tg.compress_artifact(container)
            model.load_state_dict(tg.dequantize_state_dict(container, model.state_dict()))
            _, roundtrip = tg.evaluate(model, val, token_bytes, args, rt)
            lines.append(f"| {width} | {name} | {roundtrip:.8f} | {roundtrip - unquantised:+.8f} | {len(blob):,} | {seconds:.2f} |")
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["quant"]:
        parser = argparse.ArgumentParser(prog="proxy.py quant", description=quant.__doc__.split("\n")[0])
        parser.add_argument("--checkpoint", required=True, help="a final_model.pt written by a proxy run")
        parser.add_argument("--quick", action="store_true", help="the checkpoint is of the quick configuration")
        parser.add_argument("--bits", default="6", help="bit widths of the int6 matrices to compare, e.g. 6,5,4")
        parser.add_argument("--int6-matrices", type=int, default=0, help="also GPTQ (train) with only this many "
                                                                              "matrices at the width (INT6_MATRICES)")
        parser.add_argument("--val-tokens", type=int, help="held-out targets to score (default: the configuration's "
                                                            "VAL_TOKENS; 0: all)")
        opts = parser.parse_args(argv[1:])
        try:
            return quant(opts)
        except (ProxyError, OSError) as e:
            print(f"proxy: error: {e}", file=sys.stderr)
            return 1
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arm", action="append", help="NAME:VAR=VALUE,... (repeatable; default base:)")
    parser.add_argument("--seeds", help="comma-separated seeds (default 1337,42,7; 1337 with --quick)")
    parser.add_argument("--quick", action="store_true", help="the small configuration scripts/proxy_quick.env")
    parser.add_argument("--nproc", type=int, default=2, help="processes per run (torchrun with gloo; 1: python)")
    parser.add_argument("--out", help="where the runs and results.json go (default logs/proxy)")
    parser.add_argument("--paired", choices=sorted(PAIRED), default="final",
                        help="the bpb of the paired differences (default final: TTT, or sliding where TTT is off)")
    opts = parser.parse_args(argv)
    try:
        return study(opts)
    except (ProxyError, OSError, subprocess.CalledProcessError) as e:
        print(f"proxy: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
