"""hwquant.engine.data: calibration/evaluation samples from code and files, checked against the model."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import modelzoo
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from hwquant.engine.data import (
    ImagePreprocess,
    InputSpec,
    RandomDataWarning,
    SampleSource,
    input_specs,
    open_samples,
    validate_sample,
)
from hwquant.errors import CalibrationError, ModelError

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


# --------------------------------------------------------------------------------------------- fixtures


def two_inputs() -> onnx.ModelProto:
    """``a`` float32 [N, 4] and ``ids`` int64 [N, 4]: y = a + float(ids)."""
    nodes = [
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Add", ["a", "idsf"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def nhwc_uint8() -> onnx.ModelProto:
    """``img`` uint8 [N, 4, 6, 3] -> float mean over H, W."""
    nodes = [
        helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("ReduceMean", ["f"], ["y"], axes=[1, 2], keepdims=0, name="mean"),
    ]
    graph = helper.make_graph(
        nodes,
        "nhwc",
        [helper.make_tensor_value_info("img", TensorProto.UINT8, ["N", 4, 6, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def cnn() -> onnx.ModelProto:
    return modelzoo.cnn()


@pytest.fixture(scope="module")
def two() -> onnx.ModelProto:
    return two_inputs()


def run(model: onnx.ModelProto, samples) -> list[np.ndarray]:
    """Feed each sample to a real onnxruntime session; returns the first output of each."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [sess.run(None, s)[0] for s in samples]


def two_samples(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"a": rng.standard_normal((1, 4)).astype(np.float32), "ids": rng.integers(0, 9, (1, 4)).astype(np.int64)}
        for _ in range(n)
    ]


def same(xs, ys) -> bool:
    xs, ys = list(xs), list(ys)
    return len(xs) == len(ys) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(xs, ys, strict=True)
    )


def errmsg(excinfo) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------------------------- input specs


def test_input_specs_skip_initializers(cnn: onnx.ModelProto) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(cnn)
    # old exporters list initializers as graph inputs too
    model.graph.input.append(helper.make_tensor_value_info("conv1.w", TensorProto.FLOAT, [8, 3, 3, 3]))
    assert input_specs(model) == [InputSpec("input", np.dtype(np.float32), ("N", 3, 16, 16))]
    specs = input_specs(two_inputs())
    assert [(s.name, s.dtype, s.shape) for s in specs] == [("a", np.float32, ("N", 4)), ("ids", np.int64, ("N", 4))]
    assert str(specs[1]) == "ids [N, 4] int64"


