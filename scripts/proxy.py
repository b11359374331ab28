#!/usr/bin/env python3
"""CPU proxy benchmark: does a change to the recipe help? Runs arms x seeds of the proxy configuration
on the CPU, one after another, and prints one markdown table of mean +- std over seeds, with each
arm's paired difference to the first arm.

    python scripts/proxy.py --arm base: --arm swa:WEIGHT_AVG=swa --seeds 1337,42,7
    python scripts/proxy.py --quick                     # a small configuration, 1 arm x 1 seed (CI)
    python scripts/proxy.py --long --arm base: ...      # the long tier: scripts/proxy_long.env, logs/proxy/long/
    python scripts/proxy.py quant --checkpoint PATH ... --bits 6,5,4 --val-tokens 0  # quantisers on checkpoints
    python scripts/proxy.py subset --runs DIR ... --sizes 32768,65536  # held-out subsets against the whole set

An arm is NAME:VAR=VALUE,VAR=VALUE (overrides of train_gpt.py's hyperparameters on top of the
configuration file, a list value as RECUR_LAYERS=4,5; `base:` overrides nothing). A variable that is
not a hyperparameter (a misspelling a run would ignore) is refused, naming the closest one, as are
SEED, RUN_ID and OMP_NUM_THREADS, which the runner sets; every arm's settings are read by train_gpt's
own Hyperparameters before any run starts, so that a bad value stops the study at once. Each run keeps
its directory logs/proxy/<ARM>/seed<SEED>/ (train_gpt.py's log, model and artifact, the run's
settings.json and output.txt); a run whose log is complete is not run again, so an interrupted study
resumes where it stopped, and a finished run made with other settings is refused rather than mixed
in. A run that fails stops the study with the run's own error line and the path of its output. The
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
import difflib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple
from unittest.mock import patch

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO)]
import summarize_logs  # noqa: E402  (the one reader of run logs)
import train_gpt as tg  # noqa: E402  (the trainer's own hyperparameters, model, evaluation and quantisers)

PROXY_ENV, QUICK_ENV, LONG_ENV = (REPO / "scripts" / f"{name}.env" for name in ("proxy", "proxy_quick", "proxy_long"))
OUT = REPO / "logs" / "proxy"
METRICS = [("post_val_bpb", "post-avg bpb", "{:.4f}"), ("roundtrip_val_bpb", "roundtrip bpb", "{:.5f}"),
           ("quant_gap", "quant gap", "{:+.5f}"), ("sliding_val_bpb", "sliding bpb", "{:.5f}"),
           ("ttt_val_bpb", "TTT bpb", "{:.5f}"), ("ttt_gain", "TTT gain", "{:+.5f}"), ("steps", "steps", "{:.0f}"),
           ("train_seconds", "train s", "{:.1f}"), ("model_bytes", "artifact bytes", "{:,.0f}")]
HYPERPARAMETERS = sorted(name.upper() for name in tg.Hyperparameters.defaults())
PER_RUN = ("SEED", "RUN_ID")  # hyperparameters the runner sets in each run's settings
SET_BY_RUNNER = {"SEED": "the seeds are --seeds", "RUN_ID": "its log is logs/run.txt in the run's directory",
                 "OMP_NUM_THREADS": "one thread per process with --nproc above 1, the shell's value with --nproc 1"}
CPU = tg.Runtime(0, 1, torch.device("cpu"))
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the start of a zstd artifact (a brotli one starts with train_gpt's BROTLI_HEADER)
CALIBRATION_BATCH = 64  # calibration sequences per forward pass: bounded memory for any count

VERDICT = """\
What a verdict is worth: a proxy run trains the record's topology at a quarter of its width for 144
steps (scripts/proxy.env) on Python source rather than FineWeb, on a CPU. An arm's paired difference
to the first arm, with its 95 % interval over seeds, says whether a change helps there; an interval
that contains 0 is noise. The proxy cannot see what works through a GPU's step time (a change that
makes steps slower costs steps on 8xH100, not here), effects that need the record's 7,000 steps, or
the absolute level of the score (Python source is not FineWeb's text).

Agreement with 8xH100 (docs/proxy.md, "What a proxy verdict is worth"): where the records measured an
effect on 8xH100, the proxy agreed in sign on TTT (-0.0093 here, -0.0025 there), sliding windows (-0.0096,
-0.022), EMA over SWA, parallel residuals (-0.028, -0.0022) and the SP8192 configuration (-0.47, -0.037);
it could not resolve depth recurrence (-0.002 to -0.003 there; here slightly worse before quantisation)
or GPTQ against clip search at int6. The long tier (--long: 3x the steps, 2x the context) turns
recurrence's sign to the records' on every seed, still inside the noise (-0.0004 [-0.0012, +0.0004]),
and halves parallel residuals' gain (-0.014, no longer resolved). Trust its sign on evaluation and
on large model or data changes; never the size of an effect (none was within 2x), nor changes that need thousands of steps or are
paid for in step time, nor how a step's batch is drawn: a proxy step of 8,192 tokens holds about 5
documents where a record's holds hundreds, so the coprime loader gains -0.38 here."""


class ProxyError(Exception):
    """An expected failure, said in one line."""


def shown(path: Path) -> str:
    """A path as a user writes it: relative to the repository where it lies inside it."""
    path = Path(path)
    return str(path.relative_to(REPO)) if path.is_absolute() and path.is_relative_to(REPO) else str(path)


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


def check_names(settings: dict, where: str):
    """Refuses a variable train_gpt.py does not read (a run would ignore a misspelt one) and those the
    runner sets."""
    for var in settings:
        if var in SET_BY_RUNNER:
            raise ProxyError(f"{where}: {var} is set by the runner ({SET_BY_RUNNER[var]})")
        if var not in HYPERPARAMETERS:
            close = difflib.get_close_matches(var, HYPERPARAMETERS, n=1)
            raise ProxyError(f"{where}: {var} is not a hyperparameter of train_gpt.py"
                             + (f" (did you mean {close[0]}?)" if close else ""))


def load_configuration(path: Path) -> dict:
    """A configuration file's settings, every variable a hyperparameter."""
    config = read_env_file(path)
    check_names(config, shown(path))
    return config


def hyperparameters(settings: dict, where: str) -> tg.Hyperparameters:
    """train_gpt's Hyperparameters of a run's settings over the environment, as the run reads them; a
    bad value is refused with train_gpt's own message, after where it was given."""
    try:
        return tg.Hyperparameters(**{key.lower(): value for key, value in settings.items()})
    except tg.InputError as e:
        raise ProxyError(f"{where}: {e}") from None


def integer_list(text: str, option: str, low: int, high: int | None = None) -> list[int]:
    """Distinct integers in [low, high] separated by commas, in the order given."""
    expected = f"expected distinct integers {f'from {low} to {high}' if high is not None else f'>= {low}'} separated by commas"
    items = [item.strip() for item in text.split(",")]
    if not all(re.fullmatch(r"\d+", item) for item in items):
        raise ProxyError(f"{option} {text!r}: {expected}")
    values = [int(item) for item in items]
    for value in values:
        if value < low or (high is not None and value > high):
            raise ProxyError(f"{option} {text!r}: {value} is out of range; {expected}")
        if values.count(value) > 1:
            raise ProxyError(f"{option} {text!r}: {value} is given twice; {expected}")
    return values


def parse_arm(text: str) -> tuple[str, dict]:
    """NAME:VAR=VALUE,VAR=VALUE -> (name, overrides); an item without = continues the previous value
    (RECUR_LAYERS=4,5); an item @FILE takes every VAR=VALUE line of that file (later items win)."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ProxyError(f"--arm {text!r}: expected NAME:VAR=VALUE,... (NAME letters, digits, - or _)")
    overrides, key = {}, None
    for item in filter(None, rest.split(",")):
        name_part, sep, value = item.partition("=")
        if item.startswith("@"):
            path = Path(item[1:]) if Path(item[1:]).is_absolute() else REPO / item[1:]
            if not path.is_file():
                raise ProxyError(f"--arm {text!r}: {item[1:]} is not a file")
            overrides.update(read_env_file(path))
            key = None
        elif sep and name_part.isupper():
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
        why = run_error(result.stderr, run_dir / "logs" / "run.txt") if result.returncode else "it ended without its scores"
        raise ProxyError(f"the run in {run_dir} failed (exit {result.returncode}): {why}; its output: {run_dir / 'output.txt'}")
    return done


ERROR_LINES = (re.compile(r"^error: (.+)$", re.M),  # what train_gpt's rank 0 prints when a run stops
               re.compile(r"^ERROR: (.+)$", re.M),  # the line that ends its log
               re.compile(r"^((?!torch\.distributed\.elastic)[\w.]*(?:Error|Exception)\b.*)$", re.M))  # a traceback's, not torchrun's


def run_error(stderr: str, log_path: Path) -> str:
    """What stopped a run: its `error:` line, else its log's last `ERROR:` line, else the last exception
    line of a traceback (torchrun's own left out)."""
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    for pattern, text in zip(ERROR_LINES, (stderr, log, stderr)):
        found = pattern.findall(text)
        if found:
            return found[-1]
    return "no error line"


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


def tier(opts) -> tuple[Path, Path]:
    """The configuration file and the default folder of the runs of the tier asked for: --quick, --long
    or the proxy's own."""
    name = "quick" if opts.quick else "long" if opts.long else ""
    return {"quick": QUICK_ENV, "long": LONG_ENV, "": PROXY_ENV}[name], OUT / name


def check_arms(config: dict, arms: list[tuple[str, dict]], seed: int, config_path: Path):
    """Every arm's settings read as its runs will read them, before any run starts."""
    hyperparameters(run_settings(config, {}, seed), shown(config_path))
    for name, overrides in arms:
        check_names(overrides, f"--arm {name}")
        hyperparameters(run_settings(config, overrides, seed), f"--arm {name}")


def ensure_data(settings: dict, builder: str):
    """Runs the data builder where a run's tokenizer is missing, for its vocabulary (into the builder's folder for it)."""
    if not Path(run_settings(settings, {}, 0)["TOKENIZER_PATH"]).is_file():
        vocab = settings.get("VOCAB_SIZE", "1024")
        subprocess.run([sys.executable, str(REPO / builder)] + (["--vocab", vocab] if vocab != "1024" else []), check=True, cwd=REPO)


def study(opts) -> int:
    config_path, default_out = tier(opts)
    config = load_configuration(config_path)
    arms = [parse_arm(a) for a in (opts.arm or ["base:"])]
    if len({name for name, _ in arms}) != len(arms):
        raise ProxyError("two arms share a name")
    seeds = (integer_list(opts.seeds, "--seeds", 0) if opts.seeds is not None
             else [1337] if opts.quick else [1337, 42, 7])
    check_arms(config, arms, seeds[0], config_path)
    out = Path(opts.out) if opts.out else default_out
    for _, overrides in arms:
        ensure_data({**config, **overrides}, "data/make_sample.py" if opts.quick else "data/make_proxy.py")
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


# ----------------------------------------------------------------------------- scoring fixed weights

def configured_model(args: tg.Hyperparameters) -> tg.GPT:
    """The configuration's model on the CPU, its repeats on as at the end of a run's training."""
    model = tg.build_model(args)
    model.recurring = bool(args.recur_layers)
    return model


def load_checkpoint(path: Path, template: dict, configuration: str) -> dict:
    """A final_model.pt's tensors, loaded safely (weights_only: nothing in the file runs), each of the
    name and shape the configuration's model has."""
    path = tg.existing_file(path, "--checkpoint")
    with open(path, "rb") as f:
        head = f.read(len(ZSTD_MAGIC))
    if not head:
        raise ProxyError(f"{path} is empty")
    if head.startswith((ZSTD_MAGIC, tg.BROTLI_HEADER)):
        raise ProxyError(f"{path} is a compressed artifact ({tg.artifact_compressor(path)}), not a final_model.pt "
                         "(the unquantised weights a run writes beside its artifact)")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (unpickling, zip, EOF) for a file that is not a checkpoint
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise ProxyError(f"{path} refused: it holds a Python object ({found[1]}) that loading would create; "
                             "a final_model.pt holds tensors only") from None
        damaged = " (a truncated or corrupt one)" if head.startswith(b"PK") else ""  # torch.save writes a zip archive
        raise ProxyError(f"{path} is not a torch checkpoint{damaged}") from None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise ProxyError(f"{path} is a torch file but not a model's state dict (tensors by name)")
    missing, extra = sorted(set(template) - set(weights)), sorted(set(weights) - set(template))
    problems = [f"{names[0]}{f' (and {len(names) - 1} more)' if len(names) > 1 else ''} {what}"
                for names, what in ((missing, "is missing"), (extra, "is not in the configuration")) if names]
    problems += [f"{name} is {list(weights[name].shape)}, the configuration expects {list(t.shape)}"
                 for name, t in template.items() if name in weights and weights[name].shape != t.shape][:1]
    if problems:
        raise ProxyError(f"{path} holds tensors of another configuration than {configuration}: {'; '.join(problems)}")
    return weights


def held_out(args: tg.Hyperparameters, limit: int) -> torch.Tensor:
    """The first `limit` held-out targets (0: all), cut to whole sequences as a run cuts them."""
    return tg.load_validation_tokens(tg.list_shards(args.data_path, "val"), max(args.train_seq_len, args.eval_seq_len), limit)


def score(model: tg.GPT, weights: dict, val: torch.Tensor, token_bytes: tg.TokenBytes, args: tg.Hyperparameters) -> float:
    """val_bpb of the weights on val by train_gpt's standard evaluation (consecutive EVAL_SEQ_LEN sequences)."""
    model.load_state_dict(weights)
    return tg.evaluate(model, val, token_bytes, args, CPU)[1]


def token_bytes_of(args: tg.Hyperparameters) -> tg.TokenBytes:
    return tg.TokenBytes(tg.load_tokenizer(args.tokenizer_path, args.vocab_size))


# ----------------------------------------------------------------------------- quant: quantisers on trained checkpoints

class Quantiser(NamedTuple):
    name: str
    hessians: dict | None  # GPTQ's calibration; None: clip search
    calibration_seconds: float | None
    choose: object = tg.best_scale_per_row  # each row's scale choice
    int6_matrices: int = 0
    scale_rule: str = "search"  # GPTQ_SCALES
    gptq_embed: bool = False  # GPTQ_EMBED
    fit: float = 0.0  # > 0: FIT's pruning down to this fraction fewer bytes than the unpruned artifact


def by_weight_mse(best_scale_per_row):
    """train_gpt's per-row scale choice, judged by plain weight MSE whatever error it is given."""
    return lambda w, max_q, quantiles, levels, error: best_scale_per_row(w, max_q, quantiles, levels,
                                                                        lambda e: e.square().sum(dim=1))


def calibrate_on_training_data(model: tg.GPT, args: tg.Hyperparameters, sequences: int) -> tuple[dict, float]:
    """GPTQ's Hessians from the first `sequences` sequences of TRAIN_SEQ_LEN of the training stream, and
    the seconds they took."""
    t0 = time.perf_counter()
    loader = tg.DistributedTokenLoader(tg.list_shards(args.data_path, "train"), 0, 1, CPU.device)
    batches = (loader.next_batch(min(CALIBRATION_BATCH, sequences - first) * args.train_seq_len, args.train_seq_len)[0]
               for first in range(0, sequences, CALIBRATION_BATCH))
    return tg.collect_hessians(model.eval(), batches), time.perf_counter() - t0


def calibrate_on_generated_text(model: tg.GPT, args: tg.Hyperparameters) -> tuple[dict, float]:
    """GPTQ's Hessians from GPTQ_SEQUENCES sequences the model generates, and the seconds they took."""
    t0 = time.perf_counter()
    return tg.collect_hessians(model.eval(), [tg.generate(model.eval(), args.gptq_sequences, args, CPU)]), time.perf_counter() - t0


def quantisers(model: tg.GPT, weights: dict, args: tg.Hyperparameters, counts: list[int] | None, int6_matrices: int,
               sp8192: bool = False, fits: list[int] | None = None) -> list[Quantiser]:
    """Clip search and GPTQ, calibrated on the checkpoint's weights: with `counts`, on each number of
    training sequences; otherwise on GPTQ_SEQUENCES training or generated sequences, with either scale
    choice (with sp8192 instead: GPTQ (train) with the SP8192 record's SDClip scales, GPTQ of the embedding, and
    both); with int6_matrices > 0, GPTQ (train) narrowing all but that many matrices; with fits, the configuration's
    own quantiser pruned by FIT to each percentage fewer bytes."""
    model.load_state_dict(weights)
    clip = Quantiser("clip", None, None)
    if counts:
        return [clip] + [Quantiser(f"gptq (train), {n} sequences", *calibrate_on_training_data(model, args, n)) for n in counts]
    train = Quantiser("gptq (train)", *calibrate_on_training_data(model, args, args.gptq_sequences))
    if sp8192:  # the SP8192 record's quantiser options instead of the calibration text and the scale choice
        compared = [clip, train, train._replace(name="gptq (train), SDClip", scale_rule="sdclip"),
                    train._replace(name="gptq (train), the embedding too", gptq_embed=True),
                    train._replace(name="gptq (train), SDClip, the embedding too", scale_rule="sdclip", gptq_embed=True)]
    else:
        compared = [clip, train, Quantiser("gptq (self)", *calibrate_on_generated_text(model, args)),
                    train._replace(name="gptq (train), MSE choice", choose=by_weight_mse(tg.best_scale_per_row))]
    if int6_matrices:
        compared.append(train._replace(name=f"gptq (train), {int6_matrices} matrices at the width, the rest 1 bit less",
                                       int6_matrices=int6_matrices))
    own = clip if args.quant_method == "clip" else train._replace(name="gptq (train), the configuration's", scale_rule=args.gptq_scales,
                                                                     gptq_embed=args.gptq_embed)
    compared += [own._replace(name=f"{own.name}, FIT to {f} % fewer bytes", fit=f / 100) for f in fits or []]
    return compared


def configuration_file(opts) -> Path:
    """--config FILE, or the tier's configuration file."""
    return tg.existing_file(opts.config, "--config") if opts.config else tier(opts)[0]


def quant(opts) -> int:
    """Quantisers compared on trained checkpoints: per bit width, clip search, GPTQ with either
    calibration, and GPTQ choosing each row's scale by plain weight MSE (the records' choice) rather
    than by the H-weighted error, and with --int6-matrices N GPTQ (train) keeping only the N matrices of
    largest trace(H) at the width and the rest one bit narrower; or with --calibration-sequences N,M,...
    clip search and GPTQ calibrated on each number of training sequences. Per checkpoint: roundtrip
    val_bpb on the first --val-tokens held-out targets (the configuration's VAL_TOKENS by default, 0:
    all), its gap to the unquantised weights, artifact bytes, calibration and quantisation seconds.
    Deterministic: no seed noise within a checkpoint. Given several checkpoints (one per seed), a last
    table gives each quantiser's gap and bytes as mean +- std over them, and its roundtrip minus clip
    search's at the same width, checkpoint by checkpoint, with the 95 % interval over checkpoints."""
    bits = integer_list(opts.bits, "--bits", 2, 6)
    counts = None if opts.calibration_sequences is None else integer_list(opts.calibration_sequences, "--calibration-sequences", 1)
    if counts and opts.int6_matrices:
        raise ProxyError("--int6-matrices and --calibration-sequences are two comparisons: give one of them")
    for option, value in (("--val-tokens", opts.val_tokens), ("--int6-matrices", opts.int6_matrices)):
        if value is not None and value < 0:
            raise ProxyError(f"{option} {value}: expected an integer >= 0")
    if len(set(opts.checkpoint)) != len(opts.checkpoint):
        raise ProxyError("--checkpoint: a checkpoint is given twice")
    fits = None if opts.fit is None else integer_list(opts.fit, "--fit", 1, 50)
    config_path = configuration_file(opts)
    arm = {} if opts.settings is None else parse_arm(f"settings:@{opts.settings}")[1]  # an arm's @FILE on top
    check_names(arm, "--settings")
    args = hyperparameters(run_settings(load_configuration(config_path), arm, 1337), shown(config_path))
    model = configured_model(args)
    template = model.state_dict()
    weights = {path: load_checkpoint(Path(path), template, shown(config_path)) for path in opts.checkpoint}
    token_bytes = token_bytes_of(args)
    val = held_out(args, args.val_tokens if opts.val_tokens is None else opts.val_tokens)
    compressor = opts.compressor or args.compressor
    tables = []
    for path, checkpoint in weights.items():
        unquantised = score(model, checkpoint, val, token_bytes, args)
        compared = quantisers(model, checkpoint, args, counts, opts.int6_matrices, opts.sp8192, fits)
        lines = [f"checkpoint {path}: unquantised val_bpb {unquantised:.8f} on {val.numel() - 1:,} targets", "",
                 f"artifact bytes: {compressor}", "",
                 "| bits | quantiser | roundtrip bpb | gap | artifact bytes | calibration s | quantise s |", "|---|---|---|---|---|---|---|"]
        table = {}
        for width in bits:
            for q in compared:
                roundtrip, size, seconds = quantised(model, checkpoint, q, width, compressor, val, token_bytes, args)
                calibration = "—" if q.calibration_seconds is None else f"{q.calibration_seconds:.1f}"
                lines.append(f"| {width} | {q.name} | {roundtrip:.8f} | {roundtrip - unquantised:+.8f} | {size:,} | "
                             f"{calibration} | {seconds:.2f} |")
                table[(width, q.name)] = (roundtrip, roundtrip - unquantised, size)
        print("\n".join(lines) + "\n", flush=True)
        tables.append(table)
    if len(tables) > 1:
        print(over_checkpoints_table(tables))
    return 0


def quantised(model: tg.GPT, weights: dict, q: Quantiser, width: int, compressor: str, val: torch.Tensor,
              token_bytes: tg.TokenBytes, args: tg.Hyperparameters) -> tuple[float, int, float]:
    """One quantiser's roundtrip val_bpb, artifact bytes and quantisation seconds."""
    t0 = time.perf_counter()
    with patch.object(tg, "best_scale_per_row", q.choose):
        container = tg.quantize_state_dict(weights, args.passthrough_max_numel, q.hessians, bits=width,
                                           int6_matrices=q.int6_matrices, scale_rule=q.scale_rule,
                                           sdclip_k=(args.sdclip_k_int6, args.sdclip_k_int8), gptq_embed=q.gptq_embed)
    blob = tg.compress_artifact(container, compressor)
    if q.fit:  # prunes the container in place to what its bytes hold
        blob = tg.fit_artifact(container, weights, q.hessians or {}, int(len(blob) * (1 - q.fit)), compressor, lambda _: None)
    seconds = time.perf_counter() - t0
    return score(model, tg.dequantize_state_dict(container, model.state_dict()), val, token_bytes, args), len(blob), seconds


def over_checkpoints_table(tables: list[dict]) -> str:
    """Each quantiser's gap and bytes over checkpoints, and its roundtrip paired with clip search's."""
    lines = [f"over {len(tables)} checkpoints:", "",
             "| bits | quantiser | gap | artifact bytes | − clip search, per checkpoint | − clip search [95 % CI] |",
             "|---|---|---|---|---|---|"]
    for width, name in tables[0]:
        column = [t[(width, name)] for t in tables]
        versus = "—"
        if name != "clip":
            d = paired([r for r, _, _ in column], [t[(width, "clip")][0] for t in tables])
            versus = f"{d['mean']:+.5f} [{d['low']:+.5f}, {d['high']:+.5f}]"
        per = "—" if name == "clip" else ", ".join(f"{r - t[(width, 'clip')][0]:+.5f}" for (r, _, _), t in zip(column, tables))
        lines.append(f"| {width} | {name} | {cell(mean_std([g for _, g, _ in column]), '{:+.5f}')} | "
                     f"{cell(mean_std([b for _, _, b in column]), '{:,.0f}')} | {per} | {versus} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- subset: held-out subsets against the whole set

RUN_FILES = ("settings.json", "final_model.pt", "final_model.int6.ptz")


class Run(NamedTuple):
    directory: Path
    args: tg.Hyperparameters
    model: tg.GPT
    weights: dict  # final_model.pt
    roundtrip: dict  # the artifact's weights, dequantised


def load_run(directory: Path) -> Run:
    """A run directory of proxy.py: its settings (the configuration), its unquantised weights and its artifact."""
    for name in RUN_FILES:
        if not (directory / name).is_file():
            raise ProxyError(f"{directory} holds no {name}: a run directory holds {', '.join(RUN_FILES)}")
    where = str(directory / "settings.json")
    try:
        settings = json.loads((directory / "settings.json").read_text(encoding="utf-8"))
    except ValueError:
        raise ProxyError(f"{where} is not JSON") from None
    if not isinstance(settings, dict) or not all(isinstance(value, str) for value in settings.values()):
        raise ProxyError(f"{where} is not a run's settings (VAR: value)")
    check_names({key: value for key, value in settings.items() if key not in PER_RUN}, where)
    args = hyperparameters(settings, where)
    model = configured_model(args)
    template = model.state_dict()
    weights = load_checkpoint(directory / "final_model.pt", template, where)
    artifact = directory / "final_model.int6.ptz"
    container = tg.load_artifact(artifact)
    try:
        roundtrip = tg.dequantize_state_dict(container, template)
    except tg.InputError as e:
        raise ProxyError(f"{artifact}: {e}") from None
    return Run(directory, args, model, weights, roundtrip)


def held_out_data(args: tg.Hyperparameters) -> tuple:
    """What decides a run's held-out targets and their bytes."""
    return Path(args.data_path).resolve(), Path(args.tokenizer_path).resolve(), args.eval_seq_len, args.train_seq_len


def check_sizes(sizes: list[int], args: tg.Hyperparameters):
    """Each size from one sequence to the whole held-out set."""
    sequence, total = max(args.train_seq_len, args.eval_seq_len), held_out(args, 0).numel() - 1
    for size in sizes:
        if not sequence <= size <= total:
            raise ProxyError(f"--sizes: {size:,} is not between one sequence ({sequence:,} targets) and the "
                             f"{total:,} held-out targets")


def subset_rows(run: Run, sizes: list[int]) -> list[tuple[int, int, float, float]]:
    """(size, targets scored, unquantised bpb, roundtrip bpb) for each size, then for 0: every held-out target."""
    token_bytes, rows = token_bytes_of(run.args), []
    for size in sizes + [0]:
        val = held_out(run.args, size)
        rows.append((size, val.numel() - 1, score(run.model, run.weights, val, token_bytes, run.args),
                     score(run.model, run.roundtrip, val, token_bytes, run.args)))
    return rows


def deviations(row: tuple, whole: tuple) -> tuple[float, float, float]:
    """A size's unquantised bpb, roundtrip bpb and quantisation gap, each less the whole set's."""
    (_, _, unquantised, roundtrip), (_, _, whole_unquantised, whole_roundtrip) = row, whole
    return (unquantised - whole_unquantised, roundtrip - whole_roundtrip,
            (roundtrip - unquantised) - (whole_roundtrip - whole_unquantised))


def size_name(size: int) -> str:
    return f"{size:,}" if size else "all"


def subset_table(rows: list[tuple]) -> str:
    lines = ["| size | targets | unquantised bpb | roundtrip bpb | quant gap | unquantised − all | roundtrip − all | gap − all |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        size, targets, unquantised, roundtrip = row
        lines.append(f"| {size_name(size)} | {targets:,} | {unquantised:.8f} | {roundtrip:.8f} | {roundtrip - unquantised:+.8f} | "
                     + " | ".join(f"{d:+.8f}" for d in deviations(row, rows[-1])) + " |")
    return "\n".join(lines)


def over_runs_table(tables: list[list[tuple]]) -> str:
    """Per size, over runs: the mean of each deviation from the run's whole-set figure, and the largest in size."""
    lines = ["| size | " + " | ".join(f"{figure} − all: mean | largest abs" for figure in ("unquantised", "roundtrip", "gap")) + " |",
             "|---|---|---|---|---|---|---|"]
    for i, (size, *_) in enumerate(tables[0][:-1]):
        per_figure = zip(*(deviations(rows[i], rows[-1]) for rows in tables))
        lines.append(f"| {size_name(size)} | " + " | ".join(f"{statistics.fmean(d):+.8f} | {max(map(abs, d)):.8f}"
                                                         for d in per_figure) + " |")
    return "\n".join(lines)


def subset(opts) -> int:
    """Held-out subsets against the whole set: each run's unquantised weights (final_model.pt) and
    artifact roundtrip (final_model.int6.ptz), in the configuration of the run's settings.json (so
    runs of any arm), scored by train_gpt's standard evaluation on the first
    SIZE held-out targets for each size and on every one; each figure's difference from the whole
    set's, and with several runs their mean and largest absolute value per size. Deterministic."""
    sizes = integer_list(opts.sizes, "--sizes", 1)
    runs = [load_run(Path(d)) for d in opts.runs]
    for run in runs[1:]:
        if held_out_data(run.args) != held_out_data(runs[0].args):
            raise ProxyError(f"{runs[0].directory} and {run.directory} score different held-out data or windows "
                             "(DATA_PATH, TOKENIZER_PATH, EVAL_SEQ_LEN, TRAIN_SEQ_LEN): their figures do not compare")
    check_sizes(sizes, runs[0].args)
    tables = []
    for run in runs:
        tables.append(subset_rows(run, sizes))
        print(f"run {run.directory}:\n\n{subset_table(tables[-1])}\n", flush=True)
    if len(runs) > 1:
        print(f"over the {len(runs)} runs, each size's difference from each run's whole-set figure:\n\n{over_runs_table(tables)}")
    return 0


# ----------------------------------------------------------------------------- the command line

def tier_options(parser: argparse.ArgumentParser, quick: str, long: str):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help=quick)
    group.add_argument("--long", action="store_true", help=long)
    return group


def study_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxy.py", description="\n\n".join(__doc__.split("\n\n")[:2]),
                                     epilog=VERDICT,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", action="append", help="NAME:VAR=VALUE,... (repeatable; default base:)")
    parser.add_argument("--seeds", help="distinct seeds separated by commas (default 1337,42,7; 1337 with --quick)")
    tier_options(parser, "the small configuration scripts/proxy_quick.env (runs under logs/proxy/quick)",
                 "the long tier scripts/proxy_long.env (runs under logs/proxy/long)")
    parser.add_argument("--nproc", type=int, default=2, help="processes per run (torchrun with gloo; 1: python)")
    parser.add_argument("--out", help="where the runs and results.json go (default logs/proxy, or its quick or long folder)")
    parser.add_argument("--paired", choices=sorted(PAIRED), default="final",
                        help="the bpb of the paired differences (default final: TTT, or sliding where TTT is off)")
    return parser


def quant_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxy.py quant", description=" ".join(quant.__doc__.split()))
    parser.add_argument("--checkpoint", nargs="+", required=True, metavar="PATH",
                        help="final_model.pt files written by proxy runs of one configuration (one per seed)")
    group = tier_options(parser, "the checkpoint is of scripts/proxy_quick.env's configuration",
                         "the checkpoint is of scripts/proxy_long.env's configuration")
    group.add_argument("--config", help="the checkpoint is of this configuration file's (VAR=VALUE lines; "
                                        "default scripts/proxy.env)")
    parser.add_argument("--bits", default="6", help="bit widths of the int6 matrices to compare, e.g. 6,5,4")
    parser.add_argument("--int6-matrices", type=int, default=0, help="also GPTQ (train) with only this many "
                                                                          "matrices at the width (INT6_MATRICES)")
    parser.add_argument("--calibration-sequences", help="GPTQ (train) with each of these numbers of calibration "
                                                        "sequences, e.g. 64,256,1024, instead of the usual quantisers")
    parser.add_argument("--val-tokens", type=int, help="held-out targets to score (default: the configuration's "
                                                        "VAL_TOKENS; 0: all)")
    parser.add_argument("--settings", help="a file of VAR=VALUE lines on top of the configuration, as an arm's @FILE "
                                           "(e.g. scripts/proxy_sp8192.env)")
    parser.add_argument("--sp8192", action="store_true", help="GPTQ (train) with the SP8192 record's SDClip scales, "
                                                              "GPTQ of the embedding, and both, instead of GPTQ (self) and the MSE choice")
    parser.add_argument("--fit", help="also the configuration's own quantiser pruned by FIT to each of these percentages "
                                      "fewer bytes, e.g. 1,2")
    parser.add_argument("--compressor", choices=["zstd", "brotli"], help="of the artifact bytes (default: the configuration's)")
    return parser


def subset_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxy.py subset", description=" ".join(subset.__doc__.split()))
    parser.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                        help="run directories of proxy.py (settings.json, final_model.pt, final_model.int6.ptz), "
                             "e.g. logs/proxy/base/seed1337")
    parser.add_argument("--sizes", default="32768,65536,131072,262144",
                        help="held-out targets per subset, separated by commas (every target is always scored too)")
    return parser


COMMANDS = {"quant": (quant_parser, quant), "subset": (subset_parser, subset)}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = argv.pop(0) if argv[:1] and argv[0] in COMMANDS else None
    make_parser, command = COMMANDS.get(name, (study_parser, study))
    opts = make_parser().parse_args(argv)
    try:
        return command(opts)
    except (ProxyError, tg.RunError, OSError, subprocess.CalledProcessError) as e:
        print(f"proxy: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
