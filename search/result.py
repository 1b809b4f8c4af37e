"""Search results: the trajectory of queries and the saved ``latkit.search`` JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latkit._version import __version__
from latkit.errors import LatkitError

SCHEMA = "latkit.search"
SCHEMA_VERSION = 1


class SearchError(LatkitError):
    """A search that cannot run or cannot return a feasible architecture."""


@dataclass
class Query:
    """One distinct architecture looked up."""

    arch: Any  # native form
    accuracy: float
    latency_ms: float
    feasible: bool
    best_accuracy: float | None  # best feasible accuracy so far (None before any)


@dataclass
class SearchResult:
    """What a search returns and saves (schema ``latkit.search``)."""

    algorithm: str
    space: str
    target_ms: float
    budget: int
    seed: int | None
    best_arch: Any  # native form
    best_accuracy: float
    best_latency_ms: float
    queries_used: int
    wall_s: float
    trajectory: list[Query] = field(default_factory=list)
    latency_provenance: dict[str, Any] = field(default_factory=dict)
    accuracy_provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def best_after(self, n_queries: int) -> float | None:
        """Best feasible accuracy after the first ``n_queries`` queries (None: none yet)."""
        if not self.trajectory or n_queries <= 0:
            return None
        return self.trajectory[min(n_queries, len(self.trajectory)) - 1].best_accuracy

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with schema, versions and provenance."""
        body = asdict(self)
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "latkit_version": __version__,
            **body,
        }

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON; return the path."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1, default=_json_default))
        return out

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        """Read a result saved by :meth:`save`.

        Raises:
            SearchError: unreadable, of another schema, or of a newer version.
        """
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SearchError(f"cannot read search result {path}: {exc}") from exc
        if raw.get("schema") != SCHEMA:
            raise SearchError(f"{path} is not a latkit search result (schema {raw.get('schema')!r})")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise SearchError(
                f"{path} has search schema version {raw.get('schema_version')}, this latkit "
                f"reads {SCHEMA_VERSION}; rerun the search with this version"
            )
        for key in ("schema", "schema_version", "latkit_version"):
            raw.pop(key)
        raw["trajectory"] = [Query(**q) for q in raw["trajectory"]]
        return cls(**raw)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
