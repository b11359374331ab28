"""The CPU proxy benchmark: the corpus builder (deterministic, held out by whole file, the challenge's
shard format) and the runner (arms x seeds, a table whose figures are the logs', resuming a study
without rerunning finished runs, refusing a finished run of other settings, refusing bad arms and
seeds before any run, a failed run's own error line), its tiers, and its tools on fixed weights
(quant: quantisers and calibration sizes on checkpoints, and over several; subset: held-out subsets against the
whole set)."""
import argparse
import io
import json
import math
import re
import statistics
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats

import train_gpt as tg
from conftest import REPO, clean_environ, filled_model, load_tool, run_script, tiny_args, tiny_run_env

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


def test_an_arm_can_take_a_file_of_settings(tmp_path):
    """@FILE takes the file's VAR=VALUE lines (a whole configuration, e.g. scripts/proxy_sp8192.env); later items win;
    every arm file shipped is read by train_gpt's Hyperparameters on top of scripts/proxy.env."""
    (tmp_path / "mine.env").write_text("# settings\nMODEL_DIM=96\nRECUR_LAYERS=4,5\n")
    assert proxy.parse_arm(f"m:@{tmp_path / 'mine.env'},MODEL_DIM=64") == ("m", {"MODEL_DIM": "64", "RECUR_LAYERS": "4,5"})
    with pytest.raises(proxy.ProxyError, match=r"missing\.env is not a file"):
        proxy.parse_arm("m:@missing.env")
    name, overrides = proxy.parse_arm("sp8192:@scripts/proxy_sp8192.env")
    settings = proxy.run_settings(proxy.load_configuration(proxy.PROXY_ENV), overrides, 1)
    args = proxy.hyperparameters(settings, "sp8192")
    assert args.vocab_size == 8192 and args.loop_layers == (3, 4, 5) and settings["DATA_PATH"].endswith("data/proxy_sp8192")


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
    quant = [sys.executable, str(REPO / "scripts" / "proxy.py"), "quant", "--quick", "--checkpoint",
             str(out / "base" / "seed1337" / "final_model.pt")]
    row_pattern = r"^\| (\d) \| ([^|]+?) \| ([\d.]+) \| ([+-][\d.]+) \| ([\d,]+) \| ([\d.]+|—) \| [\d.]+ \|$"
    size = lambda row: int(row[5].replace(",", ""))  # noqa: E731
    result = run_script(quant + ["--bits", "6,4", "--int6-matrices", "32", "--fit", "2"], clean_environ(), REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    unquantised = float(re.search(r"unquantised val_bpb ([\d.]+) on 8,192 targets$", result.stdout, re.M)[1])
    assert f"{unquantised:.4f}" == f"{log['post_val_bpb']:.4f}" and "artifact bytes: zstd" in result.stdout
    rows = {(m[1], m[2]): m for m in re.finditer(row_pattern, result.stdout, re.M)}
    mixed = "gptq (train), 32 matrices at the width, the rest 1 bit less"
    assert sorted(rows) == sorted((b, q) for b in "64" for q in ("clip", "gptq (train)", "gptq (self)", "gptq (train), MSE choice",
                                                                  mixed, "clip, FIT to 2 % fewer bytes"))
    fitted, clipped = rows[("6", "clip, FIT to 2 % fewer bytes")], rows[("6", "clip")]
    assert size(fitted) <= 0.98 * size(clipped) and fitted[4] != clipped[4]  # fewer bytes, other weights (the gap's sign is measured, not assumed)
    # INT6_MATRICES=32 of the quick model's 44 int6 matrices: 12 narrowed, a smaller artifact, another gap
    full, narrow = rows[("6", "gptq (train)")], rows[("6", mixed)]
    assert int(narrow[5].replace(",", "")) < int(full[5].replace(",", "")) and narrow[4] != full[4]
    assert narrow[6] == full[6] != "—"  # the same calibration, its seconds on each row that uses it
    clip = rows[("6", "clip")]
    assert clip[6] == "—"
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


# ----------------------------------------------------------------------------- bad arms and seeds, refused before any run

def refusal(capsys, argv: list[str]) -> str:
    """The one line proxy.py prints on stderr when it refuses argv (exit 1)."""
    assert proxy.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("proxy: error: "), err
    return err.removeprefix("proxy: error: ").rstrip("\n")


@pytest.mark.parametrize("arms,message", [
    (["a:MATRIX_LR=abc"], "--arm a: MATRIX_LR='abc' is not valid: expected a finite number"),
    (["base:", "b:NUM_HEADS=3"], "--arm b: MODEL_DIM=128 must be a multiple of NUM_HEADS=3"),  # train_gpt's cross-checks too
    (["a:MATIX_LR=1e9"], "--arm a: MATIX_LR is not a hyperparameter of train_gpt.py (did you mean MATRIX_LR?)"),
    (["a:TOTALLY_UNKNOWN=1"], "--arm a: TOTALLY_UNKNOWN is not a hyperparameter of train_gpt.py"),
    (["a:OMP_NUM_THREADS=4"], "--arm a: OMP_NUM_THREADS is set by the runner (one thread per process with --nproc "
                              "above 1, the shell's value with --nproc 1)"),
    (["a:SEED=3"], "--arm a: SEED is set by the runner (the seeds are --seeds)"),
])
def test_bad_arms_are_refused_before_any_run(arms, message, tmp_path, capsys, clean_env):
    argv = [item for arm in arms for item in ("--arm", arm)] + ["--out", str(tmp_path / "out")]
    assert refusal(capsys, argv) == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seeds,problem", [("", "expected"), ("1337,,42", "expected"), ("1337,x", "expected"),
                                           ("-1", "expected"), ("7,42,7", "7 is given twice")])
