#!/usr/bin/env python3
"""Summarise the logs of a multi-seed run (scripts/run_seeds.sh): a markdown table, one row per seed,
with mean and sample standard deviation; optionally submission.json, the significance test of an
improvement over the current record, and a plot of the training curves.

    python scripts/summarize_logs.py logs/record_seed1337.txt logs/record_seed42.txt logs/record_seed7.txt \
        --record-val-loss 1.88731 --plot curves.png \
        --submission submission.json --author "Jane Doe" --github-id janedoe --name "My run" --blurb "..."

Two log layouts are read: ours (train_gpt.py: the source, versions, nvidia-smi, then a
`hyperparameters: {json}` line) and the published record's (train_seed{1337,42,7}.log: the same header
without the JSON line; its settings are `key:value` tokens such as `seed:1337 matrix_lr:0.025` on the
lines before the first step). Lines are matched by their leading word and `key:value` tokens, so extra
tokens (`stride:64`) do not stop a match. For a log without the JSON line, hyperparameters are compared
only where both logs have them, TTT is taken as run when final_ttt lines are present, and the output says
so in a "checks not made: ..." line.

Logs are refused (exit 1, one line per log on stderr, `refused: PATH: reason`) when unfinished, written
by other code than the first log's, run with other hyperparameters (seed and run_id aside), duplicating
another log's seed, given twice (same file or same content), carrying a non-finite figure (nan/inf) or
an ERROR line (the size limit); the significance test is refused when the val_loss values have no
spread. Nothing is written after a refusal. submission.json (strict JSON) and the plot are written
atomically with the mode of a new file. scipy (the t distribution) and matplotlib (--plot) are imported
only when needed; importable without side effects.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import re
import secrets
import statistics
import sys
from pathlib import Path

SEPARATOR = "=" * 100
SIZE_LIMIT_BYTES = 16_000_000  # train_gpt.SUBMISSION_LIMIT_BYTES (total must be below it)
REQUIRED_IMPROVEMENT = 0.005  # nats
ALPHA = 0.01
IGNORED_HYPERPARAMETERS = ("seed", "run_id")

# The published record (3 seeds): reference lines of --plot
RECORD_REFERENCE = dict(
    ttt_val_bpb=1.11777,  # 3-seed mean of final_ttt_exact
    post_ema_val_bpb=1.1353,  # 3-seed mean of DIAGNOSTIC post_ema (1.1352, 1.1358, 1.1350)
    step4000_val_bpb=1.2155, step4000_time_s=340.887,  # seed 1337's step:4000 validation
    wallclock_s=600.0,  # the training cap
    steps=7034,  # mean of 7041, 7025, 7035
)

_TOKEN = re.compile(r"(?<!\S)([A-Za-z_]\w*):(\S+)")
_FLOAT = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)\Z", re.IGNORECASE)
_INT = re.compile(r"[-+]?\d+\Z")
_STEP = re.compile(r"(\d+)/(\d+)\Z")
PATTERNS = {
    "model_bytes": re.compile(r"^Serialized model int6\+(?:zstd|brotli): (\d+) bytes$"),
    "total_bytes": re.compile(r"^Total submission size int6\+(?:zstd|brotli): (\d+) bytes$"),
}
EXACT_KEYS = {"final_int6_roundtrip": "roundtrip", "final_int6_sliding_window": "sliding", "final_ttt": "ttt"}
TTT_LINE_PREFIXES = ("final_ttt", "ttt_chunk", "ttt:chunk")  # signs that TTT ran (logs without JSON)


class LogError(Exception):
    """A file that is not a readable train_gpt.py log."""


class Refused(Exception):
    """Logs that cannot be summarised: problems is a list of (path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))
        self.problems = problems


# ----------------------------------------------------------------------------- parsing

def _tokens(line: str) -> dict:
    """The `key:value` tokens of a line (the first of each key)."""
    out: dict = {}
    for key, value in _TOKEN.findall(line):
        out.setdefault(key, value)
    return out


