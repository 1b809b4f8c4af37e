"""Kernel-level prediction of a zoo of public CNNs against their end-to-end measurement.

Each zoo network (timm and torchvision architectures of many families, random
weights, exported to ONNX at 1x3x224x224) is predicted from its kernels, as
``latkit predict FILE`` does, and timed end to end as a calibration times its
networks: all of them in passes of fresh sessions, in alternating orders, until
each network's two lowest figures agree, the lowest being its time (the
library calls, in one process, so the run pays no interpreter start per
model). Printed per device: every network's predicted and measured time (with
each pass's figure), the share within ±10% and ±5%, the MAPE, the parse +
predict time, and the build cost of the predictors used (kernel configurations
measured, minutes).

The predictors are built by ``latkit kernels build``'s code from configurations
drawn from generic ranges (:mod:`latkit.profiler.kernel_sampling`), never from
the zoo's layers, and calibrated on a few networks of a built-in search space
(``--calibration-space``), never on the zoo. Give ``--predictors DIR`` to reuse
a folder written by an earlier run (or by ``latkit kernels build``); it is
calibrated first if it holds no calibration yet.

    python benchmarks/predict_zoo.py                      # build, calibrate, run the zoo
    python benchmarks/predict_zoo.py --models 4 --quick   # a smoke run
    python benchmarks/predict_zoo.py --predictors zoo-work/predictors-cpu_onnxruntime

``--device cpu:litert`` predicts and measures the zoo as TFLite files
(converted once with litert-torch, a minute or so per network), with
predictors whose kernels were measured as TFLite files on LiteRT.

Goals (issue 23), ONNX Runtime fp32 on the host CPU: >= 97% of the zoo within
±10%, >= 80% within ±5%; LiteRT fp32 the same.

Installing the zoo's libraries beside a CPU build of torch. The torchvision
wheel on PyPI is built against the CUDA torch: pin the one whose ``torch==``
requirement is your torch's version (``pip download --no-deps torchvision==X``
and read ``Requires-Dist`` in its METADATA; torch 2.13 -> torchvision 0.28.0),
and install it without dependencies so pip does not swap torch for the CUDA
build::

    pip install --no-deps torchvision==0.28.0 timm
    pip install pillow pyyaml huggingface_hub safetensors

Its C++ extension (``_C.so``) then fails to load (it links libtorch_cuda), which
torchvision tolerates, but ``torchvision/_meta_registrations.py`` registers a
fake kernel for ``torchvision::nms`` and ``::qnms`` unconditionally, and that
fails with ``operator torchvision::nms does not exist``; timm imports
torchvision, so it fails too. :func:`import_zoo_libs` catches exactly that
error, defines the two operators' schemas (no kernel: detection ops, which no
classification network calls) and imports again. The architectures are pure
Python and need nothing else from the extension. No weights are downloaded:
latency does not depend on weight values. There is no ``latkit[zoo]`` extra
because pip cannot pick the torchvision matching an installed CPU torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from latkit.devices import open_device
from latkit.lut.calibrate import measure_passes
from latkit.lut.store import LUT
from latkit.predictors.kernel_build import BuildSettings, build_kernel_predictors
from latkit.predictors.kernel_calibration import calibrate_on_space
from latkit.core.files import atomic_path
from latkit.predictors.kernel_network import predict_graphs
from latkit.predictors.kernels import KernelPredictors
from latkit.profiler.graph import read_graph
from latkit.profiler.kernel_patterns import group_kernels
from latkit.profiler.model_file import ModelFile
from latkit.profiler.protocol import Preset, ProtocolConfig

# (family, library, constructor name): at least 30 networks, no two of one configuration
ZOO: tuple[tuple[str, str, str], ...] = (
    ("mobilenet_v2", "timm", "mobilenetv2_050"), ("mobilenet_v2", "timm", "mobilenetv2_100"),
    ("mobilenet_v2", "timm", "mobilenetv2_140"), ("mobilenet_v3", "timm", "mobilenetv3_small_100"),
    ("mobilenet_v3", "timm", "mobilenetv3_large_100"), ("mobilenet_v3", "torchvision", "mobilenet_v3_small"),
    ("efficientnet", "timm", "efficientnet_b0"), ("efficientnet_lite", "timm", "efficientnet_lite0"),
    ("efficientnet_lite", "timm", "tf_efficientnet_lite1"), ("mnasnet", "timm", "mnasnet_100"),
    ("mnasnet", "timm", "semnasnet_075"), ("mnasnet", "torchvision", "mnasnet0_5"),
    ("fbnet", "timm", "fbnetc_100"), ("proxyless", "timm", "spnasnet_100"),
    ("lcnet", "timm", "lcnet_050"), ("lcnet", "timm", "lcnet_100"),
    ("hardcorenas", "timm", "hardcorenas_a"), ("tinynet", "timm", "tinynet_b"),
    ("ghostnet", "timm", "ghostnet_100"), ("shufflenet", "torchvision", "shufflenet_v2_x0_5"),
    ("shufflenet", "torchvision", "shufflenet_v2_x1_0"), ("squeezenet", "torchvision", "squeezenet1_0"),
    ("squeezenet", "torchvision", "squeezenet1_1"), ("resnet", "timm", "resnet18"),
    ("resnet", "timm", "resnet18d"), ("resnet", "timm", "resnet34"), ("resnet", "timm", "resnet50"),
    ("regnet", "timm", "regnetx_002"), ("regnet", "timm", "regnety_002"), ("regnet", "timm", "regnetx_004"),
    ("repvgg", "timm", "repvgg_a0"), ("mobileone", "timm", "mobileone_s0"),
    ("convnext", "timm", "convnext_atto"), ("convnext", "timm", "convnext_femto"),
    ("mobilevit", "timm", "mobilevit_xxs"), ("mobilevit", "timm", "mobilevitv2_050"),
    ("densenet", "torchvision", "densenet121"),
)  # fmt: skip


def import_zoo_libs() -> tuple[Any, Any]:
    """``(timm, torchvision.models)``, working around a torchvision built for another torch (module docstring)."""
    import torch

    try:
        import timm
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_zoo_libs.schemas = lib  # kept alive: dropping the Library object removes the schemas
        import timm
    import torchvision.models

    return timm, torchvision.models


def build_model(lib: str, name: str, timm: Any, tvm: Any) -> Any:
    """A zoo network with random weights, in inference form (train-time branches merged)."""
    if lib == "timm":
        from timm.utils.model import reparameterize_model

        return reparameterize_model(timm.create_model(name, pretrained=False).eval())
    return getattr(tvm, name)(weights=None).eval()


def export_zoo(entries: list[tuple[str, str, str]], folder: Path, fmt: str = "onnx") -> dict[str, Path]:
    """Every zoo network as ``folder/<name>.<fmt>`` at 1x3x224x224 (a file already there is reused).

    ``fmt`` is ``onnx`` (the TorchScript exporter) or ``tflite`` (litert-torch, float32, NCHW input as the
    module takes it: the file starts with the transpose to NHWC that LiteRT runs).
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    files, libs = {}, None
    for _family, lib, name in entries:
        path = folder / f"{name}.{fmt}"
        if not path.is_file():
            libs = libs or import_zoo_libs()
            model = build_model(lib, name, *libs)
            example = torch.zeros(1, 3, 224, 224)
            with torch.no_grad(), atomic_path(path, "zoo model", keep_suffix=True) as tmp:
                if fmt == "tflite":
                    from latkit.deploy.export_formats import write_tflite

                    write_tflite(model, example, tmp)
                else:
                    torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=17,
                                      input_names=["input"], do_constant_folding=True)  # fmt: skip
            print(f"exported {name} ({fmt})", file=sys.stderr)
        files[name] = path
    return files


