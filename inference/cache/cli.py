"""``alignrec cache build | publish | get``: thin handlers over the cache library.

    alignrec cache build --model_dir runs/sft --split_dir data/scientific --out_dir cache/v1 --k 20
    torchrun --nproc_per_node 4 -m alignrec.cli cache build ...      # shards = ranks (RANK / WORLD_SIZE)
    alignrec cache build --engine ray --ray_address auto --num_actors 8 --gpus_per_actor 1 \
        --histories s3://bucket/histories/ --out_dir s3://bucket/cache/v1 --model_dir /shared/runs/sft
    alignrec cache build ... --out_dir cache/v2 --base_cache cache/v1  # incremental refresh
    alignrec cache publish --cache_dir cache/v1 --store_dir serve/ --split_dir data/scientific
    alignrec cache publish --cache_dir cache/v1 --target redis://127.0.0.1:6379/0 --split_dir data/scientific
    alignrec cache get u123 u456 --store_dir serve/
    alignrec cache build ... --scenarios active        # one top-K per (user, scenario the user was active in)
    alignrec cache get u123 --store_dir serve/ --scenario kitchen

Over 400 lines because the three subcommands share one config family and its boundary checks (k vs catalogue,
provenance of split and model, Redis targets); split per command, those checks would be written three times.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from inference.decode_normaliser import NORMALISERS
from recdata.config import config_to_dict, parse_config
from recdata.errors import ConfigError, InputFileError, UserError

logger = logging.getLogger(__name__)


@dataclass
class CacheBuildConfig:
    out_dir: str = field(metadata={"help": "Cache build folder (Parquet shards + manifest); with --engine ray also a "
                                           "pyarrow/fsspec URI (file://, s3://, gs://, ...). Rerun the same command "
                                           "to resume after a crash."})
    split_dir: str | None = field(default=None, metadata={
        "help": "Saved SplitDataset folder; users and histories come from serving_histories() (last max_history "
                "items of each sequence). Required unless --histories is given."})
    model_dir: str | None = field(default=None, metadata={"help": "Trained run folder (trainer output_dir or its "
                                                                  "merged/); required for --recommender model."})
    recommender: str = field(default="model", metadata={"help": "'model' (the trained LLM, beam search) or "
                                                                "'popularity' (training-popularity baseline cache).",
                                                        "choices": ["model", "popularity"]})
    k: int = field(default=20, metadata={"help": "Items cached per user."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam width (>= k); default k."})
    batch_size: int = field(default=8, metadata={"help": "Users per beam-search batch."})
    chunk_size: int = field(default=256, metadata={"help": "Users per Parquet chunk: the unit of work and resume."})
    num_shards: int | None = field(default=None, metadata={"help": "Number of shard processes; default WORLD_SIZE "
                                                                   "(torchrun/deepspeed) or 1."})
    shard_index: int | None = field(default=None, metadata={"help": "This process's shard; default RANK or 0."})
    users_file: str | None = field(default=None, metadata={"help": "Only these users (one id per line)."})
    base_cache: str | None = field(default=None, metadata={"help": "Finished earlier build: reuse users whose history "
                                                                   "did not change (incremental refresh)."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an out_dir built with other settings instead "
                                                             "of refusing."})
    exclude_history: bool = field(default=True, metadata={"help": "Never recommend items already in the user's "
                                                                  "history (what a served list should do)."})
    device: str | None = field(default=None, metadata={"help": "torch device; default cuda if available else cpu."})
    scenarios: str = field(default="none", metadata={
        "help": "Per-scenario cache (split with scenarios): 'none' = one list per user over the whole catalogue; "
                "'all' = one list per (user, scenario) for every scenario; 'active' = only the scenarios the user "
                "has interactions in (cost = users x scenarios served)."})
    scenario_prompts: bool = field(default=False, metadata={
        "help": "The model was trained with tasks.scenario_prompts: build scenario-naming prompts."})
    engine: str = field(default="local", metadata={
        "help": "'local': this process computes its shard (torchrun/deepspeed ranks for several); 'ray': a Ray "
                "Data actor pool computes every chunk (needs the ray extra: pip install 'alignrec[ray]')."})
    histories: str | None = field(default=None, metadata={
        "help": "--engine ray: Parquet file/folder/URI with columns user_id (string) and history (list of item "
                "ids), read in blocks by Ray tasks instead of loading --split_dir on the driver."})
    ray_address: str = field(default="local", metadata={
        "help": "--engine ray: 'local' starts a cluster on this machine, 'auto' joins the running one (ray start), "
                "or a host:port / ray:// address."})
    num_actors: int = field(default=1, metadata={"help": "--engine ray: model replicas (one per GPU on a GPU "
                                                         "cluster)."})
    gpus_per_actor: float = field(default=0.0, metadata={"help": "--engine ray: GPUs reserved per actor (0 = CPU)."})
    cpus_per_actor: float = field(default=1.0, metadata={"help": "--engine ray: CPUs reserved per actor; also its "
                                                                 "torch thread count."})
    popularity_penalty: float = field(default=0.0, metadata={
        "help": "--recommender model: decoding ranks by log p(item | user) - popularity_penalty * log p_train(item) (training interactions + 1), applied at every beam depth: > 0 gives the long tail beams back, < 0 leans on the popularity prior (an under-trained model); 0 = plain log-probs. Needs --split_dir (the training counts). Use the value the model was evaluated with; choose it on valid users (scripts/bench_popularity_penalty.py), never on test."})
    item_head_decode_weight: float | None = field(default=None, metadata={
        "help": "--recommender model, a run trained with the flat item head: rank by log p(codes) + this x "
                "log p_head(item); unset = the run's own train.item_head_decode_weight. Use the value the model "
                "was evaluated with (evaluate's item_head_decode_weight); a set value is part of the cache's model "
                "identity."})
    item_vector_prior_weight: float = field(default=0.0, metadata={
        "help": "--recommender model with an item head: the content prior (evaluate's item_vector_prior_weight): "
                "add this x cos(u, v_item) to the head's logits, u the unit mean of the history's vectors. Use the "
                "value the model was evaluated with; > 0 is part of the cache's model identity (with the vectors)."})
    item_vectors: str = field(default="", metadata={
        "help": "Folder with vectors.npy + item_ids.json for item_vector_prior_weight; empty = <run>/embeddings "
                "beside model_dir <run>/train/model."})
    decode_normaliser: str = field(default="auto", metadata={
        "help": "--recommender model: what each beam step's log-prob is normalised over (evaluate's "
                "decode_normaliser): vocabulary (exact), children (the trie children of the beam's node; cost per "
                "user set by the beams' children, not the vocabulary) or auto (children from 100,000 items). Use "
                "the value the model was evaluated with; a resolved children is part of the cache's model identity.",
        "choices": list(NORMALISERS)})

    def __post_init__(self) -> None:
        self._check_engine()
        from inference.cache.scenarios import SCENARIO_MODES

        if self.scenarios not in SCENARIO_MODES:
            raise ConfigError(f"scenarios must be one of {list(SCENARIO_MODES)}, got {self.scenarios!r}")
        if self.scenario_prompts and self.scenarios == "none":
            raise ConfigError("scenario_prompts needs a per-scenario cache: set --scenarios all or active")
        if self.recommender not in ("model", "popularity"):
            raise UserError(f"recommender must be 'model' or 'popularity', got {self.recommender!r}")
        if self.recommender == "model" and not self.model_dir:
            raise UserError("--model_dir is required with --recommender model (or use --recommender popularity)")
        if self.k < 1 or self.batch_size < 1 or self.chunk_size < 1:
            raise UserError(f"k, batch_size and chunk_size must be >= 1, got {self.k}, {self.batch_size}, "
                             f"{self.chunk_size}")
        self.num_beams = self.num_beams or self.k
        if self.num_beams < self.k:
            raise UserError(f"num_beams ({self.num_beams}) must be >= k ({self.k}); raise --num_beams")
        if self.popularity_penalty and (self.recommender != "model" or not self.split_dir):
            raise ConfigError("popularity_penalty needs --recommender model and --split_dir (its training counts)")
        if self.item_head_decode_weight is not None:
            if self.recommender != "model":
                raise ConfigError("item_head_decode_weight needs --recommender model (a run with an item head)")
            if self.item_head_decode_weight < 0:
                raise ConfigError(f"item_head_decode_weight must be >= 0, got {self.item_head_decode_weight}")
        if self.item_vector_prior_weight < 0 or (self.item_vector_prior_weight and self.recommender != "model"):
            raise ConfigError(f"item_vector_prior_weight must be >= 0 and needs --recommender model (a run with an "
                              f"item head), got {self.item_vector_prior_weight} with {self.recommender}")
        if self.decode_normaliser not in NORMALISERS or (self.decode_normaliser != "auto"
                                                         and self.recommender != "model"):
            raise ConfigError(f"decode_normaliser must be one of {list(NORMALISERS)} and, set, needs --recommender "
                              f"model (it decodes the beam), got {self.decode_normaliser!r} with {self.recommender}")

    def _check_engine(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.split_dir is None and self.histories is None:
            raise ConfigError("give --split_dir (or, with --engine ray, --histories PARQUET)")
        if self.recommender == "popularity" and not self.split_dir:
            raise ConfigError("--recommender popularity needs --split_dir (its training popularity)")
        if self.engine == "local":
            if self.histories is not None or "://" in self.out_dir:
                raise ConfigError("--histories and URI out_dirs need --engine ray; the local engine reads --split_dir "
                                  "and writes a local folder")
            return
        ray_only = {"num_shards": self.num_shards, "shard_index": self.shard_index, "base_cache": self.base_cache}
        given = [f"--{key}" for key, value in ray_only.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} belong(s) to the local engine: with --engine ray, Ray spreads the "
                              "chunks over the actors (and incremental refresh is local-only for now)")
        if self.scenarios != "none":
            raise ConfigError("--scenarios belongs to the local engine for now (per-scenario keys are expanded from "
                              "--split_dir); drop --engine ray")
        if self.histories is not None and self.users_file is not None:
            raise ConfigError("--users_file filters --split_dir; with --histories, write only the wanted users")
        if self.num_actors < 1 or self.gpus_per_actor < 0 or self.cpus_per_actor <= 0:
            raise ConfigError(f"num_actors must be >= 1, gpus_per_actor >= 0, cpus_per_actor > 0; got "
                              f"{self.num_actors}, {self.gpus_per_actor}, {self.cpus_per_actor}")


@dataclass
class CachePublishConfig:
    cache_dir: str = field(metadata={"help": "Finished cache build folder or URI (file://, s3://, ...; has "
                                             "manifest.json)."})
    store_dir: str | None = field(default=None, metadata={"help": "Serving store folder: versions/*.sqlite + "
                                                                  "CURRENT pointer (or use --target)."})
    target: str | None = field(default=None, metadata={"help": "Publish target instead of --store_dir: "
                                                               "redis://host:port/db[?prefix=P] (versioned keys + "
                                                               "an atomic pointer switch); a Redis Cluster: "
                                                               "redis://any-node:port/0?cluster=true."})
    grace_s: float = field(default=300.0, metadata={"help": "Redis only: seconds a version past --keep_versions stays "
                                                            "readable after the switch; the next publish after that "
                                                            "unlinks it (a TTL removes it 10 min later otherwise)."})
    split_dir: str | None = field(default=None, metadata={"help": "SplitDataset whose training popularity is the "
                                                                  "fallback for unknown users; default: the items "
                                                                  "most often recommended in the cache."})
    fallback_k: int | None = field(default=None, metadata={"help": "Fallback list length; default the cache's k."})
    keep_versions: int = field(default=2, metadata={"help": "Published versions kept (live one included)."})
    score_dtype: str = field(default="float16", metadata={
        "help": "How stored rows keep scores: float16 (2 bytes, ~3 significant digits; 80 bytes per user at K = 20) "
                "or float32 (4 bytes). A cache with a score beyond float16's range (+-65,504) is stored as float32.",
        "choices": ["float16", "float32"]})

    def __post_init__(self) -> None:
        if self.keep_versions < 1:
            raise UserError(f"keep_versions must be >= 1, got {self.keep_versions}")
        if self.fallback_k is not None and self.fallback_k < 1:
            raise ConfigError(f"fallback_k must be >= 1 when set, got {self.fallback_k}")
        if (self.store_dir is None) == (self.target is None):
            raise ConfigError("give exactly one of --store_dir DIR (SQLite) or --target redis://host:port/db")
        if self.target is not None and not self.target.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"--target must be a redis://, rediss:// or unix:// URL, got {self.target!r}; "
                             "use --store_dir for a SQLite folder")
        if self.grace_s <= 0:
            raise ConfigError(f"grace_s must be > 0, got {self.grace_s}")


@dataclass
class CacheGetConfig:
    store_dir: str = field(metadata={"help": "Serving store written by `alignrec cache publish`: a folder or "
                                             "a redis://host:port/db[?prefix=P] URL (&cluster=true for a "
                                             "Redis Cluster)."})
    scenario: str | None = field(default=None, metadata={"help": "Scenario of a per-scenario store (required there)."})


def register_cache_commands(subparsers) -> None:
    """Add ``cache build | publish | get`` to the ``alignrec`` parser (called from ``inference/cli.py``)."""
    group = subparsers.add_parser("cache", help="Offline top-K cache: build (sharded, resumable), publish, get.")
    sub = group.add_subparsers(dest="cache_command", metavar="CACHE_COMMAND", required=True)
    build = sub.add_parser("build", help="Top-K of every user -> Parquet shards + manifest.", add_help=False)
    build.set_defaults(handler=_run_build)
    publish = sub.add_parser("publish", help="Compile a build into SQLite and switch the live version.",
                             add_help=False)
    publish.set_defaults(handler=_run_publish)
    get = sub.add_parser("get", help="Print the cached top-K of USER(s) as JSON lines.", add_help=False,
                         usage="alignrec cache get USER [USER ...] --store_dir DIR [--scenario NAME]")
    get.set_defaults(handler=_run_get)


def load_histories(split_dir: str, users_file: str | None) -> dict[str, list[str]]:
    from recdata import SplitDataset

    histories = SplitDataset.load(split_dir).serving_histories()
    if users_file is None:
        return histories
    wanted: dict[str, list[str]] = {}
    for line_no, line in enumerate(Path(users_file).read_text(encoding="utf-8").splitlines(), start=1):
        user = line.strip()
        if not user:
            continue
        if user not in histories:
            raise UserError(f"{users_file}:{line_no}: user {user!r} is not in {split_dir}; remove it or fix the id")
        wanted[user] = histories[user]
    if not wanted:
        raise UserError(f"{users_file} lists no user; put one user id per line")
    return wanted


def check_build_inputs(cfg: CacheBuildConfig) -> str:
    """Before any model loads: the model's codes were fitted on ``split_dir``'s catalogue (provenance) and ``k``
    fits in it (a manifest saying k=500 over 33 items would lie). Returns the split's dataset fingerprint."""
    from recdata import SplitDataset

    dataset = SplitDataset.load(cfg.split_dir).dataset
    catalogue = dataset.item_ids()
    size, what = len(catalogue), f"the {len(catalogue)} items of {cfg.split_dir}"
    if cfg.recommender == "model":
        from tokenization import ItemTokenizer
        from trainer.export import ITEM_TOKENIZER_DIR

        where = Path(cfg.model_dir) / ITEM_TOKENIZER_DIR
        if not where.is_dir():
            raise InputFileError(f"--model_dir {cfg.model_dir} is not a trained run folder (no {ITEM_TOKENIZER_DIR}/"
                                 "); pass the output_dir of `alignrec train` (or its merged/)")
        item_tokenizer = ItemTokenizer.from_pretrained(where)
        item_tokenizer.check_catalogue(catalogue, cfg.model_dir, cfg.split_dir)
        size, what = len(item_tokenizer), f"the {len(item_tokenizer)} items {cfg.model_dir} can recommend"
    if cfg.k > size:
        raise ConfigError(f"--k {cfg.k} is larger than {what}: every list would be shorter than the manifest's k; "
                          f"use --k {size} or less")
    return dataset.fingerprint()


