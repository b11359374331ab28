#!/usr/bin/env python3
"""Summarise the logs of a multi-seed run (scripts/run_seeds.sh): a markdown table, one row per seed,
with mean and sample standard deviation; optionally submission.json, the significance test of an
improvement over the current record, and a plot of the training curves.

    python scripts/summarize_logs.py logs/record_seed1337.txt logs/record_seed42.txt logs/record_seed7.txt \\
        --record-val-loss 1.88731 --plot curves.png \\
        --submission submission.json --author "Jane Doe" --github-id janedoe --name "My run" --blurb "..."

Three log layouts are read, told apart by their lines (not by the file name); the output names each
log's layout:
  ours            train_gpt.py of this project: its source, versions and nvidia-smi between lines of
                  100 '=', then a `hyperparameters: {json}` line; scores in `final_*_exact` lines.
  record-1.1178   the 1.1178 record's train_seed{1337,42,7}.log: the same header without the JSON line;
                  its settings are `key:value` tokens such as `seed:1337 matrix_lr:0.025` on the lines
                  before the first step.
  record-sp8192   the SP8192 record's (1.0810 bpb, 2026-04-09) and later records': no source, a
                  `Hyperparameters:` block of `  key: value` lines, step lines `N/M train_loss: X
                  train_time: 0.8m`; the roundtrip, sliding and TTT columns from the `quantized`,
                  `quantized_sliding_window` and `quantized_ttt` lines (the score; the roundtrip column
                  is then headed "quantized roundtrip"), post-average from `pre-quantization post-ema`,
                  TTT time from `quantized_ttt`'s eval_time, code bytes from `Code size`. Its step time is the `stopping_early` line's train_time
                  over its step (n/a without a wallclock stop: the step lines' minutes are too coarse);
                  a validation's training time is that of the training line of its step.
Lines are matched by their leading word and `key:value` tokens, so extra tokens (`stride:64`) do not
stop a match.

Logs of one layout are the seeds of one run: each is checked against the first log of its layout (same
code, same hyperparameters but seed and run_id, distinct seeds, TTT on or off alike). Logs of different
layouts are runs of different programs: they share the table, with a mean and std per layout, and are
not checked against each other. A "checks not made: ..." line says what the layouts did not allow:
record-1.1178 hyperparameters compared only where both logs have them, record-sp8192 code compared only
by its `Code size` line (no source in the log), TTT on/off without a setting taken from the presence of
TTT lines, logs of different layouts not checked against each other (their shared hyperparameters that
differ are listed), seeds or vocabularies not logged. When the logs' vocabularies (hyperparameter
vocab_size) differ, a line says that val_bpb (bits per byte of the same text) is comparable across
them, and val_loss (nats per token of each tokenizer) is not.

The significance test (--record-val-loss: a one-sided one-sample t-test that the seeds' mean val_loss
is more than 0.005 nats below the record's, at p < 0.01) compares val_loss in nats per token, which
means something only between runs and a record of the same tokenizer. It is refused, with one line,
when the logs' vocabularies differ from each other or the logs are of more than one layout; its output
states what it compares ("val_loss in nats per token of vocab 1024"; a record-1.1178 log does not log
its vocabulary), and that the record's val_loss must be of the same tokenizer. --record-vocab N (1024
for the 1.1178 record's 1.88731, 8192 for the SP8192 record's) makes that a check: the test is refused
when the logs' vocab_size is another.

Logs are refused (exit 1, one line per log on stderr, `refused: PATH: reason`) when unfinished, an
evaluation-only run (an `eval_artifact:PATH` line) or without training lines, written by other code than
the first log of their layout, run with other hyperparameters (seed and run_id aside), duplicating
another log's seed, given twice (same file or same content), carrying a non-finite value (nan/inf) in
any line with figures (every line of the run but the hyperparameters) or an ERROR line (the size
limit); the significance test is refused when the val_loss values have no spread, and --submission
for logs of more than one layout. Nothing is written after a refusal. submission.json (strict JSON)
and the plot (every layout; a validation without a known training time is left off the time axes)
are written atomically with the mode of a new file. scipy (the t distribution) and
matplotlib (--plot) are imported only when needed; importable without side effects.
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
REQUIRED_IMPROVEMENT = 0.005  # nats per token
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

OURS, RECORD_1_1178, RECORD_SP8192 = "ours", "record-1.1178", "record-sp8192"  # the log layouts
_TOKEN = re.compile(r"(?<!\S)([A-Za-z_]\w*):(\S+)")
_SPACED_TOKEN = re.compile(r"(?<!\S)([A-Za-z_][\w/]*): ?(\S+)")  # record-sp8192: `train_loss: 3.1234`, `tok/s: 7712345`
_FLOAT = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)\Z", re.IGNORECASE)
_NONFINITE = re.compile(r"(?<=:) ?[-+]?(?:nan|inf(?:inity)?)(?:ms|s|m)?(?![\w.])", re.IGNORECASE)  # a token's value
_INT = re.compile(r"[-+]?\d+\Z")
_STEP = re.compile(r"(\d+)/(\d+)\Z")
_BLOCK_SETTING = re.compile(r"  ([A-Za-z_]\w*):(?: (.*))?\Z")  # a line of record-sp8192's Hyperparameters: block
_TIME_UNITS = (("ms", 1.0), ("s", 1000.0), ("m", 60000.0))  # in this order: "ms" also ends in "s"
PATTERNS = {
    "model_bytes": re.compile(r"^Serialized model (?:int6|quantized)\+(?:zstd|brotli): (\d+) bytes$"),
    "total_bytes": re.compile(r"^Total submission size (?:int6|quantized)\+(?:zstd|brotli): (\d+) bytes$"),
    "code_bytes": re.compile(r"^Code size: (\d+) bytes$"),
}
POST_LINES = {  # the post-average (EMA or SWA) evaluation before quantisation
    OURS: re.compile(r"DIAGNOSTIC\s+post_(ema|swa)\b"), RECORD_1_1178: re.compile(r"DIAGNOSTIC\s+post_(ema|swa)\b"),
    RECORD_SP8192: re.compile(r"pre-quantization\s+post-(ema|swa)\b"),
}
EXACT_KEYS = {"final_int6_roundtrip": "roundtrip", "final_int6_sliding_window": "sliding", "final_ttt": "ttt"}
SCORE_LINES = {  # layout: {leading word of the line of a score: its column}
    OURS: {f"{name}_exact": key for name, key in EXACT_KEYS.items()},
    RECORD_1_1178: {f"{name}_exact": key for name, key in EXACT_KEYS.items()},
    RECORD_SP8192: {"quantized": "roundtrip", "quantized_sliding_window": "sliding", "quantized_ttt": "ttt"},
}
TTT_TIME_LINES = {OURS: "final_ttt", RECORD_1_1178: "final_ttt", RECORD_SP8192: "quantized_ttt"}  # with eval_time
SIZE_LINES = {OURS: "Total submission size int6+zstd", RECORD_1_1178: "Total submission size int6+zstd",
              RECORD_SP8192: "Total submission size quantized+brotli"}
TTT_LINE_PREFIXES = ("final_ttt", "ttt_chunk", "ttt:chunk", "quantized_ttt")  # signs that TTT ran


class LogError(Exception):
    """A file that is not a readable train_gpt.py log."""


class Refused(Exception):
    """Logs that cannot be summarised: problems is a list of (path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))
        self.problems = problems


