"""scripts/summarize_logs.py (the multi-seed summary, submission.json, the significance test against the
record) and scripts/run_seeds.sh (the seeds one after another).

The record-format logs are written here from the published figures of RECORD.md (seeds 1337, 42, 7); the
per-seed val_loss values are chosen consistent with the bpb (same nats/bits-per-byte ratio as seed 1337's
published lines) and with the record's 3-seed mean val_loss of 1.88731 nats.
"""
import json
import math
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, load_tool

S = load_tool("scripts/summarize_logs.py", "summarize_logs")

SEP = "=" * 100
FAKE_SOURCE = '"""A fake train_gpt.py."""\nimport torch\n\n\ndef main():\n    print("=" * 100)\n'
HP = {"data_path": "./data/datasets/fineweb10B_sp1024", "tokenizer_path": "./data/tokenizers/fineweb_1024_bpe.model",
      "run_id": "x", "seed": 0, "iterations": 20000, "max_wallclock_seconds": 600.0, "train_batch_tokens": 786432,
      "matrix_lr": 0.025, "ve_layers": [9, 10], "ttt_enabled": True, "ttt_lr": 0.002}

# RECORD.md's table; val_loss of the final evaluations at the ratio of seed 1337's published lines
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
    """A log of the record's format (SPEC §8) with RECORD's figures for this seed."""
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


@pytest.fixture
def record_logs(tmp_path) -> list[Path]:
    paths = []
    for seed in SEEDS:
        path = tmp_path / f"record_seed{seed}.txt"
        path.write_text(record_log(seed), encoding="utf-8")
        paths.append(path)
    return paths


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
    test = S.t_test([1.0, 1.0], 1.01)  # no spread: the sign of the excess decides
    assert test["significant"] and test["p"] == 0.0
    assert not S.t_test([1.0, 1.0], 1.004)["significant"]
    with pytest.raises(ValueError, match="2 seeds"):
        S.t_test([1.0], 1.9)


@pytest.mark.parametrize("t, df, p, tol", [
    (2.0, 2, 0.0917517, 1e-7), (3.747, 4, 0.01, 1e-4), (6.965, 2, 0.01, 1e-5), (2.015, 5, 0.05, 1e-4),
    (2.764, 10, 0.01, 1e-4), (1.0, 1, 0.25, 1e-12), (0.0, 7, 0.5, 1e-12), (-2.0, 2, 1 - 0.0917517, 1e-7),
])
def test_t_sf_known_values(t, df, p, tol):
    assert S.t_sf(t, df) == pytest.approx(p, abs=tol)


def test_t_sf_against_closed_forms():
    for t in [-30, -5, -1.5, -0.1, 0.3, 1, 2.5, 7, 50, 1e4]:
        assert S.t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert S.t_sf(t, 2) == pytest.approx(t_sf_df2(t), abs=1e-12)
        assert S.t_sf(t, 1e7) == pytest.approx(0.5 * math.erfc(t / math.sqrt(2)), abs=1e-6)  # normal limit
        assert S.t_sf(t, 3.5) + S.t_sf(-t, 3.5) == pytest.approx(1.0, abs=1e-12)
    assert S.t_sf(math.inf, 3) == 0.0 and S.t_sf(-math.inf, 3) == 1.0
    with pytest.raises(ValueError):
        S.t_sf(1.0, 0)


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

    summary = S.summarize([path])
    assert summary["logs"][0] == log
    assert summary["val_loss"] == log["ttt_val_loss"] and summary["val_bpb"] == log["ttt_val_bpb"]
    # a second "seed" of the same code and configuration is accepted; another configuration is not
    other = tmp_path / "logs" / "tiny_seed42.txt"
    other.write_text(text.replace('"run_id": "tiny", "seed": 1337', '"run_id": "tiny_seed42", "seed": 42'))
    assert '"seed": 42' in other.read_text()
    assert S.main([str(path), str(other), "--record-val-loss", "9.0"]) == 0
    out = capsys.readouterr().out
    assert table_rows(out)["std"][5] == "0.00000" and "significant: improvement" in out
    changed = tmp_path / "logs" / "tiny_lr.txt"
    changed.write_text(other.read_text().replace('"matrix_lr": ', '"matrix_lr": 1'))
    lines = refused(capsys, [path, changed])
    assert len(lines) == 1 and str(changed) in lines[0] and "matrix_lr" in lines[0]


# ----------------------------------------------------------------------------- scripts/run_seeds.sh

FAKE_TORCHRUN = """#!/usr/bin/env bash
# records its arguments and environment, writes a log and an artifact like train_gpt.py
set -eu
echo "$* SEED=$SEED RUN_ID=$RUN_ID" >> calls.txt
if [[ "${FAIL_SEED:-}" == "$SEED" ]]; then exit 3; fi
mkdir -p logs
echo "log of seed $SEED" > "logs/$RUN_ID.txt"
echo "artifact of seed $SEED" > final_model.int6.ptz
"""


@pytest.fixture
def seeds_repo(tmp_path):
    """A directory with scripts/run_seeds.sh and a fake torchrun first on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "run_seeds.sh", tmp_path / "scripts" / "run_seeds.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text(FAKE_TORCHRUN)
    (bin_dir / "torchrun").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("SEEDS", "NPROC", "RUN_PREFIX", "EVAL_ARTIFACT", "SEED", "RUN_ID")}
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
    assert calls == [f"--standalone --nproc_per_node=8 train_gpt.py SEED={s} RUN_ID=record_seed{s}" for s in SEEDS]
    for seed in SEEDS:
        assert (repo / "logs" / f"record_seed{seed}.txt").read_text() == f"log of seed {seed}\n"
        assert (repo / "logs" / f"record_seed{seed}.int6.ptz").read_text() == f"artifact of seed {seed}\n"
    logs = " ".join(f"logs/record_seed{s}.txt" for s in SEEDS)
    assert f"python scripts/summarize_logs.py {logs} --record-val-loss 1.88731" in result.stdout
    # a second run would overwrite the logs: refused before anything runs
    again = run_seeds(repo, env)
    assert again.returncode != 0 and "record_seed1337.txt exists" in again.stderr
    assert len((repo / "calls.txt").read_text().splitlines()) == 3


def test_run_seeds_overrides_and_stops_at_the_first_failure(seeds_repo):
    repo, env = seeds_repo
    result = run_seeds(repo, env, SEEDS="5 6 8", NPROC="2", RUN_PREFIX="try", FAIL_SEED="6")
    assert result.returncode == 3
    calls = (repo / "calls.txt").read_text().splitlines()
    assert calls == ["--standalone --nproc_per_node=2 train_gpt.py SEED=5 RUN_ID=try_seed5",
                     "--standalone --nproc_per_node=2 train_gpt.py SEED=6 RUN_ID=try_seed6"]
    assert sorted(p.name for p in (repo / "logs").iterdir()) == ["try_seed5.int6.ptz", "try_seed5.txt"]
    assert "summarize_logs.py" not in result.stdout


def test_run_seeds_rejects_bad_seed_lists(seeds_repo):
    repo, env = seeds_repo
    for seeds, message in (("1 1", "twice"), ("1 x", "integers"), ("", "empty")):
        result = run_seeds(repo, env, SEEDS=seeds)
        assert result.returncode != 0 and message in result.stderr, (seeds, result.stderr)
    assert not (repo / "calls.txt").exists()