def run_build(cfg: CacheBuildConfig) -> dict | None:
    if cfg.engine == "ray":
        return run_build_ray(cfg)
    from inference.cache.build import build_cache
    from recdata.io import atomic_write_json
    from recdata.outputs import check_not_overlapping

    check_not_overlapping(cfg.out_dir, [cfg.split_dir, cfg.model_dir, cfg.base_cache, cfg.users_file], "cache build")
    histories = load_histories(cfg.split_dir, cfg.users_file)
    served, scenario_kw = None, {}
    if cfg.scenarios != "none":
        from inference.cache.scenarios import scenario_users
        from recdata import SplitDataset

        split = SplitDataset.load(cfg.split_dir)
        if not split.has_scenarios:
            raise UserError(f"--scenarios {cfg.scenarios}: {cfg.split_dir} has no scenario labels; prepare it with "
                             "scenario_column or scenario_item_field")
        served = scenario_users(split.user_scenarios(), split.scenario_names(), cfg.scenarios, users=histories)
        scenario_kw = {"scenario_items": split.scenario_catalogues(), "scenario_prompts": cfg.scenario_prompts,
                       "item_scenario": split.item_scenario()}
        logger.info("per-scenario cache (%s): %d (user, scenario) pairs for %d users", cfg.scenarios,
                    sum(len(v) for v in served.values()), len(served))
    fingerprint = check_build_inputs(cfg)
    if cfg.recommender == "popularity":
        from inference import popularity_recommender
        from recdata import SplitDataset

        fn = popularity_recommender(SplitDataset.load(cfg.split_dir), k=cfg.k, exclude_history=cfg.exclude_history)
        identity = {"model": f"popularity:{Path(cfg.split_dir).resolve()}", "adapter": "", "item_tokenizer_hash": ""}
    else:
        from inference.cache.model_recommender import model_recommend_fn

        fn, identity = model_recommend_fn(cfg.model_dir, cfg.k, cfg.num_beams, cfg.batch_size, cfg.exclude_history,
                                          cfg.device, popularity_penalty=cfg.popularity_penalty,
                                          split_dir=cfg.split_dir, item_head_decode_weight=cfg.item_head_decode_weight,
                                          item_vector_prior_weight=cfg.item_vector_prior_weight,
                                          item_vectors=cfg.item_vectors, decode_normaliser=cfg.decode_normaliser,
                                          **scenario_kw)
    result = build_cache(fn, histories, cfg.out_dir, cfg.k, cfg.shard_index, cfg.num_shards,
                         chunk_size=cfg.chunk_size, base_cache=cfg.base_cache, overwrite=cfg.overwrite,
                         scenario_users=served, split_fingerprint=fingerprint, **identity)
    shard_dir = Path(cfg.out_dir) / f"shard-{result.shard_index:05d}-of-{result.num_shards:05d}"
    atomic_write_json(shard_dir / "resolved_config.json", config_to_dict(cfg))
    logger.info("shard %d/%d: %d chunks (%d resumed), %d users computed, %d reused", result.shard_index,
                result.num_shards, result.chunks_total, result.chunks_skipped, result.users_computed,
                result.users_reused)
    if result.manifest is None:
        logger.info("other shards are still missing; the last shard to finish writes manifest.json")
    return result.manifest


