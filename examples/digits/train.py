"""Train the bundled example model: a small CNN on scikit-learn's 8x8 digits, exported to ONNX.

Requirements (not hwquant's own dependencies; use a throwaway venv):

    python -m venv /tmp/digits-env
    /tmp/digits-env/bin/pip install numpy scikit-learn onnx onnxruntime
    /tmp/digits-env/bin/python examples/digits/train.py

The training loop is plain numpy (im2col convolutions, hand-written backward pass, Adam), so no deep learning
framework is needed. The dataset ships inside scikit-learn: nothing is downloaded. It runs in well under a minute
on one CPU core and writes, next to this file:

    digits_cnn.onnx    the float model: input ``image`` [N, 1, 8, 8] float32 in [0, 1], output ``probs`` [N, 10]
    calibration.npz    ``image`` [64, 1, 8, 8] float32: samples for calibrating quantization
    eval.npz           ``image`` [M, 1, 8, 8] float32 and ``label`` [M] int64: held-out evaluation set

Training, calibration and evaluation samples are disjoint. Seeds are fixed and BLAS is pinned to one thread, so
two runs on the same machine and library versions write byte-identical files (the .npz archives are written with
a fixed timestamp). A different CPU or numpy/BLAS build may round differently and give slightly different weights.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread: multi-threaded reductions can change float rounding from run to run.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["VECLIB_MAXIMUM_THREADS"] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 20240517
N_CALIBRATION = 64
N_EVAL = 300
EPOCHS = 40
BATCH = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4
OPSET = 17


# --------------------------------------------------------------------------------------------------- data


def load_splits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits as float32 [N, 1, 8, 8] in [0, 1] and int64 labels, split into disjoint train/calibration/eval sets.

    The eval split is stratified (30 per class); calibration is drawn from the rest; train is everything left.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)

    per_class = N_EVAL // 10
    eval_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(10)])
    eval_idx = rng.permutation(eval_idx)
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), eval_idx))
    calib_idx, train_idx = rest[:N_CALIBRATION], rest[N_CALIBRATION:]

    splits = {"train": train_idx, "calibration": calib_idx, "eval": eval_idx}
    # Disjoint by index and, since no two images in the dataset are identical, by content too; check both.
    assert sum(len(idx) for idx in splits.values()) == len(y) == len(np.unique(np.concatenate(list(splits.values()))))
    assert len({x[i].tobytes() for i in range(len(x))}) == len(x)
    return {name: (x[idx], y[idx]) for name, idx in splits.items()}


# --------------------------------------------------------------------------------------------------- layers
# Activations are NCHW float32. Convolutions are cross-correlations with stride 1, as ONNX Conv computes them.


def _im2col(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """[N, C, H, W] -> [N*H*W, C*k*k] for a stride-1 'same' convolution."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # [N, C, H, W, k, k]
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * h * w, c * k * k)


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    n, _, h, wd = x.shape
    cout, _, k, _ = w.shape
    cols = _im2col(x, k, k // 2)
    out = cols @ w.reshape(cout, -1).T + b
    return out.reshape(n, h, wd, cout).transpose(0, 3, 1, 2), (x.shape, cols, w)


def conv_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (n, c, h, wd), cols, w = cache
    cout, _, k, _ = w.shape
    pad = k // 2
    d = dout.transpose(0, 2, 3, 1).reshape(-1, cout)
    dw = (d.T @ cols).reshape(w.shape)
    db = d.sum(axis=0)
    dcols = (d @ w.reshape(cout, -1)).reshape(n, h, wd, c, k, k)
    dxp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad), dtype=np.float32)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i : i + h, j : j + wd] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, pad : pad + h, pad : pad + wd], dw, db


