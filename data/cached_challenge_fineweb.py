"""Download the published challenge data (tokenizer + FineWeb shards) from the Hugging Face Hub.

    python data/cached_challenge_fineweb.py --variant sp1024                  # val + 80 train shards
    python data/cached_challenge_fineweb.py --variant sp1024 --train-shards 1 # a quick start
    python data/cached_challenge_fineweb.py --variant sp8192                  # val + 128 train shards

Each variant has a default dataset repository and number of train shards:

    sp1024   willdepueoai/parameter-golf   80 train shards   (the record's data)
    sp8192   kevclark/parameter-golf       128 train shards  (the data of the SP8192 records, 1.0810 bpb onwards)
    other    willdepueoai/parameter-golf   80 train shards

The repository is --repo-id if given, else the environment variable MATCHED_FINEWEB_REPO_ID (the
challenge downloader's name for it) if set and not empty, else the variant's default; the first
line printed names it and what chose it. --train-shards overrides the shard count.

Every repository has the same layout (docs/recipe.md §2), everything under `datasets/`, driven by
its `datasets/manifest.json`: the manifest's `datasets[]` entry `fineweb10B_{variant}` names the
tokenizer and the number of train/val shards; the matching `tokenizers[]` entry gives the tokenizer
files. A repo file `datasets/X` lands at `<out>/X`:

    <out>/datasets/manifests/<repo id>.json               (a copy of that repository's manifest)
    <out>/tokenizers/fineweb_1024_bpe.model, .vocab       (fineweb_8192_bpe.* for sp8192)
    <out>/datasets/fineweb10B_sp1024/fineweb_val_000000.bin ...
    <out>/datasets/fineweb10B_sp1024/fineweb_train_000000.bin ... (the first --train-shards)

with <out> = <repo>/data by default (--out-dir), i.e. the defaults of train_gpt.py's DATA_PATH
and TOKENIZER_PATH when run from the repo root (for sp8192 set DATA_PATH and TOKENIZER_PATH to
its folder and tokenizer, and VOCAB_SIZE=8192). The manifest copy is kept per repository, e.g.
datasets/manifests/kevclark/parameter-golf.json, so that the variants of two repositories can
share one <out> and an offline run reads the manifest of the repository it names.

Idempotent: a shard whose header and size are right (train_gpt.shard_token_count) and a tokenizer
file that exists are not fetched again, so a second run makes no download at all (only the
manifest is refreshed); a truncated or corrupt shard is fetched again. Every downloaded shard is
checked before it is moved into place. Failures (offline, unreachable server, unknown variant,
bad manifest, bad repository id, corrupt download) are one line on stderr and exit code 1.

Downloads go through huggingface_hub's hf_hub_download into a staging folder
<out>/datasets/.hf_download (removed after a successful run) and are then renamed into place, so an
interrupted run never leaves a partial file under its final name. Environment: HF_ENDPOINT (a
mirror), HF_TOKEN, HF_HUB_OFFLINE=1 (no network: succeeds only when everything is already there),
HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT (seconds), MATCHED_FINEWEB_REPO_ID (above).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data"
CHALLENGE_REPO_ID = "willdepueoai/parameter-golf"
# variant -> (dataset repository, train shards fetched by default): the SP8192 records trained on 128
# shards of a vocabulary of 8192 published in another repository
VARIANT_DEFAULTS = {"sp1024": (CHALLENGE_REPO_ID, 80), "sp8192": ("kevclark/parameter-golf", 128)}
OTHER_VARIANT_DEFAULTS = (CHALLENGE_REPO_ID, 80)
REPO_ID_VARIABLE = "MATCHED_FINEWEB_REPO_ID"  # the challenge downloader's name for the repository
REPO_TYPE = "dataset"
REMOTE_ROOT = "datasets"  # every file of the challenge lives under this folder of the repo
MANIFEST = "manifest.json"  # relative to REMOTE_ROOT
LOCAL_MANIFESTS = "datasets/manifests"  # relative to the output folder (git-ignored with the shards)
DEFAULT_ENDPOINT = "https://huggingface.co"
STAGING = "datasets/.hf_download"  # under the output folder: hf_hub_download's local_dir


class DownloadError(Exception):
    """An expected failure, reported as one line on stderr without a traceback (exit code 1)."""


# ----------------------------------------------------------------------------- environment

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


# ----------------------------------------------------------------------------- repository

def variant_defaults(variant: str) -> tuple[str, int]:
    """(dataset repository, train shards) used for `variant` when the command line does not say."""
    return VARIANT_DEFAULTS.get(variant, OTHER_VARIANT_DEFAULTS)


def choose_repo_id(variant: str, cli_repo_id: str | None) -> tuple[str, str]:
    """(repository, what chose it): --repo-id, else MATCHED_FINEWEB_REPO_ID when set and not empty,
    else the variant's default. A malformed id is a DownloadError naming where it came from."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    env_value = os.environ.get(REPO_ID_VARIABLE, "").strip()
    if cli_repo_id is not None:
        repo_id, source = cli_repo_id, "--repo-id"
    elif env_value:
        repo_id, source = env_value, REPO_ID_VARIABLE
    else:
        return variant_defaults(variant)[0], f"the default for {variant}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise DownloadError(f"{source} {repo_id!r} is not a dataset repository id (owner/name)") from None
    return repo_id, source


