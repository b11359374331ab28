#!/usr/bin/env python3
"""Summarise the logs of a multi-seed run (scripts/run_seeds.sh): a markdown table, one row per seed,
with mean and sample standard deviation; optionally submission.json and the significance test of an
improvement over the current record.

    python scripts/summarize_logs.py logs/record_seed1337.txt logs/record_seed42.txt logs/record_seed7.txt \
        --record-val-loss 1.88731 \
        --submission submission.json --author "Jane Doe" --github-id janedoe --name "My run" --blurb "..."

Logs are refused (exit 1, one line per log on stderr) when unfinished, written by other code than the
first log's, run with other hyperparameters (seed and run_id aside), duplicating another log's seed, or
carrying an ERROR line (the size limit). Standard library only; importable without side effects.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

SEPARATOR = "=" * 100
SIZE_LIMIT_BYTES = 16_000_000  # train_gpt.SUBMISSION_LIMIT_BYTES (total must be below it)
REQUIRED_IMPROVEMENT = 0.005  # nats
ALPHA = 0.01
IGNORED_HYPERPARAMETERS = ("seed", "run_id")

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|inf)"
PATTERNS = {
    "train": re.compile(rf"^step:(\d+)/(\d+) train_loss:{_NUM} train_time:{_NUM}ms step_avg:{_NUM}ms$"),
    "val": re.compile(rf"^step:(\d+)/(\d+) val_loss:{_NUM} val_bpb:{_NUM} train_time:{_NUM}ms step_avg:{_NUM}ms$"),
    "stop": re.compile(rf"^stopping_early: wallclock_cap train_time:{_NUM}ms step:(\d+)/(\d+)$"),
    "post": re.compile(rf"^DIAGNOSTIC post_(ema|swa) val_loss:{_NUM} val_bpb:{_NUM}(?: eval_time:{_NUM}ms)?$"),
    "exact": re.compile(rf"^(final_int6_roundtrip|final_int6_sliding_window|final_ttt)_exact val_loss:{_NUM} val_bpb:{_NUM}$"),
    "ttt_time": re.compile(rf"^final_ttt val_loss:{_NUM} val_bpb:{_NUM} eval_time:{_NUM}ms$"),
    "model_bytes": re.compile(r"^Serialized model int6\+zstd: (\d+) bytes$"),
    "total_bytes": re.compile(r"^Total submission size int6\+zstd: (\d+) bytes$"),
}
EXACT_KEYS = {"final_int6_roundtrip": "roundtrip", "final_int6_sliding_window": "sliding", "final_ttt": "ttt"}


class LogError(Exception):
    """A file that is not a readable train_gpt.py log."""


class Refused(Exception):
    """Logs that cannot be summarised: problems is a list of (path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))
        self.problems = problems


# ----------------------------------------------------------------------------- parsing