def run_build_ray(cfg: CacheBuildConfig) -> dict:
    """``--engine ray``: the same cache from a Ray Data actor pool (``inference.cache.ray_build``)."""
    try:
        from inference.cache.ray_build import RayOptions, build_cache_ray
    except ImportError as exc:
        raise ConfigError(f"--engine ray needs the ray extra ({exc}); pip install 'alignrec[ray]'") from None
    from inference.cache.build import write_json
    from inference.cache.location import open_location
    from inference.cache.model_recommender import ModelRecommenderFactory, PopularityRecommenderFactory

    histories = cfg.histories if cfg.histories is not None else load_histories(cfg.split_dir, cfg.users_file)
    if cfg.recommender == "popularity":
        factory = PopularityRecommenderFactory(cfg.split_dir, cfg.k, cfg.exclude_history)
        identity = {"model": f"popularity:{Path(cfg.split_dir).resolve()}", "adapter": "", "item_tokenizer_hash": ""}
    else:
        from inference.cache.model_recommender import model_identity
        from inference.item_prior import check_item_prior
        from inference.trained_run import check_item_head_override, run_normaliser

        head_weight = check_item_head_override(cfg.model_dir, cfg.item_head_decode_weight)
        # checked on the driver without loading the vectors; every actor reads the same resolved folder
        folder = check_item_prior(cfg.model_dir, cfg.item_vector_prior_weight, cfg.item_vectors, head_weight)
        vectors = None if folder is None else str(folder.resolve())
        factory = ModelRecommenderFactory(str(Path(cfg.model_dir).resolve()), cfg.k, cfg.num_beams, cfg.batch_size,
                                          cfg.exclude_history, cfg.device, cfg.popularity_penalty,
                                          str(Path(cfg.split_dir).resolve()) if cfg.popularity_penalty else None,
                                          head_weight, cfg.item_vector_prior_weight, vectors, cfg.decode_normaliser)
        identity = model_identity(cfg.model_dir, cfg.popularity_penalty, cfg.item_head_decode_weight,
                                  cfg.item_vector_prior_weight, vectors,
                                  run_normaliser(cfg.model_dir, cfg.decode_normaliser))
    options = RayOptions(address=cfg.ray_address, num_actors=cfg.num_actors, gpus_per_actor=cfg.gpus_per_actor,
                         cpus_per_actor=cfg.cpus_per_actor)
    result = build_cache_ray(factory, histories, cfg.out_dir, cfg.k, options=options, chunk_size=cfg.chunk_size,
                             overwrite=cfg.overwrite, **identity)
    write_json(open_location(cfg.out_dir), "shard-00000-of-00001/resolved_config.json", config_to_dict(cfg))
    logger.info("ray build: %d chunks (%d resumed), %d users computed", result.chunks_total, result.chunks_skipped,
                result.users_computed)
    return result.manifest