def _number(text: str | None, unit: str = "") -> float | None:
    """A float (nan and inf included) from a token value ending in unit; None when it is none."""
    if text is None or not text.endswith(unit):
        return None
    text = text[:len(text) - len(unit)]
    return float(text) if _FLOAT.match(text) else None


def _figures(tokens: dict, spec: dict) -> dict | None:
    """{key: float} for each key: unit of spec, or None when one is missing or not a number."""
    out = {key: _number(tokens.get(key), unit) for key, unit in spec.items()}
    return None if any(v is None for v in out.values()) else out


def _setting(text: str):
    """A header setting's value: int, finite float, bool, or the text."""
    if _INT.match(text):
        return int(text)
    if text in ("True", "False"):
        return text == "True"
    value = _number(text)
    return value if value is not None and math.isfinite(value) else text


def parse_log(path) -> dict:
    """The figures of one log (ours or the published record's). Missing figures are None; the curves
    (train_curve: (step, train_loss, train_time_ms), val_curve: (step, val_loss, val_bpb, train_time_ms))
    hold every step line. Raises LogError when the file cannot be read or has no source/environment
    header or no hyperparameters (neither a JSON line nor key:value settings before the first step)."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LogError(f"cannot read the log ({e.__class__.__name__}: {e})") from None
    lines = [line.rstrip() for line in text.split("\n")]  # CRLF and trailing blanks of copied logs
    separators = [i for i, line in enumerate(lines) if line == SEPARATOR]
    if len(separators) < 2:
        raise LogError("not a train_gpt.py log: no source and environment header (two lines of 100 '=')")
    code = "\n".join(lines[:separators[0]])
    first = separators[1] + 2  # 1-based number of the first line of the run
    run = lines[separators[1] + 1:]

    out: dict = dict(path=path, real_path=os.path.realpath(path), identity=(st.st_dev, st.st_ino),
                     sha256=hashlib.sha256(raw).hexdigest(), code=code, hyperparameters=None, hp_source=None,
                     seed=None, iterations=None, steps=None, step_avg_ms=None, post_kind=None,
                     post_val_loss=None, post_val_bpb=None, ttt_time_s=None, model_bytes=None, total_bytes=None,
                     errors=[], stopped_early=False, train_curve=[], val_curve=[], nonfinite=[])
    for key in EXACT_KEYS.values():
        out[f"{key}_val_loss"] = out[f"{key}_val_bpb"] = None
    header: dict = {}
    in_header, ttt_seen = True, False
    last_train = last_val = stop = None  # (step, iterations, step_avg)

    def check(number: int, line: str, values) -> None:
        if not all(math.isfinite(v) for v in values):
            out["nonfinite"].append(f"line {number}: {line[:80]!r}")

    for number, line in enumerate(run, start=first):
        words = line.split(maxsplit=1)
        head = words[0] if words else ""
        tokens = _tokens(line) if ":" in line else {}
        if head.startswith(("step:", "warmup_step:")):
            in_header = False
        if line.startswith(TTT_LINE_PREFIXES):
            ttt_seen = True
        if line.startswith("hyperparameters: ") and out["hyperparameters"] is None:
            try:
                hp = json.loads(line[len("hyperparameters: "):])
            except json.JSONDecodeError as e:
                raise LogError(f"unreadable hyperparameters line ({e})") from None
            if not isinstance(hp, dict):
                raise LogError("unreadable hyperparameters line (not a JSON object)")
            out["hyperparameters"], out["hp_source"] = hp, "json"
        elif line.startswith("ERROR:"):
            out["errors"].append(line)
        elif head.startswith("step:") and (m := _STEP.match(tokens.get("step", ""))):
            step, iterations = int(m[1]), int(m[2])
            times = _figures(tokens, {"train_time": "ms", "step_avg": "ms"})
            if times is None:
                continue
            if (f := _figures(tokens, {"val_loss": "", "val_bpb": ""})) is not None:
                out["val_curve"].append((step, f["val_loss"], f["val_bpb"], times["train_time"]))
                last_val = (step, iterations, times["step_avg"])
                check(number, line, [*f.values(), *times.values()])
            elif (f := _figures(tokens, {"train_loss": ""})) is not None:
                out["train_curve"].append((step, f["train_loss"], times["train_time"]))
                last_train = (step, iterations, times["step_avg"])
                check(number, line, [*f.values(), *times.values()])
        elif head == "stopping_early:" and (m := _STEP.match(tokens.get("step", ""))):
            stop = (int(m[1]), int(m[2]))
        elif head == "DIAGNOSTIC" and (m := re.match(r"post_(ema|swa)\b", words[1] if len(words) > 1 else "")) \
                and (f := _figures(tokens, {"val_loss": "", "val_bpb": ""})) is not None:
            out.update(post_kind=m[1], post_val_loss=f["val_loss"], post_val_bpb=f["val_bpb"])
            check(number, line, f.values())
        elif head.endswith("_exact") and head[:-len("_exact")] in EXACT_KEYS \
                and (f := _figures(tokens, {"val_loss": "", "val_bpb": ""})) is not None:
            key = EXACT_KEYS[head[:-len("_exact")]]
            if out[f"{key}_val_loss"] is not None:
                raise LogError(f"line {number}: a second {head} line (two runs in one log?)")
            out[f"{key}_val_loss"], out[f"{key}_val_bpb"] = f["val_loss"], f["val_bpb"]
            check(number, line, f.values())
        elif head == "final_ttt" and (f := _figures(tokens, {"eval_time": "ms"})) is not None:
            out["ttt_time_s"] = f["eval_time"] / 1000
            check(number, line, [f["eval_time"], *(v for k in ("val_loss", "val_bpb")
                                                   if (v := _number(tokens.get(k))) is not None)])
        elif m := PATTERNS["model_bytes"].match(line):
            out["model_bytes"] = int(m[1])
        elif m := PATTERNS["total_bytes"].match(line):
            out["total_bytes"] = int(m[1])
        elif in_header:
            for key, value in tokens.items():
                header.setdefault(key, _setting(value))
    if out["hyperparameters"] is None:
        if not header:
            raise LogError("no hyperparameters: neither a 'hyperparameters: {json}' line nor key:value settings "
                           "before the first step")
        out["hyperparameters"], out["hp_source"] = header, "header"
    hp = out["hyperparameters"]
    seed = hp.get("seed")
    out["seed"] = seed if out["hp_source"] == "json" or isinstance(seed, int) else None
    # TTT: as the JSON says (on when absent); without JSON, from the final_ttt / ttt_chunk lines
    out["ttt_enabled"] = bool(hp.get("ttt_enabled", True)) if out["hp_source"] == "json" else ttt_seen
    # steps: the wallclock stop when there was one, else the final validation (at the last step)
    if stop:
        out["steps"], out["iterations"], out["stopped_early"] = stop[0], stop[1], True
    elif last_val:
        out["steps"], out["iterations"] = last_val[0], last_val[1]
    elif last_train:
        out["steps"], out["iterations"] = last_train[0], last_train[1]
    # step_avg: the latest step line; the final validation line is logged at the last step, so it covers
    # every step (train_time / steps: the record's 85.22 ms for seed 1337), the last train line may not
    latest = max((s for s in (last_train, last_val) if s), key=lambda s: s[0], default=None)
    if latest is not None:
        if last_val is not None and last_val[0] == latest[0]:
            latest = last_val
        out["step_avg_ms"] = latest[2]
    return out


def final_metric(log: dict) -> str:
    """The prefix of the score of a log: 'ttt' (final_ttt_exact), or 'sliding' when TTT is off."""
    return "ttt" if log["ttt_enabled"] else "sliding"


def first_difference(a: str, b: str) -> int:
    """1-based number of the first line where two texts differ."""
    la, lb = a.split("\n"), b.split("\n")
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return i + 1
    return min(len(la), len(lb)) + 1


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def compared_keys(log: dict, reference: dict) -> list[str]:
    """The hyperparameters compared between two logs: every key when both log JSON, else those both have."""
    a, b = set(reference["hyperparameters"]), set(log["hyperparameters"])
    keys = a | b if reference["hp_source"] == log["hp_source"] == "json" else a & b
    return sorted(k for k in keys if k not in IGNORED_HYPERPARAMETERS)


def problems_of(log: dict, reference: dict | None, seen_seeds: dict) -> list[str]:
    """Why a log cannot be summarised together with the reference (first) log; [] when it can."""
    reasons = []
    metric = final_metric(log)
    if log["nonfinite"]:
        more = f" (and {len(log['nonfinite']) - 1} more)" if len(log["nonfinite"]) > 1 else ""
        reasons.append(f"non-finite value (nan/inf) in {log['nonfinite'][0]}{more}")
    if log[f"{metric}_val_loss"] is None:
        needed = "final_ttt_exact" if metric == "ttt" else "final_int6_sliding_window_exact (TTT disabled)"
        reasons.append(f"unfinished run: no {needed} line")
    for line in log["errors"]:
        reasons.append(f"run reported an error: {line!r}")
    if log["total_bytes"] is None:
        reasons.append("no 'Total submission size int6+zstd: N bytes' line: the size limit cannot be checked")
    elif not log["errors"] and log["total_bytes"] >= SIZE_LIMIT_BYTES:
        reasons.append(f"total submission size {log['total_bytes']} bytes is not below the {SIZE_LIMIT_BYTES}-byte limit")
    if reference is not None and reference is not log:
        if log["code"] != reference["code"]:
            reasons.append(f"code differs from that of {reference['path']} (train_gpt.py source, first difference "
                           f"at line {first_difference(reference['code'], log['code'])}; "
                           f"{len(reference['code'].encode())} vs {len(log['code'].encode())} bytes)")
        ref_hp, hp = reference["hyperparameters"], log["hyperparameters"]
        keys = [k for k in compared_keys(log, reference) if ref_hp.get(k, "<absent>") != hp.get(k, "<absent>")]
        if keys:
            detail = ", ".join(f"{k} ({_short(ref_hp.get(k, '<absent>'))} vs {_short(hp.get(k, '<absent>'))})" for k in keys)
            reasons.append(f"hyperparameters differ from those of {reference['path']}: {detail}")
        if not log["hp_source"] == reference["hp_source"] == "json" and metric != final_metric(reference):
            reasons.append(f"TTT ran here but not in {reference['path']}" if metric == "ttt"
                           else f"TTT ran in {reference['path']} but not here")
    seed = log["seed"]
    if seed is not None and seed in seen_seeds and seen_seeds[seed] != log["path"]:
        reasons.append(f"seed {seed} is also the seed of {seen_seeds[seed]} (seeds must be distinct)")
    return reasons


def duplicate_of(log: dict, earlier: list[dict]) -> str | None:
    """Why log is one of the earlier logs given again (same file, or same content); None when it is not."""
    for other in earlier:
        if log["identity"] == other["identity"] or log["real_path"] == other["real_path"]:
            return f"the same file as {other['path']} (a log given twice)"
        if log["sha256"] == other["sha256"]:
            return f"the same content as {other['path']} (a log given twice)"
    return None


def checks_not_made(logs: list[dict]) -> list[str]:
    """The checks that the logs' layout did not allow; [] for our own (JSON) logs."""
    notes = []
    no_json = [log for log in logs if log["hp_source"] != "json"]
    if no_json:
        names = ", ".join(Path(log["path"]).name for log in no_json)
        if len(logs) > 1:
            common = set.intersection(*(set(log["hyperparameters"]) for log in logs)) - set(IGNORED_HYPERPARAMETERS)
            shown = ", ".join(sorted(common)[:8]) + (", ..." if len(common) > 8 else "")
            notes.append(f"hyperparameters not logged as JSON ({names}) — compared only the carried source and the "
                         f"key:value settings of the header lines where both logs have them ({len(common)} shared by all"
                         f"{': ' + shown if shown else ''}), not the full configuration")
        else:
            notes.append(f"hyperparameters not logged as JSON ({names}) — read from the key:value settings of the "
                         f"header lines")
        notes.append("TTT on/off not logged — taken from the presence of final_ttt/ttt_chunk lines")
    no_seed = [Path(log["path"]).name for log in logs if log["seed"] is None]
    if no_seed:
        notes.append(f"seed not logged ({', '.join(no_seed)}) — distinct seeds not checked")
    return notes


