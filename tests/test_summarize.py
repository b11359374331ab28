"""scripts/summarize_logs.py (the multi-seed summary, submission.json, the significance test against the
record, the refusals, --plot) and scripts/run_seeds.sh (the seeds one after another).

Logs are built here with the record's published figures (seeds 1337, 42, 7; docs/recipe.md) in two layouts: ours
(record_log: train_gpt.py's lines with the JSON hyperparameters line) and the published record's own
(published_log: a stand-in source, no JSON line, key:value settings before the first step). The per-seed
val_loss values are chosen consistent with the bpb (same nats/bits-per-byte ratio as seed 1337's published
lines) and with the record's 3-seed mean val_loss of 1.88731 nats.
"""
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, load_tool

S = load_tool("scripts/summarize_logs.py", "summarize_logs")

SEP = "=" * 100
FAKE_SOURCE = '"""A fake train_gpt.py."""\nimport torch\n\n\ndef main():\n    print("=" * 100)\n'
HP = {"data_path": "./data/datasets/fineweb10B_sp1024", "tokenizer_path": "./data/tokenizers/fineweb_1024_bpe.model",
      "run_id": "x", "seed": 0, "iterations": 20000, "max_wallclock_seconds": 600.0, "train_batch_tokens": 786432,
      "matrix_lr": 0.025, "ve_layers": [9, 10], "ttt_enabled": True, "ttt_lr": 0.002}

# The record's published table; val_loss of the final evaluations at the ratio of seed 1337's published lines
RECORD = {
    1337: dict(steps=7041, step_avg=85.22, post=(1.9167, 1.1352), roundtrip=(1.93155551, 1.14397597),
               sliding=(1.89134357, 1.12016316), ttt=(1.88705130, 1.11762103), ttt_ms=404600,
               model=15619062, total=15700318),
    42: dict(steps=7025, step_avg=85.41, post=(1.9178, 1.1358), roundtrip=(1.93238454, 1.14447000),
             sliding=(1.89262146, 1.12092000), ttt=(1.88819771, 1.11830004), ttt_ms=404000,
             model=15768897, total=15850153),
    7: dict(steps=7035, step_avg=85.29, post=(1.9164, 1.1350), roundtrip=(1.93121951, 1.14378000),
            sliding=(1.89113562, 1.12004000), ttt=(1.88668099, 1.11740171), ttt_ms=385000,
            model=15625361, total=15706617),
}
SEEDS = [1337, 42, 7]
RECORD_MEAN_VAL_LOSS = 1.88731


def record_log(seed, source=FAKE_SOURCE, ttt=True, finished=True, error=False, **hp_changes) -> str:
    """A log of the record's format (recipe §8) with the record's figures for this seed."""
    r = RECORD[seed]
    hp = dict(HP, seed=seed, run_id=f"record_seed{seed}", ttt_enabled=ttt, **hp_changes)
    ms = round(r["steps"] * r["step_avg"])
    lines = [source, SEP, "Running Python 3.12.3", "Running PyTorch 2.10.0+cu128",
             "+-----------------------------------------------------------------------------------------+",
             "| NVIDIA-SMI 570.00                 Driver Version: 570.00         CUDA Version: 12.8     |",
             "|=========================================+========================+======================|",
             "|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |                    0 |", "", SEP,
             "hyperparameters: " + json.dumps(hp),
             "val_tokens:62021632 device:cuda:0 attention:flash_attn_3", "model_params:27124828",
             "world_size:8 grad_accum_steps:1",
             "step:0/20000 val_loss:6.9301 val_bpb:4.1044 train_time:0ms step_avg:0.01ms",
             "step:1/20000 train_loss:6.9307 train_time:142ms step_avg:142.10ms",
             "step:500/20000 train_loss:2.3816 train_time:42515ms step_avg:85.03ms",
             "step:4000/20000 val_loss:2.0523 val_bpb:1.2155 train_time:341020ms step_avg:85.26ms",
             "swa:start step:6350", "late_qat:enabled step:6510 scale:0.1498",
             "step:7000/20000 train_loss:1.9012 train_time:596571ms step_avg:85.22ms",
             f"step:{r['steps']}/20000 val_loss:1.9201 val_bpb:1.1372 train_time:{ms}ms step_avg:{r['step_avg']:.2f}ms",
             f"stopping_early: wallclock_cap train_time:{ms}ms step:{r['steps']}/20000",
             "peak memory allocated: 21014 MiB reserved: 21386 MiB",
             f"DIAGNOSTIC post_ema val_loss:{r['post'][0]:.4f} val_bpb:{r['post'][1]:.4f} eval_time:1978ms",
             "Serialized model: 106027446 bytes", "Code size: 81256 bytes",
             f"Serialized model int6+zstd: {r['model']} bytes",
             f"Total submission size int6+zstd: {r['total']} bytes"]
    if error:
        lines.append(f"ERROR: total submission size {r['total']} bytes is not below the 16000000-byte limit; "
                     "evaluating anyway, the run will exit with an error")
    for name, key, ms_eval in (("final_int6_roundtrip", "roundtrip", 5900), ("final_int6_sliding_window", "sliding", 74400)):
        loss, bpb = r[key]
        lines += [f"{name} val_loss:{loss:.4f} val_bpb:{bpb:.4f} eval_time:{ms_eval}ms",
                  f"{name}_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"]
    if ttt:
        loss, bpb = r["ttt"]
        lines += ["ttt:chunk 10/1893 running_val_bpb:1.1604 elapsed:2.4s",
                  f"final_ttt val_loss:{loss:.4f} val_bpb:{bpb:.4f} eval_time:{r['ttt_ms']}ms",
                  f"final_ttt_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"]
    if not finished:
        lines = lines[:-1] if ttt else lines[:-2]
        lines.append("ttt:chunk 1890/1893 running_val_bpb:1.1176 elapsed:400.1s" if ttt else "")
    return "\n".join(lines) + "\n"


def write_seed_logs(folder: Path, make_log, name: str) -> list[Path]:
    """One log per seed of SEEDS, make_log(seed), written to folder / name.format(seed=seed)."""
    paths = [folder / name.format(seed=seed) for seed in SEEDS]
    for seed, path in zip(SEEDS, paths):
        path.write_text(make_log(seed), encoding="utf-8")
    return paths


@pytest.fixture
def record_logs(tmp_path) -> list[Path]:
    return write_seed_logs(tmp_path, record_log, "record_seed{seed}.txt")


def table_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


# ----------------------------------------------------------------------------- parsing and the table

def test_parse_log_reads_every_figure(record_logs):
    log = S.parse_log(record_logs[0])
    r = RECORD[1337]
    assert log["seed"] == 1337 and log["hyperparameters"]["run_id"] == "record_seed1337"
    assert log["code"] == FAKE_SOURCE
    assert (log["steps"], log["iterations"], log["stopped_early"]) == (7041, 20000, True)
    assert log["step_avg_ms"] == 85.22
    assert (log["post_kind"], log["post_val_loss"], log["post_val_bpb"]) == ("ema", 1.9167, 1.1352)
    assert (log["roundtrip_val_loss"], log["roundtrip_val_bpb"]) == r["roundtrip"]
    assert (log["sliding_val_loss"], log["sliding_val_bpb"]) == r["sliding"]
    assert (log["ttt_val_loss"], log["ttt_val_bpb"]) == r["ttt"]
    assert log["ttt_time_s"] == pytest.approx(404.6)
    assert (log["model_bytes"], log["total_bytes"]) == (15619062, 15700318)
    assert log["errors"] == []


def test_steps_without_a_wallclock_stop_come_from_the_final_validation(tmp_path):
    text = re.sub(r"^stopping_early: .*\n", "", record_log(1337), flags=re.M)
    assert "stopping_early" not in text
    (tmp_path / "a.txt").write_text(text)
    log = S.parse_log(tmp_path / "a.txt")
    assert (log["steps"], log["stopped_early"], log["step_avg_ms"]) == (7041, False, 85.22)