def parse_log(path) -> dict:
    """The figures of one log of train_gpt.py. Missing figures are None; raises LogError when the file
    cannot be read or has no source/environment header or no hyperparameters line."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LogError(f"cannot read the log ({e.__class__.__name__}: {e})") from None
    lines = text.split("\n")
    separators = [i for i, line in enumerate(lines) if line == SEPARATOR]
    if len(separators) < 2:
        raise LogError("not a train_gpt.py log: no source and environment header (two lines of 100 '=')")
    code = "\n".join(lines[:separators[0]])
    run = [line.rstrip("\r") for line in lines[separators[1] + 1:]]

    out: dict = dict(path=path, code=code, hyperparameters=None, seed=None, iterations=None, steps=None,
                     step_avg_ms=None, post_kind=None, post_val_loss=None, post_val_bpb=None, ttt_time_s=None,
                     model_bytes=None, total_bytes=None, errors=[], stopped_early=False)
    for key in EXACT_KEYS.values():
        out[f"{key}_val_loss"] = out[f"{key}_val_bpb"] = None
    last_train = last_val = stop = None
    for line in run:
        if line.startswith("hyperparameters: ") and out["hyperparameters"] is None:
            try:
                hp = json.loads(line[len("hyperparameters: "):])
            except json.JSONDecodeError as e:
                raise LogError(f"unreadable hyperparameters line ({e})") from None
            if not isinstance(hp, dict):
                raise LogError("unreadable hyperparameters line (not a JSON object)")
            out["hyperparameters"] = hp
        elif line.startswith("ERROR:"):
            out["errors"].append(line)
        elif m := PATTERNS["train"].match(line):
            last_train = m
        elif m := PATTERNS["val"].match(line):
            last_val = m
        elif m := PATTERNS["stop"].match(line):
            stop = m
        elif m := PATTERNS["post"].match(line):
            out.update(post_kind=m[1], post_val_loss=float(m[2]), post_val_bpb=float(m[3]))
        elif m := PATTERNS["exact"].match(line):
            key = EXACT_KEYS[m[1]]
            out[f"{key}_val_loss"], out[f"{key}_val_bpb"] = float(m[2]), float(m[3])
        elif m := PATTERNS["ttt_time"].match(line):
            out["ttt_time_s"] = float(m[3]) / 1000
        elif m := PATTERNS["model_bytes"].match(line):
            out["model_bytes"] = int(m[1])
        elif m := PATTERNS["total_bytes"].match(line):
            out["total_bytes"] = int(m[1])
    hp = out["hyperparameters"]
    if hp is None:
        raise LogError("no hyperparameters line")
    out["seed"] = hp.get("seed")
    out["ttt_enabled"] = bool(hp.get("ttt_enabled", True))
    # steps: the wallclock stop when there was one, else the final validation (at the last step)
    if stop:
        out["steps"], out["iterations"], out["stopped_early"] = int(stop[2]), int(stop[3]), True
    elif last_val:
        out["steps"], out["iterations"] = int(last_val[1]), int(last_val[2])
    elif last_train:
        out["steps"], out["iterations"] = int(last_train[1]), int(last_train[2])
    # step_avg: the latest step line; the final validation line is logged at the last step, so it covers
    # every step (train_time / steps: the record's 85.22 ms for seed 1337), the last train line may not
    latest = max((m for m in (last_train, last_val) if m), key=lambda m: int(m[1]), default=None)
    if latest is not None:
        if last_val is not None and int(last_val[1]) == int(latest[1]):
            latest = last_val
        out["step_avg_ms"] = float(latest[latest.re.groups])
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


def problems_of(log: dict, reference: dict | None, seen_seeds: dict) -> list[str]:
    """Why a log cannot be summarised together with the reference (first) log; [] when it can."""
    reasons = []
    metric = final_metric(log)
    if log[f"{metric}_val_loss"] is None:
        needed = "final_ttt_exact" if metric == "ttt" else "final_int6_sliding_window_exact (TTT disabled)"
        reasons.append(f"unfinished run: no {needed} line")
    for line in log["errors"]:
        reasons.append(f"run reported an error: {line!r}")
    if not log["errors"] and log["total_bytes"] is not None and log["total_bytes"] >= SIZE_LIMIT_BYTES:
        reasons.append(f"total submission size {log['total_bytes']} bytes is not below the {SIZE_LIMIT_BYTES}-byte limit")
    if reference is not None and reference is not log:
        if log["code"] != reference["code"]:
            reasons.append(f"code differs from that of {reference['path']} (train_gpt.py source, first difference "
                           f"at line {first_difference(reference['code'], log['code'])}; "
                           f"{len(reference['code'].encode())} vs {len(log['code'].encode())} bytes)")
        ref_hp, hp = reference["hyperparameters"], log["hyperparameters"]
        keys = sorted(k for k in set(ref_hp) | set(hp)
                      if k not in IGNORED_HYPERPARAMETERS and ref_hp.get(k, "<absent>") != hp.get(k, "<absent>"))
        if keys:
            detail = ", ".join(f"{k} ({_short(ref_hp.get(k, '<absent>'))} vs {_short(hp.get(k, '<absent>'))})" for k in keys)
            reasons.append(f"hyperparameters differ from those of {reference['path']}: {detail}")
    seed = log["seed"]
    if seed in seen_seeds and seen_seeds[seed] != log["path"]:
        reasons.append(f"seed {seed} is also the seed of {seen_seeds[seed]} (seeds must be distinct)")
    return reasons


# ----------------------------------------------------------------------------- statistics

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1."""
    if not (a > 0 and b > 0) or not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: need a, b > 0 and 0 <= x <= 1 (a={a}, b={b}, x={x})")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """One-sided survival function of Student's t: P(T > t) with df degrees of freedom."""
    if not df > 0:
        raise ValueError(f"t_sf: df must be > 0, got {df}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_test(val_losses: list[float], record_val_loss: float, required: float = REQUIRED_IMPROVEMENT,
           alpha: float = ALPHA) -> dict:
    """One-sided one-sample t-test of H0: record - mean <= required over the per-seed val_loss."""
    n = len(val_losses)
    if n < 2:
        raise ValueError("the significance test needs >= 2 seeds")
    mean = statistics.fmean(val_losses)
    s = statistics.stdev(val_losses)
    improvement = record_val_loss - mean
    excess = improvement - required
    if s > 0:
        t = excess / (s / math.sqrt(n))
    else:  # identical values: no spread, the sign of the excess decides
        t = math.inf if excess > 0 else (-math.inf if excess < 0 else 0.0)
    p = t_sf(t, n - 1)
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
    (means of the final metric), val_losses and val_bpbs (per seed), seeds and bytes_total (mean, int)."""
    paths = [str(p) for p in paths]
    if not paths:
        raise Refused([("(none)", "no log given")])
    problems, logs = [], []
    for path in paths:
        try:
            logs.append(parse_log(path))
        except LogError as e:
            problems.append((path, str(e)))
    reference = logs[0] if logs else None
    seen: dict = {}
    for log in logs:
        reasons = problems_of(log, reference, seen)
        seen.setdefault(log["seed"], log["path"])
        if reasons:
            problems.append((log["path"], "; ".join(reasons)))
    if problems:
        order = {p: i for i, p in enumerate(paths)}
        raise Refused(sorted(problems, key=lambda item: order.get(item[0], -1)))

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
    )


def _cell(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def markdown_table(summary: dict) -> str:
    headers = ["seed"] + [summary["post_label"] + " bpb" if key == "post_val_bpb" else header
                          for key, header, _, _ in COLUMNS]
    rows = [headers, ["---"] * len(headers)]
    for log in summary["logs"]:
        rows.append([str(log["seed"])] + [_cell(log[key], fmt) for key, _, fmt, _ in COLUMNS])
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


def write_json_atomic(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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
    return p


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
    try:
        summary = summarize(args.logs)
    except Refused as e:
        for path, reason in e.problems:
            print(f"refused: {path}: {reason}", file=sys.stderr)
        return 1

    metric_line = "final_ttt_exact" if summary["metric"] == "ttt" else "final_int6_sliding_window_exact (TTT disabled)"
    print(markdown_table(summary))
    print()
    print(f"seeds: {' '.join(str(s) for s in summary['seeds'])} ({len(summary['logs'])} log{'s' if len(summary['logs']) != 1 else ''})")
    std_loss = statistics.stdev(summary["val_losses"]) if len(summary["val_losses"]) >= 2 else None
    std_bpb = statistics.stdev(summary["val_bpbs"]) if len(summary["val_bpbs"]) >= 2 else None
    print(f"mean val_loss {summary['val_loss']:.8f} nats (std {_cell(std_loss, '{:.8f}')}), "
          f"mean val_bpb {summary['val_bpb']:.8f} (std {_cell(std_bpb, '{:.8f}')}) from {metric_line}")

    if args.record_val_loss is not None:
        print()
        if len(summary["val_losses"]) < 2:
            print(f"significance: the test needs >= 2 seeds (got {len(summary['val_losses'])})")
        else:
            test = t_test(summary["val_losses"], args.record_val_loss)
            print(f"significance vs record val_loss {args.record_val_loss}: one-sided one-sample t-test, "
                  f"H0: record - mean <= {test['required']} nats")
            print(f"mean improvement {test['improvement']:.5f} nats, t={test['t']:.4f}, df={test['df']}, p={test['p']:.4g}")
            print(verdict(test))

    if args.submission:
        data = submission(summary, args.author, args.github_id, args.name, args.blurb,
                          args.date or datetime.date.today().isoformat())
        write_json_atomic(args.submission, data)
        print()
        print(f"wrote {args.submission}: val_loss {data['val_loss']} val_bpb {data['val_bpb']} bytes_total {data['bytes_total']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
