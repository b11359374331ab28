"""The CPU proxy benchmark: the corpus builder (deterministic, held out by whole file, the challenge's
shard format) and the runner (arms x seeds, a table whose figures are the logs', resuming a study
without rerunning finished runs, refusing a finished run of other settings)."""
import json
import math
import re
import sys

import pytest

import train_gpt as tg
from conftest import REPO, clean_environ, load_tool, run_script

make_proxy = load_tool("data/make_proxy.py", "make_proxy")
proxy = load_tool("scripts/proxy.py", "proxy")
summarize_logs = load_tool("scripts/summarize_logs.py", "summarize_logs_for_proxy")

SMALL = dict(max_chars=400_000, min_train=50_000, min_val=2_000)


def test_the_corpus_is_deterministic_and_held_out_by_whole_file(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    counts = make_proxy.build_proxy(first, **SMALL)
    assert make_proxy.build_proxy(second, **SMALL) == counts
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert names[-1] == "proxy_1024_bpe.model" and "fineweb_val_000000.bin" in names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    train = tg.list_shards(first, "train")
    assert sum(tg.shard_token_count(f) for f in train) == counts["train_tokens"] >= SMALL["min_train"]
    assert tg.shard_token_count(first / "fineweb_val_000000.bin") == counts["val_tokens"] >= SMALL["min_val"]
    sp = tg.load_tokenizer(first / "proxy_1024_bpe.model", 1024)
    assert sp.vocab_size() == 1024 and 1.0 < counts["bytes_per_token"] < 6.0
    files = make_proxy.collect_files(SMALL["max_chars"])
    train_docs, val_docs = make_proxy.split_corpus(files)
    assert counts["val_docs"] == len(val_docs) and counts["train_docs"] == len(train_docs)
    # every file's documents are all held out or all trained on, and together they are the file's text
    val_files, train_files = {i for i, _ in val_docs}, {i for i, _ in train_docs}
    assert not val_files & train_files and len(val_files) == max(1, len(files) // make_proxy.VAL_EVERY)
    for i, (_, text) in enumerate(files):
        docs = [d for j, d in train_docs + val_docs if j == i]
        assert sorted(docs) == sorted(make_proxy.split_documents(text))
    assert all(len(d) <= make_proxy.MAX_DOC_CHARS for _, d in train_docs + val_docs)
    assert any("def " in d for _, d in train_docs) and any("#" in d for _, d in train_docs)  # code and comments


def adjacent_same(labels: list) -> int:
    return sum(a == b for a, b in zip(labels, labels[1:]))


def test_the_documents_are_shuffled_and_their_order_depends_on_the_seed_alone():
    """Documents of one package are not adjacent beyond chance: in a random order the expected number of
    neighbours from the same package is sum n_p (n_p - 1) / N; in file order nearly every one is."""
    files = make_proxy.collect_files(3_000_000)
    for docs in make_proxy.split_corpus(files):
        packages = [files[i][0] for i, _ in docs]
        n = len(packages)
        expected = sum(packages.count(p) * (packages.count(p) - 1) for p in set(packages)) / n
        in_file_order = adjacent_same(sorted(packages, key=packages.index))
        assert in_file_order > 0.9 * (n - len(set(packages)))
        assert adjacent_same(packages) <= expected + 4 * expected ** 0.5 + 3, (adjacent_same(packages), expected)
    again, other = make_proxy.split_corpus(files), make_proxy.split_corpus(files, seed=1)
    assert again == make_proxy.split_corpus(files) and other != again


def test_documents_are_whole_paragraphs_of_bounded_length():
    text = "\n\n".join(f"paragraph {i}\n" + "x" * 50 for i in range(200)) + "\n\n" + "y" * 130 + "\n" + "z" * 10
    docs = make_proxy.split_documents(text, max_chars=300)
    assert all(len(d) <= 300 for d in docs) and "".join(docs).replace("\n", "") == text.replace("\n", "")
    assert all(d.startswith("paragraph ") for d in docs[:-1])  # cut at blank lines only
    assert make_proxy.split_documents("a" * 700, max_chars=300) == ["a" * 300, "a" * 300, "a" * 100]


def test_too_small_a_corpus_is_one_line(tmp_path):
    result = run_script([sys.executable, str(REPO / "data" / "make_proxy.py"), "--out", str(tmp_path / "p"),
                         "--max-chars", "100000"], clean_environ(), tmp_path)
    assert result.returncode == 1
    assert re.fullmatch(r"make_proxy: error: [\d,]+ train and [\d,]+ validation tokens, fewer than the 5,000,000 "
                        r"and 250,000 the proxy needs\n", result.stderr)
    assert not (tmp_path / "p" / "proxy_1024_bpe.model").exists()


def test_paired_difference_interval_is_the_t_interval():
    d = proxy.paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) x sd 1 / sqrt(3)
    assert d["mean"] == 2.0 and d["low"] == pytest.approx(2 - half) and d["high"] == pytest.approx(2 + half)
    single = proxy.paired([0.5], [0.25])
    assert single["mean"] == 0.25 and single["low"] is None


@pytest.mark.parametrize("text,problem", [("base", "expected NAME:"), ("a b:X=1", "expected NAME:"),
                                          ("swa:weight_avg=swa", "is not VAR=VALUE"), ("x:SEED", "is not VAR=VALUE")])
def test_bad_arms_are_refused(text, problem):
    with pytest.raises(proxy.ProxyError, match=problem):
        proxy.parse_arm(text)
    assert proxy.parse_arm("swa:WEIGHT_AVG=swa,SWA_EVERY=2") == ("swa", {"WEIGHT_AVG": "swa", "SWA_EVERY": "2"})
    assert proxy.parse_arm("base:") == ("base", {})
    assert proxy.parse_arm("r:RECUR_LAYERS=4,5,RECUR_STEP=69") == ("r", {"RECUR_LAYERS": "4,5", "RECUR_STEP": "69"})


TABLE_ROW = re.compile(r"^\| (\S+) \| (\d+) \| (.+) \|$", re.M)


def table_rows(stdout: str) -> dict:
    return {m[1]: [c.strip() for c in m[3].split("|")] for m in TABLE_ROW.finditer(stdout) if m[1] != "arm"}


def test_quick_study_table_matches_its_logs_and_resumes(tmp_path):
    out = tmp_path / "proxy"
    script = [sys.executable, str(REPO / "scripts" / "proxy.py"), "--quick", "--nproc", "1", "--out", str(out)]
    result = run_script(script, clean_environ(), REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == ["base"]
    log = summarize_logs.parse_log(out / "base" / "seed1337" / "logs" / "run.txt")
    lines = (out / "base" / "seed1337" / "logs" / "run.txt").read_text().splitlines()
    assert any(re.fullmatch(r"val_tokens:8192 device:cpu attention:sdpa", line) for line in lines)  # VAL_TOKENS
    expected = [f"{log['post_val_bpb']:.4f}", f"{log['roundtrip_val_bpb']:.5f}",
                f"{log['roundtrip_val_bpb'] - log['post_val_bpb']:+.5f}", f"{log['sliding_val_bpb']:.5f}",
                f"{log['ttt_val_bpb']:.5f}", f"{log['ttt_val_bpb'] - log['sliding_val_bpb']:+.5f}", "24",
                f"{log['val_curve'][-1][3] / 1000:.1f}", f"{log['model_bytes']:,}", "—"]
    assert rows["base"] == expected
    results = json.loads((out / "results.json").read_text())
    assert results["runs"]["base"]["1337"]["ttt_val_bpb"] == log["ttt_val_bpb"]

    # the fixed-checkpoint comparison reproduces the run's own roundtrip, gap and artifact size, and
    # compares GPTQ with both calibrations at each bit width asked for
    result = run_script([sys.executable, str(REPO / "scripts" / "proxy.py"), "quant", "--quick", "--bits", "6,4",
                         "--int6-matrices", "32", "--checkpoint", str(out / "base" / "seed1337" / "final_model.pt")], clean_environ(), REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    unquantised = float(re.search(r"unquantised val_bpb ([\d.]+) on 8,192 targets; gptq \(train\) calibration [\d.]+ s, "
                                  r"gptq \(self\) calibration [\d.]+ s", result.stdout)[1])
    assert f"{unquantised:.4f}" == f"{log['post_val_bpb']:.4f}"
    rows = {(m[1], m[2]): m for m in re.finditer(r"^\| (\d) \| (clip|gptq \(train\)|gptq \(self\)|gptq \(train\), MSE choice|gptq \(train\), 32 matrices at the width, the rest 1 bit less) "
                                                   r"\| ([\d.]+) \| ([+-][\d.]+) \| ([\d,]+) \| [\d.]+ \|$", result.stdout, re.M)}
    mixed = "gptq (train), 32 matrices at the width, the rest 1 bit less"
    assert sorted(rows) == sorted((b, q) for b in "64" for q in ("clip", "gptq (train)", "gptq (self)", "gptq (train), MSE choice", mixed))
    # INT6_MATRICES=32 of the quick model's 44 int6 matrices: 12 narrowed, a smaller artifact, another gap
    full, narrow = rows[("6", "gptq (train)")], rows[("6", mixed)]
    assert int(narrow[5].replace(",", "")) < int(full[5].replace(",", "")) and narrow[4] != full[4]
    clip = rows[("6", "clip")]
    assert float(clip[3]) == pytest.approx(log["roundtrip_val_bpb"], abs=2e-8)
    assert float(clip[4]) == pytest.approx(log["roundtrip_val_bpb"] - unquantised, abs=2e-8)
    assert int(clip[5].replace(",", "")) == log["model_bytes"]
    assert float(rows[("4", "clip")][4]) > float(clip[4])  # fewer levels, a larger gap

    # a second arm: the finished base run is not run again; the paired difference is the logs'
    stamp = (out / "base" / "seed1337" / "logs" / "run.txt").stat().st_mtime_ns
    result = run_script(script + ["--arm", "base:", "--arm", "ema:EMA_DECAY=0.8"], clean_environ(), REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "proxy: base seed 1337 already finished" in result.stdout and "proxy: running ema seed 1337" in result.stdout
    assert (out / "base" / "seed1337" / "logs" / "run.txt").stat().st_mtime_ns == stamp
    rows = table_rows(result.stdout)
    other = summarize_logs.parse_log(out / "ema" / "seed1337" / "logs" / "run.txt")
    assert rows["ema"][-1] == f"{other['ttt_val_bpb'] - log['ttt_val_bpb']:+.5f}"

    # the same runs paired on another figure: the score without TTT
    result = run_script(script + ["--arm", "base:", "--arm", "ema:EMA_DECAY=0.8", "--paired", "sliding"],
                        clean_environ(), REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sliding bpb − base (95 % CI)" in result.stdout and "proxy: running" not in result.stdout
    assert table_rows(result.stdout)["ema"][-1] == f"{other['sliding_val_bpb'] - log['sliding_val_bpb']:+.5f}"

    # the same arm name with other settings is refused, not mixed in
    result = run_script(script + ["--arm", "base:EMA_DECAY=0.5"], clean_environ(), REPO, timeout=600)
    assert result.returncode == 1
    assert re.fullmatch(r"proxy: error: \S+seed1337 holds a run with other settings: remove it or give the arm "
                        r"another name\n", result.stderr)
