"""The Ray engine of the cache build on a two-node Ray cluster on one machine, losing a node mid-build.

``ray.cluster_utils.Cluster`` starts two raylets (a head and a worker node, each with its own CPUs and object
store); the build's two ``ChunkWriter`` actors land one on each. Once the worker's actor has committed a chunk and
is in its next one, the worker node is killed (``remove_node(..., allow_graceful=False)``: its raylet, object
store, actors and the blocks they were to read die, as when a machine is lost). The build must still finish, with
every user stored exactly once, row for row the local engine's cache, and no chunk committed before the loss
written or computed again.

What happens in between (Ray 2.60): Ray restarts the lost actor on the head and retries its task; the packed
blocks held by the lost node are not rebuilt (``max_retries=0`` on that stage: rebuilding them through the
shuffle's lineage deadlocked here), so the attempt fails with ``ObjectReconstructionFailedError`` and
``build_cache_ray`` computes the chunks not committed yet on the head.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install 'alignrec[ray]'")

from ray._private import ray_constants  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from inference.cache import build_cache, read_manifest  # noqa: E402
from inference.cache.ray_losses import lost_to_the_cluster  # noqa: E402
from recdata.errors import UserError  # noqa: E402
from tests.inference.cache_fakes import FakeRecommender, cache_rows, expected_recs, make_histories  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
K, CHUNK, NUM_USERS = 4, 50, 1200  # 24 chunks
SLEEP_S = 1.0  # per chunk: the two actors take ~12 s together, and the kill lands inside a chunk
STALL_S = 600  # no new chunk or call for this long: the build hangs (fail rather than wait forever)
JOB = """
import json, sys
from pathlib import Path
import ray
from inference.cache.ray_build import RayOptions, build_cache_ray
from tests.inference.cache_fakes import make_histories
from tests.inference.test_cache_ray_multinode import CHUNK, K, NUM_USERS, SLEEP_S, NodeLoggingFactory
address, out_dir, log_dir = sys.argv[1:4]
ray.init(address=address, log_to_driver=False)
result = build_cache_ray(NodeLoggingFactory(K, Path(log_dir), SLEEP_S), make_histories(NUM_USERS), out_dir, k=K,
                         chunk_size=CHUNK, options=RayOptions(num_actors=2, progress=False))
print(json.dumps({"chunks_total": result.chunks_total, "users_computed": result.users_computed}))
"""


class NodeLoggingFactory:
    """Picklable recommender factory: each actor logs the users it is asked for to ``log_dir/<node_id>-<pid>.txt``
    (before computing them, so a chunk cut short by the node's death is logged too), then sleeps ``sleep_s``."""

    def __init__(self, k: int, log_dir: Path, sleep_s: float) -> None:
        self.k, self.log_dir, self.sleep_s = k, log_dir, sleep_s

    def __call__(self):
        node = ray.get_runtime_context().get_node_id()
        path = self.log_dir / f"{node}-{os.getpid()}.txt"
        path.touch()  # the actor started here (a restarted actor gets a new file)
        fake = FakeRecommender(self.k)

        def recommend(user_ids, histories):
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(f"{u}\n" for u in user_ids))
            time.sleep(self.sleep_s)
            return fake(user_ids, histories)

        return recommend


@ray.remote(num_cpus=2)
class HoldCpus:
    """Takes two CPUs of the node it is pinned to, until killed."""

    def ready(self) -> bool:
        return True


def _computed(log_dir: Path) -> dict[str, list[str]]:
    """``{node_id: [user_id, ...]}`` in the order the actors on that node were asked for them."""
    out: dict[str, list[str]] = {}
    for path in sorted(log_dir.glob("*.txt")):
        out.setdefault(path.stem.split("-")[0], []).extend(path.read_text().split())
    return out


