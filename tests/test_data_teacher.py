"""Teacher-student tables: a random network with known weights labels Gaussian inputs."""

import numpy as np
import pytest

from interplay.data import DataError, load_split, make_teacher_student_table, prepare_split
from interplay.data.teacher import teacher_forward, teacher_student_data, teacher_weights


def test_table_holds_the_generated_data_exactly(tmp_path):
    spec = {"in_dim": 3, "hidden": [8, 4], "n": 200, "noise": 0.1, "seed": 7, "activation": "relu"}
    path = make_teacher_student_table(spec, tmp_path / "teacher_a.data")
    table = np.loadtxt(path)
    x, y, _ = teacher_student_data(spec)
    assert table.shape == (200, 4)
    np.testing.assert_array_equal(table, np.column_stack([x, y]))  # shortest round-trip numbers: exact


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    spec = {"in_dim": 2, "hidden": [5], "n": 50}
    a = make_teacher_student_table(spec, tmp_path / "a.data").read_bytes()
    b = make_teacher_student_table(spec, tmp_path / "b.data").read_bytes()
    c = make_teacher_student_table({**spec, "seed": 1}, tmp_path / "c.data").read_bytes()
    assert a == b and a != c


def test_weights_have_variance_one_over_fan_in():
    weights = teacher_weights({"in_dim": 200, "hidden": [300, 250], "n": 10, "seed": 0})
    assert [w.shape for w in weights] == [(200, 300), (300, 250), (250, 1)]
    for kernel in weights[:2]:  # 60,000 and 75,000 draws: the variance is known to < 2 %
        assert kernel.var() == pytest.approx(1 / kernel.shape[0], rel=0.02)
        assert abs(kernel.mean()) < 4 * np.sqrt(1 / kernel.shape[0] / kernel.size)


def test_inputs_are_standard_normal_and_noise_has_the_given_scale():
    spec = {"in_dim": 3, "hidden": [6], "n": 20000, "noise": 0.5, "seed": 2}
    x, y, weights = teacher_student_data(spec)
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=0.04)
    np.testing.assert_allclose(np.cov(x, rowvar=False), np.eye(3), atol=0.04)
    residual = y - teacher_forward(weights, x, "relu")
    assert residual.std() == pytest.approx(0.5, rel=0.03)
    assert abs(residual.mean()) < 0.02


def test_relu_teacher_is_positively_homogeneous():
    # No biases: f(a x) = a f(x) for a > 0; a bias or a wrong activation would break it.
    spec = {"in_dim": 4, "hidden": [16, 16], "n": 10, "seed": 3}
    weights = teacher_weights(spec)
    x = np.random.default_rng(9).normal(size=(100, 4))
    np.testing.assert_allclose(
        teacher_forward(weights, 2.5 * x), 2.5 * teacher_forward(weights, x), rtol=1e-12
    )
    assert not np.allclose(teacher_forward(weights, -x), -teacher_forward(weights, x))  # it is not linear


def test_identity_teacher_is_the_product_of_its_kernels(tmp_path):
    spec = {"in_dim": 3, "hidden": [5, 2], "n": 100, "noise": 0.0, "seed": 4, "activation": "identity"}
    table = np.loadtxt(make_teacher_student_table(spec, tmp_path / "lin.data"))
    coef, *_ = np.linalg.lstsq(table[:, :-1], table[:, -1], rcond=None)
    product = np.linalg.multi_dot(teacher_weights(spec))[:, 0]
    np.testing.assert_allclose(coef, product, rtol=1e-9, atol=1e-12)


def test_teacher_table_goes_through_prepare(tmp_path):
    spec = {"in_dim": 2, "hidden": [3], "n": 100, "seed": 5}
    table = make_teacher_student_table(spec, tmp_path / "teacher_b.data")
    path = prepare_split(table, tmp_path / "teacher_b.nc", dataset="teacher_b", seed=0)
    x, y = load_split(path, "train")
    assert x.shape == (70, 2) and y.shape == (70,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 3}, "unknown keys"),
        ({"n": None}, "n must be"),
        ({"n": 1}, "n must be"),
        ({"noise": -0.1}, "noise"),
        ({"activation": "gelu"}, "activation"),
        ({"hidden": [4, 0]}, r"hidden\[1\]"),
        ({"hidden": 4}, "list of widths"),
        ({"in_dim": 2.5}, "in_dim"),
    ],
)
def test_bad_spec_names_the_key(change, message, tmp_path):
    spec = {"in_dim": 2, "hidden": [3], "n": 20, **change}
    with pytest.raises(DataError, match=message):
        make_teacher_student_table(spec, tmp_path / "t.data")
    assert not (tmp_path / "t.data").exists()


def test_missing_keys_are_named(tmp_path):
    with pytest.raises(DataError, match="missing keys.*hidden"):
        make_teacher_student_table({"in_dim": 2, "n": 20}, tmp_path / "t.data")
