"""Weight transforms: numpy references for fixed draws, draw distributions, serialisation, errors."""

import keras
import numpy as np
import pytest

from keras_wtrain.shadow_weights import transforms as T


def np_shift(kernel, shifts, axes):
    out = kernel
    for s, axis in zip(shifts, axes):
        moved = np.zeros_like(out)
        k = out.shape[axis]
        for i in range(k):
            j = i - s
            if 0 <= j < k:
                dst = [slice(None)] * out.ndim
                src = [slice(None)] * out.ndim
                dst[axis], src[axis] = i, j
                moved[tuple(dst)] = out[tuple(src)]
        out = moved
    return out


def np_resize_1d(values, start, length, k):
    """torch-style bilinear resize (align_corners=False) of values[start:start+length] to k samples."""
    crop = values[start : start + length]
    out = []
    for i in range(k):
        src = max((i + 0.5) * length / k - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, length - 1)
        lam = src - i0
        out.append((1 - lam) * crop[i0] + lam * crop[i1])
    return np.stack(out)


def np_crop(kernel, starts, lengths, axes):
    out = kernel
    for start, length, axis in zip(starts, lengths, axes):
        moved = np.moveaxis(out, axis, 0)
        out = np.moveaxis(np_resize_1d(moved, start, length, moved.shape[0]), 0, axis)
    return out


def np_flip(kernel, flips, axes):
    for flip, axis in zip(flips, axes):
        kernel = np.flip(kernel, axis) if flip else kernel
    return kernel


def _np(params):
    return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in params.items() if not isinstance(v, list)}


REFERENCES = {
    "translate": (T.RandomTranslate(0.3), lambda k, p, axes: np_shift(k, p["shifts"], axes)),
    "translate_big": (T.RandomTranslate(0.6), lambda k, p, axes: np_shift(k, p["shifts"], axes)),
    "crop": (T.RandomResizedCrop(), lambda k, p, axes: np_crop(k, p["starts"], p["lengths"], axes)),
    "crop_wide": (
        T.RandomResizedCrop(scale=(0.3, 1.0)),
        lambda k, p, axes: np_crop(k, p["starts"], p["lengths"], axes),
    ),
    "flip": (T.RandomFlip(), lambda k, p, axes: np_flip(k, p["flips"], (axes[0], axes[-1]))),
    "rotate90": (T.RandomRotate90(), lambda k, p, axes: np.rot90(k, int(p["k"]), axes=(axes[0], axes[1]))),
    "gaussian": (T.GaussianNoise(0.2), lambda k, p, axes: k + 0.2 * np.std(k) * p["noise"]),
    "multiplicative": (T.MultiplicativeNoise(0.2), lambda k, p, axes: k * (1 + 0.2 * p["noise"])),
    "dropconnect": (T.DropConnect(0.3), lambda k, p, axes: np.where(p["keep"], k / 0.7, 0.0)),
    "dropconnect_norescale": (T.DropConnect(0.3, rescale=False), lambda k, p, axes: np.where(p["keep"], k, 0.0)),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape", [(3, 3, 2, 4), (5, 5, 3, 2)])
def test_transform_matches_numpy_reference_for_fixed_seed(name, shape, rng):
    transform, reference = REFERENCES[name]
    kernel = rng.normal(size=shape).astype("float32")
    axes = (0, 1)
    outputs = []
    for seed in range(6):
        params = _np(transform.sample(shape, seed, axes))
        expected = reference(kernel.astype(np.float64), params, axes)
        got = np.asarray(transform(kernel, seed=seed))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        outputs.append(got)
    if name not in ("crop",):  # 3×3 crops are mostly the identity
        assert any(not np.allclose(outputs[0], o) for o in outputs[1:]), "draws do not vary with the seed"


def test_int_seed_equals_fresh_seed_generator(rng):
    kernel = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    for transform in (
        T.RandomTranslate(),
        T.Compose(["shift", "multiplicative_noise"]),
        T.RandomChoice(["shift", "crop"]),
    ):
        a = np.asarray(transform(kernel, seed=7))
        b = np.asarray(transform(kernel, seed=keras.random.SeedGenerator(7)))
        np.testing.assert_array_equal(a, b)


def test_translate_offsets_follow_torchvision_probabilities():
    # torchvision RandomAffine(translate=(0.3, 0.3)) on a 3x3 kernel: round(U(-0.9, 0.9)) -> -1/0/+1 w.p. 2/9, 5/9, 2/9.
    generator = keras.random.SeedGenerator(0)
    shifts = np.concatenate(
        [np.asarray(T.RandomTranslate(0.3).sample((3, 3, 1, 1), generator)["shifts"]) for _ in range(400)]
    )
    freq = [np.mean(shifts == s) for s in (-1, 0, 1)]
    np.testing.assert_allclose(freq, [2 / 9, 5 / 9, 2 / 9], atol=0.045)


def _torchvision_crop_hw(rng, k, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3)):
    area = k * k
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w = int(round(np.sqrt(target * r)))
        h = int(round(np.sqrt(target / r)))
        if 0 < w <= k and 0 < h <= k:
            return h, w
    return k, k


