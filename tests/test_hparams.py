"""Hyperparameters (recipe §8): the record's defaults, every variable read from the environment and
typed, keyword overrides, read-only instances, and invalid values rejected with the variable named."""
import re

import pytest

from train_gpt import Hyperparameters, InputError

# recipe §8, in its order: every one must be an environment variable with the record's name.
RECIPE_VARIABLES = """
DATA_PATH TOKENIZER_PATH RUN_ID SEED VAL_BATCH_SIZE VAL_LOSS_EVERY TRAIN_LOG_EVERY ITERATIONS WARMDOWN_ITERS
WARMUP_STEPS TRAIN_BATCH_TOKENS TRAIN_SEQ_LEN EVAL_SEQ_LEN MAX_WALLCLOCK_SECONDS QK_GAIN_INIT VOCAB_SIZE NUM_LAYERS
NUM_KV_HEADS MODEL_DIM NUM_HEADS MLP_MULT TIE_EMBEDDINGS ROPE_BASE LOGIT_SOFTCAP TIED_EMBED_LR TIED_EMBED_INIT_STD
MATRIX_LR SCALAR_LR MUON_MOMENTUM MUON_BACKEND_STEPS MUON_MOMENTUM_WARMUP_START MUON_MOMENTUM_WARMUP_STEPS BETA1 BETA2
ADAM_EPS GRAD_CLIP_NORM EVAL_STRIDE SWA_ENABLED SWA_EVERY MUON_WD ADAM_WD BIGRAM_VOCAB_SIZE BIGRAM_DIM XSA_LAST_N
ROPE_DIMS LN_SCALE LATE_QAT_THRESHOLD VE_ENABLED VE_DIM VE_LAYERS TTT_BURST_ENABLED TTT_BURST_EPOCHS
TTT_BURST_LR_FACTOR TTT_BURST_STEPS TTT_BURST_TRIGGER TTT_ENABLED TTT_LR TTT_EPOCHS TTT_CHUNK_TOKENS TTT_MOMENTUM
TTT_FREEZE_BLOCKS TTT_TRAIN_BATCH_SEQS TTT_GRAD_CLIP
""".split()

# The record's defaults (recipe §4, §5, §7, §8).
RECORD_DEFAULTS = dict(
    SEED=1337, VAL_LOSS_EVERY=4000, TRAIN_LOG_EVERY=500, ITERATIONS=20000, WARMDOWN_ITERS=3500, WARMUP_STEPS=20,
    TRAIN_BATCH_TOKENS=786432, TRAIN_SEQ_LEN=2048, EVAL_SEQ_LEN=2048, MAX_WALLCLOCK_SECONDS=600,
    VAL_BATCH_SIZE=524288,
    MATRIX_LR=0.025, TIED_EMBED_LR=0.035, SCALAR_LR=0.025, MUON_WD=0.04, ADAM_WD=0.04,
    MUON_MOMENTUM=0.99, MUON_MOMENTUM_WARMUP_START=0.92, MUON_MOMENTUM_WARMUP_STEPS=1500, MUON_BACKEND_STEPS=5,
    BETA1=0.9, BETA2=0.95, ADAM_EPS=1e-8, GRAD_CLIP_NORM=0.3,
    EVAL_STRIDE=64, SWA_ENABLED=True, SWA_EVERY=50, LATE_QAT_THRESHOLD=0.15,
    VOCAB_SIZE=1024, NUM_LAYERS=11, MODEL_DIM=512, NUM_HEADS=8, NUM_KV_HEADS=4, MLP_MULT=3,
    TIE_EMBEDDINGS=True, TIED_EMBED_INIT_STD=0.005, ROPE_BASE=10000, ROPE_DIMS=16, LOGIT_SOFTCAP=30,
    QK_GAIN_INIT=1.5, LN_SCALE=True, XSA_LAST_N=4, BIGRAM_VOCAB_SIZE=3072, BIGRAM_DIM=128,
    VE_ENABLED=True, VE_DIM=128, VE_LAYERS=(9, 10),
    TTT_BURST_ENABLED=True, TTT_BURST_EPOCHS=2, TTT_BURST_LR_FACTOR=0.1, TTT_BURST_STEPS=100,
    TTT_BURST_TRIGGER=0.2,
    TTT_ENABLED=True, TTT_LR=0.002, TTT_EPOCHS=3, TTT_CHUNK_TOKENS=32768, TTT_MOMENTUM=0.9,
    TTT_FREEZE_BLOCKS=0, TTT_TRAIN_BATCH_SEQS=32, TTT_GRAD_CLIP=1.0,
    DATA_PATH="./data/datasets/fineweb10B_sp1024", TOKENIZER_PATH="./data/tokenizers/fineweb_1024_bpe.model",
    WEIGHT_AVG="ema", EMA_DECAY=0.997,
)