# ----------------------------------------------------------------------------- statistics

def t_test(val_losses: list[float], record_val_loss: float, required: float = REQUIRED_IMPROVEMENT,
           alpha: float = ALPHA) -> dict:
    """One-sided one-sample t-test of H0: record - mean <= required over the per-seed val_loss
    (scipy.stats.t). Raises ValueError for fewer than 2 values, zero spread or non-finite input."""
    from scipy import stats

    n = len(val_losses)
    if n < 2:
        raise ValueError("the significance test needs >= 2 seeds")
    if not all(math.isfinite(v) for v in [*val_losses, record_val_loss, required]):
        raise ValueError("the significance test needs finite values")
    mean = statistics.fmean(val_losses)
    s = statistics.stdev(val_losses)
    if not s > 0:
        raise ValueError(f"the significance test needs spread: every val_loss is {val_losses[0]:.8f} "
                         "(zero standard deviation, t undefined)")
    improvement = record_val_loss - mean
    t = (improvement - required) / (s / math.sqrt(n))
    p = float(stats.t.sf(t, n - 1))
    return dict(n=n, mean=mean, std=s, improvement=improvement, required=required, t=t, df=n - 1, p=p,
                alpha=alpha, significant=p < alpha and improvement > required)


def verdict(test: dict) -> str:
    if test["significant"]:
        return (f"significant: improvement {test['improvement']:.5f} nats > {test['required']} "
                f"at p={test['p']:.3g} < {test['alpha']}")
    return (f"not significant: improvement {test['improvement']:.5f} nats, p={test['p']:.3g} "
            f"(needs > {test['required']} nats at p < {test['alpha']})")