def test_bad_seed_lists_are_refused(seeds, problem, tmp_path, capsys, clean_env):
    message = refusal(capsys, ["--seeds", seeds, "--out", str(tmp_path / "out")])
    assert message.startswith(f"--seeds {seeds!r}: {problem}") and message.endswith(
        "expected distinct integers >= 0 separated by commas")
    assert not (tmp_path / "out").exists()
    assert proxy.integer_list(" 1337, 42 ,7", "--seeds", 0) == [1337, 42, 7]


def test_a_configuration_file_holds_hyperparameters_only(tmp_path):
    (tmp_path / "c.env").write_text("# a comment\nMODEL_DIM=64\nMODLE_DIM=64\n")
    with pytest.raises(proxy.ProxyError, match=re.escape(f"{tmp_path / 'c.env'}: MODLE_DIM is not a hyperparameter "
                                                         "of train_gpt.py (did you mean MODEL_DIM?)")):
        proxy.load_configuration(tmp_path / "c.env")
    for path in (proxy.PROXY_ENV, proxy.QUICK_ENV, proxy.LONG_ENV):
        proxy.load_configuration(path)  # the shipped ones pass


# ----------------------------------------------------------------------------- a failed run's own error line

def test_a_failed_run_reports_its_own_error_line_not_torchruns(tiny_data, tmp_path, clean_env):
    """Under torchrun (2 processes) the last line of stderr is torchrun's row of '='; the message is
    rank 0's `error:` line, with the path of the run's output."""
    run_dir = tmp_path / "run"
    settings = proxy.run_settings({**tiny_run_env(tmp_path / "no_data"), "TOKENIZER_PATH": str(tiny_data / "sample_512_bpe.model")}, {}, 1)
    with pytest.raises(proxy.ProxyError) as refused:
        proxy.run_one(run_dir, settings, nproc=2)
    assert set((run_dir / "output.txt").read_text().rstrip().splitlines()[-1]) == {"="}  # what was printed before
    assert str(refused.value) == (f"the run in {run_dir} failed (exit 1): DATA_PATH {tmp_path / 'no_data'} is not a "
                                  "directory (download the data, or build the sample with: python data/make_sample.py); "
                                  f"its output: {run_dir / 'output.txt'}")


