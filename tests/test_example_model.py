"""The bundled example model (examples/digits): trained, documented shapes, disjoint data files.

Regenerate the files with ``python examples/digits/train.py`` (see examples/digits/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
MODEL = DIGITS / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(MODEL)


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(MODEL), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def calibration() -> dict[str, np.ndarray]:
    with np.load(DIGITS / "calibration.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def evalset() -> dict[str, np.ndarray]:
    with np.load(DIGITS / "eval.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_files_are_small() -> None:
    for name in ("digits_cnn.onnx", "calibration.npz", "eval.npz", "train.py", "README.md"):
        assert (DIGITS / name).is_file(), name
    assert MODEL.stat().st_size < 200_000


def test_model_interface(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(inp) == ["N", 1, 8, 8]
    assert out.name == "probs"
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(out) == ["N", 10]
    # Ops the quantizer is exercised on: convolutions, a shared-qparams Concat/MaxPool, Gemm, Softmax.
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "Relu", "MaxPool", "Concat", "Gemm", "Softmax"} <= ops


def test_calibration_file(calibration: dict[str, np.ndarray]) -> None:
    assert set(calibration) == {"image"}
    x = calibration["image"]
    assert x.shape == (64, 1, 8, 8)
    assert x.dtype == np.float32
    _check_pixels(x)


def test_eval_file(evalset: dict[str, np.ndarray]) -> None:
    assert set(evalset) == {"image", "label"}
    x, y = evalset["image"], evalset["label"]
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert x.ndim == 4 and x.shape[1:] == (1, 8, 8)
    assert y.shape == (len(x),) and 250 <= len(x) <= 400
    assert set(np.unique(y).tolist()) == set(range(10))
    _check_pixels(x)


def _check_pixels(x: np.ndarray) -> None:
    """Digits pixels are 0..16 divided by 16."""
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x * 16, np.round(x * 16))


def test_calibration_and_eval_are_disjoint(calibration: dict[str, np.ndarray], evalset: dict[str, np.ndarray]) -> None:
    cal = {img.tobytes() for img in calibration["image"]}
    ev = [img.tobytes() for img in evalset["image"]]
    assert len(cal) == len(calibration["image"]), "duplicate images within calibration.npz"
    assert len(set(ev)) == len(ev), "duplicate images within eval.npz"
    assert not cal & set(ev), "calibration.npz and eval.npz share images"


def test_eval_accuracy(session: ort.InferenceSession, evalset: dict[str, np.ndarray]) -> None:
    (probs,) = session.run(["probs"], {"image": evalset["image"]})
    assert probs.shape == (len(evalset["image"]), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float((probs.argmax(axis=1) == evalset["label"]).mean())
    assert accuracy >= 0.95, accuracy


def test_batch_dimension_is_dynamic(session: ort.InferenceSession, calibration: dict[str, np.ndarray]) -> None:
    x = calibration["image"]
    (whole,) = session.run(["probs"], {"image": x})
    (one,) = session.run(["probs"], {"image": x[:1]})
    (seven,) = session.run(["probs"], {"image": x[1:8]})
    np.testing.assert_allclose(one, whole[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seven, whole[1:8], rtol=1e-5, atol=1e-6)