def check_publish_split(cfg: CachePublishConfig, fingerprint: str) -> None:
    """Provenance: the fallback's ``--split_dir`` is the split the cache was built from (when the build recorded
    it), else unknown users would get another catalogue's popular items."""
    from inference.cache.shards import read_manifest

    recorded = read_manifest(cfg.cache_dir).get("split_fingerprint")
    if recorded and recorded != fingerprint:
        raise UserError(f"--split_dir {cfg.split_dir} is not the split {cfg.cache_dir} was built from (dataset "
                        f"fingerprint {fingerprint[:12]} vs {recorded[:12]} in its manifest): its fallback would "
                        "serve another catalogue; pass the build's --split_dir")


@contextlib.contextmanager
def redis_errors(url: str, action: str, fix: str) -> Iterator[None]:
    """A Redis server that is unreachable, refuses, or fails mid-command becomes one ``UserError`` naming the URL."""
    try:  # a Redis Cluster client's own errors (no node reachable, a slot not covered) are not RedisErrors
        from redis.exceptions import RedisClusterException, RedisError

        errors: tuple[type[Exception], ...] = (RedisError, RedisClusterException)
    except ImportError:  # no redis client installed: no Redis error can happen
        errors = ()
    try:
        yield
    except errors as exc:  # only redis' own error families: anything else keeps its traceback
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"cannot {action} Redis at {url} ({type(exc).__name__}: {detail}); check that the server "
                        f"runs and the URL (host, port, db, password) is right; {fix}") from exc