def test_input_specs_rejects_non_tensor_inputs() -> None:
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    graph = helper.make_graph([], "g", [seq], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(ModelError, match="'s' is a sequence_type"):
        input_specs(helper.make_model(graph))


# --------------------------------------------------------------------------------------------- sources in code


def test_list_source_feeds_onnxruntime(cnn: onnx.ModelProto) -> None:
    samples = modelzoo.sample_inputs(cnn, 6)
    src = open_samples(samples, cnn)
    assert isinstance(src, SampleSource)
    assert src.count == len(src) == 6
    assert src.description == "list of 6 samples"
    assert not src.is_random
    loaded = list(src)
    assert same(loaded, samples)
    outs = run(cnn, loaded)
    assert [o.shape for o in outs] == [(1, 10)] * 6


def test_generator_works_once(two: onnx.ModelProto) -> None:
    samples = two_samples(3)
    src = open_samples((s for s in samples), two)
    assert src.count is None
    with pytest.raises(TypeError, match="no known length"):
        len(src)
    assert same(src, samples)
    with pytest.raises(CalibrationError, match="one-shot iterator and cannot be iterated twice"):
        list(src)


def test_generator_cannot_be_split(two: onnx.ModelProto) -> None:
    src = open_samples(iter(two_samples(3)), two)
    with pytest.raises(CalibrationError, match=r"one-shot iterator and cannot be split.*pass a list"):
        src.split(1)
    assert len(list(src.take(2))) == 2  # take works on a one-shot iterator


def test_factory_function_is_reiterable_and_splittable(two: onnx.ModelProto) -> None:
    samples = two_samples(5)

    def make():
        yield from samples

    src = open_samples(make, two)
    assert src.count is None
    assert same(src, samples)
    assert same(src, samples)
    calib, ev = src.split(2)  # counts the samples with one pass
    assert (calib.count, ev.count) == (3, 2)
    assert same(calib, samples[:3])
    assert same(ev, samples[3:])
    out = run(two, ev)
    np.testing.assert_allclose(out[0], samples[3]["a"] + samples[3]["ids"].astype(np.float32))


class Reader(CalibrationDataReader):
    def __init__(self, samples, rewindable: bool):
        self.samples = samples
        self.it = iter(samples)
        if rewindable:
            self.rewind = lambda: setattr(self, "it", iter(self.samples))

    def get_next(self):
        return next(self.it, None)


def test_calibration_data_reader(two: onnx.ModelProto) -> None:
    samples = two_samples(4)
    once = open_samples(Reader(samples, rewindable=False), two)
    assert once.description == "data reader Reader"
    assert same(once, samples)
    with pytest.raises(CalibrationError, match="data reader Reader is a one-shot iterator"):
        list(once)
    again = open_samples(Reader(samples, rewindable=True), two)
    assert same(again, samples)
    assert same(again, samples)
    calib, ev = again.split(1)
    assert same(ev, samples[3:])
    run(two, calib)


def test_dict_of_stacked_arrays_and_single_array(cnn: onnx.ModelProto) -> None:
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    src = open_samples({"input": x}, cnn)
    assert src.count == 5
    rows = [s["input"] for s in src]
    assert all(r.shape == (1, 3, 16, 16) for r in rows)
    np.testing.assert_array_equal(np.concatenate(rows), x)
    assert same(open_samples(x, cnn), src)
    with pytest.raises(CalibrationError, match="single array cannot feed a model with 2 inputs"):
        open_samples(np.zeros((2, 4), np.float32), two_inputs())


def test_random_data_warns_and_is_deterministic() -> None:
    model = modelzoo.transformer()
    with pytest.warns(RandomDataWarning, match="not meaningful"):
        src = open_samples(None, model, random=4, seed=3, dims={"T": 5})
    assert src.is_random
    assert "not meaningful" in src.description
    first, second = list(src), list(src)
    assert same(first, second)
    assert first[0]["tokens"].shape == (1, 5, 32)
    assert not np.array_equal(first[0]["tokens"], first[1]["tokens"])
    assert [o.shape for o in run(model, first)] == [(1, 5, 32)] * 4
    _, ev = src.split(1)
    assert same(ev, first[3:])
    with pytest.warns(RandomDataWarning):
        ints = list(open_samples(None, two_inputs(), random=2))
    assert ints[0]["ids"].dtype == np.int64 and set(np.unique(ints[0]["ids"])) <= {0, 1}


def test_random_and_missing_source_errors(cnn: onnx.ModelProto) -> None:
    with pytest.raises(CalibrationError, match=r"no calibration data.*random=N"):
        open_samples(None, cnn)
    with pytest.raises(CalibrationError, match="not both"):
        open_samples(modelzoo.sample_inputs(cnn, 1), cnn, random=3)
    with pytest.raises(CalibrationError, match="positive"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        open_samples(None, cnn, random=0)
    with pytest.raises(CalibrationError, match=r"dims names X: not symbolic dims.*those are: N"):
        open_samples(None, cnn, random=2, dims={"X": 3})


def test_unsupported_source_type(cnn: onnx.ModelProto) -> None:
    with pytest.raises(CalibrationError, match="unsupported calibration data of type int"):
        open_samples(42, cnn)


# --------------------------------------------------------------------------------------------- files


def test_npz_per_sample_directory_natural_order(tmp_path: Path, two: onnx.ModelProto) -> None:
    samples = two_samples(12)
    for i, s in enumerate(samples):
        np.savez(tmp_path / f"s{i}.npz", **s)
    (tmp_path / "README.txt").write_text("ignored")
    src = open_samples(tmp_path, two)
    assert src.count == 12
    assert src.description == f"{tmp_path}/ (12 .npz files)"
    assert same(src, samples)  # s2 before s10
    assert same(src, samples)  # re-iteration reads the same data
    outs = run(two, src.take(3))
    np.testing.assert_allclose(outs[2], samples[2]["a"] + samples[2]["ids"])


def test_npy_directory_single_input(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    xs = [s["input"] for s in modelzoo.sample_inputs(cnn, 3)]
    for i, x in enumerate(xs):
        np.save(tmp_path / f"{i:03d}.npy", x[0])  # without the batch axis: it is added
    src = open_samples(str(tmp_path), cnn)
    got = [s["input"] for s in src]
    assert all(g.shape == (1, 3, 16, 16) for g in got)
    assert all(np.array_equal(g, x) for g, x in zip(got, xs, strict=True))
    run(cnn, src)


def test_npy_directory_rejected_for_multi_input_model(tmp_path: Path, two: onnx.ModelProto) -> None:
    np.save(tmp_path / "0.npy", np.zeros((1, 4), np.float32))
    with pytest.raises(CalibrationError, match=r"0\.npy: a \.npy file holds one array but the model has 2 inputs"):
        open_samples(tmp_path, two)


@pytest.mark.parametrize("compressed", [False, True])
def test_stacked_npz_streams_rows(tmp_path: Path, cnn: onnx.ModelProto, compressed: bool) -> None:
    x = np.random.default_rng(1).standard_normal((10, 3, 16, 16)).astype(np.float32)
    path = tmp_path / "calib.npz"
    (np.savez_compressed if compressed else np.savez)(path, input=x)
    src = open_samples(path, cnn)
    assert src.count == 10
    assert src.description == f"{path} (10 stacked samples)"
    rows = [s["input"] for s in src]
    assert all(r.shape == (1, 3, 16, 16) for r in rows)
    np.testing.assert_array_equal(np.concatenate(rows), x)
    calib, ev = src.split(3)
    np.testing.assert_array_equal(np.concatenate([s["input"] for s in ev]), x[7:])  # seeks past 7 rows
    np.testing.assert_array_equal(np.concatenate([s["input"] for s in calib.take(2)]), x[:2])
    assert len(run(cnn, ev)) == 3


def test_stacked_npz_rank_plus_one_multi_input_and_fortran(tmp_path: Path, two: onnx.ModelProto) -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((6, 2, 4)).astype(np.float32)  # 6 samples of batch 2
    ids = np.asfortranarray(rng.integers(0, 5, (6, 2, 4)))  # read whole (Fortran order), same result
    np.savez(tmp_path / "d.npz", a=a, ids=ids)
    src = open_samples(tmp_path / "d.npz", two)
    got = list(src)
    assert len(got) == 6
    assert got[4]["a"].shape == (2, 4)
    np.testing.assert_array_equal(got[4]["a"], a[4])
    np.testing.assert_array_equal(got[5]["ids"], ids[5])
    run(two, got)


def test_one_sample_npz_and_npy_file(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    x = modelzoo.sample_inputs(cnn, 1)[0]["input"][0]  # [3, 16, 16]
    np.savez(tmp_path / "one.npz", input=x)
    src = open_samples(tmp_path / "one.npz", cnn)
    assert src.count == 1 and src.description == f"{tmp_path / 'one.npz'} (1 sample)"
    (only,) = list(src)
    np.testing.assert_array_equal(only["input"], x[None])
    stack = np.stack([x, x + 1])
    np.save(tmp_path / "stack.npy", stack)
    rows = list(open_samples(tmp_path / "stack.npy", cnn))
    np.testing.assert_array_equal(rows[1]["input"], stack[1:2])


def test_stacked_npz_errors(tmp_path: Path, two: onnx.ModelProto) -> None:
    np.savez(tmp_path / "bad.npz", a=np.zeros((5, 4), np.float32), ids=np.zeros((3, 4), np.int64))
    with pytest.raises(CalibrationError, match=r"bad\.npz: the arrays hold different numbers of samples: 'a' 5"):
        open_samples(tmp_path / "bad.npz", two)
    np.savez(tmp_path / "labels.npz", a=np.zeros((5, 4), np.float32), ids=np.zeros((5, 4)), label=np.arange(5))
    with pytest.raises(
        CalibrationError, match=r"labels\.npz: unknown input 'label'; the model's inputs are: a \[N, 4\]"
    ):
        open_samples(tmp_path / "labels.npz", two)
    # the float ids fail on dtype once the label array is ignored
    with pytest.raises(CalibrationError, match=r"sample 0 \(.*labels\.npz\), input 'ids': has dtype float64 but"):
        open_samples(tmp_path / "labels.npz", two, ignore=["label"])
    np.savez(tmp_path / "empty.npz", a=np.zeros((0, 4), np.float32), ids=np.zeros((0, 4), np.int64))
    with pytest.raises(CalibrationError, match=r"no samples in .*empty\.npz"):
        open_samples(tmp_path / "empty.npz", two)


def test_example_digits_files() -> None:
    if not (DIGITS / "digits_cnn.onnx").is_file():
        pytest.skip("examples/digits not present")
    model = onnx.load(DIGITS / "digits_cnn.onnx")
    calib = open_samples(DIGITS / "calibration.npz", model)
    assert calib.count == 64
    ev = open_samples(DIGITS / "eval.npz", model, ignore={"label"})
    assert ev.count == 300
    outs = run(model, ev.take(4))
    assert [o.shape for o in outs] == [(1, 10)] * 4


def _write_pb(path: Path, arr: np.ndarray, name: str = "") -> None:
    path.write_bytes(numpy_helper.from_array(arr, name).SerializeToString())


def test_onnxruntime_test_data_sets(tmp_path: Path, two: onnx.ModelProto) -> None:
    samples = two_samples(3)
    for i, s in enumerate(samples):
        d = tmp_path / f"test_data_set_{i}"
        d.mkdir()
        if i == 1:  # unnamed tensors map by index
            _write_pb(d / "input_0.pb", s["a"])
            _write_pb(d / "input_1.pb", s["ids"])
        else:  # named tensors map by name, whatever the file order
            _write_pb(d / "input_0.pb", s["ids"], "ids")
            _write_pb(d / "input_1.pb", s["a"], "a")
        _write_pb(d / "output_0.pb", np.zeros((1, 4), np.float32), "y")
    (tmp_path / "model.onnx").write_bytes(two.SerializeToString())
    src = open_samples(tmp_path, tmp_path / "model.onnx")
    assert src.description == f"{tmp_path}/ (3 test_data_set_* folders)"
    assert same(src, samples)
    run(two, src)
    single = open_samples(tmp_path / "test_data_set_1", two)
    assert single.count == 1 and same(single, samples[1:2])


def test_onnxruntime_test_data_set_errors(tmp_path: Path, two: onnx.ModelProto) -> None:
    d = tmp_path / "test_data_set_0"
    d.mkdir()
    _write_pb(d / "input_0.pb", np.zeros((1, 4), np.float32), "a")
    (d / "input_1.pb").write_bytes(b"\xff\xfe garbage \x00")
    with pytest.raises(CalibrationError, match=r"cannot read .*test_data_set_0/input_1\.pb"):
        open_samples(tmp_path, two)
    _write_pb(d / "input_1.pb", np.zeros((1, 4), np.int64), "tokens")
    with pytest.raises(CalibrationError, match=r"sample 0 \(.*test_data_set_0\): unknown input 'tokens'"):
        open_samples(tmp_path, two)
    _write_pb(d / "input_1.pb", np.zeros((1, 4), np.int64))
    _write_pb(d / "input_2.pb", np.zeros((1, 4), np.int64))
    with pytest.raises(CalibrationError, match=r"input_2\.pb: the tensor has no name and its index 2 is past"):
        open_samples(tmp_path, two)


# --------------------------------------------------------------------------------------------- split / take


def test_split_and_take(cnn: onnx.ModelProto) -> None:
    samples = modelzoo.sample_inputs(cnn, 10)
    src = open_samples(samples, cnn)
    calib, ev = src.split(3)
    assert (calib.count, ev.count) == (7, 3)
    assert same(calib, samples[:7]) and same(ev, samples[7:])
    assert calib.description == "list of 10 samples, samples 0-6"
    assert ev.description == "list of 10 samples, samples 7-9"
    first = src.take(4)
    assert first.count == 4 and same(first, samples[:4])
    c2, e2 = first.split(1)  # views of views
    assert same(c2, samples[:3]) and same(e2, samples[3:4])
    assert src.take(50).count == 10  # fewer samples than asked: all of them
    c0, e0 = src.split(0)
    assert c0.count == 10 and e0.count == 0 and list(e0) == [] and not e0
    with pytest.raises(CalibrationError, match=r"cannot hold back 10 samples.*only 10"):
        src.split(10)
    with pytest.raises(CalibrationError, match="positive integer"):
        src.take(0)


def test_errors_name_the_original_index_in_views(cnn: onnx.ModelProto) -> None:
    samples = modelzoo.sample_inputs(cnn, 5)
    samples[4]["input"][0, 0, 0, 0] = np.nan
    _, ev = open_samples(samples, cnn).split(2)
    with pytest.raises(CalibrationError, match="sample 4, input 'input': contains 1 NaN"):
        list(ev)


def test_as_reader_drives_quantize_static(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    samples = modelzoo.sample_inputs(cnn, 4)
    reader = open_samples(samples, cnn).as_reader()
    assert len(reader) == 4
    assert same(iter(reader.get_next, None), samples)
    reader.rewind()
    reader.set_range(1, 3)
    assert same(iter(reader.get_next, None), samples[1:3])
    reader.rewind()
    fp, qp = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(cnn, fp)
    quantize_static(fp, qp, reader, quant_format=QuantFormat.QDQ)
    q = onnx.load(qp)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)


# --------------------------------------------------------------------------------------------- validation


def test_unknown_and_missing_inputs(two: onnx.ModelProto) -> None:
    a = np.zeros((1, 4), np.float32)
    with pytest.raises(CalibrationError) as e:
        open_samples([{"a": a, "ids": np.zeros((1, 4), np.int64), "idz": a}], two)
    assert errmsg(e) == "sample 0: unknown input 'idz'; the model's inputs are: a [N, 4] float32, ids [N, 4] int64"
    with pytest.raises(CalibrationError, match="sample 1: missing input 'ids'; the model's inputs are"):
        list(open_samples([*two_samples(1), {"a": a}], two))
    with pytest.raises(CalibrationError, match="sample 0: expected a dict"):
        open_samples([a], two)


def test_shape_errors_and_batch_axis(cnn: onnx.ModelProto, tmp_path: Path) -> None:
    x = np.zeros((1, 3, 32, 32), np.float32)
    np.savez(tmp_path / "0.npz", input=x)
    with pytest.raises(CalibrationError) as e:
        open_samples(tmp_path, cnn)
    assert errmsg(e) == (
        f"sample 0 ({tmp_path / '0.npz'}), input 'input': has shape (1, 3, 32, 32) but the model expects "
        "[N, 3, 16, 16] (axis 2 is 32, expected 16)"
    )
    with pytest.raises(CalibrationError, match=r"input 'input': has rank 2 \(shape \(3, 16\)\) but the model expects"):
        open_samples([{"input": np.zeros((3, 16), np.float32)}], cnn)
    (s,) = open_samples([{"input": np.zeros((3, 16, 16), np.float32)}], cnn)
    assert s["input"].shape == (1, 3, 16, 16)  # batch axis added
    (s,) = open_samples([{"input": np.zeros((4, 3, 16, 16), np.float32)}], cnn)
    assert s["input"].shape == (4, 3, 16, 16)  # symbolic batch accepts any size
    with pytest.raises(CalibrationError, match=r"input 'input': is empty \(shape \(0, 3, 16, 16\)\)"):
        open_samples([{"input": np.zeros((0, 3, 16, 16), np.float32)}], cnn)


def test_dtype_rules(two: onnx.ModelProto) -> None:
    a64 = np.ones((1, 4))  # float64
    ids32 = np.ones((1, 4), np.int32)
    (s,) = open_samples([{"a": a64, "ids": ids32}], two)
    assert s["a"].dtype == np.float32 and s["ids"].dtype == np.int64  # safe casts within a kind
    assert run(two, [s])[0].dtype == np.float32
    with pytest.raises(
        CalibrationError, match="input 'a': has dtype int64 but the model expects float32; hwquant never"
    ):
        open_samples([{"a": np.ones((1, 4), np.int64), "ids": ids32}], two)
    with pytest.raises(
        CalibrationError, match="input 'ids': has dtype float32 but the model expects int64; hwquant nev"
    ):
        open_samples([{"a": a64, "ids": np.ones((1, 4), np.float32)}], two)
    with pytest.raises(
        CalibrationError, match=r"input 'a': contains 0 NaN and 4 Inf values after the cast from float64 to float32"
    ):
        open_samples([{"a": np.full((1, 4), 1e300), "ids": ids32}], two)
    big = np.full((1, 4), 2**40, np.uint64)
    specs = [InputSpec("ids", np.dtype(np.int32), ("N", 4))]
    with pytest.raises(CalibrationError, match=r"values in \[1099511627776, 1099511627776\], which do not fit"):
        validate_sample({"ids": big}, specs, index=7, origin="x.npz")
    with pytest.raises(CalibrationError, match="not numeric"):
        validate_sample({"ids": np.array([["a"] * 4])}, specs)
    big_endian = np.ones((1, 4), ">f4")
    out = validate_sample({"a": big_endian, "ids": ids32}, input_specs(two))
    assert out["a"].dtype == np.float32 and out["a"].dtype.isnative


def test_nan_inf_name_file_sample_and_input(tmp_path: Path, two: onnx.ModelProto) -> None:
    samples = two_samples(3)
    samples[2]["a"][0, 1] = np.inf
    samples[2]["a"][0, 3] = np.nan
    for i, s in enumerate(samples):
        np.savez(tmp_path / f"{i}.npz", **s)
    src = open_samples(tmp_path, two)  # the first sample is fine
    with pytest.raises(CalibrationError) as e:
        list(src)
    assert (
        errmsg(e)
        == f"sample 2 ({tmp_path / '2.npz'}), input 'a': contains 1 NaN and 1 Inf values (first at index (0, 1))"
    )


def test_empty_sources(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    with pytest.raises(CalibrationError, match=f"no samples in {tmp_path}/: expected .npz/.npy files"):
        open_samples(tmp_path, cnn)
    with pytest.raises(CalibrationError, match="no samples in list of 0 samples"):
        open_samples([], cnn)
    src = open_samples(iter([]), cnn)  # emptiness of a generator shows when it is read
    with pytest.raises(CalibrationError, match=r"no samples in list_iterator \(one-shot\)"):
        list(src)


def test_unreadable_files(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CalibrationError, match=f"calibration data not found: {missing}"):
        open_samples(missing, cnn)
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CalibrationError, match=r"cannot read .*corrupt\.npz"):
        open_samples(tmp_path / "corrupt.npz", cnn)
    d = tmp_path / "dir"
    d.mkdir()
    np.save(d / "0.npy", np.zeros((1, 3, 16, 16), np.float32))
    (d / "1.npy").write_bytes(b"\x93NUMPY garbage")
    src = open_samples(d, cnn)
    with pytest.raises(CalibrationError, match=r"cannot read .*dir/1\.npy"):
        list(src)
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(CalibrationError, match=r"unsupported calibration data file .*data\.csv"):
        open_samples(tmp_path / "data.csv", cnn)
    # a truncated stacked .npz fails on the row it cannot read, naming the file and the array
    x = np.zeros((4, 3, 16, 16), np.float32)
    np.savez(tmp_path / "trunc.npz", input=x)
    raw = (tmp_path / "trunc.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CalibrationError, match=r"cannot read .*trunc\.npz"):
        list(open_samples(tmp_path / "trunc.npz", cnn))


# --------------------------------------------------------------------------------------------- images


def test_image_folder_needs_preprocessing(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    (tmp_path / "a.png").write_bytes(b"not decoded")
    with pytest.raises(CalibrationError, match="holds 1 image but no image preprocessing was given"):
        open_samples(tmp_path, cnn)


def test_missing_pillow_is_a_clear_error(tmp_path: Path, cnn: onnx.ModelProto, monkeypatch) -> None:
    (tmp_path / "a.png").write_bytes(b"not decoded")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(CalibrationError, match=r"needs Pillow.*pip install 'hwquant\[images\]'"):
        open_samples(tmp_path, cnn, image=ImagePreprocess(size=(16, 16)))


def test_image_preprocessing_is_ignored_where_there_are_no_images(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    pre = ImagePreprocess(size=(16, 16))
    samples = modelzoo.sample_inputs(cnn, 2)
    assert same(open_samples(samples, cnn, image=pre), samples)
    np.savez(tmp_path / "0.npz", **samples[0])
    assert same(open_samples(tmp_path, cnn, image=pre), samples[:1])


def test_image_preprocess_validation() -> None:
    assert ImagePreprocess(size=8).size == (8, 8)
    assert ImagePreprocess(grayscale=True).mean == (0.0,)
    with pytest.raises(CalibrationError, match="layout must be one of NCHW, NHWC"):
        ImagePreprocess(layout="CHW")
    with pytest.raises(CalibrationError, match="mean needs 1 or 3 values"):
        ImagePreprocess(mean=(1.0, 2.0))
    with pytest.raises(CalibrationError, match="std must not be 0"):
        ImagePreprocess(std=(1.0, 0.0, 1.0))


def _pattern(h: int, w: int) -> np.ndarray:
    """An RGB image whose three channels differ: R = 10*y, G = 10*x, B = 200."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([10 * yy, 10 * xx, np.full((h, w), 200)], axis=-1).astype(np.uint8)


def test_image_folder_layout_order_and_scaling(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    Image = pytest.importorskip("PIL.Image")
    for cls in ("cat", "dog"):  # class subfolders are searched
        (tmp_path / cls).mkdir()
    pix = _pattern(16, 16)
    Image.fromarray(pix).save(tmp_path / "cat" / "1.png")
    Image.fromarray(255 - pix).save(tmp_path / "dog" / "1.png")
    Image.fromarray(pix).resize((24, 20)).save(tmp_path / "dog" / "2.jpg")  # resized back to 16x16
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.5, 0.25)
    pre = ImagePreprocess(size=(16, 16), mean=mean, std=std)
    src = open_samples(tmp_path, cnn, image=pre)
    assert src.count == 3
    assert src.description == f"{tmp_path}/ (3 images, 16x16 NCHW RGB)"
    first, second, third = list(src)
    expect = (pix.astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(first["input"], expect.transpose(2, 0, 1)[None], atol=1e-6)
    assert third["input"].shape == (1, 3, 16, 16)
    assert [o.shape for o in run(cnn, [first, second, third])] == [(1, 10)] * 3
    # BGR, NHWC for a uint8 NHWC model taking raw pixels, size taken from the model
    model = nhwc_uint8()
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(_pattern(4, 6)).save(small / "x.png")
    (s,) = open_samples(small, model, image=ImagePreprocess(layout="NHWC", channel_order="BGR", scale=1.0))
    assert s["img"].dtype == np.uint8 and s["img"].shape == (1, 4, 6, 3)
    np.testing.assert_array_equal(s["img"][0], _pattern(4, 6)[..., ::-1])
    np.testing.assert_allclose(run(model, [s])[0][0], _pattern(4, 6)[..., ::-1].mean(axis=(0, 1)), rtol=1e-5)


def test_image_center_crop_and_grayscale(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    pix = np.zeros((8, 16), np.uint8)
    pix[:, 1:15] = 255  # black edge columns: the centre crop drops them, stretching blends them in
    Image.fromarray(pix).save(tmp_path / "g.png")
    specs = [InputSpec("input", np.dtype(np.float32), ("N", 1, 4, 4))]
    crop = ImagePreprocess(size=(4, 4), grayscale=True, resize="center_crop")
    (s,) = open_samples(tmp_path / "g.png", specs, image=crop)
    assert s["input"].shape == (1, 1, 4, 4)
    np.testing.assert_allclose(s["input"], 1.0, atol=1e-6)
    (s,) = open_samples(tmp_path / "g.png", specs, image=ImagePreprocess(size=(4, 4), grayscale=True))
    assert s["input"].min() < 0.9  # stretched: the black edges blend into the border pixels


def test_image_errors(tmp_path: Path, cnn: onnx.ModelProto) -> None:
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(_pattern(16, 16)).save(tmp_path / "0.png")
    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    src = open_samples(tmp_path, cnn, image=ImagePreprocess(size=(16, 16)))
    with pytest.raises(CalibrationError, match=r"cannot read image .*1\.png"):
        list(src)
    with pytest.raises(CalibrationError, match=r"has 16 channels on the NHWC channel axis.*model looks NCHW"):
        open_samples(tmp_path, cnn, image=ImagePreprocess(size=(16, 16), layout="NHWC"))
    with pytest.raises(CalibrationError, match=r"expects height 16 .* image size gives 8"):
        open_samples(tmp_path, cnn, image=ImagePreprocess(size=(8, 8)))
    with pytest.raises(CalibrationError, match="image input 'pixels' is not a model input"):
        open_samples(tmp_path, cnn, image=ImagePreprocess(input="pixels"))
    with pytest.raises(CalibrationError, match="takes raw pixels: use scale 1"):
        open_samples(tmp_path, nhwc_uint8(), image=ImagePreprocess(layout="NHWC"))