# ----------------------------------------------------------------------------- summary

COLUMNS = [  # (key, header, row format, mean/std format)
    ("steps", "steps", "{:d}", "{:.1f}"),
    ("step_avg_ms", "step_avg (ms)", "{:.2f}", "{:.2f}"),
    ("post_val_bpb", "post-EMA bpb", "{:.4f}", "{:.5f}"),
    ("roundtrip_val_bpb", "int6 roundtrip bpb", "{:.5f}", "{:.5f}"),
    ("sliding_val_bpb", "sliding bpb", "{:.5f}", "{:.5f}"),
    ("ttt_val_bpb", "TTT bpb", "{:.5f}", "{:.5f}"),
    ("ttt_time_s", "TTT time (s)", "{:.1f}", "{:.1f}"),
    ("model_bytes", "model bytes", "{:d}", "{:.0f}"),
    ("total_bytes", "total bytes", "{:d}", "{:.0f}"),
]


def summarize(paths) -> dict:
    """Parses and checks the logs; raises Refused listing every log that cannot be used. Returns
    logs (parsed, in the given order), mean and std (per column key, None where not computable; std is
    the sample standard deviation, None for one log), metric ('ttt' or 'sliding'), val_loss, val_bpb
    (means of the final metric), val_losses and val_bpbs (per seed), seeds, bytes_total (mean, int) and
    unchecked (the checks that the logs' layout did not allow)."""
    paths = [str(p) for p in paths]
    if not paths:
        raise Refused([("(none)", "no log given")])
    problems, parsed = [], []  # (argument index, path, reason), (argument index, log)
    for i, path in enumerate(paths):
        try:
            parsed.append((i, parse_log(path)))
        except LogError as e:
            problems.append((i, path, str(e)))
    logs = [log for _, log in parsed]
    reference = logs[0] if logs else None
    seen: dict = {}
    for j, (i, log) in enumerate(parsed):
        again = duplicate_of(log, logs[:j])
        reasons = [again] if again else problems_of(log, reference, seen)
        if not again and log["seed"] is not None:
            seen.setdefault(log["seed"], log["path"])
        if reasons:
            problems.append((i, log["path"], "; ".join(reasons)))
    if problems:
        raise Refused([(path, reason) for _, path, reason in sorted(problems, key=lambda item: item[0])])

    mean, std = {}, {}
    for key, *_ in COLUMNS + [("post_val_loss",), ("roundtrip_val_loss",), ("sliding_val_loss",), ("ttt_val_loss",)]:
        values = [log[key] for log in logs]
        if any(v is None for v in values):
            mean[key] = std[key] = None
            continue
        mean[key] = statistics.fmean(values)
        std[key] = statistics.stdev(values) if len(values) >= 2 else None
    metric = final_metric(logs[0])
    post_kinds = {log["post_kind"] for log in logs}
    post_label = {"ema": "post-EMA", "swa": "post-SWA"}.get(post_kinds.pop(), "post-EMA") if len(post_kinds) == 1 else "post-EMA/SWA"
    return dict(
        logs=logs, mean=mean, std=std, metric=metric,
        post_label=post_label,
        seeds=[log["seed"] for log in logs],
        val_losses=[log[f"{metric}_val_loss"] for log in logs],
        val_bpbs=[log[f"{metric}_val_bpb"] for log in logs],
        val_loss=mean[f"{metric}_val_loss"], val_bpb=mean[f"{metric}_val_bpb"],
        bytes_total=round(mean["total_bytes"]) if mean["total_bytes"] is not None else None,
        unchecked=checks_not_made(logs),
    )


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def markdown_table(summary: dict) -> str:
    headers = ["seed"] + [summary["post_label"] + " bpb" if key == "post_val_bpb" else header
                          for key, header, _, _ in COLUMNS]
    rows = [headers, ["---"] * len(headers)]
    for log in summary["logs"]:
        rows.append([_cell(log["seed"], "{}")] + [_cell(log[key], fmt) for key, _, fmt, _ in COLUMNS])
    rows.append(["mean"] + [_cell(summary["mean"][key], fmt) for key, _, _, fmt in COLUMNS])
    rows.append(["std"] + [_cell(summary["std"][key], fmt) for key, _, _, fmt in COLUMNS])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def submission(summary: dict, author: str, github_id: str, name: str, blurb: str, date: str) -> dict:
    logs = summary["logs"]
    code_bytes = {log["total_bytes"] - log["model_bytes"] for log in logs
                  if log["total_bytes"] is not None and log["model_bytes"] is not None}
    return dict(
        author=author, github_id=github_id, name=name, blurb=blurb, date=date,
        val_loss=round(summary["val_loss"], 8), val_bpb=round(summary["val_bpb"], 8),
        bytes_total=summary["bytes_total"],
        bytes_code=code_bytes.pop() if len(code_bytes) == 1 else None,
        metric="final_ttt_exact" if summary["metric"] == "ttt" else "final_int6_sliding_window_exact",
        seeds=summary["seeds"],
        val_bpb_per_seed=summary["val_bpbs"],
        val_loss_per_seed=summary["val_losses"],
        bytes_total_per_seed=[log["total_bytes"] for log in logs],
    )


