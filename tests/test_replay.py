"""limner replay: exchanges logged by real `limner` runs, re-sent to another model.

Logged with SmolLM2 and replayed on Gemma, and the other way round, on the
real engine; replayed on the same model at temperature 0 the reply must come
back identical (similarity 1.0). Selection by id, search and time range, and
the rebuild from a request body, run against a scripted server.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import limner_command
from test_eval_scripted import ScriptedModel, last_user

from limner.evals import replay


@pytest.fixture
def engine_env(tmp_path, tmp_path_factory, limner_env):
    """A private log, the shared model dir (Gemma is assembled once per session)."""
    from engine_support import shared_data_dir

    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(shared_data_dir(tmp_path_factory) / "models", target_is_directory=True)
    (shared_data_dir(tmp_path_factory) / "models").mkdir(exist_ok=True)
    env = {**limner_env, "LIMNER_DATA_DIR": str(data), "LIMNER_ENGINE": "inproc"}
    env.pop("LIMNER_NO_LOG")
    return env


def _limner(args, env, stdin=None, timeout=240):
    return subprocess.run(limner_command() + args, input=stdin, capture_output=True, text=True, env=env,
                          timeout=timeout)


def _logged_ids(env) -> list[int]:
    return [r["id"] for r in json.loads(_limner(["logs", "--json"], env).stdout)]


@pytest.mark.slow
def test_log_with_one_model_replay_on_the_other_and_on_itself(engine_env, monkeypatch, capsys):
    chat = ("!:model smollm2-135m\n!:max_tokens 16\n!:temperature 0\n!:n_threads 1\n"
            "!user\n\nName three colours.\n")
    completion = ("!:model gemma3-270m\n!:max_tokens 12\n!:temperature 0\n!:n_threads 1\n!completion\n"
                  "def fibonacci(n):\n")
    for buf in (chat, completion):
        p = _limner([], engine_env, stdin=buf)
        assert p.returncode == 0, p.stdout + p.stderr
    smol_id, gemma_id = sorted(_logged_ids(engine_env))
    # The replays run in this process (one engine, each model loaded once).
    for k, v in engine_env.items():
        if k.startswith(("LIMNER_", "XDG_")):
            monkeypatch.setenv(k, v)
    from limner import log

    log.close()

    def rep(i, model):
        code = replay.main(["--id", str(i), "--model", model, "--threads", "1", "--json"])
        out = capsys.readouterr().out
        assert code == 0, out
        return json.loads(out)

    # Across models: the replies differ, and the numbers say by how much.
    for i, other, how in ((smol_id, "gemma3-270m", "chat"), (gemma_id, "smollm2-135m", "completion")):
        r = rep(i, other)
        ex, = r["exchanges"]
        assert ex["how"] == how and ex["new_reply"] and not ex["error"]
        assert 0 <= ex["edit_similarity"] < 1 and 0 <= ex["token_similarity"] < 1
        assert r["summary"]["compared"] == 1 and r["summary"]["target"] == other
    # Same model, greedy, the logged max_tokens: no drift at all.
    same = rep(gemma_id, "gemma3-270m")
    assert same["exchanges"][0]["exact"] is True and same["summary"]["edit_similarity_mean"] == 1.0
    log.close()


def test_choose_by_id_search_and_time_and_rebuild_from_a_body(tmp_path, limner_env):
    server = ScriptedModel(lambda body: "reply to " + (last_user(body) or body.get("prompt", ""))).start()
    env = {**limner_env}
    env.pop("LIMNER_NO_LOG")
    try:
        for word in ("apples", "pears", "plums"):
            p = _limner([], env, stdin=f"!api {server.url}\n!user\n\nTell me about {word}.\n")
            assert p.returncode == 0, p.stdout
        ids = sorted(_logged_ids(env))
        # Replay on the "new version" of the model: its replies changed a little.
        new = ScriptedModel(lambda body: "a reply to " + last_user(body)).start()
        try:
            p = _limner(["replay", "--search", "pears", "--endpoint", new.url, "--model", "v2", "--json"], env)
            out = json.loads(p.stdout)
            assert [e["id"] for e in out["exchanges"]] == [ids[1]]
            ex = out["exchanges"][0]
            assert ex["old_reply"] == "reply to Tell me about pears."
            assert ex["new_reply"] == "a reply to Tell me about pears."
            assert ex["edit_similarity"] == pytest.approx(1 - 2 / 31, abs=1e-4)
            assert ex["token_similarity"] == pytest.approx(1 - 1 / 8, abs=1e-4)
            sent = new.requests[0][1]
            assert sent["model"] == "v2" and sent["temperature"] == 0
            p = _limner(["replay", "--since", "1h", "--id", str(ids[0]), "--endpoint", new.url, "--model", "v2"], env)
            assert p.returncode == 0
            assert "3 of 3 exchanges replayed on v2" in p.stdout and "most changed" in p.stdout
        finally:
            new.stop()
    finally:
        server.stop()
    # No buffer in the log (as `limner serve` records): the body is enough.
    row = {"id": 9, "request_body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                                     "temperature": 0.7}}
    how, msgs, prompt, task, params = replay.rebuild(row)
    assert (how, msgs, prompt, params) == ("chat", [{"role": "user", "content": "hi"}], None, {"max_tokens": 5})
    how, _, prompt, _, params = replay.rebuild({"id": 3, "request_body": {
        "model": "gemma3-270m", "mode": "completion", "prompt": "x = ", "params": {"max_tokens": 7}}})
    assert (how, prompt, params) == ("completion", "x = ", {"max_tokens": 7})


def test_replay_errors(limner_env):
    p = _limner(["replay", "--model", "gemma3-270m"], limner_env)
    assert p.returncode != 0 and p.stdout.lstrip().startswith("!error") and "--id N" in p.stdout
    p = _limner(["replay", "--id", "4242", "--model", "gemma3-270m"], limner_env)
    assert p.returncode != 0 and "no exchange with id 4242" in p.stdout and "Traceback" not in p.stderr
