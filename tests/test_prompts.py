"""Prompt sets: files, JSON Lines, negative prompts, one-line errors, the shipped set."""

from __future__ import annotations

import json

import pytest

from optuna_diffusion.errors import ConfigError, MissingFileError
from optuna_diffusion.prompts import DEFAULT_PROMPT_FILE, Prompt, PromptSet, PromptSettings, default_prompts
from optuna_diffusion.settings import SettingError


def test_text_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# a comment\n\na red bicycle\n   \n  # indented comment\n a cat on a sofa  \n", encoding="utf-8")
    prompts = PromptSet.from_file(path)
    assert [p.text for p in prompts] == ["a red bicycle", "a cat on a sofa"]
    assert all(p.negative is None for p in prompts)


def test_sample_i_uses_prompt_i_mod_n():
    prompts = PromptSet(["a", "b", "c"])
    assert prompts.indices(0, 7) == (0, 1, 2, 0, 1, 2, 0)
    assert prompts.indices(4, 6) == (1, 2)
    assert prompts.texts(2, 5) == ["c", "a", "b"]


def test_jsonl_negative_prompts_and_the_sets_default(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "a dog"},
        {"prompt": "a cat", "negative_prompt": "blurry"},
        {"prompt": "a cow", "negative_prompt": ""},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    assert PromptSet.from_file(path).negatives(0, 3) == [None, "blurry", ""]
    assert PromptSet.from_file(path, negative_prompt="ugly").negatives(0, 3) == ["ugly", "blurry", ""]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.txt", "", "holds no prompts"),
        ("comments.txt", "# only\n\n#comments\n", "holds no prompts"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', "line 2: not JSON"),
        ("list.jsonl", '{"prompt": "a"}\n["a"]\n', "line 2: expected an object"),
        ("missing.jsonl", '{"prompt": "a"}\n\n{"negative_prompt": "b"}\n', 'line 3: "prompt" must be a non-empty'),
        ("blank.jsonl", '{"prompt": "  "}\n', 'line 1: "prompt" must be'),
        ("key.jsonl", '{"prompt": "a", "negative": "b"}\n', "line 1: unknown key 'negative'"),
        ("neg.jsonl", '{"prompt": "a", "negative_prompt": 3}\n', 'line 1: "negative_prompt" must be a string'),
    ],
)
def test_malformed_files_are_one_line_errors_naming_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        PromptSet.from_file(path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        PromptSet.from_file(tmp_path / "nope.txt")
    path = tmp_path / "latin.txt"
    path.write_bytes("un caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        PromptSet.from_file(path)


def test_prompts_given_in_python_are_checked():
    with pytest.raises(ConfigError, match="holds no prompts"):
        PromptSet([])
    with pytest.raises(ConfigError, match="prompt 2 must be a non-empty string"):
        PromptSet(["a", ""])
    with pytest.raises(ConfigError, match="negative_prompt must be a string"):
        PromptSet(["a"], negative_prompt=3)
    assert PromptSet([Prompt("a", "b"), "c"], negative_prompt="d").negatives(0, 2) == ["b", "d"]


def test_the_shipped_prompt_set():
    prompts = default_prompts()
    texts = [p.text for p in prompts]
    assert DEFAULT_PROMPT_FILE.is_file() and DEFAULT_PROMPT_FILE.parent.parent.name == "optuna_diffusion"
    assert len(texts) >= 300 and len(set(texts)) == len(texts)
    assert "a red bicycle leaning against a brick wall" in texts
    assert all(len(t) < 120 and t == t.strip() and not t.startswith("#") for t in texts)
    assert default_prompts() == prompts  # deterministic
    assert default_prompts(negative_prompt="blurry").negatives(0, 2) == ["blurry", "blurry"]


def test_prompt_settings_section(tmp_path):
    assert PromptSettings().load() == default_prompts()
    (tmp_path / "mine.txt").write_text("a boat\n", encoding="utf-8")
    section = PromptSettings.from_mapping({"file": "mine.txt", "negative_prompt": "fog"})
    prompts = section.load(base=tmp_path)
    assert [(p.text, p.negative) for p in prompts] == [("a boat", "fog")]
    with pytest.raises(SettingError, match="unknown key prompts.negative"):
        PromptSettings.from_mapping({"negative": "x"})
