"""data/cached_challenge_fineweb.py against a local stand-in for the Hugging Face Hub.

A thread serves small copies of dataset repositories' layout over HTTP the way the Hub's /resolve
endpoint does (HEAD and GET, with X-Repo-Commit / ETag / Content-Length), and the REAL
huggingface_hub client downloads from it (HF_ENDPOINT). The server counts requests per repository
and path. (The client also makes a best-effort GET of /api/agent-harnesses, its own once-a-day
registry look-up; the tests only count repo files.)
"""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from conftest import REPO, load_tool, write_shard

dl = load_tool("data/cached_challenge_fineweb.py", "cached_challenge_fineweb")

SCRIPT = REPO / "data" / "cached_challenge_fineweb.py"
SP1024_REPO, SP8192_REPO = "willdepueoai/parameter-golf", "kevclark/parameter-golf"  # the variants' defaults
MIRROR_REPO, OTHER_REPO = "mirror/parameter-golf", "other/parameter-golf"  # each serves both variants
RESOLVE = re.compile(r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/main/(?P<path>.+)")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def variant_files(vocab: int, n_train: int):
    """(tokenizer files, val shards, train shards) of variant sp<vocab>, relative to the repo's datasets/
    folder and to the output folder."""
    ds = f"datasets/fineweb10B_sp{vocab}"
    return ([f"tokenizers/fineweb_{vocab}_bpe.model", f"tokenizers/fineweb_{vocab}_bpe.vocab"],
            [f"{ds}/fineweb_val_000000.bin"], [f"{ds}/fineweb_train_{i:06d}.bin" for i in range(n_train)])


DS = "datasets/fineweb10B_sp1024"
TOKENIZER, VAL, TRAIN = variant_files(1024, 3)
SP8192_TRAIN_SERVED = 129  # one more than the default for sp8192
TOKENIZER8, VAL8, TRAIN8 = variant_files(8192, SP8192_TRAIN_SERVED)


def make_manifest(files_train=3, files_val=1, vocabs=(1024,)):
    """A manifest of the dataset repo's shape (that of tests/data/manifest_example.json), at toy size, with a
    dataset fineweb10B_sp<V> and its tokenizer sp_bpe_<V> for each vocabulary V in vocabs."""
    tokenizers, datasets = [], []
    for vocab in vocabs:
        (model, vocab_file), _, _ = variant_files(vocab, 0)
        ds, tok = f"datasets/fineweb10B_sp{vocab}", f"sp_bpe_{vocab}"
        tokenizers.append({"name": tok, "kind": "sentencepiece_bpe", "vocab_size": vocab, "bos_id": 1,
                           "eos_id": 2, "model_path": model, "vocab_path": vocab_file})
        datasets.append({"name": f"fineweb10B_sp{vocab}", "tokenizer_name": tok,
                         "tokenizer_kind": "sentencepiece_bpe", "path": ds,
                         "train_glob": f"{ds}/fineweb_train_*.bin", "val_glob": f"{ds}/fineweb_val_*.bin",
                         "vocab_size": vocab, "bos_id": 1, "eos_id": 2,
                         "stats": {"files_total": files_train + files_val, "files_val": files_val,
                                   "files_train": files_train}})
    return {"version": "10B", "num_docs": 100, "num_val_docs": 10, "shard_size": 1000,
            "tokenizers": tokenizers, "datasets": datasets}


def shard_bytes(tmp: Path, n_tokens: int, seed: int, vocab: int = 1024) -> bytes:
    path = tmp / f"shard_{vocab}_{seed}.bin"
    write_shard(path, np.random.default_rng(seed).integers(0, vocab, n_tokens))
    return path.read_bytes()


def variant_repo_files(tmp: Path, vocab: int, n_train: int) -> dict:
    """Repo path -> bytes: the tokenizer and shards of variant sp<vocab>, without the manifest."""
    tokenizer, val, train = variant_files(vocab, n_train)
    files = {f"datasets/{tokenizer[0]}": f"model of {vocab} pieces".encode() * 10,
             f"datasets/{tokenizer[1]}": b"<unk>\t0\n<s>\t0\n</s>\t0\n"}
    for i, rel in enumerate(val + train):
        files[f"datasets/{rel}"] = shard_bytes(tmp, 50 + 37 * (i % 8), seed=i, vocab=vocab)
    return files


class FakeHub(ThreadingHTTPServer):
    """repos: repo id -> {repo path (e.g. 'datasets/manifest.json'): bytes}; files: those of the sp1024
    repository. requests: Counter of (method, repo id, repo path), repo id None for other URLs."""
    daemon_threads = True

    def __init__(self, repos):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.requests = Counter()
        self.lock = threading.Lock()

    @property
    def files(self):
        return self.repos[SP1024_REPO]

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self, prefix="", repo=SP1024_REPO):
        """Repo paths of repo (under datasets/, prefix stripped) that were GET, with counts."""
        return Counter({p[len("datasets/"):]: n for (m, r, p), n in self.requests.items()
                        if m == "GET" and r == repo and p.startswith("datasets/" + prefix)})

    def data_gets(self, repo=SP1024_REPO):
        """GETs of anything but the manifest."""
        return Counter({p: n for p, n in self.gets(repo=repo).items() if p != "manifest.json"})

    def repos_asked(self):
        """The repositories any repo file was asked of (HEAD or GET)."""
        return {r for (_, r, _) in self.requests if r is not None}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _serve(self, body: bool):
        path = unquote(urlsplit(self.path).path)
        match = RESOLVE.fullmatch(path)
        repo, rel = (match["repo"], match["path"]) if match else (None, path)
        with self.server.lock:
            self.server.requests[(self.command, repo, rel)] += 1
        files = self.server.repos.get(repo)
        data = files.get(rel) if files is not None else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if files is not None else "RepoNotFound")
            self.send_header("X-Error-Message", "Entry not found")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)