def run_publish(cfg: CachePublishConfig) -> Path | str:
    """The new SQLite version file, or the new Redis version name."""
    from inference.cache.store import publish_cache
    from recdata.outputs import check_not_overlapping

    if cfg.store_dir:
        check_not_overlapping(cfg.store_dir, [cfg.cache_dir, cfg.split_dir], "cache publish")
    popularity = scenario_popularity = None
    if cfg.split_dir:
        from inference import train_popularity
        from recdata import SplitDataset

        split = SplitDataset.load(cfg.split_dir)
        check_publish_split(cfg, split.dataset.fingerprint())
        popularity = train_popularity(split)
        scenario_popularity = split.train_scenario_popularity() if split.has_scenarios else None
    if cfg.target is not None:
        from inference.cache.redis_store import publish_cache_redis

        with redis_errors(cfg.target, "publish to", "the live version was not switched; fix the server and publish "
                                                   "again"):
            return publish_cache_redis(cfg.cache_dir, cfg.target, popularity=popularity, fallback_k=cfg.fallback_k,
                                       keep_versions=cfg.keep_versions, grace_s=cfg.grace_s,
                                       scenario_popularity=scenario_popularity, score_dtype=cfg.score_dtype)
    return publish_cache(cfg.cache_dir, cfg.store_dir, popularity=popularity, fallback_k=cfg.fallback_k,
                         keep_versions=cfg.keep_versions, scenario_popularity=scenario_popularity,
                         score_dtype=cfg.score_dtype)