def test_table_rows_mean_and_std(record_logs, capsys):
    assert S.main([str(p) for p in record_logs]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    header = rows["seed"]
    assert header == ["steps", "step_avg (ms)", "post-EMA bpb", "int6 roundtrip bpb", "sliding bpb", "TTT bpb",
                      "TTT time (s)", "model bytes", "total bytes"]
    assert rows["1337"] == ["7041", "85.22", "1.1352", "1.14398", "1.12016", "1.11762", "404.6", "15619062", "15700318"]
    assert rows["42"] == ["7025", "85.41", "1.1358", "1.14447", "1.12092", "1.11830", "404.0", "15768897", "15850153"]
    assert rows["7"] == ["7035", "85.29", "1.1350", "1.14378", "1.12004", "1.11740", "385.0", "15625361", "15706617"]
    columns = {
        "steps": ([RECORD[s]["steps"] for s in SEEDS], "{:.1f}"),
        "step_avg (ms)": ([RECORD[s]["step_avg"] for s in SEEDS], "{:.2f}"),
        "post-EMA bpb": ([RECORD[s]["post"][1] for s in SEEDS], "{:.5f}"),
        "int6 roundtrip bpb": ([RECORD[s]["roundtrip"][1] for s in SEEDS], "{:.5f}"),
        "sliding bpb": ([RECORD[s]["sliding"][1] for s in SEEDS], "{:.5f}"),
        "TTT bpb": ([RECORD[s]["ttt"][1] for s in SEEDS], "{:.5f}"),
        "TTT time (s)": ([RECORD[s]["ttt_ms"] / 1000 for s in SEEDS], "{:.1f}"),
        "model bytes": ([RECORD[s]["model"] for s in SEEDS], "{:.0f}"),
        "total bytes": ([RECORD[s]["total"] for s in SEEDS], "{:.0f}"),
    }
    for i, name in enumerate(header):
        values, fmt = columns[name]
        assert rows["mean"][i] == fmt.format(statistics.mean(values)), name
        assert rows["std"][i] == fmt.format(statistics.stdev(values)), name
    # the record's published 3-seed figures: mean TTT bpb 1.11777 (1.88731 nats), std 0.0005
    assert rows["mean"][header.index("TTT bpb")] == "1.11777"
    assert float(rows["std"][header.index("TTT bpb")]) == pytest.approx(0.0005, abs=0.00005)
    assert "mean val_loss 1.88731000 nats" in out and "final_ttt_exact" in out
    assert "significan" not in out  # no --record-val-loss, no test


def test_summarize_returns_the_means(record_logs):
    summary = S.summarize(record_logs)
    assert summary["seeds"] == SEEDS and summary["metric"] == "ttt"
    assert summary["val_loss"] == pytest.approx(statistics.mean(RECORD[s]["ttt"][0] for s in SEEDS), abs=1e-12)
    assert summary["val_loss"] == pytest.approx(RECORD_MEAN_VAL_LOSS, abs=1e-9)
    assert summary["val_bpb"] == pytest.approx(statistics.mean(RECORD[s]["ttt"][1] for s in SEEDS), abs=1e-12)
    assert summary["std"]["ttt_val_bpb"] == pytest.approx(statistics.stdev(RECORD[s]["ttt"][1] for s in SEEDS))


def test_one_log_has_no_std_and_no_test(record_logs, capsys):
    assert S.main([str(record_logs[0]), "--record-val-loss", "1.90"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["mean"][0] == "7041.0" and rows["mean"][5] == "1.11762"
    assert set(rows["std"]) == {"n/a"}
    assert "needs >= 2 seeds" in out
    assert "significant:" not in out


# ----------------------------------------------------------------------------- submission.json

def test_submission_json(record_logs, tmp_path, capsys):
    target = tmp_path / "out" / "submission.json"
    argv = [str(p) for p in record_logs] + ["--submission", str(target), "--author", "Jane Doe", "--github-id", "janedoe",
                                            "--name", "Soft-round QAT", "--blurb", "11L, TTT", "--date", "2026-05-09"]
    assert S.main(argv) == 0
    data = json.loads(target.read_text())
    assert (data["author"], data["github_id"], data["name"], data["blurb"], data["date"]) == \
        ("Jane Doe", "janedoe", "Soft-round QAT", "11L, TTT", "2026-05-09")
    assert data["val_loss"] == pytest.approx(statistics.mean(RECORD[s]["ttt"][0] for s in SEEDS), abs=1e-8)
    assert data["val_bpb"] == pytest.approx(statistics.mean(RECORD[s]["ttt"][1] for s in SEEDS), abs=1e-8)
    assert data["bytes_total"] == round(statistics.mean(RECORD[s]["total"] for s in SEEDS)) == 15752363
    assert isinstance(data["bytes_total"], int)
    assert data["seeds"] == SEEDS
    assert data["val_bpb_per_seed"] == [RECORD[s]["ttt"][1] for s in SEEDS]
    assert data["val_loss_per_seed"] == [RECORD[s]["ttt"][0] for s in SEEDS]
    assert data["bytes_code"] == 81256
    assert sorted(p.name for p in target.parent.iterdir()) == ["submission.json"]  # no temp file left


def test_submission_date_defaults_to_today_and_needs_the_author_fields(record_logs, tmp_path, capsys):
    import datetime
    target = tmp_path / "submission.json"
    assert S.main([str(record_logs[0]), "--submission", str(target), "--author", "A", "--github-id", "a", "--name", "n"]) == 0
    data = json.loads(target.read_text())
    assert data["date"] == datetime.date.today().isoformat() and data["blurb"] == ""
    with pytest.raises(SystemExit) as e:
        S.main([str(record_logs[0]), "--submission", str(tmp_path / "other.json"), "--author", "A"])
    assert e.value.code == 2 and "--github-id" in capsys.readouterr().err
    assert not (tmp_path / "other.json").exists()


def test_submission_uses_the_sliding_window_when_ttt_is_disabled(tmp_path, capsys):
    paths = []
    for seed in SEEDS:
        paths.append(tmp_path / f"s{seed}.txt")
        paths[-1].write_text(record_log(seed, ttt=False))
    target = tmp_path / "submission.json"
    assert S.main([str(p) for p in paths] + ["--submission", str(target), "--author", "A", "--github-id", "a", "--name", "n"]) == 0
    data = json.loads(target.read_text())
    assert data["val_bpb"] == pytest.approx(statistics.mean(RECORD[s]["sliding"][1] for s in SEEDS), abs=1e-8)
    assert data["val_loss"] == pytest.approx(statistics.mean(RECORD[s]["sliding"][0] for s in SEEDS), abs=1e-8)
    rows = table_rows(capsys.readouterr().out)
    assert rows["1337"][5:7] == ["n/a", "n/a"] and rows["mean"][5] == "n/a"


# ----------------------------------------------------------------------------- significance

def t_sf_df2(t):  # closed form of Student's t with 2 degrees of freedom
    return 0.5 * (1 - t / math.sqrt(t * t + 2))


@pytest.mark.parametrize("record, significant", [(1.90, True), (1.8925, False), (1.88731, False)])
def test_t_test_verdict(record_logs, capsys, record, significant):
    assert S.main([str(p) for p in record_logs] + ["--record-val-loss", str(record)]) == 0
    out = capsys.readouterr().out
    losses = [RECORD[s]["ttt"][0] for s in SEEDS]
    mean, s = statistics.mean(losses), statistics.stdev(losses)
    t = (record - mean - 0.005) / (s / math.sqrt(3))
    p = t_sf_df2(t)
    assert (p < 0.01) == significant
    m = re.search(r"^mean improvement ([-\d.]+) nats, t=([-\d.]+), df=(\d+), p=([\d.e-]+)$", out, re.M)
    assert m, out
    assert float(m[1]) == pytest.approx(record - mean, abs=1e-5)
    assert float(m[2]) == pytest.approx(t, abs=1e-4) and m[3] == "2"
    assert float(m[4]) == pytest.approx(p, rel=1e-3)
    verdict = [line for line in out.splitlines() if "significant:" in line]
    assert len(verdict) == 1
    if significant:
        assert verdict[0].startswith(f"significant: improvement {record - mean:.5f} nats > 0.005 at p=")
        assert verdict[0].endswith("< 0.01")
    else:
        assert verdict[0].startswith("not significant: ")


def test_t_test_function():
    test = S.t_test([1.0, 1.01], 1.02)
    assert test["df"] == 1 and test["t"] == pytest.approx((1.02 - 1.005 - 0.005) / (statistics.stdev([1.0, 1.01]) / math.sqrt(2)))
    assert test["p"] == pytest.approx(0.5 - math.atan(test["t"]) / math.pi, abs=1e-12)  # Cauchy
    with pytest.raises(ValueError, match="2 seeds"):
        S.t_test([1.0], 1.9)
    with pytest.raises(ValueError, match="zero standard deviation"):  # was p=0 and "significant"
        S.t_test([1.0, 1.0], 1.01)
    with pytest.raises(ValueError, match="finite"):
        S.t_test([1.0, math.nan], 1.01)


def sample_with_t(t: float, n: int) -> tuple[list[float], float]:
    """n val_losses and a record val_loss whose one-sample t statistic (against the 0.005 margin) is t."""
    values = [1.9 + 0.001 * i * i for i in range(n)]
    mean, s = statistics.fmean(values), statistics.stdev(values)
    return values, mean + 0.005 + t * s / math.sqrt(n)


@pytest.mark.parametrize("t, df, p, tol", [  # tables of Student's t (no scipy in the expected values)
    (2.0, 2, 0.0917517, 1e-7), (3.747, 4, 0.01, 1e-4), (6.965, 2, 0.01, 1e-5), (2.015, 5, 0.05, 1e-4),
    (2.764, 10, 0.01, 1e-4), (1.0, 1, 0.25, 1e-9), (0.0, 7, 0.5, 1e-9), (-2.0, 2, 1 - 0.0917517, 1e-7),
])
def test_p_values_match_known_values(t, df, p, tol):
    values, record = sample_with_t(t, df + 1)
    test = S.t_test(values, record)
    assert (test["t"], test["df"]) == (pytest.approx(t, abs=1e-9), df)
    assert test["p"] == pytest.approx(p, abs=tol)


def test_p_values_match_closed_forms():
    for t in [-30, -5, -1.5, -0.1, 0.3, 1, 2.5, 7, 50]:
        assert S.t_test(*sample_with_t(t, 2))["p"] == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-9)  # Cauchy
        assert S.t_test(*sample_with_t(t, 3))["p"] == pytest.approx(t_sf_df2(t), abs=1e-9)


# ----------------------------------------------------------------------------- refusals

def refused(capsys, argv) -> list[str]:
    assert S.main([str(a) for a in argv]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "| seed |" not in captured.out
    return captured.err.strip().splitlines()


def test_refuses_an_unfinished_log(record_logs, tmp_path, capsys):
    bad = tmp_path / "unfinished.txt"
    bad.write_text(record_log(42, finished=False))
    lines = refused(capsys, [record_logs[0], bad, record_logs[2]])
    assert len(lines) == 1
    assert str(bad) in lines[0] and "unfinished" in lines[0] and "final_ttt_exact" in lines[0]


def test_refuses_an_unfinished_log_without_ttt(tmp_path, capsys):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(record_log(1337, ttt=False))
    bad.write_text(record_log(42, ttt=False, finished=False))
    lines = refused(capsys, [good, bad])
    assert len(lines) == 1 and str(bad) in lines[0] and "final_int6_sliding_window_exact" in lines[0]


def test_refuses_a_log_of_other_code(record_logs, tmp_path, capsys):
    bad = tmp_path / "other_code.txt"
    bad.write_text(record_log(42, source=FAKE_SOURCE.replace("import torch", "import torch  # tweaked")))
    lines = refused(capsys, [record_logs[0], bad, record_logs[2]])
    assert len(lines) == 1
    assert str(bad) in lines[0] and "code differs" in lines[0] and str(record_logs[0]) in lines[0]
    assert "line 2" in lines[0]


def test_refuses_a_log_with_other_hyperparameters(record_logs, tmp_path, capsys):
    bad = tmp_path / "other_hp.txt"
    bad.write_text(record_log(7, matrix_lr=0.03, ttt_lr=0.001))
    lines = refused(capsys, [record_logs[0], record_logs[1], bad])
    assert len(lines) == 1
    assert str(bad) in lines[0] and "hyperparameters differ" in lines[0]
    assert "matrix_lr" in lines[0] and "ttt_lr" in lines[0]
    assert "seed (" not in lines[0] and "run_id (" not in lines[0]


def test_refuses_a_log_over_the_size_limit_and_lists_every_refused_log(record_logs, tmp_path, capsys):
    over, dup, garbage = tmp_path / "over.txt", tmp_path / "dup.txt", tmp_path / "garbage.txt"
    over.write_text(record_log(42, error=True))
    dup.write_text(record_log(1337).replace('"run_id": "record_seed1337"', '"run_id": "again"'))
    garbage.write_text("not a log\n")
    lines = refused(capsys, [record_logs[0], over, dup, garbage, tmp_path / "missing.txt"])
    assert len(lines) == 4
    assert str(over) in lines[0] and "ERROR" in lines[0] and "limit" in lines[0]
    assert str(dup) in lines[1] and "seed 1337" in lines[1]
    assert str(garbage) in lines[2] and "not a train_gpt.py log" in lines[2]
    assert str(tmp_path / "missing.txt") in lines[3] and "cannot read" in lines[3]


def test_summarize_raises_refused(record_logs, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(record_log(42, finished=False))
    with pytest.raises(S.Refused) as e:
        S.summarize([record_logs[0], bad])
    assert [path for path, _ in e.value.problems] == [str(bad)]


# ----------------------------------------------------------------------------- the published record's logs

# A stand-in for the record's script (its real source is not copied into the project)
PUBLISHED_SOURCE = ('"""A stand-in for the record\'s train_gpt.py."""\nimport torch\n\n\ndef main():\n'
                    '    log0("=" * 100, console=False)\n    log0(f"seed:{args.seed}")\n')
NVIDIA_SMI = [
    "Sat Mar 21 10:00:00 2026",
    "+-----------------------------------------------------------------------------------------+",
    "| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |",
    "|-----------------------------------------+------------------------+----------------------+",
    "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
    "|=========================================+========================+======================|",
    "|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |                    0 |",
    "+-----------------------------------------+------------------------+----------------------+", ""]
PUBLISHED_SETTINGS = dict(num_heads=8, num_kv_heads=4, embed_lr=0.035, matrix_lr=0.025, scalar_lr=0.025,
                          train_batch_tokens=786432, train_seq_len=2048)
PUBLISHED_TRAIN_STEPS = [1, 2, 3, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000]


def published_log(seed, source=PUBLISHED_SOURCE, finished=True, ttt=True, **settings) -> str:
    """A log in the layout of the record's train_seed<SEED>.log (no JSON line) with RECORD's figures."""
    r, s = RECORD[seed], dict(PUBLISHED_SETTINGS, **settings)
    ms = round(r["steps"] * r["step_avg"])
    lines = [source.rstrip("\n"), SEP, "Running Python 3.12.12 (main, Oct 10 2025, 08:52:57) [GCC 11.4.0]",
             "Running PyTorch 2.10.0+cu128", *NVIDIA_SMI, SEP,
             "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model",
             "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632",
             "model_params:27124828", "world_size:8 grad_accum_steps:1",
             "sdp_backends:cudnn=False flash=True mem_efficient=False math=False",
             f"attention_mode:gqa num_heads:{s['num_heads']} num_kv_heads:{s['num_kv_heads']}",
             f"tie_embeddings:True embed_lr:{s['embed_lr']} head_lr:0.0 matrix_lr:{s['matrix_lr']} "
             f"scalar_lr:{s['scalar_lr']}",
             f"train_batch_tokens:{s['train_batch_tokens']} train_seq_len:{s['train_seq_len']} iterations:20000 "
             "warmup_steps:20 max_wallclock_seconds:600.000",
             f"seed:{seed}"]
    lines += [f"warmup_step:{i}/20" for i in range(1, 21)]
    lines.append("step:0/20000 val_loss:6.9301 val_bpb:4.1044 train_time:0ms step_avg:0.01ms")
    for step in PUBLISHED_TRAIN_STEPS:
        avg = 130.43 if step == 1 else r["step_avg"]
        loss = 1.9 + 5.0 / (1 + step / 50) + 0.001 * (seed % 10)
        lines.append(f"step:{step}/20000 train_loss:{loss:.4f} train_time:{round(step * avg)}ms step_avg:{avg:.2f}ms")
        if step == 4000:
            lines.append(f"step:4000/20000 val_loss:2.0523 val_bpb:1.2155 train_time:{round(4000 * avg)}ms step_avg:{avg:.2f}ms")
    lines += ["swa:start step:6350", "late_qat:enabled step:6510 scale:0.1499",
              f"step:{r['steps']}/20000 val_loss:1.9168 val_bpb:1.1353 train_time:{ms}ms step_avg:{r['step_avg']:.2f}ms",
              f"stopping_early: wallclock_cap train_time:{ms}ms step:{r['steps']}/20000",
              "peak memory allocated: 21014 MiB reserved: 21386 MiB",
              "ttt_burst:start epochs:2 steps:100",
              f"DIAGNOSTIC post_ema val_loss:{r['post'][0]:.4f} val_bpb:{r['post'][1]:.4f} eval_time:1978ms",
              "Serialized model: 106047497 bytes", "Code size: 81256 bytes",
              f"Serialized model int6+zstd: {r['model']} bytes",
              f"Total submission size int6+zstd: {r['total']} bytes"]
    for name, key, extra in (("final_int6_roundtrip", "roundtrip", ""), ("final_int6_sliding_window", "sliding", " stride:64")):
        loss, bpb = r[key]
        lines += [f"{name} val_loss:{loss:.4f} val_bpb:{bpb:.4f}{extra} eval_time:5912ms",
                  f"{name}_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"]
    if ttt:
        lines += [f"ttt_chunk [{c}/1893] bpb:1.1621 time:{0.2 * c:.1f}s" for c in (1, 2, 3)]
    if ttt and finished:
        loss, bpb = r["ttt"]
        lines += [f"ttt_chunk [1893/1893] bpb:{bpb:.4f} time:{r['ttt_ms'] / 1000 - 0.1:.1f}s",
                  f"final_ttt val_loss:{loss:.4f} val_bpb:{bpb:.4f} eval_time:{r['ttt_ms']}ms",
                  f"final_ttt_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def published_logs(tmp_path) -> list[Path]:
    return write_seed_logs(tmp_path, published_log, "train_seed{seed}.log")


def step_lines(text: str):
    """(train, val) curves read from a log's text: [(step, loss, train_time_ms)], [(step, val_loss, val_bpb, ms)]."""
    train = [(int(a), float(b), float(c)) for a, b, c in
             re.findall(r"^step:(\d+)/\d+ train_loss:([\d.]+) train_time:(\d+)ms", text, re.M)]
    val = [(int(a), float(b), float(c), float(d)) for a, b, c, d in
           re.findall(r"^step:(\d+)/\d+ val_loss:([\d.]+) val_bpb:([\d.]+) train_time:(\d+)ms", text, re.M)]
    return train, val


def test_published_log_is_read(published_logs):
    text = published_logs[0].read_text()
    assert len(re.findall(r"^=+$", text, re.M)) == 2 and "hyperparameters:" not in text
    log = S.parse_log(published_logs[0])
    r = RECORD[1337]
    assert log["code"] == PUBLISHED_SOURCE.rstrip("\n") and log["hp_source"] == "header"
    assert log["seed"] == 1337 and log["ttt_enabled"]
    hp = log["hyperparameters"]
    assert (hp["seed"], hp["matrix_lr"], hp["num_heads"], hp["train_seq_len"], hp["max_wallclock_seconds"],
            hp["tie_embeddings"], hp["world_size"]) == (1337, 0.025, 8, 2048, 600.0, True, 8)
    assert "warmup_step" not in hp and "train_loss" not in hp  # settings: the lines before the first step only
    assert (log["steps"], log["iterations"], log["stopped_early"], log["step_avg_ms"]) == (7041, 20000, True, 85.22)
    assert (log["post_kind"], log["post_val_loss"], log["post_val_bpb"]) == ("ema", 1.9167, 1.1352)
    assert (log["roundtrip_val_loss"], log["roundtrip_val_bpb"]) == r["roundtrip"]
    assert (log["sliding_val_loss"], log["sliding_val_bpb"]) == r["sliding"]  # "stride:64" before eval_time
    assert (log["ttt_val_loss"], log["ttt_val_bpb"]) == r["ttt"]
    assert log["ttt_time_s"] == pytest.approx(404.6)
    assert (log["model_bytes"], log["total_bytes"], log["errors"], log["nonfinite"]) == (15619062, 15700318, [], [])
    assert (log["train_curve"], log["val_curve"]) == step_lines(text)
    assert [s for s, *_ in log["val_curve"]] == [0, 4000, 7041]
    assert [s for s, *_ in log["train_curve"]] == PUBLISHED_TRAIN_STEPS


def test_published_logs_give_the_published_figures(published_logs, tmp_path, capsys):
    target = tmp_path / "submission.json"
    argv = [str(p) for p in published_logs] + ["--submission", str(target), "--author", "A", "--github-id", "a",
                                               "--name", "n", "--date", "2026-03-21"]
    assert S.main(argv) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["1337"] == ["7041", "85.22", "1.1352", "1.14398", "1.12016", "1.11762", "404.6", "15619062", "15700318"]
    assert rows["42"] == ["7025", "85.41", "1.1358", "1.14447", "1.12092", "1.11830", "404.0", "15768897", "15850153"]
    assert rows["7"] == ["7035", "85.29", "1.1350", "1.14378", "1.12004", "1.11740", "385.0", "15625361", "15706617"]
    assert rows["mean"][5] == "1.11777" and rows["mean"][8] == "15752363"
    assert re.search(r"^mean val_loss 1\.88731000 nats .* mean val_bpb 1\.11777\d* .*final_ttt_exact$", out, re.M)
    checks = [line for line in out.splitlines() if line.startswith("checks not made: ")]
    assert len(checks) == 1
    assert "hyperparameters not logged as JSON" in checks[0] and "train_seed1337.log" in checks[0]
    assert "compared only the carried source" in checks[0] and "matrix_lr" in checks[0]
    assert "TTT on/off not logged" in checks[0]

    def no_constants(name):
        raise AssertionError(f"{name} in submission.json")
    data = json.loads(target.read_text(), parse_constant=no_constants)  # strict JSON
    assert data["val_bpb"] == pytest.approx(1.11777, abs=5e-6) and data["val_loss"] == pytest.approx(1.88731, abs=1e-8)
    assert data["bytes_total"] == 15752363 and data["bytes_code"] == 81256
    assert data["seeds"] == SEEDS and data["metric"] == "final_ttt_exact"
    assert data["val_bpb_per_seed"] == [1.11762103, 1.11830004, 1.11740171]
    assert data["bytes_total_per_seed"] == [15700318, 15850153, 15706617]


def test_our_logs_print_no_checks_not_made_line(record_logs, capsys):
    assert S.main([str(p) for p in record_logs]) == 0
    assert "checks not made" not in capsys.readouterr().out
    assert S.summarize(record_logs)["unchecked"] == []


@pytest.mark.parametrize("old, new", [
    (r"^(step:\d+/20000 train_loss:\S+)", r"\1 lr_scale:0.5000"),  # a token between known fields
    (r"^(step:\d+/20000 val_loss:\S+ val_bpb:\S+ train_time:\S+ step_avg:\S+)$", r"\1 tokens:123"),  # one at the end
    (r"^(final_ttt val_loss:\S+ val_bpb:\S+) (eval_time:\S+)$", r"\1 chunks:1893 \2"),  # eval_time after others
    (r"^(final_\w+_exact val_loss:\S+ val_bpb:\S+)$", r"\1 tokens:62021632"),
    (r"^(DIAGNOSTIC post_ema) (val_loss)", r"\1 swa_count:12 \2"),
    (r"^(stopping_early: wallclock_cap) (train_time)", r"\1 reason:cap \2"),
])
def test_published_lines_with_extra_tokens_still_match(tmp_path, old, new):
    text = published_log(1337)
    changed, count = re.subn(old, new, text, flags=re.M)
    assert count
    (tmp_path / "a.log").write_text(changed)
    (tmp_path / "b.log").write_text(text)
    a, b = S.parse_log(tmp_path / "a.log"), S.parse_log(tmp_path / "b.log")
    for key in ["steps", "step_avg_ms", "post_val_bpb", "ttt_time_s", "train_curve", "val_curve", "stopped_early",
                *(f"{k}_val_{m}" for k in S.EXACT_KEYS.values() for m in ("loss", "bpb"))]:
        assert a[key] == b[key], key


def test_published_logs_of_other_source_or_other_matrix_lr_are_refused(published_logs, tmp_path, capsys):
    other_code = tmp_path / "other_code.log"
    other_code.write_text(published_log(42, source=PUBLISHED_SOURCE.replace("import torch", "import torch, math")))
    lines = refused(capsys, [published_logs[0], other_code])
    assert len(lines) == 1 and str(other_code) in lines[0] and "code differs" in lines[0] and "line 2" in lines[0]
    other_lr = tmp_path / "other_lr.log"
    other_lr.write_text(published_log(7, matrix_lr=0.03))
    lines = refused(capsys, [published_logs[0], published_logs[1], other_lr])
    assert len(lines) == 1 and str(other_lr) in lines[0]
    assert "hyperparameters differ" in lines[0] and "matrix_lr (0.025 vs 0.03)" in lines[0] and "seed (" not in lines[0]


def test_published_log_whose_ttt_did_not_finish_is_refused(published_logs, tmp_path, capsys):
    bad = tmp_path / "unfinished.log"
    bad.write_text(published_log(42, finished=False))
    lines = refused(capsys, [published_logs[0], bad])
    assert len(lines) == 1 and str(bad) in lines[0] and "unfinished run: no final_ttt_exact" in lines[0]


def test_published_logs_without_ttt_or_without_seed(published_logs, tmp_path, capsys):
    no_ttt = tmp_path / "no_ttt.log"
    no_ttt.write_text(published_log(42, ttt=False))
    assert not S.parse_log(no_ttt)["ttt_enabled"]
    lines = refused(capsys, [published_logs[0], no_ttt])
    assert len(lines) == 1 and f"TTT ran in {published_logs[0]} but not here" in lines[0]
    no_seed = tmp_path / "no_seed.log"
    no_seed.write_text(published_log(42).replace("seed:42\n", ""))
    assert S.main([str(published_logs[0]), str(no_seed)]) == 0
    out = capsys.readouterr().out
    assert table_rows(out)["n/a"][0] == "7025"
    assert re.search(r"^checks not made: .*; seed not logged \(no_seed\.log\) — distinct seeds not checked$", out, re.M)


# ----------------------------------------------------------------------------- refusals: given twice, no spread, nan

def refused_and_nothing_written(capsys, tmp_path, logs, record="1.90") -> str:
    """Runs with --record-val-loss, --submission and --plot; returns the one line on stderr."""
    target, png = tmp_path / "out" / "submission.json", tmp_path / "curves.png"
    lines = refused(capsys, [*logs, "--record-val-loss", record, "--plot", png, "--submission", target,
                             "--author", "A", "--github-id", "a", "--name", "n"])
    assert len(lines) == 1 and lines[0].startswith("refused: ")
    assert not target.exists() and not png.exists()
    return lines[0]


def test_refuses_the_same_log_given_twice(record_logs, tmp_path, capsys):
    # it used to give p = 0, "significant", and write submission.json
    a = record_logs[0]
    line = refused_and_nothing_written(capsys, tmp_path, [a, a])
    assert f"refused: {a}: the same file as {a}" in line and "given twice" in line
    spelled = a.parent / "sub" / ".." / a.name
    (a.parent / "sub").mkdir()
    assert "the same file" in refused_and_nothing_written(capsys, tmp_path, [a, spelled])
    linked = tmp_path / "linked.txt"
    os.link(a, linked)
    assert "the same file" in refused_and_nothing_written(capsys, tmp_path, [a, record_logs[1], linked])
    copy = tmp_path / "copy.txt"
    shutil.copy(a, copy)
    line = refused_and_nothing_written(capsys, tmp_path, [a, copy])
    assert f"refused: {copy}: the same content as {a}" in line


def test_refuses_the_significance_test_without_spread(tmp_path, capsys):
    # identical val_loss in two seeds: it used to give t=inf, p=0, "significant"
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(record_log(1337))
    b.write_text(record_log(1337).replace('"seed": 1337', '"seed": 42').replace("record_seed1337", "record_seed42"))
    line = refused_and_nothing_written(capsys, tmp_path, [a, b])
    assert "zero standard deviation" in line and "1.88705130" in line and str(a) in line and str(b) in line
    assert S.main([str(a), str(b)]) == 0  # without the test the summary is fine
    capsys.readouterr()


@pytest.mark.parametrize("old, new", [
    ("final_ttt_exact val_loss:1.88819771", "final_ttt_exact val_loss:nan"),
    ("final_ttt_exact val_loss:1.88819771 val_bpb:1.11830004", "final_ttt_exact val_loss:NaN val_bpb:NaN"),
    ("DIAGNOSTIC post_ema val_loss:1.9178", "DIAGNOSTIC post_ema val_loss:inf"),
    ("step:500/20000 train_loss:2.3816", "step:500/20000 train_loss:-inf"),
])
def test_refuses_non_finite_figures(record_logs, tmp_path, capsys, old, new):
    # it used to write "val_loss": NaN into submission.json (not JSON)
    bad = tmp_path / "nan.txt"
    text = record_log(42)
    assert old in text
    bad.write_text(text.replace(old, new))
    line = refused_and_nothing_written(capsys, tmp_path, [record_logs[0], bad, record_logs[2]])
    assert line.startswith(f"refused: {bad}: non-finite value (nan/inf) in line ")
    assert new.split()[0] in line


def test_json_is_strict(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(ValueError):
        S.write_json_atomic(target, {"val_loss": math.nan})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_submission_json_has_the_mode_of_a_new_file(record_logs, tmp_path, capsys, umask, mode):
    target = tmp_path / "submission.json"
    old = os.umask(umask)
    try:
        assert S.main([str(record_logs[0]), "--submission", str(target), "--author", "A", "--github-id", "a",
                       "--name", "n"]) == 0  # was 0600 (tempfile.mkstemp)
        S.write_atomic(tmp_path / "plain.txt", lambda f: f.write("x"))
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == mode
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == mode


# ----------------------------------------------------------------------------- --plot

def test_plot_draws_every_step_line_and_the_record_references(published_logs, tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert S.main([str(p) for p in published_logs] + ["--plot", str(png)]) == 0
    assert f"wrote {png}" in capsys.readouterr().out
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png" or p.name.startswith(".")) == ["curves.png"]

    logs = S.summarize(published_logs)["logs"]
    fig = S.plot_curves(logs)
    axes = fig.axes
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert titles == ["train loss vs step", "train loss vs training time",
                      "val_bpb vs step (step 0 off scale)", "val_bpb vs training time (step 0 off scale)"]
    for ax in axes[2:]:  # the later validations and the references are in view
        low, high = ax.get_ylim()
        assert low < 1.11740 and 1.2155 < high < 4.1044
    for seed, path in zip(SEEDS, published_logs):
        train, val = step_lines(path.read_text())
        expected = [([s for s, _, _ in train], [v for _, v, _ in train]),
                    ([t / 1000 for _, _, t in train], [v for _, v, _ in train]),
                    ([s for s, *_ in val], [b for _, _, b, _ in val]),
                    ([t / 1000 for *_, t in val], [b for _, _, b, _ in val])]
        for ax, (xs, ys) in zip(axes, expected):
            [line] = [line for line in ax.get_lines() if line.get_label() == f"seed {seed}"]
            assert list(line.get_xdata()) == pytest.approx(xs) and list(line.get_ydata()) == pytest.approx(ys)
    assert len(expected[0][0]) == len(PUBLISHED_TRAIN_STEPS) and len(expected[2][0]) == 3

    def references(ax):
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
                for line in ax.get_lines() if line.get_label().startswith("record")}
    for i, ax in enumerate(axes):
        refs = references(ax)
        vertical = [xs for xs, _ in refs.values() if len(set(xs)) == 1 and len(xs) == 2]
        assert vertical == [[7034, 7034]] if i % 2 == 0 else vertical == [[600.0, 600.0]]
        horizontal = sorted(ys[0] for xs, ys in refs.values() if len(ys) == 2 and len(set(ys)) == 1)
        assert horizontal == ([] if i < 2 else [1.11777, 1.1353])
    assert [1.2155] in [ys for _, ys in references(axes[2]).values()]
    assert ([4000], [1.2155]) in references(axes[2]).values()


def test_plot_to_a_bad_path_is_one_line(record_logs, tmp_path, capsys):
    target = tmp_path / "missing" / "curves.png"
    lines = refused(capsys, [record_logs[0], "--plot", target])
    assert len(lines) == 1 and str(target) in lines[0] and "does not exist" in lines[0]
    assert not target.parent.exists()
    lines = refused(capsys, [record_logs[0], "--plot", tmp_path / "curves.pdf"])  # not a PNG name
    assert len(lines) == 1 and ".png" in lines[0]


def test_the_script_imports_without_scipy_or_matplotlib():
    code = ("import sys; sys.path.insert(0, 'tests'); from conftest import load_tool; "
            "load_tool('scripts/summarize_logs.py', 's'); "
            "print([m for m in ('scipy', 'matplotlib') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- a real log of train_gpt.py

def test_a_real_run_log_passes_through_the_summarizer(tiny_env, monkeypatch, tmp_path, capsys):
    import train_gpt as tg
    monkeypatch.setenv("ITERATIONS", "4")
    monkeypatch.setenv("WARMDOWN_ITERS", "2")
    tg.main()
    path = tmp_path / "logs" / "tiny.txt"
    text = path.read_text(encoding="utf-8")
    run = text.split(SEP + "\n")[2]

    def grab(pattern):
        found = re.findall(pattern, run, flags=re.M)
        assert len(found) == 1, (pattern, found)
        return found[0]

    log = S.parse_log(path)
    assert log["code"] + "\n" == text[:text.index(SEP + "\n")]  # the source (train_gpt.py may be edited meanwhile)
    assert "def main(" in log["code"] and SEP not in log["code"]
    assert log["hyperparameters"] == json.loads(grab(r"^hyperparameters: (.*)$"))
    assert log["seed"] == 1337 and log["ttt_enabled"]
    avg = grab(r"^step:4/4 val_loss:[\d.]+ val_bpb:[\d.]+ train_time:\d+ms step_avg:([\d.]+)ms$")  # the last step line
    assert (log["steps"], log["iterations"], log["step_avg_ms"]) == (4, 4, float(avg))
    kind, loss, bpb = grab(r"^DIAGNOSTIC post_(ema|swa) val_loss:([\d.]+) val_bpb:([\d.]+) eval_time:\d+ms$")
    assert (log["post_kind"], log["post_val_loss"], log["post_val_bpb"]) == (kind, float(loss), float(bpb))
    for name, key in (("final_int6_roundtrip", "roundtrip"), ("final_int6_sliding_window", "sliding"), ("final_ttt", "ttt")):
        loss, bpb = grab(rf"^{name}_exact val_loss:([\d.]+) val_bpb:([\d.]+)$")
        assert (log[f"{key}_val_loss"], log[f"{key}_val_bpb"]) == (float(loss), float(bpb)), name
    assert log["ttt_time_s"] == int(grab(r"^final_ttt val_loss:[\d.]+ val_bpb:[\d.]+ eval_time:(\d+)ms$")) / 1000
    assert log["model_bytes"] == int(grab(r"^Serialized model int6\+zstd: (\d+) bytes$")) == \
        (tmp_path / "final_model.int6.ptz").stat().st_size
    assert log["total_bytes"] == int(grab(r"^Total submission size int6\+zstd: (\d+) bytes$"))

    train = [(int(a), float(b), float(c)) for a, b, c in
             re.findall(r"^step:(\d+)/4 train_loss:([\d.]+) train_time:(\d+)ms step_avg:[\d.]+ms$", run, re.M)]
    assert log["train_curve"] == train and [s for s, _, _ in train] == [1, 2, 3, 4]
    assert log["val_curve"] == [(4, *map(float, grab(r"^step:4/4 val_loss:([\d.]+) val_bpb:([\d.]+) train_time:(\d+)ms")))]
    fig = S.plot_curves([log])
    [drawn] = [line for line in fig.axes[0].get_lines() if line.get_label() == "seed 1337"]
    assert (list(drawn.get_xdata()), list(drawn.get_ydata())) == ([1, 2, 3, 4], [v for _, v, _ in train])

    summary = S.summarize([path])
    assert summary["logs"][0] == log
    assert summary["val_loss"] == log["ttt_val_loss"] and summary["val_bpb"] == log["ttt_val_bpb"]
    # a second "seed" of the same code and configuration is accepted; another configuration is not
    other = tmp_path / "logs" / "tiny_seed42.txt"
    other.write_text(text.replace('"run_id": "tiny", "seed": 1337', '"run_id": "tiny_seed42", "seed": 42'))
    assert '"seed": 42' in other.read_text()
    assert S.main([str(path), str(other)]) == 0
    out = capsys.readouterr().out
    assert table_rows(out)["std"][5] == "0.00000" and "checks not made" not in out
    # identical val_loss: the t-test is undefined (it used to say p=0, "significant")
    lines = refused(capsys, [path, other, "--record-val-loss", "9.0"])
    assert len(lines) == 1 and "zero standard deviation" in lines[0] and str(other) in lines[0]
    lowered = tmp_path / "logs" / "tiny_seed42_lower.txt"
    lowered.write_text(re.sub(r"^(final_ttt_exact val_loss:)([\d.]+)",
                              lambda m: f"{m[1]}{float(m[2]) - 0.01:.8f}", other.read_text(), flags=re.M))
    assert S.main([str(path), str(lowered), "--record-val-loss", "9.0"]) == 0
    assert "significant: improvement" in capsys.readouterr().out
    changed = tmp_path / "logs" / "tiny_lr.txt"
    changed.write_text(other.read_text().replace('"matrix_lr": ', '"matrix_lr": 1'))
    lines = refused(capsys, [path, changed])
    assert len(lines) == 1 and str(changed) in lines[0] and "matrix_lr" in lines[0]


# ----------------------------------------------------------------------------- scripts/run_seeds.sh

FAKE_TORCHRUN = """#!/usr/bin/env bash
# records its arguments and environment, writes a log and an artifact like train_gpt.py
set -eu
echo "$* SEED=$SEED RUN_ID=$RUN_ID" >> calls.txt
mkdir -p logs
echo "log of seed $SEED" > "logs/$RUN_ID.txt"
if [[ "${FAIL_SEED:-}" == "$SEED" ]]; then exit 3; fi
echo "artifact of seed $SEED" > final_model.int6.ptz
"""


@pytest.fixture
def seeds_repo(tmp_path):
    """A directory with scripts/run_seeds.sh and a fake torchrun first on PATH."""
    (tmp_path / "scripts").mkdir()
    for name in ("run_seeds.sh", "pack.py"):
        shutil.copy(REPO / "scripts" / name, tmp_path / "scripts" / name)
    (tmp_path / "train_gpt.py").write_text('"""A stand-in."""\nprint("trained")\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text(FAKE_TORCHRUN)
    (bin_dir / "torchrun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("SEEDS", "NPROC", "RUN_PREFIX", "EVAL_ARTIFACT", "SEED", "RUN_ID",
                                                             "CONFIG", "MODEL_DIM", "XSA_LAST_N", "PACK")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # python: this interpreter
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return tmp_path, env


def run_seeds(repo, env, **extra):
    return subprocess.run(["bash", str(repo / "scripts" / "run_seeds.sh")], cwd=repo / "bin", env=dict(env, **extra),
                          capture_output=True, text=True, timeout=60)


def test_run_seeds_runs_each_seed_and_keeps_each_artifact(seeds_repo):
    repo, env = seeds_repo
    result = run_seeds(repo, env)
    assert result.returncode == 0, result.stderr
    calls = (repo / "calls.txt").read_text().splitlines()
    assert calls == [f"--standalone --nproc_per_node=8 logs/record.train_gpt.py SEED={s} RUN_ID=record_seed{s}" for s in SEEDS]
    for seed in SEEDS:
        assert (repo / "logs" / f"record_seed{seed}.txt").read_text() == f"log of seed {seed}\n"
        assert (repo / "logs" / f"record_seed{seed}.int6.ptz").read_text() == f"artifact of seed {seed}\n"
    logs = " ".join(f"logs/record_seed{s}.txt" for s in SEEDS)
    assert f"python scripts/summarize_logs.py {logs} --record-val-loss 1.88731" in result.stdout
    # a second run keeps the finished seeds (log and artifact) and runs none again
    again = run_seeds(repo, env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("finished before") == 3 and f"summarize_logs.py {logs}" in again.stdout
    assert len((repo / "calls.txt").read_text().splitlines()) == 3


def test_run_seeds_overrides_and_stops_at_the_first_failure(seeds_repo):
    repo, env = seeds_repo
    result = run_seeds(repo, env, SEEDS="5 6 8", NPROC="2", RUN_PREFIX="try", FAIL_SEED="6")
    assert result.returncode == 3
    calls = (repo / "calls.txt").read_text().splitlines()
    assert calls == ["--standalone --nproc_per_node=2 logs/try.train_gpt.py SEED=5 RUN_ID=try_seed5",
                     "--standalone --nproc_per_node=2 logs/try.train_gpt.py SEED=6 RUN_ID=try_seed6"]
    assert sorted(p.name for p in (repo / "logs").iterdir()) == ["try.train_gpt.py", "try_seed5.int6.ptz", "try_seed5.txt",
                                                                  "try_seed6.txt"]
    assert "summarize_logs.py" not in result.stdout
    # run again: seed 5 is skipped, the failed seed's log is kept aside and the seed runs again
    retry = run_seeds(repo, env, SEEDS="5 6 8", NPROC="2", RUN_PREFIX="try")
    assert retry.returncode == 0, retry.stderr
    assert (repo / "calls.txt").read_text().splitlines()[2:] == [
        "--standalone --nproc_per_node=2 logs/try.train_gpt.py SEED=6 RUN_ID=try_seed6",
        "--standalone --nproc_per_node=2 logs/try.train_gpt.py SEED=8 RUN_ID=try_seed8"]
    names = sorted(p.name for p in (repo / "logs").iterdir() if p.name != "try.train_gpt.py")
    assert [n for n in names if not n.startswith("try_seed6.failed-")] == \
        [f"try_seed{s}.{ext}" for s in (5, 6, 8) for ext in ("int6.ptz", "txt")]
    [failed] = [n for n in names if n.startswith("try_seed6.failed-")]
    assert (repo / "logs" / failed).read_text() == "log of seed 6\n" and failed.endswith(".txt")


FAKE_TORCHRUN_ENV = FAKE_TORCHRUN.replace('echo "$* SEED=$SEED RUN_ID=$RUN_ID" >> calls.txt',
                                         'echo "$* SEED=$SEED RUN_ID=$RUN_ID MODEL_DIM=${MODEL_DIM:-} XSA_LAST_N=${XSA_LAST_N:-}" >> calls.txt')


def test_run_seeds_takes_a_configuration_file_the_environment_winning(seeds_repo):
    repo, env = seeds_repo
    (repo / "bin" / "torchrun").write_text(FAKE_TORCHRUN_ENV)
    config = repo / "mine.env"
    config.write_text("# a configuration\n\nMODEL_DIM=576\nXSA_LAST_N=11\n")
    result = run_seeds(repo, env, SEEDS="5", CONFIG=str(config), XSA_LAST_N="4")
    assert result.returncode == 0, result.stderr
    assert (repo / "calls.txt").read_text().splitlines() == [
        "--standalone --nproc_per_node=8 logs/mine.train_gpt.py SEED=5 RUN_ID=mine_seed5 MODEL_DIM=576 XSA_LAST_N=4"]
    config.write_text("MODEL_DIM 576\n")
    result = run_seeds(repo, env, SEEDS="6", CONFIG=str(config))
    assert result.returncode == 1 and result.stderr == f"error: {config}: not VAR=VALUE: MODEL_DIM 576\n"
    result = run_seeds(repo, env, SEEDS="6", CONFIG=str(repo / "missing.env"))
    assert result.returncode == 1 and "is not a file" in result.stderr
    assert len((repo / "calls.txt").read_text().splitlines()) == 1


def test_run_seeds_runs_the_packed_submission_and_refuses_a_changed_source_on_retry(seeds_repo):
    """Every seed runs logs/<RUN_PREFIX>.train_gpt.py, packed once from train_gpt.py (it unpacks to the minified
    source); once a seed has finished, a retry with another train_gpt.py stops rather than mix two codes; PACK=0
    runs train_gpt.py itself."""
    repo, env = seeds_repo
    result = run_seeds(repo, env, SEEDS="5", FAIL_SEED="6")
    assert result.returncode == 0, result.stderr
    packed = repo / "logs" / "record.train_gpt.py"
    assert f"=== packed train_gpt.py into logs/record.train_gpt.py ({packed.stat().st_size} bytes)" in result.stdout
    unpacked = {}
    exec(packed.read_text().replace("exec(UNPACKED_SOURCE)", ""), unpacked)
    assert "print(" in unpacked["UNPACKED_SOURCE"] and "A stand-in" not in unpacked["UNPACKED_SOURCE"]  # minified
    (repo / "train_gpt.py").write_text('print("changed")\n')
    retry = run_seeds(repo, env, SEEDS="5 6")
    assert retry.returncode == 1 and retry.stderr == ("error: train_gpt.py has changed since seeds of record finished from "
                                                      "logs/record.train_gpt.py: use another RUN_PREFIX\n")
    assert not (repo / "logs" / "record.train_gpt.py.new").exists() and len((repo / "calls.txt").read_text().splitlines()) == 1
    plain = run_seeds(repo, env, SEEDS="7", RUN_PREFIX="plain", PACK="0")
    assert plain.returncode == 0 and (repo / "calls.txt").read_text().splitlines()[-1].startswith(
        "--standalone --nproc_per_node=8 train_gpt.py SEED=7")
    assert run_seeds(repo, env, PACK="2").stderr == "error: PACK must be 0 or 1, got '2'\n"
    other = run_seeds(repo, env, SEEDS="9", RUN_PREFIX="v", VOCAB_SIZE="8192")  # val_loss is per token of a tokenizer
    assert other.returncode == 0 and "--record-val-loss RECORD_VAL_LOSS --record-vocab 8192" in other.stdout


def test_run_seeds_rejects_bad_seed_lists(seeds_repo):
    repo, env = seeds_repo
    for seeds, message in (("1 1", "twice"), ("1 x", "integers"), ("", "empty")):
        result = run_seeds(repo, env, SEEDS=seeds)
        assert result.returncode != 0 and message in result.stderr, (seeds, result.stderr)
    assert not (repo / "calls.txt").exists()


def test_refuses_a_log_without_its_size_line(published_logs, tmp_path, capsys):
    """Without 'Total submission size' the 16,000,000-byte check cannot be made: refused, not a
    bytes_total of null."""
    text = published_logs[1].read_text()
    cut = tmp_path / "cut.log"
    cut.write_text("\n".join(line for line in text.split("\n") if not line.startswith("Total submission size")))
    line = refused_and_nothing_written(capsys, tmp_path, [published_logs[0], cut, published_logs[2]])
    assert f"refused: {cut}: no 'Total submission size int6+zstd: N bytes' line" in line


def test_windows_line_endings_and_trailing_blanks_read_the_same(published_logs, tmp_path, capsys):
    copies = []
    for path in published_logs:
        copy = tmp_path / path.name
        copy.write_bytes(path.read_text().replace("\n", "  \r\n").encode())
        copies.append(copy)
    assert S.main([str(p) for p in published_logs]) == 0
    plain = capsys.readouterr().out
    assert S.main([str(p) for p in copies]) == 0
    assert capsys.readouterr().out == plain


def test_refuses_a_log_with_two_scores(published_logs, tmp_path, capsys):
    text = published_logs[0].read_text()
    twice = tmp_path / "twice.log"
    twice.write_text(text + "final_ttt_exact val_loss:1.99 val_bpb:1.17\n")
    lines = refused(capsys, [twice])
    assert len(lines) == 1 and "a second final_ttt_exact line" in lines[0]


# ----------------------------------------------------------------------------- the SP8192 record's layout

# Figures in the shape of the SP8192 record's logs (1.0810 bpb, 2026-04-09), made up per seed: the layout
# is what is tested, not that record's published values
SP8192 = {
    1337: dict(steps=4555, stop_ms=588123, post=(2.80812345, 1.08771234), roundtrip=(2.83000000, 1.09620000),
               sliding=(2.79600000, 1.08270000), ttt=(2.79100000, 1.08079000), ttt_ms=340000, model=15976106),
    42: dict(steps=4561, stop_ms=588402, post=(2.80901234, 1.08805678), roundtrip=(2.83112345, 1.09663456),
             sliding=(2.79701234, 1.08309012), ttt=(2.79198765, 1.08117234), ttt_ms=341200, model=15981230),
    7: dict(steps=4549, stop_ms=587990, post=(2.80755555, 1.08749012), roundtrip=(2.82950000, 1.09600123),
            sliding=(2.79544444, 1.08248765), ttt=(2.79050000, 1.08059876), ttt_ms=339500, model=15970002),
}
SP8192_CODE_BYTES = 16594
SP8192_SETTINGS = dict(adam_eps=1e-08, matrix_lr=0.022, num_layers=11, ttt_enabled=True, vocab_size=8192,
                       train_seq_len=2048)
SP8192_TRAIN_STEPS = [1, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500]


def sp8192_log(seed, finished=True, stop=True, code_bytes=SP8192_CODE_BYTES, drop=(), **settings) -> str:
    """A log in the layout of the SP8192 record and later ones (no source, a Hyperparameters: block of
    `  key: value` lines, `key: value` tokens, train_time in minutes) with SP8192's figures for this seed;
    settings replace or add hyperparameters, drop removes them."""
    r = SP8192[seed]
    hp = {k: v for k, v in dict(SP8192_SETTINGS, seed=seed, **settings).items() if k not in drop}
    avg = r["stop_ms"] / r["steps"]
    lines = ["Hyperparameters:", *(f"  {key}: {value}" for key, value in hp.items()), "train_shards: 128"]
    for step in SP8192_TRAIN_STEPS:
        loss = 2.6 + 6.4 / (1 + step / 40) + 0.001 * (seed % 10)
        lines.append(f"{step}/20000 train_loss: {loss:.4f} train_time: {step * avg / 60000:.1f}m tok/s: 7712345")
        if step == 2000:
            lines.append("layer_loop:enabled step:2017 frac:0.350 encoder:[0, 1, 2, 3, 4, 5, 3, 4] "
                         "decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]")
        if step == 4000:
            lines.append("4000/20000 val_loss: 2.8123 val_bpb: 1.0889")
    lines.append(f"{r['steps']}/20000 val_loss: 2.8031 val_bpb: 1.0853")
    if stop:
        lines.append(f"stopping_early: wallclock_cap train_time: {r['stop_ms']}ms step: {r['steps']}/20000")
    lines += ["peak memory allocated: 39012 MiB reserved: 40000 MiB",
              f"pre-quantization post-ema val_loss:{r['post'][0]:.8f} val_bpb:{r['post'][1]:.8f} eval_time:6123ms",
              f"Serialized model quantized+brotli: {r['model']} bytes", f"Code size: {code_bytes} bytes",
              f"Total submission size quantized+brotli: {r['model'] + code_bytes} bytes"]
    for name, key, ms in (("quantized", "roundtrip", 7000), ("quantized_sliding_window", "sliding", 100000),
                          ("quantized_ttt", "ttt", r["ttt_ms"])):
        if key != "ttt" or finished:
            lines.append(f"{name} val_loss:{r[key][0]:.8f} val_bpb:{r[key][1]:.8f} eval_time:{ms}ms")
    return "\n".join(lines) + "\n"


@pytest.fixture
def sp8192_logs(tmp_path) -> list[Path]:
    return write_seed_logs(tmp_path, sp8192_log, "sp8192_seed{seed}.log")


def sp8192_curves(text: str):
    """(train, val) read from an SP8192-layout log's text; a validation's time is that of the training line of
    its step, or the stop line's."""
    train = [(int(a), float(b), float(c) * 60000) for a, b, c in
             re.findall(r"^(\d+)/\d+ train_loss: ([\d.]+) train_time: ([\d.]+)m", text, re.M)]
    times = {s: t for s, _, t in train} | {int(b): float(a) for a, b in
                                            re.findall(r"^stopping_early: \S+ train_time: (\d+)ms step: (\d+)/", text, re.M)}
    val = [(int(a), float(b), float(c), times.get(int(a))) for a, b, c in
           re.findall(r"^(\d+)/\d+ val_loss: ([\d.]+) val_bpb: ([\d.]+)$", text, re.M)]
    return train, val


def test_sp8192_log_is_read(sp8192_logs):
    text = sp8192_logs[0].read_text()
    assert "=" * 100 not in text and "hyperparameters:" not in text
    log = S.parse_log(sp8192_logs[0])
    r = SP8192[1337]
    assert (log["layout"], log["code"], log["hp_source"], log["seed"], log["vocab"]) == ("record-sp8192", None, "block", 1337, 8192)
    assert log["hyperparameters"] == dict(SP8192_SETTINGS, seed=1337)  # the block only: not train_shards, layer_loop
    assert (log["ttt_enabled"], log["ttt_source"]) == (True, "settings")
    assert (log["steps"], log["iterations"], log["stopped_early"]) == (4555, 20000, True)
    assert log["step_avg_ms"] == pytest.approx(588123 / 4555)  # the stop line's train_time over its step
    assert (log["post_kind"], log["post_val_loss"], log["post_val_bpb"]) == ("ema", *r["post"])
    for key in ("roundtrip", "sliding", "ttt"):
        assert (log[f"{key}_val_loss"], log[f"{key}_val_bpb"]) == r[key], key
    assert log["ttt_time_s"] == pytest.approx(340.0)
    assert (log["model_bytes"], log["total_bytes"], log["code_bytes"]) == (15976106, 15976106 + 16594, 16594)
    assert (log["errors"], log["nonfinite"], log["eval_artifact"]) == ([], [], None)
    train, val = sp8192_curves(text)
    assert [s for s, *_ in log["train_curve"]] == SP8192_TRAIN_STEPS
    assert log["train_curve"] == [(s, v, pytest.approx(t)) for s, v, t in train]
    assert [(s, loss, bpb) for s, loss, bpb, _ in log["val_curve"]] == [(4000, 2.8123, 1.0889), (4555, 2.8031, 1.0853)]
    assert [t for *_, t in log["val_curve"]] == pytest.approx([t for *_, t in val])
    assert log["val_curve"][1][3] == 588123 and log["val_curve"][0][3] == pytest.approx(train[8][2])


def test_sp8192_logs_summarise_to_their_own_means(sp8192_logs, tmp_path, capsys):
    target = tmp_path / "submission.json"
    argv = [str(p) for p in sp8192_logs] + ["--submission", str(target), "--author", "A", "--github-id", "a", "--name", "n"]
    assert S.main(argv) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["seed"] == ["steps", "step_avg (ms)", "post-EMA bpb", "quantized roundtrip bpb", "sliding bpb", "TTT bpb",
                            "TTT time (s)", "model bytes", "total bytes"]
    assert rows["1337"] == ["4555", f"{588123 / 4555:.2f}", "1.0877", "1.09620", "1.08270", "1.08079", "340.0",
                            "15976106", "15992700"]
    ttt_bpbs = [SP8192[s]["ttt"][1] for s in SEEDS]
    totals = [SP8192[s]["model"] + SP8192_CODE_BYTES for s in SEEDS]
    assert rows["mean"][5] == f"{statistics.mean(ttt_bpbs):.5f}" and rows["std"][5] == f"{statistics.stdev(ttt_bpbs):.5f}"
    assert rows["mean"][8] == f"{statistics.mean(totals):.0f}"
    assert "\nlayout: record-sp8192\n" in out
    mean_loss = statistics.mean(SP8192[s]["ttt"][0] for s in SEEDS)
    assert re.search(rf"^mean val_loss {mean_loss:.8f} nats .* mean val_bpb {statistics.mean(ttt_bpbs):.8f} .*from quantized_ttt$",
                     out, re.M)
    [checks] = [line for line in out.splitlines() if line.startswith("checks not made: ")]
    assert "source not logged (sp8192_seed1337.log, sp8192_seed42.log, sp8192_seed7.log) — same code checked only " \
           "by the 'Code size: N bytes' line" in checks
    assert "JSON" not in checks and "TTT on/off" not in checks and "vocabular" not in out
    data = json.loads(target.read_text())
    assert data["val_bpb"] == pytest.approx(statistics.mean(ttt_bpbs), abs=1e-8) and data["metric"] == "quantized_ttt"
    assert data["bytes_total"] == round(statistics.mean(totals)) and data["bytes_code"] == SP8192_CODE_BYTES
    assert data["seeds"] == SEEDS and data["val_loss_per_seed"] == [SP8192[s]["ttt"][0] for s in SEEDS]


def test_layouts_are_told_apart_by_their_lines_not_their_names(tmp_path, capsys):
    ours, theirs, old = tmp_path / "train_seed42.log", tmp_path / "record_seed42.txt", tmp_path / "sp8192.log"
    ours.write_text(record_log(42))
    theirs.write_text(sp8192_log(42))
    old.write_text(published_log(42))
    assert [S.parse_log(p)["layout"] for p in (ours, theirs, old)] == ["ours", "record-sp8192", "record-1.1178"]
    for path, layout in ((ours, "ours"), (theirs, "record-sp8192"), (old, "record-1.1178")):
        assert S.main([str(path)]) == 0
        assert f"\nlayout: {layout}\n" in capsys.readouterr().out
    blank = tmp_path / "blank_setting.log"
    blank.write_text(sp8192_log(42, adam_eps=""))  # "  adam_eps: " loses its trailing space: the block goes on
    assert "  adam_eps: \n" in blank.read_text()
    assert S.parse_log(blank)["hyperparameters"] == dict(SP8192_SETTINGS, adam_eps="", seed=42)
    empty = tmp_path / "empty_block.log"
    empty.write_text("Hyperparameters:\ntrain_shards: 128\n")
    with pytest.raises(S.LogError, match="empty 'Hyperparameters:' block"):
        S.parse_log(empty)


def test_sp8192_logs_of_other_code_settings_or_unfinished_are_refused(sp8192_logs, tmp_path, capsys):
    cases = {
        "code.log": (sp8192_log(42, code_bytes=16600), "code differs from that of {ref} (no source in the log; "
                                                        "Code size 16594 vs 16600 bytes)"),
        "lr.log": (sp8192_log(42, matrix_lr=0.03), "hyperparameters differ from those of {ref}: matrix_lr (0.022 vs 0.03)"),
        "extra.log": (sp8192_log(42, qk_gain=5.0), "hyperparameters differ from those of {ref}: qk_gain (\"<absent>\" vs 5.0)"),
        "unfinished.log": (sp8192_log(42, finished=False), "unfinished run: no quantized_ttt line"),
        "no_size.log": (re.sub(r"^Total submission size .*\n", "", sp8192_log(42), flags=re.M),
                        "no 'Total submission size quantized+brotli: N bytes' line"),
        "seed.log": (sp8192_log(42, matrix_lr=0.022).replace("  seed: 42", "  seed: 1337").replace("2.8031", "2.8032"),
                     "seed 1337 is also the seed of {ref}"),
    }
    for name, (text, reason) in cases.items():
        (tmp_path / name).write_text(text)
        lines = refused(capsys, [sp8192_logs[0], tmp_path / name])
        assert len(lines) == 1 and lines[0].startswith(f"refused: {tmp_path / name}: "), name
        assert reason.format(ref=sp8192_logs[0]) in lines[0], (name, lines[0])


def test_sp8192_logs_without_a_code_size_line_say_the_code_is_not_checked(sp8192_logs, tmp_path, capsys):
    cut = tmp_path / "no_code_size.log"
    cut.write_text(sp8192_log(42, code_bytes=99).replace("Code size: 99 bytes\n", ""))  # another code, unseen
    assert S.parse_log(cut)["code_bytes"] is None
    assert S.main([str(sp8192_logs[0]), str(cut)]) == 0
    assert ("source not logged (sp8192_seed1337.log, no_code_size.log) — same code checked only by the 'Code size: "
            "N bytes' line, not at all for no_code_size.log (no such line)") in capsys.readouterr().out


def test_sp8192_step_time_needs_the_stop_line_and_ttt_without_its_setting_comes_from_the_lines(tmp_path, capsys):
    path = tmp_path / "no_stop.log"
    path.write_text(sp8192_log(1337, stop=False))
    log = S.parse_log(path)
    assert (log["steps"], log["stopped_early"], log["step_avg_ms"]) == (4555, False, None)  # minutes are too coarse
    assert log["val_curve"][1][3] is None  # no training line at step 4555
    paths = [tmp_path / f"s{seed}.log" for seed in SEEDS]
    for seed, p in zip(SEEDS, paths):
        p.write_text(sp8192_log(seed, drop=("ttt_enabled",)))
    assert S.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert "TTT on/off not logged (s1337.log, s42.log, s7.log) — taken from the presence of final_ttt/ttt_chunk/quantized_ttt lines" in out
    assert table_rows(out)["mean"][5] == f"{statistics.mean(SP8192[s]['ttt'][1] for s in SEEDS):.5f}"
    for seed, p in zip(SEEDS, paths):  # TTT off by its setting: scored by the sliding window
        p.write_text(sp8192_log(seed, finished=False, ttt_enabled=False))
    assert S.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^mean val_loss .* from quantized_sliding_window \(TTT disabled\)$", out, re.M)
    assert table_rows(out)["mean"][4:6] == [f"{statistics.mean(SP8192[s]['sliding'][1] for s in SEEDS):.5f}", "n/a"]


# ----------------------------------------------------------------------------- logs of several layouts in one table

def test_our_logs_and_sp8192_logs_share_a_table(tmp_path, capsys):
    ours = write_seed_logs(tmp_path, lambda seed: record_log(seed, vocab_size=1024), "record_seed{seed}.txt")
    theirs = write_seed_logs(tmp_path, sp8192_log, "sp8192_seed{seed}.log")
    argv = [str(ours[0]), str(theirs[0]), str(ours[1]), str(theirs[1]), str(ours[2]), str(theirs[2])]
    assert S.main(argv) == 0
    out = capsys.readouterr().out
    table = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    assert table[0][:3] == ["seed", "layout", "steps"] and table[0][5] == "quantized roundtrip bpb"
    assert [row[:3] for row in table[2:8]] == [["1337", "ours", "7041"], ["1337", "record-sp8192", "4555"],
                                               ["42", "ours", "7025"], ["42", "record-sp8192", "4561"],
                                               ["7", "ours", "7035"], ["7", "record-sp8192", "4549"]]
    means = {(row[0], row[1]): row[2:] for row in table[8:]}
    assert sorted(means) == [("mean", "ours"), ("mean", "record-sp8192"), ("std", "ours"), ("std", "record-sp8192")]
    for layout, figures in (("ours", RECORD), ("record-sp8192", SP8192)):  # each layout's own mean and std
        bpbs = [figures[s]["ttt"][1] for s in SEEDS]
        assert means[("mean", layout)][5] == f"{statistics.mean(bpbs):.5f}", layout
        assert means[("std", layout)][5] == f"{statistics.stdev(bpbs):.5f}", layout
    assert means[("mean", "ours")][8] == "15752363"
    assert "\nlayouts: ours (record_seed1337.txt, record_seed42.txt, record_seed7.txt); record-sp8192 " \
           "(sp8192_seed1337.log, sp8192_seed42.log, sp8192_seed7.log)\n" in out
    assert re.search(r"^ours: mean val_loss 1\.88731000 nats .*from final_ttt_exact$", out, re.M)
    assert re.search(r"^record-sp8192: mean val_loss 2\.79\d+ nats .*from quantized_ttt$", out, re.M)
    [vocab] = [line for line in out.splitlines() if line.startswith("vocabularies differ")]
    assert vocab == ("vocabularies differ (vocab 1024: record_seed1337.txt, record_seed42.txt, record_seed7.txt; vocab 8192: "
                     "sp8192_seed1337.log, sp8192_seed42.log, sp8192_seed7.log): val_bpb (bits per byte of the same text) "
                     "is comparable across them, val_loss (nats per token of each tokenizer) is not")
    [checks] = [line for line in out.splitlines() if line.startswith("checks not made: ")]
    assert "logs of different layouts not checked against each other — code, hyperparameters, seeds and TTT on/off " \
           "checked within a layout only: ours (record_seed1337.txt" in checks
    assert "hyperparameters logged by both ours and record-sp8192 that differ (first log of each): matrix_lr (0.025 vs " \
           "0.022), vocab_size (1024 vs 8192)" in checks
    summary = S.summarize(argv)
    assert [g["layout"] for g in summary["groups"]] == ["ours", "record-sp8192"]
    assert summary["val_bpb"] is None and summary["groups"][1]["val_bpb"] == pytest.approx(
        statistics.mean(SP8192[s]["ttt"][1] for s in SEEDS))


def test_mixed_layouts_are_still_checked_within_each_layout(tmp_path, capsys):
    ours = [tmp_path / "a.txt", tmp_path / "b.txt"]
    ours[0].write_text(record_log(1337, vocab_size=1024))
    ours[1].write_text(record_log(42, vocab_size=1024, matrix_lr=0.03))
    theirs = [tmp_path / "c.log", tmp_path / "d.log"]
    theirs[0].write_text(sp8192_log(1337))
    theirs[1].write_text(sp8192_log(42, code_bytes=1))
    lines = refused(capsys, [ours[0], theirs[0], ours[1], theirs[1]])
    assert len(lines) == 2
    assert lines[0].startswith(f"refused: {ours[1]}: hyperparameters differ from those of {ours[0]}: matrix_lr")
    assert lines[1].startswith(f"refused: {theirs[1]}: code differs from that of {theirs[0]}")


def test_published_logs_and_sp8192_logs_say_the_vocabulary_is_not_logged(published_logs, sp8192_logs, capsys):
    assert S.main([str(published_logs[0]), str(sp8192_logs[0])]) == 0
    out = capsys.readouterr().out
    assert "vocabularies differ" not in out  # one of the two is not known
    assert "vocabulary not logged (train_seed1337.log) — whether val_loss is comparable across the table not checked" in out
    assert "hyperparameters logged by both record-1.1178 and record-sp8192 that differ (first log of each): matrix_lr " \
           "(0.025 vs 0.022)" in out


def test_mixed_logs_refuse_the_significance_test_and_the_submission(tmp_path, capsys):
    ours = write_seed_logs(tmp_path, lambda seed: record_log(seed, vocab_size=1024), "record_seed{seed}.txt")
    theirs = write_seed_logs(tmp_path, sp8192_log, "sp8192_seed{seed}.log")
    line = refused_and_nothing_written(capsys, tmp_path, [*ours, *theirs])
    assert line == (f"refused: {', '.join(map(str, [*ours, *theirs]))}: the significance test compares val_loss in nats "
                    "per token, which is not comparable between tokenizers, and these logs' vocabularies differ "
                    "(vocab 1024: record_seed1337.txt, record_seed42.txt, record_seed7.txt; vocab 8192: "
                    "sp8192_seed1337.log, sp8192_seed42.log, sp8192_seed7.log)")
    same_vocab = write_seed_logs(tmp_path, lambda seed: record_log(seed, vocab_size=8192), "v8192_seed{seed}.txt")
    line = refused_and_nothing_written(capsys, tmp_path, [*same_vocab, *theirs])
    assert line.endswith("the significance test is over the seeds of one run, and these logs are of 2 layouts "
                         "(ours, record-sp8192)")
    target = tmp_path / "submission.json"
    lines = refused(capsys, [*same_vocab, *theirs, "--submission", target, "--author", "A", "--github-id", "a", "--name", "n"])
    assert lines == [f"refused: {target}: a submission is the seeds of one run, and these logs are of 2 layouts "
                     "(ours, record-sp8192)"]
    assert not target.exists()


# ----------------------------------------------------------------------------- significance and the vocabulary

def test_the_significance_test_states_its_vocabulary_and_record_vocab_checks_it(sp8192_logs, published_logs, capsys):
    record = 2.80
    assert S.main([str(p) for p in sp8192_logs] + ["--record-val-loss", str(record)]) == 0
    out = capsys.readouterr().out
    assert (f"significance vs record val_loss {record} (val_loss in nats per token of vocab 8192; the record's val_loss "
            "must be of the same tokenizer (--record-vocab checks it)): one-sided one-sample t-test") in out
    losses = [SP8192[s]["ttt"][0] for s in SEEDS]
    t = (record - statistics.mean(losses) - 0.005) / (statistics.stdev(losses) / math.sqrt(3))
    m = re.search(r"^mean improvement [-\d.]+ nats, t=([-\d.]+), df=2, p=([\d.e-]+)$", out, re.M)
    assert float(m[1]) == pytest.approx(t, abs=1e-4) and float(m[2]) == pytest.approx(t_sf_df2(t), rel=1e-3)
    assert S.main([str(p) for p in sp8192_logs] + ["--record-val-loss", str(record), "--record-vocab", "8192"]) == 0
    assert "(val_loss in nats per token of vocab 8192, as the record's (--record-vocab)): " in capsys.readouterr().out
    lines = refused(capsys, [*sp8192_logs, "--record-val-loss", "1.88731", "--record-vocab", "1024"])
    assert len(lines) == 1 and lines[0].endswith("--record-vocab 1024: the record's val_loss is in nats per token of "
                                                 "another tokenizer than these logs' (vocab 8192), not comparable")
    # the 1.1178 record's logs do not log their vocabulary: said, and --record-vocab cannot check it
    assert S.main([str(p) for p in published_logs] + ["--record-val-loss", "1.90", "--record-vocab", "1024"]) == 0
    assert ("(val_loss in nats per token of the logs' tokenizer (vocabulary not logged in train_seed1337.log, "
            "train_seed42.log, train_seed7.log); taken to be the record's, vocab 1024 (--record-vocab), which cannot "
            "be checked): ") in capsys.readouterr().out
    for bad in ("0", "x", "-8"):
        with pytest.raises(SystemExit) as e:
            S.main([str(sp8192_logs[0]), "--record-vocab", bad])
        assert e.value.code == 2 and "positive integer" in capsys.readouterr().err


# ----------------------------------------------------------------------------- non-finite values in any line

@pytest.mark.parametrize("make_log, old, new", [
    (record_log, "final_int6_roundtrip val_loss:1.9324 val_bpb:1.1445 eval_time:5900ms",
     "final_int6_roundtrip val_loss:nan val_bpb:nan eval_time:100ms"),
    (record_log, "ttt:chunk 10/1893 running_val_bpb:1.1604 elapsed:2.4s", "ttt:chunk 10/1893 running_val_bpb:nan elapsed:2.1s"),
    (record_log, "final_ttt val_loss:1.8882 val_bpb:1.1183 eval_time:404000ms", "final_ttt val_loss:1.8882 val_bpb:inf eval_time:404000ms"),
    (record_log, "swa:start step:6350", "swa:start step:6350 loss:-Infinity"),
    (published_log, "ttt_chunk [1/1893] bpb:1.1621", "ttt_chunk [1/1893] bpb:NaN"),
    (sp8192_log, "4000/20000 val_loss: 2.8123", "4000/20000 val_loss: nan"),
    (sp8192_log, "500/20000 train_loss: ", "500/20000 tok/s: inf train_loss: "),
    (sp8192_log, "quantized val_loss:2.83112345", "quantized val_loss:nan"),
    (sp8192_log, "peak memory allocated: 39012 MiB", "peak memory allocated: nan MiB"),
])
def test_refuses_a_non_finite_value_in_any_line_with_figures(tmp_path, capsys, make_log, old, new):
    text = make_log(42)
    assert old in text, old
    bad = tmp_path / "bad.log"
    bad.write_text(text.replace(old, new))
    number = text.split("\n").index(next(line for line in text.split("\n") if old in line)) + 1
    lines = refused(capsys, [bad])
    assert len(lines) == 1
    assert lines[0].startswith(f"refused: {bad}: non-finite value (nan/inf) in line {number}: '{new.split(':')[0]}"), lines[0]


def test_non_finite_settings_and_words_are_not_figures(tmp_path, capsys):
    json_line = re.search(r"^hyperparameters: .*$", record_log(42), re.M)[0]
    ours = record_log(42).replace(json_line, json_line[:-1] + ', "grad_clip_norm": Infinity}')
    ours = ours.replace("swa:start step:6350", "note: information only\nswa:start step:6350")
    theirs = sp8192_log(42, grad_clip_norm="inf")
    for name, text in (("ours.txt", ours), ("theirs.log", theirs)):
        (tmp_path / name).write_text(text)
        log = S.parse_log(tmp_path / name)
        assert log["nonfinite"] == [] and math.isinf(float(log["hyperparameters"]["grad_clip_norm"])), name
        assert S.main([str(tmp_path / name)]) == 0
        capsys.readouterr()


# ----------------------------------------------------------------------------- evaluation-only runs

def eval_only_log(seed) -> str:
    """record_log's lines as an evaluation-only run of train_gpt.py logs them: no training, an eval_artifact line."""
    kept = [line for line in record_log(seed).split("\n")
            if not re.match(r"(step:|stopping_early|swa:|late_qat|peak memory|DIAGNOSTIC|Serialized model:|Code size)", line)]
    at = kept.index(next(line for line in kept if line.startswith("val_tokens:")))
    return "\n".join(kept[:at + 1] + ["eval_artifact:final_model.int6.ptz"] + kept[at + 1:])


def test_refuses_an_evaluation_only_log_as_a_seed(record_logs, tmp_path, capsys):
    bad = tmp_path / "eval_only.txt"
    bad.write_text(eval_only_log(42))
    assert S.parse_log(bad)["ttt_val_bpb"] == RECORD[42]["ttt"][1]  # scored, but trained nothing
    for argv in ([bad], [record_logs[0], bad]):
        lines = refused(capsys, argv)
        assert lines == [f"refused: {bad}: an evaluation-only run, not a training run (eval_artifact:final_model.int6.ptz)"]
    no_steps = tmp_path / "no_steps.txt"
    no_steps.write_text(eval_only_log(42).replace("eval_artifact:final_model.int6.ptz\n", ""))
    assert refused(capsys, [no_steps]) == [f"refused: {no_steps}: no training lines (step lines): not a training run"]


def test_a_real_evaluation_only_log_is_refused(tiny_env, monkeypatch, tmp_path, capsys):
    import train_gpt as tg
    args = tg.Hyperparameters()
    artifact = tmp_path / "untrained.int6.ptz"
    artifact.write_bytes(tg.compress_artifact(tg.quantize_state_dict(tg.build_model(args).state_dict(),
                                                                     args.passthrough_max_numel)))
    monkeypatch.setenv("EVAL_ARTIFACT", str(artifact))
    monkeypatch.setenv("TTT_ENABLED", "0")  # speed: scored by the sliding window
    tg.main()
    path = tmp_path / "logs" / "tiny.txt"
    assert re.search(r"^final_int6_sliding_window_exact val_loss:[\d.]+ val_bpb:[\d.]+$", path.read_text(), re.M)
    assert refused(capsys, [path]) == [f"refused: {path}: an evaluation-only run, not a training run "
                                       f"(eval_artifact:{artifact})"]


# ----------------------------------------------------------------------------- --plot of every layout

def test_plot_draws_sp8192_logs_and_labels_the_layouts_when_mixed(record_logs, sp8192_logs):
    logs = S.summarize(sp8192_logs)["logs"]
    axes = S.plot_curves(logs).axes
    for seed, path in zip(SEEDS, sp8192_logs):
        train, val = sp8192_curves(path.read_text())
        timed = [(t, b) for _, _, b, t in val if t is not None]
        expected = [([s for s, _, _ in train], [v for _, v, _ in train]),
                    ([t / 1000 for _, _, t in train], [v for _, v, _ in train]),
                    ([s for s, *_ in val], [b for _, _, b, _ in val]),
                    ([t / 1000 for t, _ in timed], [b for _, b in timed])]
        for ax, (xs, ys) in zip(axes, expected):
            [line] = [line for line in ax.get_lines() if line.get_label() == f"seed {seed}"]
            assert list(line.get_xdata()) == pytest.approx(xs) and list(line.get_ydata()) == pytest.approx(ys)
        assert len(expected[3][0]) == 2 and len(expected[1][0]) == len(SP8192_TRAIN_STEPS)
    mixed = S.plot_curves([S.parse_log(record_logs[0]), S.parse_log(sp8192_logs[0])])
    labels = {line.get_label() for line in mixed.axes[0].get_lines() if not line.get_label().startswith("record")}
    assert labels == {"seed 1337 (ours)", "seed 1337 (record-sp8192)"}