def local_manifest(out: Path, repo_id: str) -> Path:
    """Where the copy of repo_id's manifest is kept (a valid repo id holds no '..')."""
    return out / LOCAL_MANIFESTS / f"{repo_id}.json"


# ----------------------------------------------------------------------------- manifest

def dataset_name(variant: str) -> str:
    return f"fineweb10B_{variant}"


def shard_names(kind: str, count: int) -> list[str]:
    """fineweb_{kind}_000000.bin ... for the first `count` shards."""
    return [f"fineweb_{kind}_{i:06d}.bin" for i in range(count)]


def _count(stats: dict, key: str, where: str) -> int:
    value = stats.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DownloadError(f"{where}: stats.{key} is {value!r}, expected a count of shards")
    return value


def plan_from_manifest(manifest: dict, variant: str, train_shards: int,
                       where: str = f"{REMOTE_ROOT}/{MANIFEST}") -> dict:
    """What to download for `variant`: {"dataset", "tokenizer": [rel paths], "val": [...], "train": [...],
    "files_train"}. Paths are relative to the repo's datasets/ folder (= relative to the output folder)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("datasets"), list):
        raise DownloadError(f"{where}: no datasets[] list (not a challenge manifest)")
    name = dataset_name(variant)
    datasets = [d for d in manifest["datasets"] if isinstance(d, dict)]
    entry = next((d for d in datasets if d.get("name") == name), None)
    if entry is None:
        names = [str(d.get("name")) for d in datasets]
        known = sorted(n[len("fineweb10B_"):] if n.startswith("fineweb10B_") else n for n in names)
        raise DownloadError(f"unknown variant {variant!r}: {where} has no dataset {name!r}; "
                            f"known variants: {', '.join(known) or '(none)'}")
    where_ds = f"{where} dataset {name!r}"
    tok_name = entry.get("tokenizer_name")
    if not tok_name:
        raise DownloadError(f"{where_ds}: missing tokenizer_name")
    stats = entry.get("stats")
    if not isinstance(stats, dict):
        raise DownloadError(f"{where_ds}: missing stats (stats.files_train / stats.files_val)")
    files_train, files_val = _count(stats, "files_train", where_ds), _count(stats, "files_val", where_ds)
    tokenizers = manifest.get("tokenizers") if isinstance(manifest.get("tokenizers"), list) else []
    tok = next((t for t in tokenizers if isinstance(t, dict) and t.get("name") == tok_name), None)
    if tok is None:
        raise DownloadError(f"{where_ds} uses tokenizer {tok_name!r}, which has no entry in tokenizers[]")
    tok_files = []
    for key in ("model_path", "vocab_path"):
        rel = tok.get(key)
        if not isinstance(rel, str) or not rel:
            raise DownloadError(f"{where} tokenizer {tok_name!r}: missing {key}")
        tok_files.append(_safe_rel(rel, where))
    folder = _safe_rel(f"datasets/{name}", where)  # recipe §2: datasets/datasets/fineweb10B_<variant>/ in the repo
    return {
        "dataset": name,
        "folder": folder,
        "tokenizer": tok_files,
        "val": [f"{folder}/{n}" for n in shard_names("val", files_val)],
        "train": [f"{folder}/{n}" for n in shard_names("train", min(train_shards, files_train))],
        "files_train": files_train,
    }


def _safe_rel(rel: str, where: str) -> str:
    """A manifest path must stay inside the output folder."""
    parts = rel.replace("\\", "/").strip("/").split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DownloadError(f"{where}: unsafe path {rel!r}")
    return "/".join(parts)


# ----------------------------------------------------------------------------- local checks

def shard_tokens(path: Path) -> int:
    """The project's one shard-format check (train_gpt.shard_token_count); raises DownloadError."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from train_gpt import InputError, shard_token_count  # imported late: it pulls in torch

    try:
        return shard_token_count(path)
    except InputError as e:
        message = str(e)
        prefix = f"shard {path}: "
        raise DownloadError(message[len(prefix):] if message.startswith(prefix) else message) from None


