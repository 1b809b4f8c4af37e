"""The search-space contract and its registry.

A search space is a list of categorical :class:`Choice` s. An architecture is one
option picked per choice (:class:`Arch`), written and read in the space's native
form (OFA's ``{"ks", "e", "d", "r"}`` dict, FBNet's 22 op names, NAS-Bench-201's
cell string, ...). Spaces with a latency table also turn an architecture into its
:class:`Network`: the ordered list of operators, stem to logits, each an
:class:`~latkit.profiler.ops.OpSpec`. Everything downstream (LUT estimate,
end-to-end measurement, torch build) works on that list.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.errors import ArchError, UsageError
from latkit.profiler.ops import OpSpec, OpType
from latkit.profiler.spaces._util import distinct_measurable
from latkit.core.registry import Registry, name_attribute, subclass_of


# the largest input resolution any command accepts (net.config's limit too): far above
# every space's, small enough that building a network of it cannot exhaust memory
MAX_RESOLUTION = 4096


@dataclass(frozen=True)
class Choice:
    """One categorical decision of a space: a name and its options."""

    name: str
    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.options:
            raise UsageError(f"choice {self.name!r} has no options")
        object.__setattr__(self, "options", tuple(self.options))


@dataclass(frozen=True)
class Arch:
    """One architecture of a space: the option index picked for every choice."""

    space: str
    indices: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))


@dataclass(frozen=True)
class Layer:
    """One operator of a concrete network, with a readable name."""

    name: str
    spec: OpSpec


@dataclass(frozen=True)
class Network:
    """A concrete network as its ordered operators, stem to logits.

    ``input_shape`` is ``(H, W, C)`` of the image the network takes.
    """

    name: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def specs(self) -> list[OpSpec]:
        """The op specs in order."""
        return [layer.spec for layer in self.layers]

    def measurable_specs(self) -> list[OpSpec]:
        """The distinct specs that cost time, in first-use order."""
        return distinct_measurable(self.specs)


def with_classes(network: Network, classes: int) -> Network:
    """``network`` with its classifier resized to ``classes`` outputs.

    Raises:
        UsageError: ``classes`` < 1 or the last layer is not a classifier.
    """
    if classes < 1:
        raise UsageError(f"classes must be >= 1, got {classes}")
    last = network.layers[-1]
    if last.spec.op_type is not OpType.LOGITS:
        raise UsageError(f"network {network.name!r} does not end in a classifier")
    if last.spec.output_shape[2] == classes:
        return network
    spec = replace(last.spec, output_shape=(1, 1, classes))
    meta = {**network.meta, "classes": classes}
    return replace(network, layers=network.layers[:-1] + (Layer(last.name, spec),), meta=meta)


def head_specs(space: Any, resolution: int | None, classes: int | None) -> list[OpSpec]:
    """The classifier ``space``'s networks get with ``classes`` outputs, when that is not the space's own.

    A network trained on a 10-class dataset ends in a 10-output classifier, not the
    space's (often 1000-output) one; its latency is priced with that operator, so
    profiling a space for deployment measures it too. Empty when ``classes`` is None
    or the space's classifier already has that many outputs.
    """
    if classes is None:
        return []
    net = space.network(space.from_options([c.options[0] for c in space.choices()]), resolution)
    if net.layers[-1].spec.op_type is not OpType.LOGITS:
        return []
    head = with_classes(net, classes).layers[-1].spec
    return [] if head == net.layers[-1].spec else [head]


def classes_of(network: Network) -> int:
    """The classifier's output count."""
    return int(network.layers[-1].spec.output_shape[2])


