"""MovieLens ``.dat`` (ML-1M / ML-10M layout): ``ratings.dat`` ``UserID::MovieID::Rating::Timestamp`` and
``movies.dat`` ``MovieID::Title::Genres`` (pipe-separated genres), latin-1 encoded."""

from __future__ import annotations

from pathlib import Path

from recdata.dataset import RecDataset
from recdata.errors import ConfigError, InputFileError, UserError
from recdata.loaders.common import (
    LoadOptions,
    build_items,
    iter_lines,
    make_dataset,
    malformed,
    sequences_from_log,
    unique_item_rows,
)

ENCODING = "latin-1"


def load_movielens(path: str | Path, options: LoadOptions | None = None) -> RecDataset:
    options = options or LoadOptions()
    folder = Path(path)
    ratings_file, movies_file = folder / "ratings.dat", folder / "movies.dat"
    for f in (ratings_file, movies_file):
        if not f.is_file():
            raise InputFileError(f"{folder}: MovieLens layout needs ratings.dat and movies.dat; {f.name} is missing")
    if options.item_text_fields:
        raise UserError("item_text_fields does not apply to MovieLens .dat (fixed Title and Genres columns)")
    if options.scenario_column or options.domain_column or options.scenario_item_field:
        raise ConfigError("MovieLens .dat files carry no scenario; convert them to tabular with a scenario column")

    ids, lines, titles, genres = [], [], [], []
    for lineno, line in iter_lines(movies_file, ENCODING):
        parts = line.split("::")
        if len(parts) != 3 or not parts[0].strip():
            raise malformed(movies_file, lineno, f"expected MovieID::Title::Genres, got {line[:80]!r}",
                            "fix or remove the line")
        ids.append(parts[0].strip())
        lines.append(lineno)
        titles.append(parts[1].strip())
        genres.append(", ".join(g for g in parts[2].strip().split("|") if g and g != "(no genres listed)"))
    keep = unique_item_rows(ids, str(movies_file), options.duplicate_items, lines)
    items = build_items([ids[i] for i in keep], {"title": [titles[i] for i in keep],
                                                 "categories": [genres[i] for i in keep]})

    users, movies, ratings, times = [], [], [], []
    for lineno, line in iter_lines(ratings_file, ENCODING):
        parts = line.split("::")
        try:
            if len(parts) != 4 or not parts[0] or not parts[1]:
                raise UserError("wrong field count")
            ratings.append(float(parts[2]))
            times.append(int(parts[3]))
        except ValueError:
            raise malformed(ratings_file, lineno, f"expected UserID::MovieID::Rating::Timestamp, got {line[:80]!r}",
                            "fix or remove the line") from None
        users.append(parts[0])
        movies.append(parts[1])
    sequences = sequences_from_log(users, movies, times, ratings, source=str(ratings_file))
    return make_dataset(items, sequences, options.name or folder.name, f"{ratings_file} + {movies_file.name}", {"duplicate_item_records": len(ids) - len(keep)})