def test_the_error_of_a_run_is_its_error_line_else_its_log_else_its_traceback(tmp_path):
    log = tmp_path / "run.txt"
    torchrun_tail = ("torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n" + "=" * 60 + "\n"
                     "  error_file: <N/A>\n" + "=" * 60 + "\n")
    traceback = "Traceback (most recent call last):\n  File \"train_gpt.py\", line 1\ntorch.OutOfMemoryError: CUDA out of memory\n"
    assert proxy.run_error("error: VOCAB_SIZE must be > 0, got 0\n" + torchrun_tail, log) == "VOCAB_SIZE must be > 0, got 0"
    assert proxy.run_error(traceback + torchrun_tail, log) == "torch.OutOfMemoryError: CUDA out of memory"
    log.write_text("step:1/2 train_loss:6.9\nERROR: the first\nERROR: cannot write the log\n")
    assert proxy.run_error(traceback + torchrun_tail, log) == "cannot write the log"
    assert proxy.run_error(torchrun_tail, tmp_path / "none.txt") == "no error line"


# ----------------------------------------------------------------------------- tiers and --help

def test_the_long_tier_reads_its_own_file_and_keeps_its_runs_apart(tmp_path, monkeypatch, clean_env):
    """--long: scripts/proxy_long.env, runs under logs/proxy/long/ (logs/proxy redirected to tmp_path,
    each run replaced by a stand-in that records where and with what it would run)."""
    long, short = (proxy.load_configuration(path) for path in (proxy.LONG_ENV, proxy.PROXY_ENV))
    assert int(long["ITERATIONS"]) * int(long["TRAIN_BATCH_TOKENS"]) >= 3 * int(short["ITERATIONS"]) * int(short["TRAIN_BATCH_TOKENS"])
    assert int(long["TRAIN_SEQ_LEN"]) > int(short["TRAIN_SEQ_LEN"])  # longer: more tokens, more context
    for flags, tier in (([], (proxy.PROXY_ENV, proxy.OUT)), (["--quick"], (proxy.QUICK_ENV, proxy.OUT / "quick")),
                        (["--long"], (proxy.LONG_ENV, proxy.OUT / "long"))):
        assert proxy.tier(proxy.study_parser().parse_args(flags)) == tier
    read, runs = [], []
    monkeypatch.setattr(proxy, "OUT", tmp_path)
    config = {"ITERATIONS": "3", "DATA_PATH": "d"}
    monkeypatch.setattr(proxy, "read_env_file", lambda path: read.append(path) or config)
    monkeypatch.setattr(proxy, "ensure_data", lambda config, builder: None)
    figures = {key: 1.0 for key, _, _ in proxy.METRICS} | {"final_val_bpb": 1.0}
    monkeypatch.setattr(proxy, "run_one", lambda run_dir, settings, nproc: runs.append((run_dir, settings)) or figures)
    assert proxy.main(["--long", "--seeds", "5"]) == 0
    assert read == [proxy.LONG_ENV]
    assert runs == [(tmp_path / "long" / "base" / "seed5", proxy.run_settings(config, {}, 5))]
    assert (tmp_path / "long" / "results.json").is_file()


def test_help_says_what_a_verdict_is_worth(capsys):
    with pytest.raises(SystemExit) as done:
        proxy.main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "What a verdict is worth:" in out and "an interval\nthat contains 0 is noise" in out
    assert re.search(r"^Agreement with 8xH100 \(docs/proxy\.md, \"What a proxy verdict is worth\"\)", out, re.M)
    table = (REPO / "docs" / "proxy.md").read_text()
    pairs = (("-0.0093", "−0.00933"), ("-0.0096", "−0.00957"), ("-0.028", "−0.02838"), ("-0.47", "−0.47052"),
             ("-0.38", "−0.37749"), ("-0.014", "−0.01379"), ("-0.0004 [-0.0012, +0.0004]", "−0.00037 [−0.00116, +0.00043]"))
    for here, there in pairs:
        assert here in out and there in table  # the help's figures are the known-outcomes table's
    assert "proxy.py quant" in out and "proxy.py subset" in out