def is_complete(path: Path, shard: bool) -> tuple[bool, str]:
    """(complete, why not). A shard must pass the header/size check; any other file must exist."""
    if not path.exists():
        return False, "missing"
    if not path.is_file():
        return False, "not a file"
    if shard:
        try:
            shard_tokens(path)
        except DownloadError as e:
            return False, str(e)
    elif path.stat().st_size == 0:
        return False, "empty"
    return True, ""


# ----------------------------------------------------------------------------- downloading

def _silent_tqdm():
    from huggingface_hub.utils import tqdm as hf_tqdm

    class SilentTqdm(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe_hub_error(exc: BaseException, remote: str, endpoint: str, repo_id: str) -> str:
    """One line for a failure of hf_hub_download on file `remote` of dataset repo_id."""
    from huggingface_hub import errors

    where = f"dataset {repo_id} at {endpoint}"
    for e in _chain(exc):
        if isinstance(e, errors.OfflineModeIsEnabled):
            return f"cannot download {remote}: offline mode is on (HF_HUB_OFFLINE)"
        if isinstance(e, errors.RepositoryNotFoundError):
            return f"cannot download {remote}: {where} not found (or not accessible with your token)"
        if isinstance(e, errors.RevisionNotFoundError):
            return f"cannot download {remote}: revision not found in {where}"
        if isinstance(e, errors.EntryNotFoundError) and not isinstance(e, errors.LocalEntryNotFoundError):
            return f"cannot download {remote}: no such file in {where}"
        name = type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError)) or "Connect" in name or "Timeout" in name \
                or "Network" in name:
            return f"cannot reach {endpoint} to download {remote} (offline or server down?): {_first_line(e)}"
        if isinstance(e, errors.HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", "?")
            return f"cannot download {remote} from {where}: HTTP {status}"
        if isinstance(e, errors.FileMetadataError):
            return f"cannot download {remote} from {endpoint}: {_first_line(e)}"
    for e in _chain(exc):
        if isinstance(e, errors.LocalEntryNotFoundError):
            return f"cannot reach {endpoint} to download {remote} (offline or server down?)"
    return f"cannot download {remote} from {where}: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fetch(rel: str, out: Path, *, endpoint: str, repo_id: str, force: bool = False) -> Path:
    """Downloads repo file datasets/<rel> into the staging folder and returns its path there."""
    from huggingface_hub import hf_hub_download

    remote = f"{REMOTE_ROOT}/{rel}"
    kwargs = dict(repo_id=repo_id, filename=remote, repo_type=REPO_TYPE, local_dir=out / STAGING,
                  endpoint=endpoint, etag_timeout=_etag_timeout(), force_download=force)
    if not sys.stderr.isatty():
        kwargs["tqdm_class"] = _silent_tqdm()
    try:
        return Path(hf_hub_download(**kwargs))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 -- every failure becomes one line
        raise DownloadError(describe_hub_error(e, remote, endpoint, repo_id)) from None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def load_manifest(out: Path, *, endpoint: str, repo_id: str, offline: bool) -> tuple[dict, str]:
    """Fetches datasets/manifest.json (every run: it is small and may change) to
    <out>/datasets/manifests/<repo_id>.json. Offline, the copy of an earlier run is used.
    Returns (manifest, how it was obtained)."""
    local = local_manifest(out, repo_id)
    if offline:
        if not local.is_file():
            raise DownloadError(f"offline mode is on (HF_HUB_OFFLINE) and there is no local manifest {local} "
                                f"of {repo_id}: run once with network access")
        how = f"offline: using the local copy {local}"
    else:
        # force: no retries/backoff when the server is down, so an unreachable hub fails fast
        staged = fetch(MANIFEST, out, endpoint=endpoint, repo_id=repo_id, force=True)
        local.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, local)
        how = f"fetched from {endpoint} (dataset {repo_id})"
    try:
        return json.loads(local.read_text(encoding="utf-8")), how
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DownloadError(f"manifest {local} is not valid JSON: {_first_line(e)}") from None