# ----------------------------------------------------------------------------- parsing

def _tokens(line: str, pattern: re.Pattern = _TOKEN) -> dict:
    """The `key:value` tokens of a line (the first of each key)."""
    out: dict = {}
    for key, value in pattern.findall(line):
        out.setdefault(key, value)
    return out


def _number(text: str | None, unit: str = "") -> float | None:
    """A float (nan and inf included) from a token value ending in unit; None when it is none."""
    if text is None or not text.endswith(unit):
        return None
    text = text[:len(text) - len(unit)]
    return float(text) if _FLOAT.match(text) else None


def _milliseconds(text: str | None) -> float | None:
    """A duration token value (`85.22ms`, `2.1s`, `0.8m`) in ms; None when it is none."""
    for unit, scale in _TIME_UNITS:
        if text is not None and text.endswith(unit):
            value = _number(text, unit)
            return None if value is None else value * scale
    return None


def _figures(tokens: dict, keys) -> dict | None:
    """{key: float} for each of keys, or None when one is missing or not a number."""
    out = {key: _number(tokens.get(key)) for key in keys}
    return None if any(v is None for v in out.values()) else out


def _setting(text: str):
    """A header setting's value: int, finite float, bool, or the text."""
    if _INT.match(text):
        return int(text)
    if text in ("True", "False"):
        return text == "True"
    value = _number(text)
    return value if value is not None and math.isfinite(value) else text


def _read(path: str) -> tuple[bytes, os.stat_result]:
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno())
    except OSError as e:
        raise LogError(f"cannot read the log ({e.__class__.__name__}: {e})") from None


def _layout(lines: list[str]) -> tuple[str, str | None, int]:
    """The layout of a log's lines, its source (None where it carries none) and the index of the first
    line of the run."""
    separators = [i for i, line in enumerate(lines) if line == SEPARATOR]
    if len(separators) >= 2:
        run = separators[1] + 1
        layout = OURS if any(line.startswith("hyperparameters: ") for line in lines[run:]) else RECORD_1_1178
        return layout, "\n".join(lines[:separators[0]]), run
    if "Hyperparameters:" in lines:
        return RECORD_SP8192, None, 0
    raise LogError("not a train_gpt.py log: neither a source and environment header (two lines of 100 '=') "
                   "nor a 'Hyperparameters:' block")