def test_resized_crop_size_distribution_matches_torchvision_algorithm():
    rng = np.random.default_rng(0)
    expected = {}
    for _ in range(20000):
        hw = _torchvision_crop_hw(rng, 3)
        expected[hw] = expected.get(hw, 0) + 1 / 20000
    generator = keras.random.SeedGenerator(1)
    got = {}
    n = 300
    for _ in range(n):
        lengths = tuple(int(v) for v in np.asarray(T.RandomResizedCrop().sample((3, 3, 1, 1), generator)["lengths"]))
        got[lengths] = got.get(lengths, 0) + 1 / n
    assert set(got) <= set(expected)
    for hw, p in expected.items():
        assert abs(got.get(hw, 0.0) - p) < 0.08, (hw, got, expected)


def test_one_and_three_spatial_axes(rng):
    k1 = rng.normal(size=(5, 2, 3)).astype("float32")
    p = _np(T.RandomTranslate(0.4).sample(k1.shape, 3, (0,)))
    np.testing.assert_allclose(T.RandomTranslate(0.4)(k1, seed=3), np_shift(k1, p["shifts"], (0,)))
    k3 = rng.normal(size=(3, 3, 3, 2, 2)).astype("float32")
    p = _np(T.RandomResizedCrop(scale=(0.2, 0.5)).sample(k3.shape, 2, (0, 1, 2)))
    np.testing.assert_allclose(
        T.RandomResizedCrop(scale=(0.2, 0.5))(k3, seed=2), np_crop(k3, p["starts"], p["lengths"], (0, 1, 2)), atol=1e-6
    )


def test_compose_and_random_choice_match_members(rng):
    kernel = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    compose = T.Compose([T.RandomTranslate(0.3), T.MultiplicativeNoise(0.1)])
    params = compose.sample(kernel.shape, 4, (0, 1))
    shift, noise = _np(params["members"][0]), _np(params["members"][1])
    expected = np_shift(kernel, shift["shifts"], (0, 1)) * (1 + 0.1 * noise["noise"])
    np.testing.assert_allclose(compose(kernel, seed=4), expected, rtol=1e-5, atol=1e-6)

    choice = T.RandomChoice(
        [T.RandomFlip("horizontal", 1.0), T.RandomFlip("vertical", 1.0)], probabilities=[0.25, 0.75]
    )
    picks = []
    generator = keras.random.SeedGenerator(0)
    for _ in range(200):
        out = np.asarray(choice(kernel, seed=generator))
        if np.array_equal(out, np.flip(kernel, 1)):
            picks.append(0)
        else:
            np.testing.assert_array_equal(out, np.flip(kernel, 0))
            picks.append(1)
    assert 0.15 < 1 - np.mean(picks) < 0.35


def test_function_transform_and_get(rng):
    kernel = rng.normal(size=(4, 3)).astype("float32")

    def halve(k, seed):
        return k * 0.5

    t = T.get(halve)
    assert isinstance(t, T.FunctionTransform)
    np.testing.assert_allclose(t(kernel, seed=0), kernel * 0.5)
    with pytest.raises(ValueError, match="must keep the kernel shape"):
        T.FunctionTransform(lambda k, s: k[0])(kernel, seed=0)
    assert isinstance(T.get("random_scale"), T.RandomResizedCrop)
    assert isinstance(T.get("shift"), T.RandomTranslate)
    with pytest.raises(ValueError, match="unknown transform name 'nope'"):
        T.get("nope")
    with pytest.raises(TypeError, match="argument `transform`"):
        T.get(3)