# One valid non-default value per variable (each valid on its own with the other defaults), and
# the typed value it must give.
ENV_VALUES = dict(
    DATA_PATH=("/somewhere/data", "/somewhere/data"),
    TOKENIZER_PATH=("/somewhere/tok.model", "/somewhere/tok.model"),
    RUN_ID=("my-run_1.2", "my-run_1.2"),
    SEED=("42", 42), VAL_BATCH_SIZE=("65536", 65536), VAL_LOSS_EVERY=("100", 100), TRAIN_LOG_EVERY=("7", 7),
    ITERATIONS=("123", 123), WARMDOWN_ITERS=("50", 50), WARMUP_STEPS=("3", 3),
    TRAIN_BATCH_TOKENS=("524288", 524288), TRAIN_SEQ_LEN=("1024", 1024), EVAL_SEQ_LEN=("1024", 1024),
    MAX_WALLCLOCK_SECONDS=("300.5", 300.5), QK_GAIN_INIT=("2.25", 2.25), VOCAB_SIZE=("2048", 2048),
    NUM_LAYERS=("12", 12), NUM_KV_HEADS=("2", 2), MODEL_DIM=("256", 256), NUM_HEADS=("4", 4),
    MLP_MULT=("2.5", 2.5), TIE_EMBEDDINGS=("true", True), ROPE_BASE=("5000", 5000.0),
    LOGIT_SOFTCAP=("20", 20.0), TIED_EMBED_LR=("0.05", 0.05), TIED_EMBED_INIT_STD=("0.01", 0.01),
    MATRIX_LR=("0.02", 0.02), SCALAR_LR=("0.03", 0.03), MUON_MOMENTUM=("0.95", 0.95),
    MUON_BACKEND_STEPS=("3", 3), MUON_MOMENTUM_WARMUP_START=("0.85", 0.85),
    MUON_MOMENTUM_WARMUP_STEPS=("100", 100), BETA1=("0.8", 0.8), BETA2=("0.99", 0.99), ADAM_EPS=("1e-6", 1e-6),
    GRAD_CLIP_NORM=("1.0", 1.0), EVAL_STRIDE=("128", 128), SWA_ENABLED=("0", False), SWA_EVERY=("25", 25),
    MUON_WD=("0.01", 0.01), ADAM_WD=("0.02", 0.02), BIGRAM_VOCAB_SIZE=("4096", 4096), BIGRAM_DIM=("64", 64),
    XSA_LAST_N=("3", 3), ROPE_DIMS=("32", 32), LN_SCALE=("0", False), LATE_QAT_THRESHOLD=("0.1", 0.1),
    VE_ENABLED=("0", False), VE_DIM=("64", 64), VE_LAYERS=("8,10", (8, 10)),
    TTT_BURST_ENABLED=("false", False), TTT_BURST_EPOCHS=("1", 1), TTT_BURST_LR_FACTOR=("0.2", 0.2),
    TTT_BURST_STEPS=("50", 50), TTT_BURST_TRIGGER=("0.25", 0.25), TTT_ENABLED=("0", False),
    TTT_LR=("0.001", 0.001), TTT_EPOCHS=("2", 2), TTT_CHUNK_TOKENS=("65536", 65536), TTT_MOMENTUM=("0.8", 0.8),
    TTT_FREEZE_BLOCKS=("2", 2), TTT_TRAIN_BATCH_SEQS=("16", 16), TTT_GRAD_CLIP=("0.5", 0.5),
    # ours
    WEIGHT_AVG=("swa", "swa"), EMA_DECAY=("0.99", 0.99), COMPILE=("0", "0"),
)