# ----------------------------------------------------------------------------- quant and subset on tiny weights

@pytest.fixture
def tiny_config(tiny_data, tmp_path, clean_env) -> Path:
    """The tiny configuration on tiny_data as a configuration file."""
    path = tmp_path / "tiny.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in tiny_run_env(tiny_data).items() if k != "RUN_ID"))
    return path


def tiny_weights(seed: int = 1) -> dict:
    return filled_model(tiny_args(), seed).state_dict()


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


NOT_A_CHECKPOINT = {
    "text": (lambda: b"step:1/2 train_loss:6.9\n", "is not a torch checkpoint"),
    "empty": (lambda: b"", "is empty"),
    "zstd artifact": (lambda: tg.compress_artifact(tg.quantize_state_dict(tiny_weights(), 256)),
                      "is a compressed artifact (zstd), not a final_model.pt (the unquantised weights a run writes beside its artifact)"),
    "brotli artifact": (lambda: tg.compress_artifact(tg.quantize_state_dict(tiny_weights(), 256), "brotli"),
                        "is a compressed artifact (brotli), not a final_model.pt (the unquantised weights a run writes beside its artifact)"),
    "truncated": (lambda: tg.serialize(tiny_weights())[:3000], "is not a torch checkpoint (a truncated or corrupt one)"),
    "python object": (lambda: pickled(argparse.Namespace(lr=1)), "refused: it holds a Python object (argparse.Namespace) "
                                                                  "that loading would create; a final_model.pt holds tensors only"),
    "a list": (lambda: pickled([torch.zeros(2)]), "is a torch file but not a model's state dict (tensors by name)"),
    "other shapes": (lambda: tg.serialize(tg.build_model(tiny_args(vocab_size=1024)).state_dict()),
                     "holds tensors of another configuration than {config}: tok_emb.weight is [1024, 32], the configuration expects [512, 32]"),
    "other names": (lambda: tg.serialize(tg.build_model(tiny_args(num_layers=5)).state_dict()),
                    "holds tensors of another configuration than {config}: blocks.4.attn.c_k.weight (and 9 more) is not in the configuration"),
}


@pytest.mark.parametrize("kind", NOT_A_CHECKPOINT)
def test_quant_says_in_one_line_what_a_checkpoint_that_does_not_fit_is(kind, tiny_config, tmp_path, capsys):
    contents, what = NOT_A_CHECKPOINT[kind]
    path = tmp_path / "final_model.pt"
    path.write_bytes(contents())
    message = refusal(capsys, ["quant", "--config", str(tiny_config), "--checkpoint", str(path)])
    assert message == f"{path} " + what.format(config=tiny_config)
    assert "weights_only" not in message


def quant_rows(stdout: str) -> dict:
    """(bits, quantiser) -> (roundtrip bpb, gap, artifact bytes, calibration s) of quant's table."""
    rows = re.findall(r"^\| (\d) \| ([^|]+) \| ([\d.]+) \| ([+-][\d.]+) \| ([\d,]+) \| ([\d.]+|—) \| [\d.]+ \|$", stdout, re.M)
    return {(bits, name): rest for bits, name, *rest in rows}


