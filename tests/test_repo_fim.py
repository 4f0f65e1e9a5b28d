"""Repo-level FIM: retrieved files laid out with the model's own file-separator
tokens (embedded engine) or sent as llama.cpp's input_extra, not as comments."""
from __future__ import annotations

import pytest

from limner import buffer
from limner.backends import open as open_backend
from limner.backends.embedded import job_for
from limner.engine import gguf, models, prompts
from limner.retrieval import assemble

APP = "from pkg.tokens import Budget, count_tokens\n\n\ndef main(args):\n    b = Budget(100)\n"
TOKENS = ('def count_tokens(text, model="small"):\n    """Count the tokens of text."""\n'
          "    return len(text.split())\n\n\nclass Budget:\n    def __init__(self, limit):\n"
          "        self.limit = limit\n")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LIMNER_FILE", raising=False)
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "tokens.py").write_text(TOKENS)
    (root / "pkg" / "app.py").write_text(APP)
    return root


def infill(repo, head: str):
    text = head + "!file pkg/app.py\n!retrieve\n" + APP + "    n = \n!infill\n    return n\n"
    req = buffer.parse(text, cwd=str(repo), env={})
    assemble.apply(req, env={})
    return req


def test_the_bundled_vocabularies():
    smol = gguf.read_metadata(models.resolve("smollm2-135m", "completion")[1])
    assert gguf.repo_token_ids(smol) == {"repo": 3, "sep": 5}  # <repo_name>, <file_sep>
    gemma_path = models._gemma_path(create=False)
    if gemma_path.exists():
        assert gguf.repo_token_ids(gguf.read_metadata(gemma_path)) is None


def test_gguf_keys_win_over_spellings():
    meta = {"tokenizer.ggml.fim_sep_token_id": 7, "tokenizer.ggml.fim_rep_token_id": 9,
            "tokenizer.ggml.tokens": ["<file_sep>"]}
    assert gguf.repo_token_ids(meta) == {"repo": 9, "sep": 7}
    assert gguf.repo_token_ids({"tokenizer.ggml.tokens": ["a", "<|file_sep|>"]}) == {"repo": None, "sep": 1}


def test_layout_is_llama_cpps():
    def tok(t):
        return [ord(c) for c in t]

    out = prompts.repo_tokens({"repo": -1, "sep": -2}, tok, "proj", [("a.py", "x = 1")], "b.py")
    assert out == [-1, *tok("proj\n"), -2, *tok("a.py\n"), *tok("x = 1\n"), -2, *tok("b.py\n")]
    no_repo = prompts.repo_tokens({"repo": None, "sep": -2}, tok, "proj", [], "b.py")
    assert no_repo == [-2, *tok("b.py\n")]


def test_embedded_model_with_a_file_separator_gets_files_not_comments(repo):
    req = infill(repo, "!profile local\n!:model smollm2-135m\n!budget 300\n")
    assert req.extra_files and {name for name, _ in req.extra_files} == {"pkg/tokens.py"}
    assert any("def count_tokens" in text for _, text in req.extra_files)
    assert "Context from other files" not in req.prefix and req.prefix.startswith("from pkg")
    assert 0 < req.context_used <= 300 and any("tokens.py" in p.source for p in req.placed)
    job = job_for(req)
    assert (job.filename, job.repo) == ("pkg/app.py", "proj")
    assert job.extra == [list(f) for f in req.extra_files]


def test_embedded_model_without_one_keeps_comments(repo):
    if not models._gemma_path(create=False).exists():
        pytest.skip("Gemma is assembled on first use")
    req = infill(repo, "!profile local\n!budget 300\n")  # infill's default: Gemma, no separator
    assert not req.extra_files and req.prefix.startswith("# Context from other files")


def test_llama_cpp_infill_gets_retrieved_files_as_input_extra(repo):
    req = infill(repo, "!api http://127.0.0.1:9/\n!backend llamacpp\n!budget 300\n")
    body = open_backend(req).describe().body
    names = [e["filename"] for e in body["input_extra"]]
    assert "pkg/tokens.py" in names and "Context from other" not in body["input_prefix"]
    # Illume's plain /infill (no `!backend llamacpp`) keeps the comments in the prefix.
    plain = infill(repo, "!api http://127.0.0.1:9/\n!budget 300\n")
    assert "input_extra" not in open_backend(plain).describe().body
    assert plain.prefix.startswith("# Context from other files")


@pytest.mark.slow
def test_the_files_reach_the_model(repo, tmp_path_factory):
    """The real engine: the prompt holds the separator tokens and the file's text."""
    from engine_support import collect, engine_session

    with engine_session(tmp_path_factory, max_models=1) as eng:
        req = infill(repo, "!profile local\n!:model smollm2-135m\n!:max_tokens 4\n!:temperature 0\n"
                           "!budget 300\n")
        job = job_for(req)
        _, with_files, _ = collect(eng.stream(job))
        m = next(iter(eng._models.values()))
        tokens = eng._prompt_tokens(m, job)
        assert tokens.count(5) == len(job.extra) + 1 and 3 in tokens  # a <file_sep> per file + ours
        text = m.llm.detokenize(tokens).decode()
        assert "pkg/tokens.py\ndef count_tokens" in text and "pkg/app.py\nfrom pkg.tokens" in text
        job.extra = None
        _, alone, _ = collect(eng.stream(job))
        assert with_files.prompt_tokens > alone.prompt_tokens + 20
