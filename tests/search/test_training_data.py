"""What the exporter writes into a file about its weights' training data: read from ``latkit train``'s
``weights.json`` beside the weights (the CLI's train -> export path), and laid into the ``latkit.app``
document, with nothing made up where the training data is unknown."""

from __future__ import annotations

import json
from pathlib import Path

from latkit.deploy.app_metadata import TrainingData, app_document

NORM = {"mean": [0.25, 0.5, 0.75], "std": [0.1, 0.2, 0.3], "pixel_range": [0.0, 1.0],
        "formula": "(x - mean[c]) / std[c]"}


def _trained(folder: Path, dataset: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.json").write_text(json.dumps({"schema": "latkit.trained", "dataset": dataset}))
    return folder / "weights.safetensors"


def test_the_training_data_is_read_from_weights_json_beside_the_weights(tmp_path: Path) -> None:
    weights = _trained(tmp_path / "t", {"spec": "digits", "provenance": {
        "dataset": "digits", "classes": [str(d) for d in range(10)], "normalization": NORM}})
    data = TrainingData.beside(weights)
    assert data == TrainingData("digits", NORM, tuple(str(d) for d in range(10)))
    assert TrainingData.beside(weights.parent) == data  # the folder works as well as the file
    # no sidecar, no weights, or a sidecar without provenance: unknown, never guessed
    assert TrainingData.beside(tmp_path / "elsewhere" / "w.safetensors") is None
    assert TrainingData.beside(None) is None
    assert TrainingData.beside(_trained(tmp_path / "old", {"spec": "digits"})) is None


def test_the_app_document_of_an_onnx_file(tmp_path: Path) -> None:
    sidecar = {"format": "onnx", "precision": "fp32", "file": "model.onnx",
               "input": {"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW", "x": 1},
               "output": {"name": "logits", "shape": [1, 10], "dtype": "float32"}}
    doc = app_document(tmp_path / "model.onnx", sidecar, TrainingData("digits", NORM, ("a", "b")))
    assert doc["input"] == {"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32", "layout": "NCHW",
                            "quantization": None}
    assert doc["output"]["quantization"] is None and doc["sidecar"] == "model.onnx.json"
    assert doc["preprocessing"] == NORM and doc["labels"] == ["a", "b"] and doc["dataset"] == "digits"
    unknown = app_document(tmp_path / "model.onnx", sidecar, None)
    assert unknown["preprocessing"] is None and unknown["labels"] is None and unknown["dataset"] is None
