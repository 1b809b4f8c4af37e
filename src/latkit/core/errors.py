"""The latkit error hierarchy.

Every error a user can cause (bad input, missing backend, unreachable device,
unreadable file) is a :class:`LatkitError`. The CLI catches it once, prints its
message as one line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class LatkitError(Exception):
    """Base of every user-facing latkit error. The message says what to do."""

    exit_code = 2


class UsageError(LatkitError):
    """A malformed argument: unknown space, bad architecture, bad option."""


class UnknownNameError(UsageError):
    """A name (space, device, operator, predictor) that no registry holds."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(
            f"unknown {kind} {name!r}; known: {', '.join(sorted(self.known)) or 'none'}"
        )


class ArchError(UsageError):
    """An architecture that does not fit its search space."""


class MissingExtraError(LatkitError):
    """An optional backend whose packages are not installed."""

    def __init__(self, what: str, extra: str, cause: BaseException | None = None, hint: str = ""):
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"{what} needs the optional packages of latkit[{extra}]{detail}; "
            f"install them with: pip install 'latkit[{extra}]'{hint}"
        )


class DeviceError(LatkitError):
    """A device that cannot be reached or that failed to run a model."""


class DeviceUnreachableError(DeviceError):
    """A device that stopped answering (not one model's fault): worth waiting for."""


class DeviceAbsentError(DeviceError):
    """A device the host does not list at all (no USB device with that serial): a typo or
    an unplugged cable, which waiting before the first connection would not fix."""


class MeasurementError(LatkitError):
    """A measurement that could not be taken or is not trustworthy."""


class StoreError(LatkitError):
    """A LUT or other saved file that is missing, corrupt or of another schema."""


class MissingOpsError(LatkitError):
    """An estimate that needs operators the LUT does not hold."""

    def __init__(self, missing: list[str], lut: str = ""):
        self.missing = list(missing)
        where = f" in {lut}" if lut else ""
        shown = "; ".join(self.missing[:8])
        more = f" (+{len(self.missing) - 8} more)" if len(self.missing) > 8 else ""
        super().__init__(
            f"{len(self.missing)} operator(s) missing{where}: {shown}{more}; "
            "profile them with `latkit profile` or import a table that has them"
        )


class ParseError(LatkitError):
    """Tool output or a file whose content cannot be parsed."""