def get_predictors(args: argparse.Namespace, device: Any, config: ProtocolConfig) -> tuple[KernelPredictors, Path]:
    """Load ``--predictors``, or build them into the work folder; calibrate them if they are not yet."""
    folder = args.predictors or args.workdir / f"predictors-{device.uri.replace(':', '_')}"
    if (folder / "predictors.json").is_file():
        preds = KernelPredictors.load(folder)
    else:
        settings = BuildSettings(budget_s=args.build_minutes * 60, per_type=args.per_type, rounds=args.rounds)
        with LUT.open(args.workdir / "kernels.db", create=True) as lut:
            preds = build_kernel_predictors(device, lut, settings, protocol=config)
    if not preds.calibration and args.calibration_networks >= 2:
        fit = calibrate_on_space(preds, device, args.calibration_space, args.calibration_networks, 224,
                                 seed=args.seed, protocol=config)
        print(f"calibration on {fit.networks} {args.calibration_space} networks: {fit.form.value} "
              f"scale {fit.scale:.3f} offset {fit.offset_ms:.3f} ms (leave-one-out MAPE {fit.loo_mape_pct:.1f}%, "
              f"raw {fit.raw_mape_pct:.1f}%)", file=sys.stderr)  # fmt: skip
    preds.save(folder)
    return preds, folder


