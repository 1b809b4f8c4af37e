"""The architecture the export tests deploy: a proxyless_mobile_w05 network for 10 classes at 32 px.

Shared by ``test_deploy_export.py`` and ``test_export_checkpoint.py`` so both
export the same network (stem, four searched blocks of different kernels and
expansions, zero layers between them).
"""

from __future__ import annotations

SPACE = "proxyless_mobile_w05"
RESOLUTION = 32
CLASSES = 10
ARCH = ["3x3_MBConv3", "zero", "5x5_MBConv3", "zero", "3x3_MBConv6", "zero", "zero", "zero",
        "7x7_MBConv3", "zero", "zero", "zero", "3x3_MBConv3", "zero", "zero", "zero",
        "5x5_MBConv6", "zero", "zero", "zero", "3x3_MBConv3"]  # fmt: skip
