"""Search results: the trajectory of queries and the saved ``latkit.search`` JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latkit.core.files import one_line, read_json, write_json
from latkit._version import __version__
from latkit.core.errors import LatkitError, StoreError

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
    latency_provenance: dict[str, object] = field(default_factory=dict)
    accuracy_provenance: dict[str, object] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def best_after(self, n_queries: int) -> float | None:
        """Best feasible accuracy after the first ``n_queries`` queries (None: none yet)."""
        if not self.trajectory or n_queries <= 0:
            return None
        return self.trajectory[min(n_queries, len(self.trajectory)) - 1].best_accuracy

    def to_dict(self) -> dict[str, object]:
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
        return write_json(path, self.to_dict(), "search result", indent=1, nan_to_null=True)

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        """Read a result saved by :meth:`save`.

        Raises:
            SearchError: unreadable, of another schema, or of a newer version.
        """
        try:
            raw = read_json(path, "search result")
        except StoreError as exc:
            raise SearchError(str(exc)) from exc
        schema = raw.get("schema") if isinstance(raw, dict) else None
        if schema != SCHEMA:
            raise SearchError(f"{path} is not a latkit search result (schema {schema!r})")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise SearchError(
                f"{path} has search schema version {raw.get('schema_version')}, this latkit "
                f"reads {SCHEMA_VERSION}; rerun the search with this version"
            )
        for key in ("schema", "schema_version", "latkit_version"):
            raw.pop(key)
        try:
            raw["trajectory"] = [Query(**q) for q in raw["trajectory"]]
            return cls(**raw)
        except (KeyError, TypeError) as exc:
            raise SearchError(f"{path} is a damaged search result ({one_line(exc)}); rerun the search") from exc