def download(variant: str, train_shards: int, out: Path, *, repo_id: str) -> dict:
    """Makes <out> hold the tokenizer, the val shards and the first `train_shards` train shards of
    `variant` from dataset repo_id. Prints one line per file and a summary; returns counts and the
    repository. Raises DownloadError."""
    out = Path(out).resolve()
    endpoint, offline = hub_endpoint(), offline_mode()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    manifest, how = load_manifest(out, endpoint=endpoint, repo_id=repo_id, offline=offline)
    print(f"manifest         {REMOTE_ROOT}/{MANIFEST}: {how}", flush=True)
    plan = plan_from_manifest(manifest, variant, train_shards, where=f"{REMOTE_ROOT}/{MANIFEST} of {repo_id}")
    if train_shards > plan["files_train"]:
        print(f"note: --train-shards {train_shards} capped at the {plan['files_train']} train shards "
              f"the manifest lists", flush=True)

    shards = set(plan["val"] + plan["train"])
    fetched = complete = 0
    for rel in plan["tokenizer"] + plan["val"] + plan["train"]:
        dest, is_shard = out / rel, rel in shards
        ok, why = is_complete(dest, is_shard)
        if ok:
            complete += 1
            print(f"already complete {rel}", flush=True)
            continue
        if offline:
            raise DownloadError(f"offline mode is on (HF_HUB_OFFLINE) but {dest} is {why}")
        staged = fetch(rel, out, endpoint=endpoint, repo_id=repo_id)
        if is_shard:
            try:
                shard_tokens(staged)
            except DownloadError as e:
                staged.unlink(missing_ok=True)
                raise DownloadError(f"downloaded shard {REMOTE_ROOT}/{rel} is corrupt: {e}; "
                                    f"it was not saved as {dest}") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_dir() and not dest.is_symlink():
            raise DownloadError(f"{dest} is a folder, expected a file")
        os.replace(staged, dest)  # atomic; a symlink at dest (e.g. into a cache) is replaced, not followed
        fetched += 1
        note = "" if why == "missing" else f" (local copy was {why})"
        print(f"fetched          {rel} ({_size(dest.stat().st_size)}){note}", flush=True)

    # final check of every shard of the layout, whether fetched now or before
    tokens = {"val": 0, "train": 0}
    for kind in ("val", "train"):
        for rel in plan[kind]:
            try:
                tokens[kind] += shard_tokens(out / rel)
            except DownloadError as e:
                raise DownloadError(f"shard {out / rel} is corrupt after download: {e}") from None
    shutil.rmtree(out / STAGING, ignore_errors=True)

    data_path, tok_path = out / plan["folder"], out / plan["tokenizer"][0]
    n_val, n_train = len(plan["val"]), len(plan["train"])
    print(f"done: {fetched} fetched, {complete} already complete; {n_val} val shard{'s' * (n_val != 1)} "
          f"({tokens['val']:,} tokens) + {n_train} train shard{'s' * (n_train != 1)} ({tokens['train']:,} tokens) "
          f"in {data_path}; tokenizer {tok_path}; from {repo_id}", flush=True)
    return {"fetched": fetched, "complete": complete, "val_tokens": tokens["val"], "train_tokens": tokens["train"],
            "data_path": data_path, "tokenizer_path": tok_path, "repo_id": repo_id}


# ----------------------------------------------------------------------------- command line

def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def defaults_table() -> str:
    """The variants' default repositories and shard counts, one line each (--help)."""
    rows = [*VARIANT_DEFAULTS.items(), ("other", OTHER_VARIANT_DEFAULTS)]
    return "\n".join(f"  {name:<8} {repo:<30} {shards} train shards" for name, (repo, shards) in rows)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download the challenge tokenizer and FineWeb shards of one variant from a dataset\n"
                    "repository on the Hugging Face Hub.\n\nDefaults per variant:\n" + defaults_table() +
                    f"\n\nThe repository: --repo-id if given, else the environment variable\n{REPO_ID_VARIABLE} "
                    "if set and not empty, else the variant's default.")
    p.add_argument("--variant", default="sp1024",
                   help="tokenizer variant: dataset fineweb10B_<variant> of the manifest (default sp1024)")
    p.add_argument("--train-shards", type=_non_negative,
                   help="how many train shards to fetch, from the first (default: the variant's, above; "
                        "capped at what the manifest lists; each sp1024 shard is 100M tokens, 200 MB)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                   help="folder that receives datasets/ and tokenizers/ (default <repo>/data)")
    p.add_argument("--repo-id", help=f"dataset repository on the Hub (over {REPO_ID_VARIABLE} and the "
                                     "variant's default)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        print("error: this downloader needs huggingface_hub: pip install huggingface_hub", file=sys.stderr)
        return 1
    try:
        repo_id, source = choose_repo_id(args.variant, args.repo_id)
        train_shards = variant_defaults(args.variant)[1] if args.train_shards is None else args.train_shards
        print(f"repository       {repo_id} ({source})", flush=True)
        download(args.variant, train_shards, args.out_dir, repo_id=repo_id)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except OSError as e:  # disk full, permissions, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