def test_quant_compares_numbers_of_calibration_sequences(tiny_config, tmp_path, capsys):
    """One GPTQ row per count, each with its calibration time; 512 sequences (the default GPTQ_SEQUENCES)
    give the usual comparison's gptq (train) row."""
    checkpoint = tmp_path / "final_model.pt"
    tg.atomic_write({checkpoint: tg.serialize(tiny_weights())})
    quant = ["quant", "--config", str(tiny_config), "--checkpoint", str(checkpoint)]
    assert proxy.main(quant + ["--calibration-sequences", "4,64,512"]) == 0
    rows = quant_rows(capsys.readouterr().out)
    counts = [f"gptq (train), {n} sequences" for n in (4, 64, 512)]
    assert list(rows) == [("6", name) for name in ["clip"] + counts]
    assert rows[("6", "clip")][3] == "—" and all(float(rows[("6", name)][3]) >= 0 for name in counts)
    assert rows[("6", counts[0])][:3] != rows[("6", counts[2])][:3]  # other Hessians, other levels
    assert proxy.main(quant) == 0
    usual = quant_rows(capsys.readouterr().out)
    assert list(usual) == [("6", name) for name in ("clip", "gptq (train)", "gptq (self)", "gptq (train), MSE choice")]
    assert usual[("6", "gptq (train)")][:3] == rows[("6", counts[2])][:3] and usual[("6", "clip")] == rows[("6", "clip")]
    for flags, message in ((["--calibration-sequences", "64,0"], "--calibration-sequences '64,0': 0 is out of range"),
                           (["--calibration-sequences", "64,64"], "--calibration-sequences '64,64': 64 is given twice"),
                           (["--calibration-sequences", ""], "--calibration-sequences '': expected distinct integers"),
                           (["--calibration-sequences", "64", "--int6-matrices", "8"], "--int6-matrices and --calibration-sequences")):
        assert refusal(capsys, quant + flags).startswith(message)