def _lose_node(cluster: Cluster, node) -> None:
    """The machine is gone: SIGKILL its raylet's children (its workers, our actor among them, which would otherwise
    run on until they notice the raylet is gone, and might still commit a chunk) and its Ray processes."""
    import psutil

    raylet = psutil.Process(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
    for proc in [*raylet.children(recursive=True), raylet]:
        proc.kill()
    cluster.remove_node(node, allow_graceful=False)


def _start_cluster() -> tuple[Cluster, object]:
    """Head (3 CPUs: one actor, then room for the lost node's actor and the next attempt's tasks) and worker
    (1 CPU: one actor).

    Objects over 4 KiB go to the object store of the node that made them, as a real build's blocks do (Ray inlines
    smaller ones into their owner, the driver, where a node's loss cannot take them): the packed chunks (~16 KiB
    a block here) then live on both nodes, and the worker's are lost with it; the description rows (~1 KiB)
    stay inlined, as they are in a real build."""
    cluster = Cluster()
    try:
        _add_node(cluster, num_cpus=3, include_dashboard=False, no_monitor=True, include_log_monitor=False,
                  _system_config={"worker_register_timeout_seconds": 300, "max_direct_call_object_size": 4096})
        worker = _add_node(cluster, num_cpus=1)
        cluster.wait_for_nodes(timeout=300)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster, worker


def _add_node(cluster: Cluster, attempts: int = 3, **node_args):
    """``cluster.add_node``, again when the node does not come up: its raylet aborts when its dashboard agent (a
    Python process) takes over ~15 s to start, as on a loaded machine (the retry finds its imports in the page
    cache). What a failed start left running (it is in no node's books) is reaped at once."""
    for attempt in range(attempts):
        try:
            return cluster.add_node(wait=False, **node_args)
        except Exception:  # noqa: BLE001 - ray raises a bare Exception for a node that did not start
            started = [proc.pid for node in cluster.list_all_nodes() for _, proc in node.live_processes()]
            _reap(os.environ["RAY_TMPDIR"], keep=started)
            if attempt == attempts - 1:
                raise


def _reap(tmp: str, keep: list[int] = ()) -> list[int]:
    """Kill the processes whose command line names this cluster's private temp folder, but those in ``keep`` and
    their descendants. Returns their pids."""
    import psutil

    spare = {os.getpid()}
    for pid in keep:
        try:
            spare |= {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] not in spare and tmp in " ".join(proc.info["cmdline"] or ()):
            left.append(proc)
    for proc in left:
        proc.kill()
    psutil.wait_procs(left, timeout=30)
    return [proc.pid for proc in left]


def _patient_get_node(get_node, timeout_s: float = 60.0):
    """Ray's node start-up waits a fixed 30 s for the raylet to register (``ray/_private/node.py``; the
    ``RAY_raylet_start_wait_time_s`` its message names is read nowhere): too short for a GCS answering slowly on a
    loaded 2-core machine. This lookup retries inside that loop for up to ``timeout_s``."""

    def lookup(gcs_address, node_id):
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return get_node(gcs_address, node_id)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    return lookup


@pytest.fixture
def two_nodes():
    """A two-node cluster in a private Ray temp folder, so no other Ray user on this machine finds (or joins) it
    through ``ray_current_cluster``; torn down, and its processes gone, even when the test fails."""
    from ray._private import services

    left: list[int] = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_agent_register_timeout_ms", os.environ.get("RAY_agent_register_timeout_ms", "300000"))
        env.setattr(services, "get_node", _patient_get_node(services.get_node))
        tmp = tempfile.mkdtemp(prefix="raymn-", dir="/tmp")  # short: Ray's socket paths stay under 107 chars
        env.setenv("RAY_TMPDIR", tmp)  # also where Cluster writes ray_current_cluster
        try:
            cluster, worker = _start_cluster()
        except BaseException:
            _reap(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            yield cluster, worker
        finally:
            try:
                ray.shutdown()
                cluster.shutdown()
            finally:
                left = _reap(tmp)
                shutil.rmtree(tmp, ignore_errors=True)
    assert not left, f"ray processes {left} outlived the cluster's shutdown"


@pytest.mark.slow  # two raylets plus a node loss: minutes on a 2-core machine
def test_a_node_lost_mid_build_still_stores_every_user_exactly_once(two_nodes, tmp_path):
    cluster, worker = two_nodes
    histories = make_histories(NUM_USERS)
    num_chunks = NUM_USERS // CHUNK
    local = build_cache(FakeRecommender(K), histories, tmp_path / "local", k=K, chunk_size=CHUNK, progress=False)

    log_dir, out = tmp_path / "calls", tmp_path / "ray"
    log_dir.mkdir()
    shard = out / "shard-00000-of-00001"
    # Hold two of the head's CPUs until both actors run, so that the pool's two actors land one on each node; freed
    # at the kill, they are the room the lost node's actor is restarted in and the next attempt runs in.
    head_id = cluster.head_node.node_id
    hold = HoldCpus.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)).remote()
    ray.get(hold.ready.remote())

    # The build runs in its own driver process, as `alignrec cache build --engine ray --ray_address` would: if it
    # hangs, killing it leaves nothing of it running once the cluster is shut down.
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    job_log = tmp_path / "job.log"
    with open(job_log, "wb") as f:
        job = subprocess.Popen([sys.executable, "-c", JOB, cluster.address, str(out), str(log_dir)], cwd=REPO,
                               env=env, stdout=f, stderr=subprocess.STDOUT)
    chunk_of_user = {u: i // CHUNK for i, u in enumerate(sorted(histories))}  # the plan: users sorted, cut in order
    killed, progress, last_change = {}, None, time.monotonic()
    try:
        while job.poll() is None:
            computed = _computed(log_dir)
            committed = len(list(shard.glob("chunk-*.parquet")))
            now = (committed, sum(map(len, computed.values())))
            progress, last_change = now, (last_change if now == progress else time.monotonic())
            on_worker = computed.get(worker.node_id, [])
            in_flight = chunk_of_user.get(on_worker[-1]) if on_worker else None
            # The worker's actor has committed a chunk and is asleep in its next one: kill its node.
            if (not killed and len(on_worker) >= 2 * CHUNK and computed.get(head_id) and in_flight is not None
                    and not (shard / f"chunk-{in_flight:06d}.parquet").exists()):
                killed["chunks_before"], killed["in_flight"] = committed, in_flight
                killed["inodes"] = {p.name: p.stat().st_ino for p in shard.glob("chunk-*.parquet")}
                _lose_node(cluster, worker)
                ray.kill(hold)
            assert time.monotonic() - last_change < STALL_S, f"the build stalled at {progress} (chunks, calls)"
            time.sleep(0.05)
    finally:
        if job.poll() is None:
            job.kill()
        job.wait()
    output = job_log.read_text(errors="replace")
    assert job.returncode == 0, output[-5000:]
    result = json.loads([line for line in output.splitlines() if line.startswith('{"chunks_total"')][-1])
    assert "chunks_before" in killed, "the worker node was never killed"
    assert killed["chunks_before"] < num_chunks, "the node died after the build had computed everything"

    # Every user is stored once, with the local engine's rows; the chunk files are byte for byte the local ones.
    assert cache_rows(out) == cache_rows(tmp_path / "local") == {u: expected_recs(u, h, K) for u, h in histories.items()}
    local_shard = tmp_path / "local" / "shard-00000-of-00001"
    assert {p.name: p.read_bytes() for p in shard.glob("chunk-*")} == {
        p.name: p.read_bytes() for p in local_shard.glob("chunk-*")}
    manifest = read_manifest(out)
    assert manifest["num_users"] == NUM_USERS and manifest["num_rows"] == NUM_USERS * K
    assert manifest["histories_hash"] == local.manifest["histories_hash"]
    assert result["chunks_total"] == num_chunks

    # No chunk committed before the loss was written again, nor computed again; the chunk the lost node was in the
    # middle of was computed again (so were any the head was in when the lost blocks failed the attempt).
    assert {name: (shard / name).stat().st_ino for name in killed["inodes"]} == killed["inodes"]
    committed_users = {u for u, c in chunk_of_user.items() if f"chunk-{c:06d}.parquet" in killed["inodes"]}
    computed = _computed(log_dir)
    assert set(computed) == {head_id, worker.node_id}, computed.keys()
    counts = Counter(u for users in computed.values() for u in users)
    assert set(counts) == set(histories)
    twice = {u for u, n in counts.items() if n > 1}
    assert not twice & committed_users, sorted(twice & committed_users)
    assert {u for u, c in chunk_of_user.items() if c == killed["in_flight"]} <= twice
    retried = "computing the chunks not committed yet again" in output
    print(f"chunks committed at the kill: {killed['chunks_before']}/{num_chunks}; users computed twice: "
          f"{len(twice)}; build attempts: {2 if retried else 1}")


def _chained(exc: BaseException, cause: BaseException) -> BaseException:
    try:
        raise exc from cause
    except BaseException as raised:  # noqa: BLE001 - the chained exception is the value under test
        return raised


_LOST_BLOCK = ray.exceptions.ObjectLostError("ab" * 14, None, "")


@pytest.mark.parametrize("exc, retry", [
    (_LOST_BLOCK, True),
    (ray.exceptions.OwnerDiedError("ab" * 14, None, ""), True),
    (ray.exceptions.ActorDiedError(), True),
    (ray.exceptions.NodeDiedError("node gone"), True),
    (ray.exceptions.RayTaskError("f", "tb", _LOST_BLOCK).as_instanceof_cause(), True),
    (_chained(RuntimeError("execution failed"), _LOST_BLOCK), True),
    (ray.exceptions.RayTaskError("f", "tb", UserError("bad recs")).as_instanceof_cause(), False),
    (_chained(ray.exceptions.UserCodeException("udf failed"), _LOST_BLOCK), False),
    (RuntimeError("chunk 3 arrived with 49 users"), False),
])
def test_only_a_lost_node_actor_or_block_is_retried(exc, retry):
    """The build computes the missing chunks again after losing part of the cluster, never after an error of the
    recommender or the data (those would fail again)."""
    assert lost_to_the_cluster(exc) is retry
