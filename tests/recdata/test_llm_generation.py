"""The shared LLM generator + answer cache: resume after a kill with no prompt asked twice; tiny HF model."""

from __future__ import annotations

import json

import pytest

from alignrec.llm.generation import HFGenerator, answer_key, generate_cached, read_cache


class Killed(RuntimeError):
    pass


def _scripted(asked: list[str], die_after: int | None = None):
    """A generator answering 'A:<prompt>'; raises (a 'kill') once ``die_after`` prompts were answered."""
    def make():
        def generate(prompts):
            if die_after is not None and len(asked) + len(prompts) > die_after:
                raise Killed
            asked.extend(prompts)
            return [f"A:{p}" for p in prompts]
        return generate
    return make


def test_resume_after_kill_asks_no_prompt_twice(tmp_path):
    cache = tmp_path / "answers.jsonl"
    prompts = {f"n{i}": f"prompt {i}" for i in range(10)}
    asked: list[str] = []
    with pytest.raises(Killed):
        generate_cached(prompts, cache, "m", _scripted(asked, die_after=4), chunk=2)
    assert len(asked) == 4 and len(read_cache(cache)) == 4  # two finished chunks were flushed
    result = generate_cached(prompts, cache, "m", _scripted(asked), chunk=2)
    assert sorted(asked) == sorted(prompts.values())  # every prompt asked exactly once over both runs
    assert len(asked) == len(set(asked)) == 10
    assert result.complete and result.answers == {n: f"A:{p}" for n, p in prompts.items()}
    assert result.stats["cached"] == 4 and result.stats["llm_calls"] == 6
    generate_cached(prompts, cache, "m", lambda: pytest.fail("model loaded although everything is cached"))


def test_key_covers_model_and_settings_and_duplicates_are_asked_once(tmp_path):
    cache = tmp_path / "answers.jsonl"
    asked: list[str] = []
    result = generate_cached({"a": "same", "b": "same", "c": "other"}, cache, "m", _scripted(asked))
    assert asked == ["same", "other"] and result.answers["b"] == "A:same"
    generate_cached({"a": "same"}, cache, "m2", _scripted(asked))  # another model: asked again
    generate_cached({"a": "same"}, cache, "m", _scripted(asked), settings={"max_new_tokens": 5})
    assert asked == ["same", "other", "same", "same"]
    assert answer_key("p", "m", {"x": 1}) != answer_key("p", "m", {"x": 2})


def test_torn_line_is_regenerated_and_next_entry_survives(tmp_path):
    cache = tmp_path / "answers.jsonl"
    generate_cached({"a": "pa"}, cache, "m", _scripted([]))
    with open(cache, "a") as f:
        f.write('{"key": "torn')  # a kill in the middle of a write
    asked: list[str] = []
    generate_cached({"a": "pa", "b": "pb"}, cache, "m", _scripted(asked))
    assert asked == ["pb"]
    assert set(read_cache(cache).values()) == {"A:pa", "A:pb"}
    assert all(json.loads(line) for line in cache.read_text().splitlines()[-1:])


def test_time_budget_stops_and_resumes(tmp_path):
    cache = tmp_path / "answers.jsonl"
    prompts = {f"n{i}": f"p{i}" for i in range(6)}
    asked: list[str] = []
    first = generate_cached(prompts, cache, "m", _scripted(asked), chunk=2, max_seconds=1e-9)
    assert not first.complete and len(asked) == 2
    second = generate_cached(prompts, cache, "m", _scripted(asked), chunk=2)
    assert second.complete and len(asked) == 6


def test_hf_generator_batched_left_padded_matches_one_by_one(tiny_model_dir):
    gen = HFGenerator(tiny_model_dir, max_new_tokens=4, batch_size=3, device="cpu")
    prompts = ["Lab pipette tips", "gloves", "Recommend the next item for this user please"]
    batched = gen(prompts)
    assert gen.calls == 3 and 3 <= gen.generated_tokens <= 12 and gen.prompt_tokens > 0
    one = HFGenerator(tiny_model_dir, max_new_tokens=4, batch_size=1, device="cpu")
    assert [one([p])[0] for p in prompts] == batched  # left padding does not change greedy answers
    assert gen.format("hi").startswith("<|im_start|>user\nhi")  # the chat template wraps the prompt


CHILD = """
import os, signal, sys
from alignrec.llm.generation import generate_cached
asked_log = sys.argv[2]
def make():
    def generate(prompts):
        with open(asked_log, "a") as f:
            f.write("".join(p + "\\n" for p in prompts))
        if sum(1 for _ in open(asked_log)) > 4:
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill in the middle of the third chunk
        return ["A:" + p for p in prompts]
    return generate
generate_cached({f"n{i}": f"prompt {i}" for i in range(10)}, sys.argv[1], "m", make, chunk=2)
"""


def test_sigkill_mid_run_then_resume(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    cache, log = tmp_path / "answers.jsonl", tmp_path / "asked.txt"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.run([sys.executable, "-c", CHILD, str(cache), str(log)], cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)})
    assert child.returncode == -9
    assert len(read_cache(cache)) == 4  # the two chunks before the kill were on disk
    asked: list[str] = []
    result = generate_cached({f"n{i}": f"prompt {i}" for i in range(10)}, cache, "m", _scripted(asked), chunk=2)
    assert result.complete and len(asked) == 6
    answered_before = set(log.read_text().splitlines()[:4])
    assert answered_before.isdisjoint(asked)  # nothing answered before the kill is asked again
