"""Devices: agents that run a model file and time it (see :mod:`latkit.devices.base`)."""

from latkit.devices.base import (
    Device,
    DeviceInfo,
    ModelFormat,
    ModelSource,
    Session,
    device_classes,
    list_devices,
    open_device,
    register_device,
)

__all__ = [
    "Device",
    "DeviceInfo",
    "ModelFormat",
    "ModelSource",
    "Session",
    "device_classes",
    "list_devices",
    "open_device",
    "register_device",
]