def _step_of(layout: str, head: str, tokens: dict) -> tuple[int, int] | None:
    """(step, iterations) of a training or validation line (`step:N/M ...`, record-sp8192 `N/M ...`)."""
    text = head if layout == RECORD_SP8192 else tokens.get("step", "") if head.startswith("step:") else ""
    m = _STEP.match(text)
    return (int(m[1]), int(m[2])) if m else None


def parse_log(path) -> dict:
    """The figures of one log of any layout (module docstring). Missing figures are None; the curves
    (train_curve: (step, train_loss, train_time_ms), val_curve: (step, val_loss, val_bpb, train_time_ms
    or None)) hold every step line. Raises LogError when the file cannot be read, is of no known layout,
    or has no hyperparameters."""
    path = str(path)
    raw, st = _read(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LogError(f"cannot read the log ({e.__class__.__name__}: {e})") from None
    lines = [line.rstrip() for line in text.split("\n")]  # CRLF and trailing blanks of copied logs
    layout, code, start = _layout(lines)
    spaced = layout == RECORD_SP8192
    out: dict = dict(path=path, real_path=os.path.realpath(path), identity=(st.st_dev, st.st_ino),
                     sha256=hashlib.sha256(raw).hexdigest(), layout=layout, code=code, hyperparameters=None,
                     hp_source=None, seed=None, vocab=None, iterations=None, steps=None, step_avg_ms=None,
                     post_kind=None, post_val_loss=None, post_val_bpb=None, ttt_time_s=None, model_bytes=None,
                     total_bytes=None, code_bytes=None, eval_artifact=None, errors=[], stopped_early=False,
                     train_curve=[], val_curve=[], nonfinite=[])
    for key in EXACT_KEYS.values():
        out[f"{key}_val_loss"] = out[f"{key}_val_bpb"] = None
    header, block = {}, {}
    in_header, in_block, ttt_seen = True, False, False
    last_train = last_val = stop = None  # (step, iterations, step_avg or None); stop: (step, iterations, ms)

    for number, line in enumerate(lines[start:], start=start + 1):
        words = line.split(maxsplit=1)
        head = words[0] if words else ""
        tokens = _tokens(line, _SPACED_TOKEN if spaced else _TOKEN) if ":" in line else {}
        step = _step_of(layout, head, tokens)
        setting = _BLOCK_SETTING.match(line) if in_block else None
        in_block = spaced and (line == "Hyperparameters:" or setting is not None)
        if setting:
            block.setdefault(setting[1], _setting(setting[2] or ""))  # an empty value loses its space to rstrip
        elif line.startswith("hyperparameters: ") and out["hyperparameters"] is None:
            out["hyperparameters"], out["hp_source"] = _json_hyperparameters(line), "json"
        if in_block or line.startswith("hyperparameters: "):
            continue  # settings, not figures: neither read as figures nor checked for nan
        if _NONFINITE.search(line):
            out["nonfinite"].append(f"line {number}: {line[:80]!r}")
        if step is not None or head.startswith(("step:", "warmup_step:")):
            in_header = False
        if line.startswith(TTT_LINE_PREFIXES):
            ttt_seen = True
        if head == TTT_TIME_LINES[layout] and (ms := _milliseconds(tokens.get("eval_time"))) is not None:
            out["ttt_time_s"] = ms / 1000
        if line.startswith("ERROR:"):
            out["errors"].append(line)
        elif head.startswith("eval_artifact:"):
            out["eval_artifact"] = line[len("eval_artifact:"):]
        elif step is not None:
            last = _read_step(out, layout, step, tokens)
            if last is not None:
                last_val, last_train = (last, last_train) if last[3] == "val" else (last_val, last)
        elif head == "stopping_early:" and (m := _STEP.match(tokens.get("step", ""))):
            stop = (int(m[1]), int(m[2]), _milliseconds(tokens.get("train_time")))
        elif (m := POST_LINES[layout].match(line)) and (f := _figures(tokens, ("val_loss", "val_bpb"))) is not None:
            out.update(post_kind=m[1], post_val_loss=f["val_loss"], post_val_bpb=f["val_bpb"])
        elif head in SCORE_LINES[layout] and (f := _figures(tokens, ("val_loss", "val_bpb"))) is not None:
            key = SCORE_LINES[layout][head]
            if out[f"{key}_val_loss"] is not None:
                raise LogError(f"line {number}: a second {head} line (two runs in one log?)")
            out[f"{key}_val_loss"], out[f"{key}_val_bpb"] = f["val_loss"], f["val_bpb"]
        elif size := _bytes_line(line):
            out[size[0]] = size[1]
        elif in_header:
            for key, value in tokens.items():
                header.setdefault(key, _setting(value))
    _settle_hyperparameters(out, header, block, ttt_seen)
    _settle_steps(out, last_train, last_val, stop)
    return out


def _json_hyperparameters(line: str) -> dict:
    try:
        hp = json.loads(line[len("hyperparameters: "):])
    except json.JSONDecodeError as e:
        raise LogError(f"unreadable hyperparameters line ({e})") from None
    if not isinstance(hp, dict):
        raise LogError("unreadable hyperparameters line (not a JSON object)")
    return hp


def _bytes_line(line: str) -> tuple[str, int] | None:
    """(model_bytes, total_bytes or code_bytes, N) of a size line; None for another line."""
    for key, pattern in PATTERNS.items():
        if m := pattern.match(line):
            return key, int(m[1])
    return None


def _read_step(out: dict, layout: str, step: tuple[int, int], tokens: dict):
    """Adds a training or validation line to its curve; returns (step, iterations, step_avg_ms, kind),
    or None for a line without the figures of either."""
    time_ms, step_avg = _milliseconds(tokens.get("train_time")), _milliseconds(tokens.get("step_avg"))
    if (f := _figures(tokens, ("val_loss", "val_bpb"))) is not None:
        kind = "val"
    elif (f := _figures(tokens, ("train_loss",))) is not None:
        kind = "train"
    else:
        return None
    # ours and record-1.1178 log both times on every step line; record-sp8192 the time on training lines only
    needed = (time_ms, step_avg) if layout != RECORD_SP8192 else (time_ms,) if kind == "train" else ()
    if any(v is None for v in needed):
        return None
    if kind == "val":
        out["val_curve"].append((step[0], f["val_loss"], f["val_bpb"], time_ms))
    else:
        out["train_curve"].append((step[0], f["train_loss"], time_ms))
    return step[0], step[1], step_avg, kind


def _settle_hyperparameters(out: dict, header: dict, block: dict, ttt_seen: bool) -> None:
    """hyperparameters (the JSON line, the Hyperparameters: block, or the settings before the first step),
    seed, vocab and whether TTT ran."""
    if out["hyperparameters"] is None:
        hp, source = (block, "block") if out["layout"] == RECORD_SP8192 else (header, "header")
        if not hp:
            raise LogError("no hyperparameters: an empty 'Hyperparameters:' block" if source == "block" else
                           "no hyperparameters: neither a 'hyperparameters: {json}' line nor key:value settings "
                           "before the first step")
        out["hyperparameters"], out["hp_source"] = hp, source
    hp, json_hp = out["hyperparameters"], out["hp_source"] == "json"
    seed, vocab = hp.get("seed"), hp.get("vocab_size")
    out["seed"] = seed if json_hp or type(seed) is int else None
    out["vocab"] = vocab if type(vocab) is int else None
    # TTT: as the settings say (the JSON: on when absent); without a setting, from the TTT lines
    if json_hp or isinstance(hp.get("ttt_enabled"), bool):
        out["ttt_enabled"], out["ttt_source"] = bool(hp.get("ttt_enabled", True)), "settings"
    else:
        out["ttt_enabled"], out["ttt_source"] = ttt_seen, "lines"


def _settle_steps(out: dict, last_train, last_val, stop) -> None:
    """steps, iterations and step_avg_ms; the training time of validations logged without one."""
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
    if out["step_avg_ms"] is None and stop and stop[2] is not None and stop[0] > 0:
        out["step_avg_ms"] = stop[2] / stop[0]  # record-sp8192: its step lines carry no step_avg
    # a validation without its time (record-sp8192) was logged after as many steps as the training (or
    # stop) line of its step: the same training time
    times = {step: ms for step, _, ms in out["train_curve"]}
    if stop and stop[2] is not None:
        times[stop[0]] = stop[2]
    out["val_curve"] = [(s, loss, bpb, times.get(s) if ms is None else ms) for s, loss, bpb, ms in out["val_curve"]]


def final_metric(log: dict) -> str:
    """The score of a log: 'ttt' (final_ttt_exact, quantized_ttt), or 'sliding' when TTT is off."""
    return "ttt" if log["ttt_enabled"] else "sliding"


def score_line(layout: str, metric: str) -> str:
    """The leading word of the line of a layout's score: final_ttt_exact, quantized_sliding_window, ..."""
    return next(head for head, key in SCORE_LINES[layout].items() if key == metric)


def metric_label(log: dict) -> str:
    """Where a log's score comes from, in words: final_ttt_exact, or ... (TTT disabled)."""
    metric = final_metric(log)
    return score_line(log["layout"], metric) + ("" if metric == "ttt" else " (TTT disabled)")


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


def _names(logs: list[dict]) -> str:
    return ", ".join(Path(log["path"]).name for log in logs)


def compared_keys(log: dict, reference: dict) -> list[str]:
    """The hyperparameters compared between two logs: every key when both log all of them (the JSON line,
    the Hyperparameters: block), else those both have."""
    a, b = set(reference["hyperparameters"]), set(log["hyperparameters"])
    keys = a | b if reference["hp_source"] == log["hp_source"] in ("json", "block") else a & b
    return sorted(k for k in keys if k not in IGNORED_HYPERPARAMETERS)


def _code_problem(log: dict, reference: dict) -> str | None:
    """Why a log is not of the reference's code (its source, or without one its Code size); None when it is
    or cannot be told."""
    if log["code"] is not None and reference["code"] is not None:
        if log["code"] == reference["code"]:
            return None
        return (f"code differs from that of {reference['path']} (train_gpt.py source, first difference at line "
                f"{first_difference(reference['code'], log['code'])}; {len(reference['code'].encode())} vs "
                f"{len(log['code'].encode())} bytes)")
    if None not in (log["code_bytes"], reference["code_bytes"]) and log["code_bytes"] != reference["code_bytes"]:
        return (f"code differs from that of {reference['path']} (no source in the log; Code size "
                f"{reference['code_bytes']} vs {log['code_bytes']} bytes)")
    return None


def problems_of(log: dict, reference: dict | None, seen_seeds: dict) -> list[str]:
    """Why a log cannot be summarised together with the reference (the first log of its layout); [] when it can."""
    reasons = []
    metric = final_metric(log)
    if log["nonfinite"]:
        more = f" (and {len(log['nonfinite']) - 1} more)" if len(log["nonfinite"]) > 1 else ""
        reasons.append(f"non-finite value (nan/inf) in {log['nonfinite'][0]}{more}")
    if log["eval_artifact"] is not None:
        reasons.append(f"an evaluation-only run, not a training run (eval_artifact:{log['eval_artifact']})")
    elif log["steps"] is None:
        reasons.append("no training lines (step lines): not a training run")
    if log[f"{metric}_val_loss"] is None:
        reasons.append(f"unfinished run: no {metric_label(log)} line")
    for line in log["errors"]:
        reasons.append(f"run reported an error: {line!r}")
    if log["total_bytes"] is None:
        reasons.append(f"no '{SIZE_LINES[log['layout']]}: N bytes' line: the size limit cannot be checked")
    elif not log["errors"] and log["total_bytes"] >= SIZE_LIMIT_BYTES:
        reasons.append(f"total submission size {log['total_bytes']} bytes is not below the {SIZE_LIMIT_BYTES}-byte limit")
    if reference is not None and reference is not log:
        if code := _code_problem(log, reference):
            reasons.append(code)
        ref_hp, hp = reference["hyperparameters"], log["hyperparameters"]
        keys = [k for k in compared_keys(log, reference) if ref_hp.get(k, "<absent>") != hp.get(k, "<absent>")]
        if keys:
            detail = ", ".join(f"{k} ({_short(ref_hp.get(k, '<absent>'))} vs {_short(hp.get(k, '<absent>'))})" for k in keys)
            reasons.append(f"hyperparameters differ from those of {reference['path']}: {detail}")
        if metric != final_metric(reference) and "ttt_enabled" not in keys:
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


def _layout_notes(logs: list[dict]) -> list[str]:
    """The checks that one layout's logs did not allow among themselves."""
    notes = []
    header = [log for log in logs if log["hp_source"] == "header"]
    if header and len(logs) > 1:
        common = set.intersection(*(set(log["hyperparameters"]) for log in logs)) - set(IGNORED_HYPERPARAMETERS)
        shown = ", ".join(sorted(common)[:8]) + (", ..." if len(common) > 8 else "")
        notes.append(f"hyperparameters not logged as JSON ({_names(header)}) — compared only the carried source and the "
                     f"key:value settings of the header lines where both logs have them ({len(common)} shared by all"
                     f"{': ' + shown if shown else ''}), not the full configuration")
    elif header:
        notes.append(f"hyperparameters not logged as JSON ({_names(header)}) — read from the key:value settings of the "
                     f"header lines")
    no_source = [log for log in logs if log["code"] is None]
    if no_source and len(logs) > 1:
        unsized = [log for log in no_source if log["code_bytes"] is None]
        notes.append(f"source not logged ({_names(no_source)}) — same code checked only by the 'Code size: N bytes' line"
                     + (f", not at all for {_names(unsized)} (no such line)" if unsized else ""))
    return notes


def _mixed_notes(groups: list[list[dict]]) -> list[str]:
    """What is not checked between logs of different layouts."""
    spread = ", ".join(f"{logs[0]['layout']} ({_names(logs)})" for logs in groups)
    notes = [f"logs of different layouts not checked against each other — code, hyperparameters, seeds and TTT "
             f"on/off checked within a layout only: {spread}"]
    first = groups[0][0]
    for logs in groups[1:]:
        other = logs[0]
        a, b = first["hyperparameters"], other["hyperparameters"]
        shared = sorted(set(a) & set(b) - set(IGNORED_HYPERPARAMETERS))
        differ = [f"{k} ({_short(a[k])} vs {_short(b[k])})" for k in shared if a[k] != b[k]]
        if differ:
            notes.append(f"hyperparameters logged by both {first['layout']} and {other['layout']} that differ (first log of "
                         f"each): " + ", ".join(differ[:8]) + (", ..." if len(differ) > 8 else ""))
    unknown = [log for logs in groups for log in logs if log["vocab"] is None]
    if unknown:
        notes.append(f"vocabulary not logged ({_names(unknown)}) — whether val_loss is comparable across the table not checked")
    return notes


def checks_not_made(groups: list[list[dict]]) -> list[str]:
    """The checks that the logs' layouts did not allow (logs grouped by layout); [] for our own (JSON) logs."""
    notes = [note for logs in groups for note in _layout_notes(logs)]
    logs = [log for group in groups for log in group]
    from_lines = [log for log in logs if log["ttt_source"] == "lines"]
    if from_lines:
        notes.append(f"TTT on/off not logged ({_names(from_lines)}) — taken from the presence of "
                     "final_ttt/ttt_chunk/quantized_ttt lines")
    if len(groups) > 1:
        notes += _mixed_notes(groups)
    no_seed = [log for log in logs if log["seed"] is None]
    if no_seed:
        notes.append(f"seed not logged ({_names(no_seed)}) — distinct seeds not checked")
    return notes


def vocabularies(logs: list[dict]) -> dict:
    """{vocab_size (None: not logged): [logs]}, in the logs' order."""
    out: dict = {}
    for log in logs:
        out.setdefault(log["vocab"], []).append(log)
    return out


def _known_vocabularies(logs: list[dict]) -> str:
    return "; ".join(f"vocab {vocab}: {_names(group)}" for vocab, group in vocabularies(logs).items() if vocab is not None)


def vocabulary_line(logs: list[dict]) -> str | None:
    """The line that says what is comparable across logs of different vocabularies; None for one vocabulary."""
    if len([vocab for vocab in vocabularies(logs) if vocab is not None]) < 2:
        return None
    return (f"vocabularies differ ({_known_vocabularies(logs)}): val_bpb (bits per byte of the same text) is "
            "comparable across them, val_loss (nats per token of each tokenizer) is not")


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


def significance_refusal(summary: dict, record_vocab: int | None) -> str | None:
    """Why the t-test cannot compare these logs' val_loss (nats per token) with the record's (of the
    vocabulary record_vocab, None: not given); None when it can."""
    logs = summary["logs"]
    known = [vocab for vocab in vocabularies(logs) if vocab is not None]
    if len(known) > 1:
        return (f"the significance test compares val_loss in nats per token, which is not comparable between tokenizers, "
                f"and these logs' vocabularies differ ({_known_vocabularies(logs)})")
    if len(summary["groups"]) > 1:
        layouts = ", ".join(group["layout"] for group in summary["groups"])
        return f"the significance test is over the seeds of one run, and these logs are of {len(summary['groups'])} layouts ({layouts})"
    if record_vocab is not None and known and known[0] != record_vocab:
        return (f"--record-vocab {record_vocab}: the record's val_loss is in nats per token of another tokenizer than these "
                f"logs' (vocab {known[0]}), not comparable")
    return None


def compared_quantity(logs: list[dict], record_vocab: int | None) -> str:
    """What the t-test compares, in words (for logs that significance_refusal lets through)."""
    known = [vocab for vocab in vocabularies(logs) if vocab is not None]
    unknown = [log for log in logs if log["vocab"] is None]
    text = f"val_loss in nats per token of vocab {known[0]}" if known else "val_loss in nats per token of the logs' tokenizer"
    text += f" (vocabulary not logged in {_names(unknown)})" if unknown else ""
    if record_vocab is None:
        return text + "; the record's val_loss must be of the same tokenizer (--record-vocab checks it)"
    if not known:
        return text + f"; taken to be the record's, vocab {record_vocab} (--record-vocab), which cannot be checked"
    return text + ", as the record's (--record-vocab)"


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
GROUP_KEYS = ("layout", "mean", "std", "metric", "metric_label", "seeds", "val_losses", "val_bpbs", "val_loss",
              "val_bpb", "bytes_total")


def group_summary(logs: list[dict]) -> dict:
    """The means of the logs of one layout (one run): the GROUP_KEYS and logs."""
    mean, std = {}, {}
    for key, *_ in COLUMNS + [("post_val_loss",), ("roundtrip_val_loss",), ("sliding_val_loss",), ("ttt_val_loss",)]:
        values = [log[key] for log in logs]
        if any(v is None for v in values):
            mean[key] = std[key] = None
            continue
        mean[key] = statistics.fmean(values)
        std[key] = statistics.stdev(values) if len(values) >= 2 else None
    metric = final_metric(logs[0])
    return dict(
        layout=logs[0]["layout"], logs=logs, mean=mean, std=std, metric=metric, metric_label=metric_label(logs[0]),
        seeds=[log["seed"] for log in logs],
        val_losses=[log[f"{metric}_val_loss"] for log in logs],
        val_bpbs=[log[f"{metric}_val_bpb"] for log in logs],
        val_loss=mean[f"{metric}_val_loss"], val_bpb=mean[f"{metric}_val_bpb"],
        bytes_total=round(mean["total_bytes"]) if mean["total_bytes"] is not None else None,
    )


def summarize(paths) -> dict:
    """Parses and checks the logs; raises Refused listing every log that cannot be used. Returns logs
    (parsed, in the given order), groups (a group_summary per layout, in order of first appearance),
    post_label, unchecked (the checks that the logs' layouts did not allow) and the GROUP_KEYS of the
    one group: mean and std (per column key, None where not computable; std is the sample standard
    deviation, None for one log), metric ('ttt' or 'sliding'), val_loss, val_bpb (means of the final
    metric), val_losses and val_bpbs (per seed), seeds, bytes_total (mean, int); those are None when
    the logs are of several layouts (see groups)."""
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
    by_layout: dict = {}  # layout: its logs; the first is the reference of the others
    seen: dict = {}  # layout: {seed: path}
    for j, (i, log) in enumerate(parsed):
        again = duplicate_of(log, logs[:j])
        reference = by_layout.setdefault(log["layout"], [log])[0]
        seeds = seen.setdefault(log["layout"], {})
        reasons = [again] if again else problems_of(log, reference, seeds)
        if log is not reference:
            by_layout[log["layout"]].append(log)
        if not again and log["seed"] is not None:
            seeds.setdefault(log["seed"], log["path"])
        if reasons:
            problems.append((i, log["path"], "; ".join(reasons)))
    if problems:
        raise Refused([(path, reason) for _, path, reason in sorted(problems, key=lambda item: item[0])])

    groups = [group_summary(group) for group in by_layout.values()]
    post_kinds = {log["post_kind"] for log in logs}
    post_label = {"ema": "post-EMA", "swa": "post-SWA"}.get(post_kinds.pop(), "post-EMA") if len(post_kinds) == 1 else "post-EMA/SWA"
    one = groups[0] if len(groups) == 1 else dict.fromkeys(GROUP_KEYS)
    return dict(logs=logs, groups=groups, post_label=post_label, unchecked=checks_not_made(list(by_layout.values())),
                **{key: one[key] for key in GROUP_KEYS})


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def markdown_table(summary: dict) -> str:
    """One row per log, then the mean and std rows; a layout column (and mean/std rows per layout) when
    the logs are of several layouts."""
    mixed = len(summary["groups"]) > 1
    named = {"post_val_bpb": summary["post_label"] + " bpb"}  # what the logs say the column holds
    if any(group["layout"] == RECORD_SP8192 for group in summary["groups"]):
        named["roundtrip_val_bpb"] = "quantized roundtrip bpb"  # record-sp8192 does not say int6
    headers = ["seed"] + (["layout"] if mixed else []) + [named.get(key, header) for key, header, _, _ in COLUMNS]
    rows = [headers, ["---"] * len(headers)]
    for log in summary["logs"]:
        rows.append([_cell(log["seed"], "{}")] + ([log["layout"]] if mixed else []) + [_cell(log[key], fmt) for key, _, fmt, _ in COLUMNS])
    for group in summary["groups"]:
        for label in ("mean", "std"):
            rows.append([label] + ([group["layout"]] if mixed else []) + [_cell(group[label][key], fmt) for key, _, _, fmt in COLUMNS])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def layout_line(summary: dict) -> str:
    groups = summary["groups"]
    if len(groups) == 1:
        return f"layout: {groups[0]['layout']}"
    return "layouts: " + "; ".join(f"{group['layout']} ({_names(group['logs'])})" for group in groups)


def submission(summary: dict, author: str, github_id: str, name: str, blurb: str, date: str) -> dict:
    """submission.json of the logs of one layout (one run)."""
    logs = summary["logs"]
    code_bytes = {log["total_bytes"] - log["model_bytes"] for log in logs
                  if log["total_bytes"] is not None and log["model_bytes"] is not None}
    return dict(
        author=author, github_id=github_id, name=name, blurb=blurb, date=date,
        val_loss=round(summary["val_loss"], 8), val_bpb=round(summary["val_bpb"], 8),
        bytes_total=summary["bytes_total"],
        bytes_code=code_bytes.pop() if len(code_bytes) == 1 else None,
        metric=score_line(summary["layout"], summary["metric"]),
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
    seed, and by layout when the logs are of several; a validation without a known training time is left
    off the time axis), with the record's figures as reference lines (labels starting with "record"). Returns the
    matplotlib Figure (2x2 axes: train/step, train/time, val_bpb/step, val_bpb/time); writes a PNG to
    path (atomically) when given. Imports matplotlib (Agg) here only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    ref = RECORD_REFERENCE
    fig = Figure(figsize=(13, 9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    mixed = len({log["layout"] for log in logs}) > 1
    for log in logs:
        label = f"seed {log['seed']}" if log["seed"] is not None else Path(log["path"]).name
        label += f" ({log['layout']})" if mixed else ""
        train, val = log["train_curve"], log["val_curve"]
        timed = [(t, b) for _, _, b, t in val if t is not None]  # record-sp8192: where a training line gives the time
        axes[0][0].plot([s for s, _, _ in train], [v for _, v, _ in train], label=label, linewidth=1)
        axes[0][1].plot([t / 1000 for _, _, t in train], [v for _, v, _ in train], label=label, linewidth=1)
        axes[1][0].plot([s for s, _, _, _ in val], [b for _, _, b, _ in val], marker="o", label=label)
        axes[1][1].plot([t / 1000 for t, _ in timed], [b for _, b in timed], marker="o", label=label)
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


def _positive_int(text: str) -> int:
    if not _INT.match(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="summarize_logs.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", metavar="LOG", help="logs/<RUN_ID>.txt of each seed; the first of each layout is its reference")
    p.add_argument("--submission", metavar="PATH", help="write submission.json here (atomically; logs of one layout)")
    p.add_argument("--author", help="submission.json: author (required with --submission)")
    p.add_argument("--github-id", help="submission.json: GitHub id (required with --submission)")
    p.add_argument("--name", help="submission.json: name of the run (required with --submission)")
    p.add_argument("--blurb", default="", help="submission.json: one-paragraph description")
    p.add_argument("--date", type=_iso_date, default=None, help="submission.json: YYYY-MM-DD (default: today)")
    p.add_argument("--record-val-loss", type=float, metavar="NATS",
                   help="the current record's mean val_loss in nats per token (e.g. 1.88731): test an improvement of "
                        f"more than {REQUIRED_IMPROVEMENT} nats per token at p < {ALPHA}")
    p.add_argument("--record-vocab", type=_positive_int, metavar="N",
                   help="the vocabulary of the record's tokenizer (--record-val-loss is in its nats per token; "
                        "1024 for the 1.1178 record, 8192 for the SP8192 record): the t-test is refused when the "
                        "logs' vocab_size is another")
    p.add_argument("--plot", metavar="FILE.png", help="draw train loss and val_bpb against step and time (PNG, atomically)")
    return p


def _refuse(path, reason: str) -> int:
    print(f"refused: {path}: {reason}", file=sys.stderr)
    return 1


def _significance(args, summary: dict) -> tuple[dict | None, str | None]:
    """(the t-test, or None for fewer than 2 seeds; why it is refused, or None)."""
    refusal = significance_refusal(summary, args.record_vocab)
    if refusal or len(summary["val_losses"]) < 2:
        return None, refusal
    try:
        return t_test(summary["val_losses"], args.record_val_loss), None
    except ValueError as e:
        return None, str(e)


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
    all_paths = ", ".join(log["path"] for log in summary["logs"])
    groups = summary["groups"]
    test = None
    if args.record_val_loss is not None:
        try:
            test, refusal = _significance(args, summary)
        except ImportError:
            return _refuse("--record-val-loss", "the t-test needs scipy: pip install scipy")
        if refusal:
            return _refuse(all_paths, refusal)
    if args.submission and len(groups) > 1:
        return _refuse(args.submission, f"a submission is the seeds of one run, and these logs are of {len(groups)} "
                                        f"layouts ({', '.join(group['layout'] for group in groups)})")

    print(markdown_table(summary))
    print()
    print(f"seeds: {' '.join(_cell(s, '{}') for s in (log['seed'] for log in summary['logs']))} "
          f"({len(summary['logs'])} log{'s' if len(summary['logs']) != 1 else ''})")
    print(layout_line(summary))
    for group in groups:
        std_loss, std_bpb = (group["std"][f"{group['metric']}_{figure}"] for figure in ("val_loss", "val_bpb"))
        print(f"{group['layout'] + ': ' if len(groups) > 1 else ''}mean val_loss {group['val_loss']:.8f} nats "
              f"(std {_cell(std_loss, '{:.8f}')}), mean val_bpb {group['val_bpb']:.8f} (std {_cell(std_bpb, '{:.8f}')}) "
              f"from {group['metric_label']}")
    if line := vocabulary_line(summary["logs"]):
        print(line)
    if summary["unchecked"]:
        print("checks not made: " + "; ".join(summary["unchecked"]))

    if args.record_val_loss is not None:
        print()
        if test is None:
            print(f"significance: the test needs >= 2 seeds (got {len(summary['val_losses'])})")
        else:
            print(f"significance vs record val_loss {args.record_val_loss} ({compared_quantity(summary['logs'], args.record_vocab)}): "
                  f"one-sided one-sample t-test, H0: record - mean <= {test['required']} nats")
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
