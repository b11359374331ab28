"""scripts/preflight.py on the CPU: every check prints one line in the documented format, the CUDA
checks are skipped, a broken input is a FAIL line and a non-zero exit."""
import re
import sys

from conftest import REPO, clean_environ, run_script, tiny_run_env

LINE = re.compile(r"^(ok       \w+: .+|FAIL     \w+: .+|skipped  \w+ \(.+\))$")
SCRIPT = [sys.executable, str(REPO / "scripts" / "preflight.py"), "--steps", "1", "--ttt-chunks", "1"]


def checks(stdout: str) -> dict[str, str]:
    """{check name: ok | FAIL | skipped}, every line but the summary in the documented format."""
    lines = stdout.strip().splitlines()
    assert lines[-1].startswith("preflight: "), stdout
    for line in lines[:-1]:
        assert LINE.match(line), line
    return {line.split()[1].rstrip(":"): line.split()[0] for line in lines[:-1]}


def test_preflight_passes_on_the_cpu_with_cuda_checks_skipped(tiny_data, tmp_path):
    result = run_script(SCRIPT, clean_environ(**tiny_run_env(tiny_data)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = checks(result.stdout)
    assert found == {"torch": "ok", "cuda": "skipped", "gpu": "skipped", "flash_attn_3": "skipped", "zstandard": "ok", "brotli": "skipped",
                     "tokenizer": "ok", "data": "ok", "disk": "ok", "compile": "ok", "step": "ok", "memory": "skipped",
                     "fake_quant": "ok", "size_estimate": "ok", "artifact": "ok", "ttt": "ok"}
    assert result.stdout.strip().endswith("preflight: all checks passed")
    assert re.search(r"^ok       artifact: .*\(int6:24 int8:3 passthrough:24\)", result.stdout, re.M)
    assert re.search(r"^ok       size_estimate: int6:\d+ int8:\d+ passthrough:\d+ params, payload [\d]+ bytes x 0\.718 "
                     r"\(zstd, search scales\) = \d+ bytes; with the code [\d,]+ bytes, limit 16,000,000$", result.stdout, re.M)
    assert re.search(r"^ok       fake_quant: [\d.]+ ms per step once late QAT is on, [\d.]+ % of a step \(none before",
                     result.stdout, re.M)


def test_preflight_fails_on_bad_data_and_on_a_diverging_step(tiny_data, tmp_path):
    (tmp_path / "fineweb_train_000000.bin").write_bytes(b"not a shard")
    env = clean_environ(**tiny_run_env(tiny_data, DATA_PATH=str(tmp_path)))
    env["TOKENIZER_PATH"] = str(tiny_data / "sample_512_bpe.model")
    result = run_script(SCRIPT, env, tmp_path)
    assert result.returncode == 1
    found = checks(result.stdout)
    assert found["data"] == "FAIL" and found["step"] == "skipped" and found["ttt"] == "skipped"
    assert found["fake_quant"] == "skipped"
    assert "preflight: FAILED: data" in result.stdout

    diverging = clean_environ(**tiny_run_env(tiny_data, MATRIX_LR="1e9", TTT_ENABLED="0"))
    result = run_script(SCRIPT[:2] + ["--steps", "4"], diverging, tmp_path)  # train_gpt's run diverges at step 4
    assert result.returncode == 1, result.stdout
    assert checks(result.stdout)["step"] == "FAIL"


def test_preflight_checks_the_configured_compressor(tiny_data, tmp_path):
    """COMPRESSOR=brotli where brotli does not import: a FAIL line, not "all checks passed" (the run would stop at
    its start); the artifact check compresses with the configured compressor."""
    hidden = tmp_path / "no_brotli"
    hidden.mkdir()
    (hidden / "brotli.py").write_text("raise ImportError('no brotli here')\n")
    result = run_script(SCRIPT, clean_environ(**tiny_run_env(tiny_data, COMPRESSOR="brotli", TTT_ENABLED="0"),
                                              PYTHONPATH=str(hidden)), tmp_path)
    assert result.returncode == 1
    assert checks(result.stdout)["brotli"] == "FAIL" and "FAILED: brotli" in result.stdout
    assert "FAIL     brotli: COMPRESSOR=brotli needs the brotli package: pip install brotli" in result.stdout
    result = run_script(SCRIPT, clean_environ(**tiny_run_env(tiny_data, COMPRESSOR="brotli", TTT_ENABLED="0")), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert checks(result.stdout)["brotli"] == "ok" and re.search(r"^ok       artifact: quantise [\d.]+ s \+ brotli ", result.stdout, re.M)