def write_atomic(path, write, binary: bool = False) -> None:
    """Writes path through write(file) into a temporary file beside it, then renames it over path. The
    file gets the mode of a new file (0o666 & ~umask)."""
    path = Path(path)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else dict(encoding="utf-8"))) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path, data: dict) -> None:
    """Strict JSON (no NaN/Infinity: ValueError), atomically; creates the parent folders."""
    path = Path(path)
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(text))


# ----------------------------------------------------------------------------- plot

def plot_curves(logs: list[dict], path=None):
    """Train loss and val_bpb against step and against training time (s), one line per log (labelled by
    seed), with the record's figures as reference lines (labels starting with "record"). Returns the
    matplotlib Figure (2x2 axes: train/step, train/time, val_bpb/step, val_bpb/time); writes a PNG to
    path (atomically) when given. Imports matplotlib (Agg) here only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    ref = RECORD_REFERENCE
    fig = Figure(figsize=(13, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    for log in logs:
        label = f"seed {log['seed']}" if log["seed"] is not None else Path(log["path"]).name
        train, val = log["train_curve"], log["val_curve"]
        axes[0][0].plot([s for s, _, _ in train], [v for _, v, _ in train], label=label, linewidth=1)
        axes[0][1].plot([t / 1000 for _, _, t in train], [v for _, v, _ in train], label=label, linewidth=1)
        axes[1][0].plot([s for s, _, _, _ in val], [b for _, _, b, _ in val], marker="o", label=label)
        axes[1][1].plot([t / 1000 for *_, t in val], [b for _, _, b, _ in val], marker="o", label=label)
    for ax in axes[1]:
        ax.axhline(ref["ttt_val_bpb"], color="tab:red", linestyle="--", linewidth=1,
                   label=f"record: 3-seed mean TTT val_bpb {ref['ttt_val_bpb']}")
        ax.axhline(ref["post_ema_val_bpb"], color="tab:purple", linestyle=":", linewidth=1,
                   label=f"record: 3-seed mean post-EMA val_bpb ≈{ref['post_ema_val_bpb']}")
    axes[1][0].plot([4000], [ref["step4000_val_bpb"]], linestyle="none", marker="x", color="black", markersize=9,
                    label=f"record: step-4000 val_bpb {ref['step4000_val_bpb']}")
    axes[1][1].plot([ref["step4000_time_s"]], [ref["step4000_val_bpb"]], linestyle="none", marker="x",
                    color="black", markersize=9, label=f"record: step-4000 val_bpb {ref['step4000_val_bpb']}")
    for row in axes:
        row[0].axvline(ref["steps"], color="gray", linestyle="--", linewidth=1,
                       label=f"record: ≈{ref['steps']:,} steps")
        row[1].axvline(ref["wallclock_s"], color="gray", linestyle="--", linewidth=1,
                       label=f"record: {ref['wallclock_s']:.0f} s wallclock cap")
    # val_bpb: a linear scale that shows the later validations and the references; the step-0 value of
    # the untrained model (~4.1) stays off scale when there are later ones
    every = [b for log in logs for _, _, b, _ in log["val_curve"]]
    later = [b for log in logs for s, _, b, _ in log["val_curve"] if s > 0]
    shown = (later or every) + [ref["ttt_val_bpb"], ref["post_ema_val_bpb"], ref["step4000_val_bpb"]]
    lo, hi = min(shown), max(shown)
    off_scale = any(b > hi for b in every)
    titles = [["train loss vs step", "train loss vs training time"], ["val_bpb vs step", "val_bpb vs training time"]]
    for r, row in enumerate(axes):
        for c, ax in enumerate(row):
            ax.set_title(titles[r][c] + (" (step 0 off scale)" if r == 1 and off_scale else ""))
            ax.set_xlabel("step" if c == 0 else "training time (s)")
            ax.set_ylabel("train loss (nats, log scale)" if r == 0 else "val_bpb")
            if r == 0:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(ScalarFormatter())
            else:
                ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    if path is not None:
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
    return fig


# ----------------------------------------------------------------------------- command line

def _iso_date(text: str) -> str:
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="summarize_logs.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", metavar="LOG", help="logs/<RUN_ID>.txt of each seed; the first is the reference")
    p.add_argument("--submission", metavar="PATH", help="write submission.json here (atomically)")
    p.add_argument("--author", help="submission.json: author (required with --submission)")
    p.add_argument("--github-id", help="submission.json: GitHub id (required with --submission)")
    p.add_argument("--name", help="submission.json: name of the run (required with --submission)")
    p.add_argument("--blurb", default="", help="submission.json: one-paragraph description")
    p.add_argument("--date", type=_iso_date, default=None, help="submission.json: YYYY-MM-DD (default: today)")
    p.add_argument("--record-val-loss", type=float, metavar="NATS",
                   help="the current record's mean val_loss (e.g. 1.88731): test an improvement of more than "
                        f"{REQUIRED_IMPROVEMENT} nats at p < {ALPHA}")
    p.add_argument("--plot", metavar="FILE.png", help="draw train loss and val_bpb against step and time (PNG, atomically)")
    return p


def _refuse(path, reason: str) -> int:
    print(f"refused: {path}: {reason}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.submission:
        missing = [flag for flag, value in (("--author", args.author), ("--github-id", args.github_id),
                                            ("--name", args.name)) if not value]
        if missing:
            parser.error(f"--submission needs {', '.join(missing)}")
    if args.record_val_loss is not None and not math.isfinite(args.record_val_loss):
        parser.error("--record-val-loss must be a finite number")
    if args.plot:
        if not args.plot.lower().endswith(".png"):
            return _refuse(args.plot, "--plot writes a PNG: give a path ending in .png")
        folder = Path(args.plot).parent
        if not folder.is_dir():
            return _refuse(args.plot, f"cannot write the plot: the directory {str(folder)!r} does not exist")
        if Path(args.plot).is_dir():
            return _refuse(args.plot, "cannot write the plot: it is a directory")
    try:
        summary = summarize(args.logs)
    except Refused as e:
        for path, reason in e.problems:
            _refuse(path, reason)
        return 1
    test = None
    if args.record_val_loss is not None and len(summary["val_losses"]) >= 2:
        try:
            test = t_test(summary["val_losses"], args.record_val_loss)
        except ValueError as e:
            return _refuse(", ".join(log["path"] for log in summary["logs"]), str(e))
        except ImportError:
            return _refuse("--record-val-loss", "the t-test needs scipy: pip install scipy")

    metric_line = "final_ttt_exact" if summary["metric"] == "ttt" else "final_int6_sliding_window_exact (TTT disabled)"
    print(markdown_table(summary))
    print()
    print(f"seeds: {' '.join(_cell(s, '{}') for s in summary['seeds'])} ({len(summary['logs'])} log{'s' if len(summary['logs']) != 1 else ''})")
    std_loss = statistics.stdev(summary["val_losses"]) if len(summary["val_losses"]) >= 2 else None
    std_bpb = statistics.stdev(summary["val_bpbs"]) if len(summary["val_bpbs"]) >= 2 else None
    print(f"mean val_loss {summary['val_loss']:.8f} nats (std {_cell(std_loss, '{:.8f}')}), "
          f"mean val_bpb {summary['val_bpb']:.8f} (std {_cell(std_bpb, '{:.8f}')}) from {metric_line}")
    if summary["unchecked"]:
        print("checks not made: " + "; ".join(summary["unchecked"]))

    if args.record_val_loss is not None:
        print()
        if test is None:
            print(f"significance: the test needs >= 2 seeds (got {len(summary['val_losses'])})")
        else:
            print(f"significance vs record val_loss {args.record_val_loss}: one-sided one-sample t-test, "
                  f"H0: record - mean <= {test['required']} nats")
            print(f"mean improvement {test['improvement']:.5f} nats, t={test['t']:.4f}, df={test['df']}, p={test['p']:.4g}")
            print(verdict(test))

    if args.submission:
        data = submission(summary, args.author, args.github_id, args.name, args.blurb,
                          args.date or datetime.date.today().isoformat())
        try:
            write_json_atomic(args.submission, data)
        except (OSError, ValueError) as e:
            return _refuse(args.submission, f"cannot write submission.json ({e.__class__.__name__}: {e})")
        print()
        print(f"wrote {args.submission}: val_loss {data['val_loss']} val_bpb {data['val_bpb']} bytes_total {data['bytes_total']}")
    if args.plot:
        try:
            plot_curves(summary["logs"], args.plot)
        except ImportError:
            return _refuse(args.plot, "--plot needs matplotlib: pip install matplotlib")
        except OSError as e:
            return _refuse(args.plot, f"cannot write the plot ({e.__class__.__name__}: {e.strerror or e})")
        print()
        print(f"wrote {args.plot}: train loss and val_bpb against step and training time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
