"""Write docs/reference/configuration.md from the config dataclasses' own help texts.

    python scripts/gen_config_reference.py            # (re)write the page
    python scripts/gen_config_reference.py --check    # exit 1 if the committed page differs from a fresh one

Every class is imported through the path its stage exports it from (no fallbacks: a moved or renamed class
must fail here, loudly, so the page cannot silently lose a section). tests/foundation/test_config_reference.py
asserts that the committed page equals ``render()``, so the reference cannot go stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "docs" / "reference" / "configuration.md"

# (section title, anchor, what reads it, [(module, class name)]). Pipeline sections first, in run order.
PIPELINE_SECTIONS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("data", "section-data", "`alignrec data prepare`", [("recdata", "DataConfig"), ("recdata.cli", "PrepareArgs")]),
    ("knowledge", "section-knowledge", "`alignrec knowledge extract` (+ `knowledge encode`: `encoder`, "
     "`encoder_dir`)", [("alignrec.knowledge", "ExtractConfig")]),
    ("embeddings", "section-embeddings", "`alignrec embed`, `alignrec sasrec`, `alignrec learn`",
     [("tokenization.embeddings", "EmbeddingConfig")]),
    ("tokenizer", "section-tokenizer", "`alignrec tokenize`", [("tokenization", "TokenizerConfig")]),
    ("tasks", "section-tasks", "`alignrec tasks build`", [("sft_tasks", "TaskConfig")]),
    ("train", "section-train", "`alignrec train` / `trainer/sft.py`; also every `trl.SFTConfig` field "
     "(`alignrec train --help_all`)",
     [("trainer", "ModelArguments"), ("trainer", "DataArguments"), ("trainer", "AlignRecTrainArguments")]),
    ("preference", "section-preference", "`trainer/dpo.py`; also `AlignRecTrainArguments` (above) and every "
     "`trl.DPOConfig` field; `pairs:` takes `TaskConfig` keys", [("trainer.dpo_config", "PreferenceArguments")]),
    ("evaluate", "section-evaluate", "`alignrec evaluate`", [("inference.cli", "EvaluateConfig")]),
    ("cache", "section-cache", "`alignrec cache build`", [("inference.cache.cli", "CacheBuildConfig")]),
]

# Commands outside `alignrec run` (or run inside a stage with their own keys).
COMMAND_SECTIONS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("Shared: SASRec and LEARN", "shared-recommenders", "Inherited by `EmbeddingConfig`, `KnowledgeTrainConfig` and "
     "`ScenarioTrainConfig`.", [("alignrec.recommenders", "SASRecConfig"), ("alignrec.recommenders", "LEARNConfig")]),
    ("cache publish", "command-cache-publish", "Keys of `alignrec cache publish`.",
     [("inference.cache.cli", "CachePublishConfig")]),
    ("serve", "command-serve", "Keys of `alignrec serve`.", [("inference.serve", "ServeConfig")]),
    ("tasks queries", "command-tasks-queries", "Keys of `alignrec tasks queries`.", [("sft_tasks", "QueryGenConfig")]),
    ("tasks requests", "command-tasks-requests", "Keys of `alignrec tasks requests` (evaluation requests in words).",
     [("sft_tasks", "RequestGenConfig")]),
    ("sasrec-tune", "command-sasrec-tune", "Keys of `alignrec sasrec-tune` (the SASRec bar, chosen on valid).",
     [("alignrec.tune_cli", "SASRecTuneConfig")]),
    ("recipe-tune", "command-recipe-tune", "Keys of `alignrec recipe-tune` (our recipe's levers, chosen on valid).",
     [("alignrec.recipe_tune_cli", "RecipeTuneConfig")]),
    ("knowledge encode / train", "command-knowledge", "Keys of `alignrec knowledge encode` and `alignrec knowledge "
     "train`.", [("alignrec.knowledge", "EncodeConfig"), ("alignrec.knowledge", "KnowledgeTrainConfig")]),
    ("scenarios (LLM4MSR)", "command-scenarios", "Keys of `alignrec scenarios extract` and `alignrec scenarios "
     "train`.", [("alignrec.llm4msr", "ScenarioExtractConfig"), ("alignrec.llm4msr", "ScenarioTrainConfig")]),
]

# Base classes documented once (COMMAND_SECTIONS); a subclass lists only its own fields and points here.
SHARED_BASES = ("SASRecConfig", "LEARNConfig")


def load_class(module: str, name: str) -> type:
    cls = getattr(importlib.import_module(module), name)
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{module}.{name} is not a dataclass")
    return cls


def pipeline_keys() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """(keys a section holds for the pipeline itself, keys the pipeline fills) per section."""
    sections = importlib.import_module("alignrec.pipeline.sections")
    return dict(sections.PIPELINE_ONLY_KEYS), dict(sections.INJECTED_KEYS)


def _cell(text: str) -> str:
    """Markdown-safe table cell: no raw HTML, no emphasis, no column breaks."""
    text = text.replace("%%", "%").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("*", "\\*").replace("|", "\\|")
    return " ".join(text.split())


def _type(cls: type, f: dataclasses.Field) -> str:
    """The annotation as written in the class body. Not ``f.type``: HfArgumentParser rewrites that in place
    (``str | None`` becomes ``str`` once any parser has read the class), so the page would depend on what ran."""
    for klass in cls.__mro__:
        if f.name in vars(klass).get("__annotations__", {}):
            typ = vars(klass)["__annotations__"][f.name]
            break
    else:
        typ = f.type
    return typ if isinstance(typ, str) else getattr(typ, "__name__", repr(typ))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (str, list, dict)):
        text = json.dumps(value)
    else:
        text = repr(value)
    if "|" in text or "`" in text:  # a code span would show the table's escape backslash
        return _cell(text)
    return "`" + text + "`"


def _help(f: dataclasses.Field) -> str:
    meta = f.metadata or {}
    text = str(meta.get("help", "")).strip()
    if not text:
        raise ValueError(f"field {f.name!r} has no help text; add metadata={{'help': ...}} to it")
    choices = meta.get("choices")
    if choices and not all(str(c) in text for c in choices):
        text += " Choices: " + ", ".join(str(c) for c in choices) + "."
    return _cell(text)


def _own_fields(cls: type) -> tuple[list[dataclasses.Field], list[str]]:
    shared = [b for b in cls.__mro__[1:] if dataclasses.is_dataclass(b) and b.__name__ in SHARED_BASES]
    skip = {f.name for b in shared for f in dataclasses.fields(b)}
    return [f for f in dataclasses.fields(cls) if f.name not in skip], [b.__name__ for b in shared]


def render_class(module: str, name: str, notes: dict[str, str], level: str = "###") -> list[str]:
    cls = load_class(module, name)
    fields, bases = _own_fields(cls)
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    lines = [f"{level} `{name}` {{#{name.lower()}}}", ""]
    intro = f"`{module}.{name}`" + (f": {' '.join(doc.split())}" if doc and not doc.startswith(name + "(") else "")
    lines.append(intro.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    if bases:
        lines.append("")
        lines.append("Also every field of " + ", ".join(f"[`{b}`](#{b.lower()})" for b in bases) + ".")
    lines += ["", "| field | type | default | help |", "|---|---|---|---|"]
    for f in fields:
        help_text = _help(f)
        if f.name in notes:
            help_text = f"**{notes[f.name]}** {help_text}"
        lines.append(f"| `{f.name}` | {_cell(_type(cls, f))} | {_default(f)} | {help_text} |")
    return lines + [""]


def render() -> str:
    pipeline_only, injected = pipeline_keys()
    out = [
        "# Configuration reference",
        "",
        "<!-- GENERATED by scripts/gen_config_reference.py from the config dataclasses' help texts. Do not edit:",
        "     change the help text in the code and run `python scripts/gen_config_reference.py`. -->",
        "",
        "Every command takes `--config FILE.yaml` and flags (flags win; unknown keys and values of the wrong type",
        "are an error, exit 2). An `alignrec run` config has `name`, `runs_dir` and one section per stage; a",
        "section takes the keys of its stage's classes below, minus the paths the pipeline fills itself, plus a",
        "few keys the pipeline reads itself. See [the pipeline guide](../guide/pipeline.md) for how sections",
        "connect, and the shipped `configs/*.yaml` for complete examples.",
        "",
        "## `alignrec run` sections {#run-sections}",
        "",
    ]
    for title, anchor, reader, classes in PIPELINE_SECTIONS:
        out += [f"### Section `{title}` {{#{anchor}}}", "", f"Keys of {reader}."]
        if injected.get(title):
            out.append("Filled by the pipeline (do not set): " + ", ".join(f"`{k}`" for k in injected[title]) + ".")
        if pipeline_only.get(title):
            out.append("Read by the pipeline itself: " + ", ".join(f"`{k}`" for k in pipeline_only[title]) + ".")
        out += ["", "Classes: " + ", ".join(f"[`{c}`](#{c.lower()})" for _, c in classes) + ".", ""]
    out += ["### Section `export` {#section-export}", "", "Takes no keys (`export: {}`).", ""]
    out += ["## Stage classes {#stage-classes}", ""]
    for title, _anchor, _reader, classes in PIPELINE_SECTIONS:
        notes = {k: "filled by `alignrec run`." for k in injected.get(title, ())}
        for module, name in classes:
            out += render_class(module, name, notes)
    out += ["## Other commands {#other-commands}", ""]
    for title, anchor, sentence, classes in COMMAND_SECTIONS:
        out += [f"### {title} {{#{anchor}}}", "", sentence, ""]
        for module, name in classes:
            out += render_class(module, name, {}, level="####")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page is not up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run python scripts/gen_config_reference.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
