"""Bad input to the command line gets one line naming the problem and exit status 2, never a traceback; arguments
are checked before any model loads (the model named in these cases does not exist, so loading it first would give
another message)."""

from __future__ import annotations

import json

import pytest

from retrieval_policies import cli

MISSING_MODEL = "nobody/no-such-model"
EVAL_ROW = {
    "id": "q1",
    "question": "Who wrote Hamlet?",
    "answers": ["Shakespeare"],
    "ctxs": [{"title": "Hamlet", "text": "Hamlet is a play by Shakespeare."}],
}


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts.jsonl").write_text('{"id": "a", "text": "A dog barked."}\n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "no_text.jsonl").write_text('{"id": "a", "body": "A dog barked."}\n')
    (tmp_path / "eval.jsonl").write_text(json.dumps(EVAL_ROW) + "\n")
    (tmp_path / "bad_corpus.jsonl").write_text('{"id": "a", "text": "fine"}\n{"id": "b", "score": 3}\n')
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "config.json").write_text("{}")
    return tmp_path


# (arguments, a part of the message); every case must end with exit status 2 and "error:" or argparse's "usage:"
CASES = {
    "grace encode: unknown model": (
        ["grace", "encode", "--model", MISSING_MODEL, "--data", "texts.jsonl", "--output", "out"],
        MISSING_MODEL,
    ),
    "grace encode: missing data file, checked before the model": (
        ["grace", "encode", "--model", MISSING_MODEL, "--data", "missing.jsonl", "--output", "out"],
        "missing.jsonl: no such file or folder",
    ),
    "grace encode: empty data file": (
        ["grace", "encode", "--model", MISSING_MODEL, "--data", "empty.jsonl", "--output", "out"],
        "has no rows",
    ),
    "grace encode: missing text column": (
        ["grace", "encode", "--model", MISSING_MODEL, "--data", "no_text.jsonl", "--output", "out"],
        "row 0 has no column 'text'",
    ),
    "grace encode: batch size 0": (
        ["grace", "encode", "--model", MISSING_MODEL, "--data", "texts.jsonl", "--output", "o", "--batch-size", "0"],
        "must be at least 1",
    ),
    "grace evaluate: unknown model": (["grace", "evaluate", "--model", MISSING_MODEL], MISSING_MODEL),
    "grace evaluate: negative temperature": (
        ["grace", "evaluate", "--model", MISSING_MODEL, "--temperature", "-1"],
        "must be >= 0",
    ),
    "dynamicrag evaluate: unknown model": (
        ["dynamicrag", "evaluate", "--model", MISSING_MODEL, "--data", "eval.jsonl"],
        MISSING_MODEL,
    ),
    "dynamicrag evaluate: missing data folder": (
        ["dynamicrag", "evaluate", "--model", MISSING_MODEL, "--data", "./no-such-folder"],
        "no-such-folder: no such file or folder",
    ),
    "dynamicrag evaluate: empty data file": (
        ["dynamicrag", "evaluate", "--model", MISSING_MODEL, "--data", "empty.jsonl"],
        "empty.jsonl: the file is empty",
    ),
    "dynamicrag evaluate: --max-questions 0": (
        ["dynamicrag", "evaluate", "--model", MISSING_MODEL, "--data", "eval.jsonl", "--max-questions", "0"],
        "must be at least 1",
    ),
    "dynamicrag evaluate: --batch-size -1": (
        ["dynamicrag", "evaluate", "--model", MISSING_MODEL, "--data", "eval.jsonl", "--batch-size", "-1"],
        "must be at least 1",
    ),
    "rag evaluate: --max-questions -1": (["rag", "evaluate", "--max-questions", "-1"], "must be at least 1"),
    "rag ask: unknown retriever model": (["rag", "ask", "--retriever", MISSING_MODEL, "What?"], MISSING_MODEL),
    "rag ask: malformed corpus row": (
        ["rag", "ask", "--corpus", "bad_corpus.jsonl", "What is fine?"],
        "row 1",
    ),
    "push: not a repo id (dry run too)": (
        ["push", "model", "not_a_model", "not a repo id", "--dry-run"],
        "is not a Hub repo id",
    ),
    "push: a folder that is no model, no card": (
        ["push", "model", "not_a_model", "me/model", "--dry-run"],
        "not a GRACE or DynamicRAG model folder",
    ),
    "card: a folder that is no model": (["card", "not_a_model", "me/model"], "not a GRACE or DynamicRAG model folder"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_exit_status_2(name, files, capsys):
    argv, message = CASES[name]
    try:
        status = cli.main(argv)
    except SystemExit as stop:  # argparse refuses a bad argument this way
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and message in err, err
    assert err.count("error:") + err.count("refused:") == 1 or "usage:" in err, err


def test_traceback_flag_shows_the_traceback(files):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        cli.main(
            ["--traceback", "grace", "encode", "--model", MISSING_MODEL, "--data", "missing.jsonl", "--output", "o"]
        )


def _builder(name: str):
    import importlib.util

    from testing_utils import ROOT

    spec = importlib.util.spec_from_file_location(f"builder_{name}", ROOT / "dataset_builders" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, ROOT / "docs" / "examples"


def test_builders_take_your_own_file_and_name_a_missing_column(tmp_path, capsys):
    builder, examples = _builder("grace_triplets")
    out = tmp_path / "mine"
    assert (
        builder.run(lambda: builder.main(["--data", str(examples / "grace_triplets.jsonl"), "--output-dir", str(out)]))
        == 0
    )
    assert "kept    triplets/source" in capsys.readouterr().out and (out / "README.md").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n')
    assert builder.run(lambda: builder.main(["--data", str(bad), "--output-dir", str(tmp_path / "o")])) == 2
    err = capsys.readouterr().err
    assert "no column ['negative']; columns are ['query', 'positive']" in err and "Traceback" not in err