def test_quant_over_several_checkpoints_pairs_each_quantiser_with_clip_search(tiny_config, tmp_path, capsys):
    """One table per checkpoint, then each quantiser's gap and bytes over them and its roundtrip minus
    clip search's, checkpoint by checkpoint, with the t interval; the same checkpoint twice is refused."""
    paths = [tmp_path / f"seed{seed}.pt" for seed in (1, 2, 3)]
    tg.atomic_write({path: tg.serialize(tiny_weights(seed)) for seed, path in zip((1, 2, 3), paths)})
    quant = ["quant", "--config", str(tiny_config), "--calibration-sequences", "4,64", "--checkpoint"]
    assert proxy.main(quant + [str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    per_checkpoint = [quant_rows(block) for block in re.split(r"^checkpoint ", out, flags=re.M)[1:]]
    assert len(per_checkpoint) == 3 and per_checkpoint[0] != per_checkpoint[1]
    summary = out[out.index("over 3 checkpoints:"):]
    rows = dict(re.findall(r"^\| 6 \| ([^|]+) \| (.+) \|$", summary, re.M))
    assert list(rows) == ["clip", "gptq (train), 4 sequences", "gptq (train), 64 sequences"]
    for name in rows:
        gap, size, per, versus = rows[name].split(" | ")
        gaps = [float(table[("6", name)][1]) for table in per_checkpoint]
        sizes = [int(table[("6", name)][2].replace(",", "")) for table in per_checkpoint]
        assert float(gap.split(" ± ")[0]) == pytest.approx(statistics.fmean(gaps), abs=1e-5)
        assert int(size.split(" ± ")[0].replace(",", "")) == pytest.approx(statistics.fmean(sizes), abs=1)
        if name == "clip":
            assert per == versus == "—"
            continue
        diffs = [float(table[("6", name)][0]) - float(table[("6", "clip")][0]) for table in per_checkpoint]
        assert [float(d) for d in per.split(", ")] == pytest.approx(diffs, abs=1e-5)
        mean, low, high = map(float, re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]", versus).groups())
        half = stats.t.ppf(0.975, 2) * statistics.stdev(diffs) / math.sqrt(3)
        assert mean == pytest.approx(statistics.fmean(diffs), abs=1e-5) and high - low == pytest.approx(2 * half, abs=2e-5)
    assert refusal(capsys, quant + [str(paths[0]), str(paths[0])]) == "--checkpoint: a checkpoint is given twice"


def test_quant_takes_settings_and_compares_the_sp8192_quantisers(tiny_config, tmp_path, capsys):
    """--settings puts a file of settings on top of the configuration (here the SP8192 record's quantiser,
    pruned by --fit); --sp8192 compares SDClip scales and GPTQ of the embedding; --compressor sets the bytes'."""
    checkpoint = tmp_path / "final_model.pt"
    tg.atomic_write({checkpoint: tg.serialize(tiny_weights())})
    settings = tmp_path / "sdclip.env"
    settings.write_text("QUANT_METHOD=gptq\nGPTQ_SCALES=sdclip\n")
    quant = ["quant", "--config", str(tiny_config), "--checkpoint", str(checkpoint), "--sp8192"]
    assert proxy.main(quant + ["--settings", str(settings), "--fit", "2", "--compressor", "brotli"]) == 0
    out = capsys.readouterr().out
    rows = {name: row for (_, name), row in quant_rows(out).items()}
    own = "gptq (train), the configuration's, FIT to 2 % fewer bytes"
    assert list(rows) == ["clip", "gptq (train)", "gptq (train), SDClip", "gptq (train), the embedding too",
                          "gptq (train), SDClip, the embedding too", own]
    size = lambda name: int(rows[name][2].replace(",", ""))  # noqa: E731
    assert "artifact bytes: brotli" in out and size(own) <= 0.98 * size("gptq (train), SDClip")
    assert rows["gptq (train), the embedding too"][0] != rows["gptq (train)"][0]
    assert proxy.main(quant) == 0  # zstd, the configuration's compressor
    zstd = {name: row for (_, name), row in quant_rows(capsys.readouterr().out).items()}
    assert zstd["gptq (train), SDClip"][:2] == rows["gptq (train), SDClip"][:2] and zstd["clip"][2] != rows["clip"][2]
    settings.write_text("GPTQ_SCALE=sdclip\n")
    assert refusal(capsys, quant + ["--settings", str(settings)]).startswith("--settings: GPTQ_SCALE is not a hyperparameter")


def write_run(directory: Path, settings: dict, weights: dict) -> Path:
    """A run directory as proxy.py leaves it: settings.json, final_model.pt and its artifact."""
    directory.mkdir(parents=True)
    (directory / "settings.json").write_text(json.dumps(settings))
    container = tg.quantize_state_dict(weights, int(settings["PASSTHROUGH_MAX_NUMEL"]))
    tg.atomic_write({directory / "final_model.pt": tg.serialize(weights), directory / "final_model.int6.ptz": tg.compress_artifact(container)})
    return directory


def subset_tables(stdout: str) -> list[dict]:
    """Each table of subset's output as {size: [cells]}."""
    tables = []
    for block in re.split(r"\n\n(?=\|)", stdout):
        rows = re.findall(r"^\| ([\d,]+|all) \| (.+) \|$", block, re.M)
        if rows:
            tables.append({size: [cell.strip() for cell in cells.split("|")] for size, cells in rows})
    return tables


def test_subset_scores_each_size_and_the_whole_set_by_the_standard_evaluation(tiny_data, tmp_path, capsys, clean_env):
    settings = {**tiny_run_env(tiny_data), "SEED": "1"}
    runs = [write_run(tmp_path / f"seed{seed}", settings, tiny_weights(seed)) for seed in (1, 2)]
    assert proxy.main(["subset", "--runs", *map(str, runs), "--sizes", "64,1024"]) == 0
    *per_run, over = subset_tables(capsys.readouterr().out)
    assert len(per_run) == 2 and list(over) == ["64", "1,024"]
    args = tiny_args()
    token_bytes = tg.TokenBytes(tg.load_tokenizer(tiny_data / "sample_512_bpe.model", 512))
    files = tg.list_shards(tiny_data, "val")
    deviations = {size: [] for size in over}
    for run, table in zip(runs, per_run):
        model = tg.build_model(args)
        weights = {"unquantised": torch.load(run / "final_model.pt", weights_only=True)}
        weights["roundtrip"] = tg.dequantize_state_dict(tg.load_artifact(run / "final_model.int6.ptz"), model.state_dict())
        assert list(table) == ["64", "1,024", "all"]
        for size, limit in (("64", 64), ("1,024", 1024), ("all", 0)):
            val = tg.load_validation_tokens(files, 32, limit)
            expected = []
            for name in ("unquantised", "roundtrip"):
                model.load_state_dict(weights[name])
                expected.append(tg.evaluate(model, val, token_bytes, args, tg.Runtime(0, 1, torch.device("cpu")))[1])
            targets, unquantised, roundtrip, gap, *diffs = table[size]
            assert targets == f"{val.numel() - 1:,}" and (limit == 0 or val.numel() - 1 == limit)
            assert float(unquantised) == pytest.approx(expected[0], abs=1e-8) and float(roundtrip) == pytest.approx(expected[1], abs=1e-8)
            assert float(gap) == pytest.approx(expected[1] - expected[0], abs=2e-8)
            whole = [float(c) for c in table["all"][1:3]]
            own = [float(unquantised) - whole[0], float(roundtrip) - whole[1], float(gap) - (whole[1] - whole[0])]
            assert [float(d) for d in diffs] == pytest.approx(own, abs=3e-8)
            if size != "all":
                deviations[size].append(own)
        assert table["all"][4:] == ["+0.00000000"] * 3
    for size, cells in over.items():  # per figure: the mean over runs, the largest absolute
        for i, (mean, largest) in enumerate(zip(cells[0::2], cells[1::2])):
            values = [d[i] for d in deviations[size]]
            assert float(mean) == pytest.approx(sum(values) / len(values), abs=5e-8)
            assert float(largest) == pytest.approx(max(map(abs, values)), abs=5e-8)


def test_subset_refuses_what_it_cannot_score(tiny_data, tmp_path, capsys, clean_env):
    run = write_run(tmp_path / "run", tiny_run_env(tiny_data), tiny_weights())
    subset = ["subset", "--runs", str(run), "--sizes"]
    assert refusal(capsys, subset + ["0"]).startswith("--sizes '0': 0 is out of range")
    total = tg.load_validation_tokens(tg.list_shards(tiny_data, "val"), 32).numel() - 1
    for size in (16, total + 32):
        assert refusal(capsys, subset + [str(size)]) == (f"--sizes: {size:,} is not between one sequence (32 targets) "
                                                         f"and the {total:,} held-out targets")
    assert refusal(capsys, subset + ["64,64"]).startswith("--sizes '64,64': 64 is given twice")
    other = write_run(tmp_path / "other", {**tiny_run_env(tiny_data), "EVAL_SEQ_LEN": "64", "TTT_CHUNK_TOKENS": "256"}, tiny_weights())
    assert refusal(capsys, ["subset", "--runs", str(run), str(other)]) == (
        f"{run} and {other} score different held-out data or windows (DATA_PATH, TOKENIZER_PATH, EVAL_SEQ_LEN, "
        "TRAIN_SEQ_LEN): their figures do not compare")
    (run / "final_model.int6.ptz").unlink()
    assert refusal(capsys, subset + ["64"]) == (f"{run} holds no final_model.int6.ptz: a run directory holds settings.json, "
                                                "final_model.pt, final_model.int6.ptz")


def test_every_committed_proxy_run_has_its_log_and_docs_quote_its_figures():
    """docs/proxy_runs holds each study's runs (settings and log, relative data paths) and every arm's
    mean ± std final val_bpb over its 3 seeds, read from those logs, is the one docs/proxy.md gives."""
    doc, runs = (REPO / "docs" / "proxy.md").read_text(), REPO / "docs" / "proxy_runs"
    arms = sorted({seed.parent for seed in runs.glob("**/seed*")})
    assert {"base", "parallel", "recur"} <= {arm.name for arm in arms if arm.parent.name == "long"}
    for arm in arms:
        seeds = sorted(arm.glob("seed*"))
        assert len(seeds) == 3, arm
        finals = []
        for seed in seeds:
            settings = json.loads((seed / "settings.json").read_text())
            assert not Path(settings["DATA_PATH"]).is_absolute() and not Path(settings["TOKENIZER_PATH"]).is_absolute()
            finals.append(summarize_logs.parse_log(seed / "logs" / "run.txt")["ttt_val_bpb"])
        quoted = f"{statistics.mean(finals):.5f} ± {statistics.stdev(finals):.5f}"
        assert quoted in doc, f"{arm.relative_to(runs)}: {quoted} is not in docs/proxy.md"