def maxpool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """2x2 max pooling with stride 2. Ties go to the first element of the window, as the gradient's mask shows."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)
    return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0], (x.shape, arg)


def maxpool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    (n, c, h, w), arg = cache
    dwin = np.zeros((n, c, h // 2, w // 2, 4), dtype=np.float32)
    np.put_along_axis(dwin, arg[..., None], dout[..., None], axis=-1)
    return dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


# --------------------------------------------------------------------------------------------------- model
# image [N,1,8,8]
#   -> conv1 3x3 (1->8) -> Relu -> conv2 3x3 (8->16) -> Relu -> MaxPool 2x2          [N,16,4,4]
#   -> branch a: conv3a 3x3 (16->16) -> Relu                                          [N,16,4,4]
#      branch b: conv3b 1x1 (16->8)  -> Relu                                          [N, 8,4,4]
#   -> Concat(a, b) on channels -> Flatten -> Gemm (384->10) -> Softmax               [N,10]


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.w": he((8, 1, 3, 3), 9),
        "conv1.b": np.zeros(8, np.float32),
        "conv2.w": he((16, 8, 3, 3), 72),
        "conv2.b": np.zeros(16, np.float32),
        "conv3a.w": he((16, 16, 3, 3), 144),
        "conv3a.b": np.zeros(16, np.float32),
        "conv3b.w": he((8, 16, 1, 1), 16),
        "conv3b.b": np.zeros(8, np.float32),
        "fc.w": (he((10, 384), 384) * 0.5).astype(np.float32),
        "fc.b": np.zeros(10, np.float32),
    }


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Logits [N, 10] and everything the backward pass needs."""
    c1, k1 = conv_forward(x, p["conv1.w"], p["conv1.b"])
    r1 = np.maximum(c1, 0)
    c2, k2 = conv_forward(r1, p["conv2.w"], p["conv2.b"])
    r2 = np.maximum(c2, 0)
    pool, kp = maxpool_forward(r2)
    c3a, k3a = conv_forward(pool, p["conv3a.w"], p["conv3a.b"])
    r3a = np.maximum(c3a, 0)
    c3b, k3b = conv_forward(pool, p["conv3b.w"], p["conv3b.b"])
    r3b = np.maximum(c3b, 0)
    flat = np.concatenate([r3a, r3b], axis=1).reshape(len(x), -1)
    logits = flat @ p["fc.w"].T + p["fc.b"]
    cache = {"k1": k1, "c1": c1, "k2": k2, "c2": c2, "kp": kp, "k3a": k3a, "c3a": c3a, "k3b": k3b, "c3b": c3b}
    cache["flat"] = flat
    return logits, cache