def manifest_bytes(**kwargs) -> bytes:
    return json.dumps(make_manifest(**kwargs), indent=1).encode()


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory):
    """Repo id -> files: the sp1024 repository (sp1024, 3 train shards), the sp8192 one (sp8192,
    SP8192_TRAIN_SERVED train shards), and two that serve both variants with 2 train shards each."""
    tmp = tmp_path_factory.mktemp("hub_files")
    sp1024, sp8192 = variant_repo_files(tmp, 1024, 3), variant_repo_files(tmp, 8192, SP8192_TRAIN_SERVED)
    both = {**variant_repo_files(tmp, 1024, 2), **variant_repo_files(tmp, 8192, 2),
            "datasets/manifest.json": manifest_bytes(files_train=2, vocabs=(1024, 8192))}
    return {SP1024_REPO: {**sp1024, "datasets/manifest.json": manifest_bytes()},
            SP8192_REPO: {**sp8192, "datasets/manifest.json": manifest_bytes(files_train=SP8192_TRAIN_SERVED,
                                                                             vocabs=(8192,))},
            MIRROR_REPO: both, OTHER_REPO: dict(both)}


def _clean_hf_env(monkeypatch, tmp_path):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                "HF_HUB_DISABLE_XET", dl.REPO_ID_VARIABLE):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "3")