def test_record_defaults(clean_env):
    args = Hyperparameters()
    for name, expected in RECORD_DEFAULTS.items():
        value = getattr(args, name.lower())
        if isinstance(expected, float):
            assert value == pytest.approx(expected, rel=1e-12), name
        else:
            assert value == expected, name
    # typed like their defaults
    assert type(args.seed) is int and type(args.train_batch_tokens) is int
    assert type(args.matrix_lr) is float and type(args.tie_embeddings) is bool and type(args.ve_layers) is tuple
    # an empty RUN_ID becomes a fresh, valid id
    assert re.fullmatch(r"[\w.-]+", args.run_id)
    assert Hyperparameters().run_id != args.run_id


def test_every_spec_variable_is_an_attribute(clean_env):
    args = Hyperparameters()
    missing = [name for name in RECIPE_VARIABLES if not hasattr(args, name.lower())]
    assert not missing


@pytest.mark.parametrize("name", sorted(ENV_VALUES))
def test_environment_is_read_and_typed(clean_env, name):
    raw, expected = ENV_VALUES[name]
    clean_env.setenv(name, raw)
    value = getattr(Hyperparameters(), name.lower())
    assert type(value) is type(expected), (name, value)
    if isinstance(expected, float):
        assert value == pytest.approx(expected, rel=1e-12)
    else:
        assert value == expected


def test_environment_whitespace_and_bool_spellings(clean_env):
    clean_env.setenv("SEED", " 7 ")
    clean_env.setenv("SWA_ENABLED", "False")
    clean_env.setenv("LN_SCALE", "TRUE")
    clean_env.setenv("VE_LAYERS", "10")
    args = Hyperparameters()
    assert args.seed == 7 and args.swa_enabled is False and args.ln_scale is True and args.ve_layers == (10,)


def test_kwargs_override_environment(clean_env):
    clean_env.setenv("SEED", "42")
    clean_env.setenv("MATRIX_LR", "0.5")
    args = Hyperparameters(seed=7, ve_layers=(8, 9))
    assert args.seed == 7 and args.ve_layers == (8, 9)
    assert args.matrix_lr == 0.5  # not overridden: still the environment's
    # overrides are parsed and checked like environment values
    assert Hyperparameters(seed="11").seed == 11
    with pytest.raises(InputError, match="SEED"):
        Hyperparameters(seed="eleven")
    with pytest.raises(TypeError):
        Hyperparameters(no_such_knob=1)


def test_instances_are_read_only(clean_env):
    args = Hyperparameters()
    with pytest.raises(AttributeError):
        args.seed = 1
    with pytest.raises(AttributeError):
        args.new_attribute = 1
    assert args.seed == 1337 and not hasattr(args, "new_attribute")


def test_instances_attributes_cannot_be_deleted(clean_env):
    """Read-only also means no `del`: deleting would silently fall back to the class default."""
    clean_env.setenv("SEED", "42")
    args = Hyperparameters()
    with pytest.raises(AttributeError):
        del args.seed
    assert args.seed == 42


def test_class_defaults_are_not_changed_by_instances(clean_env):
    clean_env.setenv("SEED", "99")
    assert Hyperparameters().seed == 99
    assert Hyperparameters.seed == 1337 and Hyperparameters.defaults()["seed"] == 1337


INVALID = [
    ("SEED", "abc"),
    ("SEED", "1.5"),
    ("ITERATIONS", "-1"),
    ("WARMUP_STEPS", "-3"),
    ("MAX_WALLCLOCK_SECONDS", "inf"),
    ("MUON_MOMENTUM", "1.5"),
    ("COMPILE", "2"),
    ("SWA_ENABLED", "maybe"),
    ("NUM_HEADS", "7"),  # does not divide MODEL_DIM 512
    ("TRAIN_BATCH_TOKENS", "1000"),  # not a multiple of 8 x 2048
    ("TRAIN_BATCH_TOKENS", "2048"),
    ("VE_LAYERS", "9,11"),  # 11 layers: 0..10
    ("VE_LAYERS", "-1"),
    ("RUN_ID", "../escape"),
    ("TTT_FREEZE_BLOCKS", "12"),  # only 11 blocks
    ("EVAL_STRIDE", "48"),  # must divide EVAL_SEQ_LEN 2048
    ("TTT_CHUNK_TOKENS", "3000"),  # not a multiple of EVAL_SEQ_LEN
]


@pytest.mark.parametrize("name,raw", INVALID, ids=[f"{n}={v}" for n, v in INVALID])
def test_invalid_values_name_the_variable(clean_env, name, raw):
    clean_env.setenv(name, raw)
    with pytest.raises(InputError) as info:
        Hyperparameters()
    assert name in str(info.value)