class SearchSpace(ABC):
    """A registered search space. Subclasses are declarative tables plus rules."""

    name: str = ""
    description: str = ""
    has_lut: bool = True  # False for spaces used only as encodings (NAS-Bench-201)
    default_resolution: int = 224
    resolutions: tuple[int, ...] = (224,)
    arch_help: str = ""  # one line: the native architecture form, quoted in error messages

    @abstractmethod
    def choices(self) -> list[Choice]:
        """The categorical decisions, in a fixed order."""

    @abstractmethod
    def arch_from_native(self, native: Any) -> Arch:
        """Read an architecture from the space's native JSON form.

        Raises:
            ArchError: ``native`` is not an architecture of this space.
        """

    @abstractmethod
    def arch_to_native(self, arch: Arch) -> Any:
        """The architecture in the space's native, JSON-ready form."""

    def network(self, arch: Arch, resolution: int | None = None) -> Network:
        """The ordered operators of ``arch`` (spaces with a LUT override this)."""
        raise UsageError(f"space {self.name!r} has no operator-level network (no LUT)")

    def operators(self, resolution: int | None = None) -> list[OpSpec]:
        """Every distinct measurable operator of the space, in a stable order."""
        raise UsageError(f"space {self.name!r} has no operator table (no LUT)")

    def check_resolution(self, resolution: Any) -> int:
        """``resolution`` (``None``: the default) validated against the space's rule.

        For a command's ``--resolution`` before any work: a positive integer up to
        :data:`MAX_RESOLUTION` that the space accepts (a multiple of 8, one fixed
        size, one of OFA's offered sizes, ...).

        Raises:
            UsageError: it is not; the message names what the space accepts.
        """
        r = self.default_resolution if resolution is None else resolution
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= MAX_RESOLUTION:
            raise UsageError(f"{self.name}: resolution must be a positive integer up to {MAX_RESOLUTION}, "
                             f"got {r!r}")
        if self.has_lut:
            self.operators(r)  # each space's own rule raises with its own message
        elif r not in self.resolutions:
            raise UsageError(f"{self.name}: resolution {r} is not supported; use "
                             f"{' or '.join(str(v) for v in self.resolutions)}")
        return r

    # ---- generic helpers built on the abstract methods ----

    def check(self, arch: Arch) -> Arch:
        """Validate option indices against :meth:`choices`; return ``arch``."""
        choices = self.choices()
        if arch.space != self.name:
            raise ArchError(f"architecture is of space {arch.space!r}, not {self.name!r}")
        if len(arch.indices) != len(choices):
            raise ArchError(
                f"{self.name} architectures have {len(choices)} choices, got {len(arch.indices)}"
            )
        for i, (idx, ch) in enumerate(zip(arch.indices, choices)):
            if not 0 <= idx < len(ch.options):
                raise ArchError(f"choice {i} ({ch.name}) has no option #{idx}")
        return arch

    def from_options(self, options: Sequence[Any]) -> Arch:
        """Build an architecture from one option value per choice."""
        choices = self.choices()
        if len(options) != len(choices):
            raise ArchError(f"{self.name} needs {len(choices)} options, got {len(options)}")
        idx = []
        for ch, value in zip(choices, options):
            if value not in ch.options:
                raise ArchError(
                    f"{ch.name}: {value!r} is not one of {', '.join(map(str, ch.options))}"
                )
            idx.append(ch.options.index(value))
        return Arch(self.name, tuple(idx))

    def from_option_names(self, native: Any) -> Arch:
        """An architecture from a list of option names, one per choice (see :meth:`from_options`).

        Raises:
            ArchError: ``native`` is not a list of strings (the message quotes
                :attr:`arch_help`), or a name is not an option of its choice.
        """
        if not isinstance(native, (list, tuple)) or not all(isinstance(v, str) for v in native):
            raise ArchError(f"{self.name}: cannot read {type(native).__name__}; expected {self.arch_help}")
        return self.from_options(list(native))

    def options(self, arch: Arch) -> list[Any]:
        """The option value picked for each choice."""
        return [ch.options[i] for ch, i in zip(self.choices(), self.check(arch).indices)]

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture."""
        return Arch(self.name, tuple(int(rng.integers(len(c.options))) for c in self.choices()))

    def encode(self, arch: Arch) -> np.ndarray:
        """One-hot encoding: the options of every choice, concatenated (float32)."""
        parts = []
        for ch, i in zip(self.choices(), self.check(arch).indices):
            v = np.zeros(len(ch.options), dtype=np.float32)
            v[i] = 1.0
            parts.append(v)
        return np.concatenate(parts)

    def graph(self, arch: Arch) -> tuple[np.ndarray, np.ndarray]:
        """A graph encoding for GCN predictors: ``(adjacency [N, N], features [N, F])``.

        The default is a chain: an input node, one node per choice in order, an
        output node, with ``adjacency[i, j] = 1`` for an edge ``i -> j``. A node's
        features are the one-hot of its chosen option, padded to the largest
        option count, followed by a one-hot of its kind (input, choice, output).
        Spaces whose architectures are real DAGs (NAS-Bench-201) override this.
        Both arrays are float32.
        """
        choices = self.choices()
        picked = self.check(arch).indices
        n = len(choices) + 2
        width = max(len(ch.options) for ch in choices)
        adjacency = np.zeros((n, n), dtype=np.float32)
        adjacency[np.arange(n - 1), np.arange(1, n)] = 1.0
        features = np.zeros((n, width + 3), dtype=np.float32)
        features[0, width] = 1.0  # input
        features[np.arange(1, n - 1), np.asarray(picked, dtype=np.int64)] = 1.0
        features[1 : n - 1, width + 1] = 1.0  # choice
        features[n - 1, width + 2] = 1.0  # output
        return adjacency, features

    def parse_arch(self, text: str | Path) -> Arch:
        """Read an architecture from a JSON string, native text, or a file path.

        Raises:
            ArchError: it cannot be read as an architecture of this space.
        """
        raw: Any = text
        if isinstance(text, Path) or (isinstance(text, str) and _is_file(text)):
            try:
                raw = Path(text).read_bytes().decode("utf-8")
            except OSError as exc:
                raise ArchError(f"cannot read architecture file {text}: {exc.strerror or exc}") from exc
            except UnicodeDecodeError:
                raise ArchError(f"architecture file {text} is not a text file (a model file?)") from None
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                pass  # native text forms (e.g. NAS-Bench-201 cell strings)
            except (RecursionError, ValueError):
                raise ArchError("the architecture JSON is nested too deeply or holds numbers too long to read") from None
        if isinstance(raw, dict) and "arch" in raw and raw.get("space", self.name) == self.name:
            raw = raw["arch"]  # a saved arch.json envelope
        return self.arch_from_native(raw)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # JSON or native text longer than a file name may be
        return False


SPACES: Registry[type[SearchSpace]] = Registry(
    "search space",
    "latkit.spaces",
    builtins=(
        "latkit.profiler.spaces.fbnet",
        "latkit.profiler.spaces.nasbench201",
        "latkit.profiler.spaces.ofa_mbv3",
        "latkit.profiler.spaces.proxyless",
    ),
    on_register=name_attribute("name"),
    check=subclass_of(SearchSpace),
)


def register_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    """Class decorator: register a search space under ``name``."""
    return SPACES.register(name)


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names matching a glob."""
    return SPACES.names(pattern)


def get_space(name: str) -> SearchSpace:
    """The space registered under ``name``, instantiated.

    Raises:
        UnknownNameError: no such space.
    """
    return SPACES.get(name)()