@pytest.fixture
def hub(repo_files, monkeypatch, tmp_path):
    """A running FakeHub with a fresh copy of the repos' files; HF_ENDPOINT points at it."""
    server = FakeHub({repo: dict(files) for repo, files in repo_files.items()})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _clean_hf_env(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def out(tmp_path):
    return tmp_path / "data"


def run(out, capsys, *args, variant="sp1024"):
    """main() in-process; returns (exit code, stdout lines, stderr lines)."""
    rc = dl.main(["--variant", variant, "--out-dir", str(out), *args])
    captured = capsys.readouterr()
    return rc, captured.out.splitlines(), captured.err.splitlines()


def layout(out: Path):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_first_run_fetches_requested_files(hub, out, capsys):
    rc, lines, err = run(out, capsys, "--train-shards", "2")
    assert rc == 0, err
    wanted = TOKENIZER + VAL + TRAIN[:2]
    assert layout(out) == sorted(wanted + [f"datasets/manifests/{SP1024_REPO}.json"])  # staging folder removed
    for rel in wanted:
        assert (out / rel).read_bytes() == hub.files[f"datasets/{rel}"], rel
    assert hub.data_gets() == Counter({rel: 1 for rel in wanted})  # each requested file once, nothing else
    assert not any(p.endswith(TRAIN[2]) for *_, p in hub.requests)
    assert hub.repos_asked() == {SP1024_REPO}
    assert sum(line.startswith("fetched") for line in lines) == len(wanted)
    assert lines[-1].startswith("done: 5 fetched, 0 already complete")
    assert "1 val shard (" in lines[-1] and "2 train shards" in lines[-1] and str(out / DS) in lines[-1]
    assert lines[-1].endswith(f"from {SP1024_REPO}")


def test_default_is_80_train_shards_capped_at_the_manifest(hub, out, capsys):
    rc, lines, err = run(out, capsys)
    assert rc == 0, err
    assert lines[0] == f"repository       {SP1024_REPO} (the default for sp1024)"
    assert all((out / rel).is_file() for rel in TRAIN)
    assert any("capped" in line for line in lines)
    assert set(hub.data_gets()) == set(TOKENIZER + VAL + TRAIN)


def test_second_run_fetches_nothing(hub, out, capsys):
    assert run(out, capsys, "--train-shards", "2")[0] == 0
    before = Counter(hub.requests)
    rc, lines, err = run(out, capsys, "--train-shards", "2")
    assert rc == 0, err
    new = {key for key in hub.requests - before if key[1] is not None}  # repo files only
    # only the manifest is refreshed; no data file is even asked about (no HEAD, no GET)
    assert new == {("HEAD", SP1024_REPO, "datasets/manifest.json"), ("GET", SP1024_REPO, "datasets/manifest.json")}
    assert sum(line.startswith("already complete") for line in lines) == 5
    assert lines[-1].startswith("done: 0 fetched, 5 already complete")


@pytest.mark.parametrize("damage", ["truncate", "bad_magic", "empty"])
def test_damaged_local_shard_is_fetched_again(hub, out, capsys, damage):
    assert run(out, capsys, "--train-shards", "2")[0] == 0
    victim = out / TRAIN[1]
    good = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(good[:-10])
    elif damage == "bad_magic":
        victim.write_bytes(b"\0\0\0\0" + good[4:])
    else:
        victim.write_bytes(b"")
    before = hub.data_gets()
    rc, lines, err = run(out, capsys, "--train-shards", "2")
    assert rc == 0, err
    assert hub.data_gets() - before == Counter({TRAIN[1]: 1})  # exactly that one
    assert victim.read_bytes() == good
    assert [line for line in lines if line.startswith("fetched")] == \
        [line for line in lines if TRAIN[1] in line and line.startswith("fetched")]


def test_missing_tokenizer_file_is_fetched_again(hub, out, capsys):
    assert run(out, capsys, "--train-shards", "0")[0] == 0
    (out / TOKENIZER[1]).unlink()
    before = hub.data_gets()
    assert run(out, capsys, "--train-shards", "0")[0] == 0
    assert hub.data_gets() - before == Counter({TOKENIZER[1]: 1})


@pytest.mark.parametrize("corruption", ["magic", "version", "size"])
def test_corrupt_served_shard_is_reported(hub, out, capsys, corruption):
    key = f"datasets/{TRAIN[1]}"
    data = bytearray(hub.files[key])
    if corruption == "magic":
        data[0:4] = np.array([12345], "<i4").tobytes()
    elif corruption == "version":
        data[4:8] = np.array([2], "<i4").tobytes()
    else:
        data = data[:-2]  # the header promises one token more than the file holds
    hub.files[key] = bytes(data)
    rc, lines, err = run(out, capsys, "--train-shards", "3")
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert "fineweb_train_000001.bin" in err[0] and "Traceback" not in err[0]
    assert {"magic": "magic 12345", "version": "version 2", "size": "truncated or corrupt"}[corruption] in err[0]
    assert not (out / TRAIN[1]).exists()  # the bad file is not left under its final name
    assert (out / TRAIN[0]).is_file() and not (out / TRAIN[2]).exists()  # stops at the bad one


def test_file_missing_on_server_is_reported(hub, out, capsys):
    del hub.files[f"datasets/{TRAIN[2]}"]
    rc, lines, err = run(out, capsys, "--train-shards", "3")
    assert rc == 1
    assert len(err) == 1 and "fineweb_train_000002.bin" in err[0] and "no such file" in err[0], err


@pytest.mark.parametrize("broken, message", [
    (lambda m: m["tokenizers"].clear(), "tokenizer 'sp_bpe_1024'"),
    (lambda m: m["datasets"][0].pop("stats"), "missing stats"),
    (lambda m: m["datasets"][0].pop("tokenizer_name"), "missing tokenizer_name"),
    (lambda m: m["tokenizers"][0].pop("vocab_path"), "missing vocab_path"),
    (lambda m: m["datasets"][0]["stats"].update(files_train="many"), "stats.files_train"),
])
def test_missing_manifest_entry_is_reported(hub, out, capsys, broken, message):
    manifest = make_manifest()
    broken(manifest)
    hub.files["datasets/manifest.json"] = json.dumps(manifest).encode()
    rc, lines, err = run(out, capsys)
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not hub.data_gets()


def test_manifest_not_json_is_reported(hub, out, capsys):
    hub.files["datasets/manifest.json"] = b"<html>not json</html>"
    rc, lines, err = run(out, capsys)
    assert rc == 1 and len(err) == 1 and "not valid JSON" in err[0], err


def test_offline_mode(hub, out, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, lines, err = run(out, capsys)  # nothing local yet: a clear error, no request
    assert rc == 1 and len(err) == 1 and "HF_HUB_OFFLINE" in err[0], err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert run(out, capsys, "--train-shards", "1")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = Counter(hub.requests)
    rc, lines, err = run(out, capsys, "--train-shards", "1")  # complete: works without network
    assert rc == 0, err
    assert hub.requests == before
    rc, lines, err = run(out, capsys, "--train-shards", "2")  # one more shard needs the network
    assert rc == 1 and len(err) == 1 and "HF_HUB_OFFLINE" in err[0] and "fineweb_train_000001.bin" in err[0], err


def cli(args, env_extra, cwd):
    env = {k: v for k, v in os.environ.items()}
    env.update(env_extra)
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_unknown_variant_lists_the_known_ones(hub, out, tmp_path):
    manifest = make_manifest()
    manifest["datasets"].append(dict(manifest["datasets"][0], name="fineweb10B_sp4096"))
    hub.files["datasets/manifest.json"] = json.dumps(manifest).encode()
    proc = cli(["--variant", "sp2048", "--out-dir", str(out)], {}, tmp_path)  # env: the hub fixture's
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown variant 'sp2048'"), err
    assert "sp1024, sp4096" in err[0] and f"of {SP1024_REPO}" in err[0]  # another variant defaults to it
    assert proc.stdout.splitlines()[0] == f"repository       {SP1024_REPO} (the default for sp2048)"
    assert "fetched          datasets" not in proc.stdout
    assert not hub.data_gets()


def test_server_down_is_one_line_and_quick(tmp_path, monkeypatch):
    _clean_hf_env(monkeypatch, tmp_path)
    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = cli(["--variant", "sp1024", "--out-dir", str(tmp_path / "data")],
               {"HF_ENDPOINT": f"http://127.0.0.1:{port}"}, tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1
    err = proc.stderr.splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("error: cannot reach http://127.0.0.1:") and "manifest.json" in err[0], err
    assert elapsed < 20


def test_negative_train_shards_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        dl.parse_args(["--train-shards", "-1"])
    assert e.value.code == 2


def test_plan_from_manifest_of_the_reference_shape():
    # tests/data/manifest_example.json: an example manifest of the dataset repo at full size (1 val, 195 train shards)
    manifest = json.loads((REPO / "tests" / "data" / "manifest_example.json").read_text())
    plan = dl.plan_from_manifest(manifest, "sp1024", 80)
    assert plan["tokenizer"] == TOKENIZER
    assert plan["val"] == [f"{DS}/fineweb_val_000000.bin"]
    assert plan["train"] == [f"{DS}/fineweb_train_{i:06d}.bin" for i in range(80)]


# ----------------------------------------------------------------------------- sp8192 and the repository

def test_sp8192_defaults_to_its_repository_and_128_train_shards(hub, out, capsys):
    served = hub.repos[SP8192_REPO]
    for rel in TRAIN8[:127]:  # already here: the run fetches shard 127 and not 128 only if its default is 128
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(served[f"datasets/{rel}"])
    rc, lines, err = run(out, capsys, variant="sp8192")
    assert rc == 0, err
    assert lines[0] == f"repository       {SP8192_REPO} (the default for sp8192)"
    fetched = TOKENIZER8 + VAL8 + [TRAIN8[127]]
    assert hub.data_gets(repo=SP8192_REPO) == Counter({rel: 1 for rel in fetched})
    assert hub.repos_asked() == {SP8192_REPO}
    for rel in fetched:
        assert (out / rel).read_bytes() == served[f"datasets/{rel}"], rel
    assert not (out / TRAIN8[128]).exists()
    assert (out / "tokenizers/fineweb_8192_bpe.model").is_file()
    assert lines[-1].startswith("done: 4 fetched, 127 already complete") and "+ 128 train shards (" in lines[-1]
    assert str(out / "datasets/fineweb10B_sp8192") in lines[-1] and lines[-1].endswith(f"from {SP8192_REPO}")
    assert (out / f"datasets/manifests/{SP8192_REPO}.json").read_bytes() == served["datasets/manifest.json"]


@pytest.mark.parametrize("variant, variable, option, repo, source", [
    ("sp8192", None, None, SP8192_REPO, "the default for sp8192"),
    ("sp1024", None, None, SP1024_REPO, "the default for sp1024"),
    ("sp8192", "", None, SP8192_REPO, "the default for sp8192"),  # set but empty: as if unset
    ("sp8192", MIRROR_REPO, None, MIRROR_REPO, "MATCHED_FINEWEB_REPO_ID"),
    ("sp1024", MIRROR_REPO, None, MIRROR_REPO, "MATCHED_FINEWEB_REPO_ID"),  # the variable names it for any variant
    ("sp8192", MIRROR_REPO, OTHER_REPO, OTHER_REPO, "--repo-id"),
    ("sp1024", None, OTHER_REPO, OTHER_REPO, "--repo-id"),
])
def test_repository_precedence(hub, out, capsys, monkeypatch, variant, variable, option, repo, source):
    """--repo-id over MATCHED_FINEWEB_REPO_ID over the variant's default; every file comes from the one chosen."""
    if variable is not None:
        monkeypatch.setenv(dl.REPO_ID_VARIABLE, variable)
    rc, lines, err = run(out, capsys, "--train-shards", "0", *(["--repo-id", option] if option else []),
                         variant=variant)
    assert rc == 0, err
    assert lines[0] == f"repository       {repo} ({source})"
    assert lines[-1].endswith(f"from {repo}")
    assert hub.repos_asked() == {repo}
    vocab = int(variant[2:])
    tokenizer, val, _ = variant_files(vocab, 0)
    assert hub.data_gets(repo=repo) == Counter({rel: 1 for rel in tokenizer + val})
    assert (out / tokenizer[0]).read_bytes() == hub.repos[repo][f"datasets/{tokenizer[0]}"]


@pytest.mark.parametrize("args, variable, source", [
    (["--repo-id", "a/b/c"], None, "--repo-id 'a/b/c'"),
    ([], "not a repo", "MATCHED_FINEWEB_REPO_ID 'not a repo'"),
    (["--repo-id", "owner/..name"], MIRROR_REPO, "--repo-id 'owner/..name'"),
])
def test_malformed_repository_id_is_one_line(hub, out, capsys, monkeypatch, args, variable, source):
    if variable is not None:
        monkeypatch.setenv(dl.REPO_ID_VARIABLE, variable)
    rc, lines, err = run(out, capsys, *args, variant="sp8192")
    assert rc == 1 and err == [f"error: {source} is not a dataset repository id (owner/name)"], err
    assert not hub.requests and not out.exists()


def test_missing_repository_is_named(hub, out, capsys):
    rc, lines, err = run(out, capsys, "--repo-id", "nobody/nothing", variant="sp8192")
    assert rc == 1 and len(err) == 1, err
    assert "dataset nobody/nothing at http://127.0.0.1:" in err[0] and "not found" in err[0], err


def test_variants_of_two_repositories_share_an_output_folder_offline(hub, out, capsys, monkeypatch):
    """Each repository's manifest is kept apart, so an offline run of either variant reads its own."""
    assert run(out, capsys, "--train-shards", "1")[0] == 0
    assert run(out, capsys, "--train-shards", "1", variant="sp8192")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = Counter(hub.requests)
    for variant, repo in (("sp1024", SP1024_REPO), ("sp8192", SP8192_REPO)):
        rc, lines, err = run(out, capsys, "--train-shards", "1", variant=variant)
        assert rc == 0, err
        assert lines[1] == f"manifest         datasets/manifest.json: offline: using the local copy " \
                           f"{out.resolve() / 'datasets/manifests' / repo}.json"
        assert lines[-1].startswith("done: 0 fetched, 4 already complete")
    assert hub.requests == before


def test_help_and_docstring_state_the_defaults_and_the_precedence(capsys):
    with pytest.raises(SystemExit) as e:
        dl.parse_args(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for text in (help_text, dl.__doc__):
        for variant, repo, shards in (("sp1024", SP1024_REPO, 80), ("sp8192", SP8192_REPO, 128)):
            assert re.search(rf"^ +{variant} +{repo} +{shards} train shards", text, re.M), (variant, text)
        prose = " ".join(text.split())
        assert "--repo-id if given, else the environment variable MATCHED_FINEWEB_REPO_ID" in prose
        assert "if set and not empty, else the variant's default" in prose
