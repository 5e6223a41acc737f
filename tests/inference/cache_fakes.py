"""Deterministic fake recommenders and histories shared by the cache tests (and the kill-test subprocess)."""

from __future__ import annotations

import hashlib
import struct
import time

CATALOGUE = [f"i{n}" for n in range(30)]


def make_histories(num_users: int, salt: str = "") -> dict[str, list[str]]:
    return {
        f"u{n:04d}": [CATALOGUE[(n * 7 + j) % len(CATALOGUE)] for j in range(1 + n % 4)] + ([salt] if salt else [])
        for n in range(num_users)
    }


def expected_recs(user_id: str, history: list[str], k: int) -> list[tuple[str, float]]:
    """Top-k that depends on user and history: k distinct catalogue items not in the history, descending score."""
    start = int(hashlib.sha256(f"{user_id}|{','.join(history)}".encode()).hexdigest()[:6], 16)
    items = [i for i in (CATALOGUE[(start + j) % len(CATALOGUE)] for j in range(len(CATALOGUE))) if i not in history]
    return [(item, round(-0.25 * r - (start % 97) / 100.0, 6)) for r, item in enumerate(items[:k])]


def cache_rows(cache) -> dict[str, list[tuple[str, float]]]:
    """``user -> recs`` of a built cache (folder or URI), asserting each user is stored once."""
    from inference.cache import iter_cache

    out: dict[str, list[tuple[str, float]]] = {}
    for user, _, recs in iter_cache(cache):
        assert user not in out, f"user {user} stored twice"
        out[user] = recs
    return out


def as_stored(recs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """``recs`` as a published store gives them back: scores rounded to float16 (``inference.cache.rows``)."""
    return [(item, struct.unpack("<e", struct.pack("<e", score))[0]) for item, score in recs]


class FakeRecommender:
    """Records every user it was asked about; optionally sleeps per call or fails after some calls."""

    def __init__(self, k: int, sleep_s: float = 0.0, fail_after_calls: int | None = None, log_path=None):
        self.k, self.sleep_s, self.fail_after_calls, self.log_path = k, sleep_s, fail_after_calls, log_path
        self.calls: list[list[str]] = []

    def __call__(self, user_ids: list[str], histories: list[list[str]]) -> list[list[tuple[str, float]]]:
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise RuntimeError("simulated crash")
        self.calls.append(list(user_ids))
        if self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write("\n".join(user_ids) + "\n")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return [expected_recs(u, h, self.k) for u, h in zip(user_ids, histories, strict=True)]

    @property
    def users_seen(self) -> list[str]:
        return [u for call in self.calls for u in call]


class FakeRecommenderFactory:
    """Picklable factory for the Ray engine: each actor gets its own ``FakeRecommender``.

    ``kill_after_calls``: the first actor to finish that many calls SIGKILLs itself at its next call (a marker
    file created with O_EXCL makes it happen once per build, whichever actor and retry); completed calls are
    appended to ``log_path`` so a test can count how often each user was computed.
    """

    def __init__(self, k: int, log_path=None, sleep_s: float = 0.0, kill_after_calls: int | None = None,
                 kill_marker=None):
        self.k, self.log_path, self.sleep_s = k, log_path, sleep_s
        self.kill_after_calls, self.kill_marker = kill_after_calls, kill_marker

    def __call__(self):
        return _KillableRecommender(self)


class _KillableRecommender(FakeRecommender):
    def __init__(self, factory: FakeRecommenderFactory):
        super().__init__(factory.k, sleep_s=factory.sleep_s, log_path=factory.log_path)
        self.factory = factory

    def __call__(self, user_ids, histories):
        f = self.factory
        if f.kill_after_calls is not None and len(self.calls) >= f.kill_after_calls and _claim_once(f.kill_marker):
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)  # the actor dies mid-chunk, nothing of this chunk is written
        return super().__call__(user_ids, histories)


def _claim_once(marker) -> bool:
    import os

    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False