@pytest.mark.parametrize(
    "transform",
    [
        T.RandomTranslate(0.25),
        T.RandomResizedCrop((0.5, 0.9), (0.5, 2.0)),
        T.RandomFlip("vertical", 0.3),
        T.RandomRotate90(),
        T.GaussianNoise(0.05),
        T.MultiplicativeNoise(0.3),
        T.DropConnect(0.2, rescale=False),
        T.Compose(["shift", T.DropConnect(0.1)]),
        T.RandomChoice(["shift", "crop"], [0.3, 0.7]),
    ],
    ids=lambda t: type(t).__name__,
)
def test_serialisation_round_trip(transform, rng):
    config = keras.saving.serialize_keras_object(transform)
    restored = T.get(config)
    assert type(restored) is type(transform)
    assert restored.get_config() == transform.get_config()
    kernel = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    np.testing.assert_array_equal(restored(kernel, seed=5), transform(kernel, seed=5))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"`max_shift` must be in \[0, 1\); received 1.0"):
        T.RandomTranslate(1.0)
    with pytest.raises(ValueError, match="`max_shift`"):
        T.RandomTranslate(-0.1)
    with pytest.raises(ValueError, match=r"`rate` must be in \[0, 1\)"):
        T.DropConnect(1.0)
    with pytest.raises(ValueError, match="`stddev`"):
        T.GaussianNoise(-1.0)
    with pytest.raises(ValueError, match="`mode`"):
        T.RandomFlip("diagonal")
    with pytest.raises(ValueError, match="`scale`"):
        T.RandomResizedCrop(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="`probabilities`"):
        T.RandomChoice(["shift", "crop"], [1.0])
    with pytest.raises(ValueError, match="no spatial axes"):
        T.RandomTranslate()(np.ones((4, 3), "float32"), seed=0)
    with pytest.raises(ValueError, match="two spatial axes of equal size"):
        T.RandomRotate90()(np.ones((3, 5, 2, 2), "float32"), seed=0)
    with pytest.raises(TypeError, match="`seed`"):
        T.RandomTranslate()(np.ones((3, 3, 1, 1), "float32"), seed="zero")


# ---------------------------------------------------------------- fixed transforms and the reduced convolution


@pytest.mark.parametrize("shift", [1, -1, (1, 0), (0, -2), (2, 1)])
def test_fixed_shift_matches_numpy_and_its_kept_box(shift, rng):
    kernel = rng.normal(size=(3, 5, 2, 4)).astype("float32")
    transform = T.FixedShift(shift)
    shifts = transform.shifts(kernel.shape)
    expected = np_shift(kernel, shifts, (0, 1))
    np.testing.assert_array_equal(np.asarray(transform(kernel, seed=0)), expected)
    np.testing.assert_array_equal(np.asarray(transform(kernel, seed=9)), expected)  # no draw: seed-free
    box = transform.kept_box(kernel.shape)
    outside = np.ones((3, 5), bool)
    outside[box[0][0] : box[0][1], box[1][0] : box[1][1]] = False
    assert not expected[outside].any()  # every tap outside the box is zero
    np.testing.assert_array_equal(  # the box holds the kernel's first |s| taps moved by s
        expected[box[0][0] : box[0][1], box[1][0] : box[1][1]],
        kernel[max(-shifts[0], 0) : 3 - max(shifts[0], 0), max(-shifts[1], 0) : 5 - max(shifts[1], 0)],
    )


def test_fixed_shift_default_is_one_tap_down_right_and_skips_size_one_axes():
    kernel = np.arange(9, dtype="float32").reshape(3, 3, 1, 1)
    out = np.asarray(T.get("fixed_shift")(kernel))[..., 0, 0]
    np.testing.assert_array_equal(out, [[0, 0, 0], [0, 0, 1], [0, 3, 4]])
    assert T.FixedShift().kept_box((3, 3, 1, 1)) == ((1, 3), (1, 3))
    assert T.FixedShift(1).shifts((1, 3, 2, 2)) == (0, 1)  # a 1x3 kernel shifts along its width only
    assert T.FixedShift(1).kept_box((5, 2, 2)) == ((1, 5),)


def test_fixed_mask_matches_numpy_and_box(rng):
    mask = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0]])
    kernel = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    out = np.asarray(T.FixedMask(mask)(kernel))
    np.testing.assert_array_equal(out, kernel * mask[:, :, None, None])
    assert T.FixedMask(mask).kept_box(kernel.shape) == ((0, 2), (1, 3))


@pytest.mark.parametrize("transform", [T.FixedShift(1), T.FixedShift((1, -1)), T.FixedMask([[1, 0, 0]] * 3)])
def test_fixed_transform_serialisation_round_trip(transform, rng):
    restored = T.get(keras.saving.serialize_keras_object(transform))
    assert type(restored) is type(transform) and restored.get_config() == transform.get_config()
    kernel = rng.normal(size=(3, 3, 2, 4)).astype("float32")
    np.testing.assert_array_equal(restored(kernel), transform(kernel))


def test_fixed_transform_bad_arguments():
    with pytest.raises(TypeError, match="FixedShift: argument `shift`"):
        T.FixedShift(0.5)
    with pytest.raises(ValueError, match=r"argument `shift` must satisfy \|shift\| < kernel size"):
        T.FixedShift(3)(np.ones((3, 3, 1, 1), "float32"))
    with pytest.raises(ValueError, match="one shift per spatial axis"):
        T.FixedShift((1, 1, 1))(np.ones((3, 3, 1, 1), "float32"))
    with pytest.raises(ValueError, match="no spatial axes"):
        T.FixedShift()(np.ones((4, 3), "float32"))
    with pytest.raises(ValueError, match="FixedMask: argument `mask` must be an array of 0/1"):
        T.FixedMask([[0.5, 1.0]])
    with pytest.raises(ValueError, match="at least one 1"):
        T.FixedMask([[0, 0], [0, 0]])
    with pytest.raises(ValueError, match="FixedMask: argument `mask` must have the kernel's spatial shape"):
        T.FixedMask([[1, 1], [1, 1]])(np.ones((3, 3, 1, 1), "float32"))


