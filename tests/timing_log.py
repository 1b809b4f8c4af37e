"""A real device whose sessions log which model each timing call ran (for order-of-measurement tests)."""

from __future__ import annotations

from latkit.devices.base import Session


class LoggedSession(Session):
    """A real session that appends its model's key to ``log`` on every timing call."""

    def __init__(self, inner: Session, key: str, log: list[str]):
        self.inner, self.key, self.log = inner, key, log

    def time(self, iterations: int) -> float:
        self.log.append(self.key)
        return self.inner.time(iterations)

    def close(self) -> None:
        self.inner.close()


class LoggingDevice:
    """Wraps a real device; ``log`` lists the model key of every timing call, in order."""

    def __init__(self, device):
        self.device, self.log = device, []
        self.uri = device.uri

    def info(self):
        return self.device.info()

    def state(self):
        return self.device.state()

    def adapt_protocol(self, config):
        return self.device.adapt_protocol(config)

    def open(self, model):
        return LoggedSession(self.device.open(model), model.key, self.log)