def _run_build(args, argv: list[str]) -> int:
    (cfg,) = parse_config([CacheBuildConfig], argv)
    run_build(cfg)
    return 0


def _run_publish(args, argv: list[str]) -> int:
    (cfg,) = parse_config([CachePublishConfig], argv)
    run_publish(cfg)
    return 0


def split_users(argv: list[str]) -> tuple[list[str], list[str]]:
    """(USER ids, flags): every ``--flag`` of CacheGetConfig takes one value, the other words are users."""
    users, flags = [], []
    words = iter(argv)
    for word in words:
        if word.startswith("-"):
            flags.append(word)
            if "=" not in word and word not in ("-h", "--help"):
                flags.append(next(words, ""))
        else:
            users.append(word)
    return users, flags


def _run_get(args, argv: list[str]) -> int:
    user_ids, flags = split_users(argv)
    (cfg,) = parse_config([CacheGetConfig], flags)
    if not user_ids:
        raise ConfigError("give at least one USER id, e.g. `alignrec cache get u1 --store_dir S`")
    from inference.cache.reader import CacheReader

    with redis_errors(cfg.store_dir, "read from", "nothing was changed"), CacheReader(cfg.store_dir) as reader:
        for result in reader.get_many(user_ids, scenario=cfg.scenario):
            line = {"user_id": result.user_id, "items": result.items, "fallback": result.fallback,
                    "version": result.version}
            if result.scenario is not None:
                line["scenario"] = result.scenario
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
        if reader.stats.misses:
            logger.warning("%d of %d users not in the cache: answered with the popular-items fallback",
                           reader.stats.misses, reader.stats.lookups)
    return 0