def np_conv1d(x, kernel, stride, dilation, low, out):
    """y[o] = sum_i x[o*stride + i*dilation - low] kernel[i], x zero outside [0, n): the convolution's definition."""
    n, k = len(x), len(kernel)
    y = np.zeros(out)
    for o in range(out):
        for i in range(k):
            j = o * stride + i * dilation - low
            if 0 <= j < n:
                y[o] += x[j] * kernel[i]
    return y


def tf_padding(n, k, stride, dilation, padding):
    """Low padding and output size as TensorFlow documents them (`tf.nn.convolution`), written out here."""
    extent = dilation * (k - 1) + 1
    if padding == "valid":
        return 0, (n - extent) // stride + 1
    if padding == "causal":
        return extent - 1, (n - 1) // stride + 1
    out = -(-n // stride)
    return max((out - 1) * stride + extent - n, 0) // 2, out


def test_np_conv1d_reference_agrees_with_keras(rng):
    for n, k, stride, dilation, padding in [
        (9, 3, 2, 1, "same"),
        (10, 3, 2, 1, "same"),
        (11, 4, 3, 1, "valid"),
        (11, 3, 1, 2, "valid"),
        (8, 3, 1, 2, "causal"),
        (7, 2, 1, 1, "same"),
    ]:
        x = rng.normal(size=n)
        kernel = rng.normal(size=k)
        conv = keras.layers.Conv1D(1, k, strides=stride, dilation_rate=dilation, padding=padding, use_bias=False)
        conv.build((1, n, 1))
        conv.kernel.assign(kernel.reshape(k, 1, 1).astype("float32"))
        low, out = tf_padding(n, k, stride, dilation, padding)
        expected = np_conv1d(x, kernel, stride, dilation, low, out)
        got = np.asarray(conv(x.reshape(1, n, 1).astype("float32")))[0, :, 0]
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_reduced_padding_equals_full_convolution_for_every_box():
    from keras_wtrain.shadow_weights.transforms.reduced_convolution import full_padding
    from keras_wtrain.shadow_weights.transforms.reduced_convolution import reduced_padding

    rng = np.random.default_rng(0)
    checked = 0
    for n in range(4, 13):
        for k in range(1, 6):
            for stride in (1, 2, 3):
                for dilation in (1, 2):
                    for padding in ("valid", "same", "causal"):
                        low_full, out = tf_padding(n, k, stride, dilation, padding)
                        if out < 1:
                            continue
                        assert full_padding(n, k, stride, dilation, padding) == (low_full, out)
                        for start in range(k):
                            for stop in range(start + 1, k + 1):
                                kernel = np.zeros(k)
                                kernel[start:stop] = rng.normal(size=stop - start)
                                x = rng.normal(size=n)
                                expected = np_conv1d(x, kernel, stride, dilation, low_full, out)
                                low, high, out_reduced = reduced_padding(n, k, (start, stop), stride, dilation, padding)
                                assert out_reduced == out
                                padded = np.concatenate([np.zeros(max(low, 0)), x, np.zeros(max(high, 0))])
                                padded = padded[max(-low, 0) : len(padded) - max(-high, 0)]
                                m = stop - start
                                valid_out = (len(padded) - dilation * (m - 1) - 1) // stride + 1
                                assert valid_out == out  # the "valid" convolution gives exactly n_out outputs
                                got = np_conv1d(padded, kernel[start:stop], stride, dilation, 0, valid_out)
                                np.testing.assert_allclose(got, expected, atol=1e-12)
                                if stride == 1:  # the padding does not depend on the size
                                    assert reduced_padding(None, k, (start, stop), 1, dilation, padding)[:2] == (
                                        low,
                                        high,
                                    )
                                checked += 1
    assert checked > 3000


def test_reduced_padding_bad_arguments():
    from keras_wtrain.shadow_weights.transforms.reduced_convolution import reduced_padding

    with pytest.raises(ValueError, match="argument `box`"):
        reduced_padding(8, 3, (2, 2))
    with pytest.raises(ValueError, match="argument `padding`"):
        reduced_padding(8, 3, (1, 3), padding="full")
    with pytest.raises(ValueError, match="needs a known input size"):
        reduced_padding(None, 3, (1, 3), stride=2)