def run_zoo(device: Any, preds: KernelPredictors, files: dict[str, Path], config: ProtocolConfig) -> list[dict]:
    """Predict every file, then measure them all as the calibration measures its networks; one row each.

    One session's figure of a whole network can sit 30% from the next session's on this host
    (stop 33: only 17 to 23 of 37 networks within 5% from one run to the next), so each network
    is measured in passes of fresh sessions, in alternating orders, until its two lowest figures
    agree (:func:`~latkit.lut.calibrate.measure_passes`), and the lowest is the measured time.
    """
    predicted = {}
    for name, path in files.items():
        t0 = time.perf_counter()
        pred = predict_graphs(preds, [group_kernels(read_graph(path), preds.rules)])[0]
        predicted[name] = (pred, time.perf_counter() - t0)
    runs = measure_passes(device, [ModelFile(p) for p in files.values()], config, labels=list(files))
    rows = []
    for (name, (pred, predict_s)), figures in zip(predicted.items(), runs):
        measured = min(figures)
        rows.append({"model": name, "predicted_ms": pred.latency_ms, "measured_ms": measured,
                     "passes_ms": figures, "error_pct": 100 * (pred.latency_ms - measured) / measured,
                     "predict_s": predict_s, "fallback_kernels": len(pred.uncovered)})  # fmt: skip
        print(f"{name:24s} predicted {pred.latency_ms:9.3f} ms  measured {measured:9.3f} ms  "
              f"{rows[-1]['error_pct']:+6.1f}%  (passes: {', '.join(f'{v:.3f}' for v in figures)})",
              file=sys.stderr)  # fmt: skip
    return rows


def summarize(rows: list[dict], preds: KernelPredictors, folder: Path) -> dict[str, Any]:
    """Accuracy over the zoo, and what the predictors cost to build."""
    err = np.abs([r["error_pct"] for r in rows])
    build_s = preds.provenance.get("build_s")
    return {
        "device": preds.uri, "networks": len(rows), "within_10_pct": float(100 * np.mean(err <= 10)),
        "within_5_pct": float(100 * np.mean(err <= 5)), "mape_pct": float(np.mean(err)),
        "median_predict_s": float(np.median([r["predict_s"] for r in rows])),
        "predictors": str(folder), "kernels_measured": preds.provenance.get("rows"),
        "build_minutes": None if build_s is None else round(build_s / 60, 1),
        "calibration": preds.calibration or None, "rows": rows,
    }  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", action="append", help="device URI, repeatable (default cpu:onnxruntime)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", type=int, default=len(ZOO), help="only the first N zoo networks")
    ap.add_argument("--workdir", type=Path, default=Path("predict_zoo_work"), help="exports, LUT, predictors")
    ap.add_argument("--predictors", type=Path, default=None, help="reuse this predictor folder (one device)")
    ap.add_argument("--build-minutes", type=float, default=6.0, help="kernel measuring budget of a build")
    ap.add_argument("--per-type", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--calibration-space", default="proxyless_mobile")
    ap.add_argument("--calibration-networks", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="short measurement protocol (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = ProtocolConfig.preset(Preset.QUICK if args.quick else Preset.DEFAULT)
    results = []
    for uri in args.device or ["cpu:onnxruntime"]:
        device = open_device(uri, threads=args.threads)
        try:
            fmt = device.model_format.value  # onnx, or tflite for cpu:litert
            files = export_zoo(list(ZOO[: args.models]), args.workdir / fmt, fmt)
            preds, folder = get_predictors(args, device, config)
            network = ProtocolConfig.preset(Preset.QUICK if args.quick else Preset.NETWORK)
            results.append(summarize(run_zoo(device, preds, files, network), preds, folder))
        finally:
            device.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for s in results:
        print(f"{s['device']}: {s['networks']} networks, {s['within_10_pct']:.0f}% within ±10%, "
              f"{s['within_5_pct']:.0f}% within ±5%, MAPE {s['mape_pct']:.1f}%, "
              f"median parse+predict {s['median_predict_s'] * 1000:.0f} ms; predictors: {s['kernels_measured']} "
              f"kernel rows, built in {s['build_minutes']} min ({s['predictors']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