def backward(p: dict[str, np.ndarray], cache: dict, dlogits: np.ndarray) -> dict[str, np.ndarray]:
    g: dict[str, np.ndarray] = {}
    g["fc.w"] = dlogits.T @ cache["flat"]
    g["fc.b"] = dlogits.sum(axis=0)
    dcat = (dlogits @ p["fc.w"]).reshape(-1, 24, 4, 4)
    dc3a = dcat[:, :16] * (cache["c3a"] > 0)
    dc3b = dcat[:, 16:] * (cache["c3b"] > 0)
    dpool_a, g["conv3a.w"], g["conv3a.b"] = conv_backward(dc3a, cache["k3a"])
    dpool_b, g["conv3b.w"], g["conv3b.b"] = conv_backward(dc3b, cache["k3b"])
    dr2 = maxpool_backward(dpool_a + dpool_b, cache["kp"])
    dr1, g["conv2.w"], g["conv2.b"] = conv_backward(dr2 * (cache["c2"] > 0), cache["k2"])
    _, g["conv1.w"], g["conv1.b"] = conv_backward(dr1 * (cache["c1"] > 0), cache["k1"])
    return g


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict(p: dict[str, np.ndarray], x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([softmax(forward(p, x[i : i + batch])[0]) for i in range(0, len(x), batch)])


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by at most one pixel in each direction (zero fill)."""
    out = np.zeros_like(x)
    shifts = rng.integers(-1, 2, size=(len(x), 2))
    for i, (dy, dx) in enumerate(shifts):
        out[i] = np.roll(x[i], (dy, dx), axis=(1, 2))
        if dy:
            out[i, :, 0 if dy > 0 else -1, :] = 0
        if dx:
            out[i, :, :, 0 if dx > 0 else -1] = 0
    return out


def train(x: np.ndarray, y: np.ndarray, seed: int, log: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    steps_per_epoch = -(-len(x) // BATCH)
    total, step = EPOCHS * steps_per_epoch, 0
    for epoch in range(EPOCHS):
        order = rng.permutation(len(x))
        xs = augment(x[order], rng)
        ys = y[order]
        loss_sum = 0.0
        for i in range(0, len(x), BATCH):
            xb, yb = xs[i : i + BATCH], ys[i : i + BATCH]
            logits, cache = forward(p, xb)
            probs = softmax(logits)
            loss_sum += float(-np.log(probs[np.arange(len(yb)), yb] + 1e-12).sum())
            dlogits = probs
            dlogits[np.arange(len(yb)), yb] -= 1.0
            grads = backward(p, cache, (dlogits / len(yb)).astype(np.float32))
            step += 1
            lr = np.float32(LR * 0.5 * (1.0 + np.cos(np.pi * step / total)))  # cosine decay
            for k in p:
                gk = grads[k] + WEIGHT_DECAY * p[k] if k.endswith(".w") else grads[k]
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mhat = m[k] / (1 - b1**step)
                vhat = v[k] / (1 - b2**step)
                p[k] = (p[k] - lr * mhat / (np.sqrt(vhat) + eps)).astype(np.float32)
        if log and (epoch % 5 == 4 or epoch == EPOCHS - 1):
            acc = float((predict(p, x).argmax(1) == y).mean())
            print(f"epoch {epoch + 1:3d}  loss {loss_sum / len(x):.4f}  train acc {acc:.4f}")
    return p


# --------------------------------------------------------------------------------------------------- export


def to_onnx(p: dict[str, np.ndarray]) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in p.items()]
    same = {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    nodes = [
        helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["conv1"], name="conv1", **same),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("Conv", ["relu1", "conv2.w", "conv2.b"], ["conv2"], name="conv2", **same),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["pool", "conv3a.w", "conv3a.b"], ["conv3a"], name="conv3a", **same),
        helper.make_node("Relu", ["conv3a"], ["relu3a"], name="relu3a"),
        helper.make_node("Conv", ["pool", "conv3b.w", "conv3b.b"], ["conv3b"], kernel_shape=[1, 1], name="conv3b"),
        helper.make_node("Relu", ["conv3b"], ["relu3b"], name="relu3b"),
        helper.make_node("Concat", ["relu3a", "relu3b"], ["concat"], axis=1, name="concat"),
        helper.make_node("Flatten", ["concat"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        inits,
        doc_string="8x8 handwritten digit classifier trained on scikit-learn's digits; input pixels scaled to [0, 1].",
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwquant-examples", producer_version="1"
    )
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    return model


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez, but byte-reproducible: fixed member timestamps, no compression."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    splits = load_splits(SEED)
    (xtr, ytr), (xcal, _), (xev, yev) = splits["train"], splits["calibration"], splits["eval"]
    print(f"train {len(xtr)}  calibration {len(xcal)}  eval {len(xev)}")
    params = train(xtr, ytr, SEED)
    t_train = time.perf_counter() - t0

    np_probs = predict(params, xev)
    np_acc = float((np_probs.argmax(1) == yev).mean())

    model = to_onnx(params)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ort_probs = sess.run(["probs"], {"image": xev})[0]
    ort_acc = float((ort_probs.argmax(1) == yev).mean())
    max_diff = float(np.abs(ort_probs - np_probs).max())
    print(f"eval accuracy: numpy {np_acc:.4f}  onnxruntime {ort_acc:.4f}  max |probs diff| {max_diff:.2e}")
    assert np.array_equal(ort_probs.argmax(1), np_probs.argmax(1)), "onnxruntime disagrees with the numpy model"
    assert max_diff < 1e-4, max_diff
    assert ort_acc >= 0.95, f"accuracy {ort_acc:.4f} below the 0.95 target"

    onnx.save(model, args.out / "digits_cnn.onnx")
    save_npz(args.out / "calibration.npz", image=xcal)
    save_npz(args.out / "eval.npz", image=xev, label=yev)
    print(f"wrote {args.out}/digits_cnn.onnx, calibration.npz, eval.npz in {time.perf_counter() - t0:.1f} s")
    print(f"(training took {t_train:.1f} s)")


if __name__ == "__main__":
    main()
