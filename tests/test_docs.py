"""The docs stay in sync with the code: every hyperparameter in docs/reference.md's table with its default,
.ci/run runs the README's test command, the README stays short and links what it leaves out; train_gpt.py
stays one file read top to bottom."""
import re

from conftest import REPO
import train_gpt


def variables_table() -> dict[str, str]:
    rows = re.findall(r"^\| ([A-Z0-9_]+) \| ([^|]*) \|", (REPO / "docs" / "reference.md").read_text(), flags=re.M)
    return {name: default.strip() for name, default in rows}


def test_every_hyperparameter_is_documented_with_its_default():
    table = variables_table()
    for name, default in train_gpt.Hyperparameters.defaults().items():
        env = name.upper()
        assert env in table, f"{env} missing from the table of docs/reference.md"
        if env == "RUN_ID":
            continue  # documented as a random uuid
        documented = table[env]
        if isinstance(default, bool):
            assert documented == str(int(default)), env
        elif isinstance(default, tuple):
            assert documented == (",".join(map(str, default)) or "(empty)"), env
        elif isinstance(default, (int, float)):
            assert float(documented) == float(default), env
        else:
            assert documented == (default or "(empty)"), env
    assert set(table) == {n.upper() for n in train_gpt.Hyperparameters.defaults()}, "docs/reference.md documents unknown variables"


def test_the_readme_is_short_and_every_link_to_the_docs_resolves():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 15_000
    links = re.findall(r"\]\(((?:docs|configs|scripts|data|tests)/[^)#\s]+)", readme)
    assert {"docs/recipe.md", "docs/reference.md", "docs/running.md", "docs/proxy.md", "docs/performance.md",
            "docs/testing.md"} <= set(links)
    for link in links:
        assert (REPO / link).exists(), link


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert command in readme
    assert ci.strip().splitlines()[-1] == command
    assert "pip install -q -r requirements.txt" in ci
    assert re.search(r"^torch==\d", (REPO / "requirements.txt").read_text(), flags=re.M), "torch must be pinned"


def test_train_gpt_stays_under_2000_lines_in_the_order_its_docstring_gives():
    source = (REPO / "train_gpt.py").read_text()
    assert len(source.splitlines()) < 2000
    stated = re.search(r"reads top to bottom:(.*?)\. Importing", train_gpt.__doc__, flags=re.S)[1]
    banners = re.findall(r"^# -{20,} (.+?)(?: \(§[\d.]+\))?$", source, flags=re.M)
    assert banners == [part.strip().removesuffix("()") for part in stated.split("->")]
