"""The input pipeline: shard reading and label alignment, batching, mixing, augmentation and MixAugment."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dmtl.data import mixing, reader, records
from dmtl.data import augment as augment_lib
from dmtl.data import mixaugment as mix_lib

SIZE = 8
A_CLASSES = ["neutral", "happiness", "sadness"]
A_ATTRS = ["AU1", "AU2", "AU4"]
B_ATTRS = ["AU2", "AU6"]
REQ_ATTRS = ["AU1", "AU2", "AU4", "AU6"]
REQ_CLASSES = ["happiness", "neutral", "sadness"]  # a different order than source A's


def image_for(source: int, index: int) -> np.ndarray:
    """A distinctive image: pixel (0, 0) encodes the source and index, the rest a gradient."""
    rng = np.random.default_rng(1000 * source + index)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    img[0, 0] = [source, index % 256, index // 256]
    return img


def write_folder(root, name, class_names, attribute_names, rows, shard_size=7):
    """rows: list of (class_label, attributes); writes train shards + dataset.json and returns the folder."""
    folder = root / name
    folder.mkdir()
    source_id = 1 if name == "a" else 2
    serialized = [records.serialize_example(tf.io.encode_png(image_for(source_id, i)).numpy(), c, attrs,
                                            source=name, path=f"{name}/{i}.png")
                  for i, (c, attrs) in enumerate(rows)]
    shards = []
    for start in range(0, len(serialized), shard_size):
        shard = records.shard_name("train", len(shards))
        records.write_shard(folder / shard, serialized[start:start + shard_size])
        shards.append(shard)
    entry = {"shards": shards, "examples": len(rows),
             "class_labelled": sum(c >= 0 for c, _ in rows),
             "attribute_labelled": sum(any(a >= 0 for a in attrs) for _, attrs in rows)}
    records.write_json_atomic(folder / records.DATASET_JSON, {
        "format": records.FORMAT, "image_size": [SIZE, SIZE], "splits": {"train": entry},
        "schema": {"name": name, "class_names": class_names, "attribute_names": attribute_names}})
    return folder


def rows_a(n=30):
    """Source A: expression labels (one in 6 missing) and AU1/AU2/AU4 (AU4 missing on every 4th)."""
    rows = []
    for i in range(n):
        c = -1 if i % 6 == 5 else i % 3
        rows.append((c, [i % 2, (i // 2) % 2, -1 if i % 4 == 3 else 1]))
    return rows


def rows_b(n=10):
    """Source B: no classes, AU2/AU6."""
    return [(-1, [i % 2, 1 - i % 2]) for i in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    return (write_folder(root, "a", A_CLASSES, A_ATTRS, rows_a()),
            write_folder(root, "b", [], B_ATTRS, rows_b()))


def expected_labels(source, i):
    if source == 1:
        c, attrs = rows_a()[i]
        klass = -1 if c < 0 else REQ_CLASSES.index(A_CLASSES[c])
        return klass, [attrs[0], attrs[1], attrs[2], -1]
    c, attrs = rows_b()[i]
    return -1, [-1, attrs[0], -1, attrs[1]]


def identify(image_uint8):
    return int(image_uint8[0, 0, 0]), int(image_uint8[0, 0, 1]) + 256 * int(image_uint8[0, 0, 2])


def to_uint8(images):
    return np.round((np.asarray(images) + 1.0) * 127.5).astype(np.uint8)


# ---------------------------------------------------------------- reading and alignment
def test_load_split_aligns_attributes_and_classes_by_name(folders):
    for source, folder, n in ((1, folders[0], 30), (2, folders[1], 10)):
        items = list(reader.load_split(folder, "train", REQ_ATTRS, REQ_CLASSES).as_numpy_iterator())
        assert len(items) == n
        for i, (image, labels) in enumerate(items):
            assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
            np.testing.assert_array_equal(image, image_for(source, i))  # shard order, lossless PNG
            klass, attrs = expected_labels(source, i)
            assert labels["classes"].dtype == np.int64 and labels["classes"] == klass
            assert labels["attributes"].dtype == np.float32
            np.testing.assert_array_equal(labels["attributes"], attrs)


def test_load_split_defaults_to_the_folder_schema(folders):
    image, labels = next(reader.load_split(folders[0], "train").as_numpy_iterator())
    assert labels["attributes"].shape == (3,) and labels["classes"] == 0


def test_class_missing_from_requested_list_is_an_error_unless_unlabelled(folders):
    ds = reader.load_split(folders[0], "train", REQ_ATTRS, ["neutral", "happiness"])  # lacks sadness
    with pytest.raises(tf.errors.InvalidArgumentError, match="sadness"):
        list(ds.as_numpy_iterator())
    # source B has no class labels at all: any class list is fine
    assert len(list(reader.load_split(folders[1], "train", REQ_ATTRS, ["anger"]).as_numpy_iterator())) == 10


def test_example_counts_and_steps(folders):
    assert reader.example_counts(list(folders)) == {"train": 40}
    assert reader.steps_per_epoch(list(folders), "train", 16) == 3
    assert reader.steps_per_epoch(list(folders), "train", 16, drop_remainder=True) == 2


# ---------------------------------------------------------------- batches
def test_eval_batches_are_scaled_deterministic_and_keep_the_remainder(folders):
    kwargs = dict(attribute_names=REQ_ATTRS, class_names=REQ_CLASSES, augment=True, mixaugment={"alpha": 0.2})
    first = list(reader.make_dataset(list(folders), "train", 16, training=False, **kwargs).as_numpy_iterator())
    second = list(reader.make_dataset(list(folders), "train", 16, training=False, **kwargs).as_numpy_iterator())
    assert [len(x) for x, _ in first] == [16, 16, 8]
    order = []
    for (x, y), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x, x2)
        assert x.dtype == np.float32 and x.min() >= -1.0 and x.max() <= 1.0
        assert y["classes"].dtype == np.int64 and y["classes"].ndim == 1  # int labels, no MixAugment
        for img, klass, attrs in zip(to_uint8(x), y["classes"], y["attributes"]):
            source, i = identify(img)
            order.append((source, i))
            np.testing.assert_array_equal(img, image_for(source, i))  # no augmentation, exact x/127.5 - 1
            assert (klass, attrs.tolist()) == expected_labels(source, i)
    assert order == [(1, i) for i in range(30)] + [(2, i) for i in range(10)]


def test_training_shuffle_is_seeded_and_batches_have_fixed_shape(folders):
    def ids(seed):
        ds = reader.make_dataset(list(folders), "train", 8, training=True, seed=seed, shuffle_buffer=64,
                                 attribute_names=REQ_ATTRS, class_names=REQ_CLASSES, augment=None)
        out = []
        for x, y in ds.take(6).as_numpy_iterator():
            assert x.shape == (8, SIZE, SIZE, 3) and y["classes"].shape == (8,) and y["attributes"].shape == (8, 4)
            out += [identify(img) for img in to_uint8(x)]
        return out

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    assert len(set(ids(3)[:30])) > 20  # mixed, not one source in order


def test_training_without_repeat_drops_the_remainder(folders):
    ds = reader.make_dataset(folders[1], "train", 4, training=True, repeat=False, augment=None,
                             attribute_names=REQ_ATTRS, class_names=REQ_CLASSES)
    assert [x.shape[0] for x, _ in ds.as_numpy_iterator()] == [4, 4]


def test_require_keeps_only_images_with_that_label(folders):
    ds = reader.make_dataset(list(folders), "train", 64, training=False, require="classes",
                             attribute_names=REQ_ATTRS, class_names=REQ_CLASSES)
    (x, y), = list(ds.as_numpy_iterator())
    assert len(x) == 25 and (y["classes"] >= 0).all()


def test_training_augmentation_is_seeded_and_in_range(folders):
    def batches(seed):
        ds = reader.make_dataset(folders[0], "train", 8, training=True, seed=seed, augment=True, shuffle_buffer=1,
                                 attribute_names=REQ_ATTRS, class_names=REQ_CLASSES)
        return [x for x, _ in ds.take(2).as_numpy_iterator()]

    a, b = batches(5), batches(5)
    for x, x2 in zip(a, b):
        np.testing.assert_array_equal(x, x2)
        assert x.min() >= -1.0 and x.max() <= 1.0


def test_cache_and_resize(folders, tmp_path):
    kwargs = dict(attribute_names=REQ_ATTRS, class_names=REQ_CLASSES)
    plain = [x for x, _ in reader.make_dataset(folders[1], "train", 4, **kwargs).as_numpy_iterator()]
    cached = reader.make_dataset(folders[1], "train", 4, cache=True, **kwargs)
    for _ in range(2):  # the second pass is served from the cache
        np.testing.assert_array_equal(np.concatenate([x for x, _ in cached.as_numpy_iterator()]),
                                      np.concatenate(plain))
    on_disk = reader.make_dataset(folders[1], "train", 4, training=True, cache=str(tmp_path / "c"), augment=None,
                                  **kwargs)
    assert {identify(img) for x, _ in on_disk.take(5).as_numpy_iterator() for img in to_uint8(x)} == {
        (2, i) for i in range(10)}
    big = reader.make_dataset(folders[1], "train", 4, image_size=16, **kwargs)
    x, _ = next(big.as_numpy_iterator())
    assert x.shape == (4, 16, 16, 3) and x.min() >= -1 and x.max() <= 1


# ---------------------------------------------------------------- mixing
@pytest.mark.parametrize("mode, share_a", [("proportional", 0.75), ("balanced", 0.5), ([1.0, 3.0], 0.25)])
def test_mixing_proportions_and_per_source_masks(folders, mode, share_a):
    ds = reader.make_dataset(list(folders), "train", 100, training=True, seed=11, mixing=mode, augment=None,
                             shuffle_buffer=16, attribute_names=REQ_ATTRS, class_names=REQ_CLASSES)
    from_a = total = 0
    for x, y in ds.take(20).as_numpy_iterator():
        for img, klass, attrs in zip(to_uint8(x), y["classes"], y["attributes"]):
            source, i = identify(img)
            assert (klass, attrs.tolist()) == expected_labels(source, i)
            if source == 1:
                assert attrs[3] == -1  # A never annotates AU6
            else:
                assert klass == -1 and attrs[0] == -1 and attrs[2] == -1  # B: no classes, no AU1/AU4
            from_a += source == 1
            total += 1
    assert abs(from_a / total - share_a) < 0.04  # 2000 draws: 4 sigma is ~0.04


def test_mixing_weights():
    np.testing.assert_allclose(mixing.mixing_weights([30, 10], "proportional"), [0.75, 0.25])
    np.testing.assert_allclose(mixing.mixing_weights([30, 10], "balanced"), [0.5, 0.5])
    np.testing.assert_allclose(mixing.mixing_weights([30, 0], "balanced"), [1.0, 0.0])
    with pytest.raises(ValueError):
        mixing.mixing_weights([30, 10], [1.0])


# ---------------------------------------------------------------- MixAugment
def test_mix_batch_rule_with_partial_labels():
    images = tf.constant(np.arange(3 * 2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2, 3) / 36.0)
    labels = {"classes": tf.constant([0, 2, -1], tf.int64),
              "attributes": tf.constant([[1, 0, -1], [0, 1, 1], [1, -1, 0]], tf.float32)}
    lam = tf.constant([0.7, 0.2, 0.5])
    perm = tf.constant([1, 0, 0])  # pairs (0,1), (1,0), (2,0)
    x, y = mix_lib.mix_batch(images, labels, lam, perm, num_classes=3)
    assert x.shape == (6, 2, 2, 3) and y["classes"].shape == (6, 3) and y["attributes"].shape == (6, 3)
    np.testing.assert_array_equal(x[:3], images)  # real half unchanged
    np.testing.assert_allclose(x[3], 0.7 * images[0] + 0.3 * images[1], rtol=1e-6)
    np.testing.assert_allclose(x[5], 0.5 * images[2] + 0.5 * images[0], rtol=1e-6)
    np.testing.assert_allclose(y["classes"][:3], [[1, 0, 0], [0, 0, 1], [-1, -1, -1]])  # real: one-hot / -1
    np.testing.assert_allclose(y["classes"][3], [0.7, 0, 0.3], rtol=1e-6)
    np.testing.assert_allclose(y["classes"][4], [0.8, 0, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(y["classes"][5], [-1, -1, -1])  # a parent lacks a class
    np.testing.assert_allclose(y["attributes"][:3], labels["attributes"])
    np.testing.assert_allclose(y["attributes"][3], [0.7, 0.3, -1], rtol=1e-6)
    np.testing.assert_allclose(y["attributes"][4], [0.8, 0.2, -1], rtol=1e-6)  # 0.2 a_1 + 0.8 a_0
    np.testing.assert_allclose(y["attributes"][5], [1.0, -1, -1], rtol=1e-6)


def test_mixaugment_samples_lam_in_unit_interval_and_is_seeded():
    lam = mix_lib.sample_beta(tf.constant([1, 2], tf.int64), [20000], 0.2).numpy()
    assert lam.min() >= 0 and lam.max() <= 1 and np.isfinite(lam).all()
    assert abs(lam.mean() - 0.5) < 0.02 and (np.abs(lam - 0.5) > 0.4).mean() > 0.5  # U-shaped Beta(0.2, 0.2)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (16, 4, 4, 3)).astype(np.float32))
    labels = {"classes": tf.constant(rng.integers(-1, 4, 16)),
              "attributes": tf.constant(rng.integers(-1, 2, (16, 5)).astype(np.float32))}
    x, y = mix_lib.mixaugment(images, labels, tf.constant([0, 9], tf.int64), num_classes=4)
    x2, _ = mix_lib.mixaugment(images, labels, tf.constant([0, 9], tf.int64), num_classes=4)
    np.testing.assert_array_equal(x, x2)
    assert x.shape == (32, 4, 4, 3) and y["classes"].shape == (32, 4) and y["attributes"].shape == (32, 5)
    np.testing.assert_array_equal(x[:16], images)
    classes = y["classes"].numpy()
    missing = (classes < 0).any(axis=1)
    assert ((classes[missing] == -1).all())  # missing rows entirely -1
    np.testing.assert_allclose(classes[~missing].sum(axis=1), 1.0, rtol=1e-5)
    assert (classes[~missing] >= 0).all() and x.numpy().min() >= -1 and x.numpy().max() <= 1
    attrs = y["attributes"].numpy()
    assert ((attrs == -1) | ((attrs >= 0) & (attrs <= 1))).all()


def test_pipeline_with_mixaugment_yields_2b_soft_targets(folders):
    ds = reader.make_dataset(list(folders), "train", 8, training=True, seed=1, augment=True,
                             mixaugment={"alpha": 0.2}, attribute_names=REQ_ATTRS, class_names=REQ_CLASSES)
    x, y = next(ds.as_numpy_iterator())
    assert x.shape == (16, SIZE, SIZE, 3) and y["classes"].shape == (16, 3) and y["attributes"].shape == (16, 4)
    assert y["classes"].dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    real = y["classes"][:8]
    assert set(np.unique(real).tolist()) <= {-1.0, 0.0, 1.0}


# ---------------------------------------------------------------- augmentation
def test_augment_options():
    assert augment_lib.options(None) is None and augment_lib.options(False) is None
    assert set(augment_lib.options(True)) == {"flip", "affine", "color"}
    assert set(augment_lib.options({"flip": True})) == {"flip"}
    assert augment_lib.options({"affine": {"rotation": 5}})["affine"]["rotation"] == 5
    assert augment_lib.options({"flip": False}) is None
    with pytest.raises(ValueError):
        augment_lib.options({"rotate": True})


def mirrored_or_kept(out, images, atol=0.0):
    flipped = [np.allclose(o, i[:, ::-1], atol=atol) for o, i in zip(out, images)]
    kept = [np.allclose(o, i, atol=atol) for o, i in zip(out, images)]
    return all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < len(images)


def test_flip_only_mirrors_or_keeps_each_image():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (32, 6, 6, 3)).astype(np.float32)
    out = augment_lib.augment_batch(tf.constant(images), tf.constant([0, 1], tf.int64),
                                    augment_lib.options({"flip": True}))
    assert mirrored_or_kept(out.numpy(), images)


@pytest.mark.parametrize("backend", ["opencv", "keras"])
def test_affine_identity_and_flip_folded_into_the_warp(backend):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (16, 12, 12, 3)).astype(np.uint8)
    seed = tf.constant([0, 1], tf.int64)
    still = dict(rotation=0.0, scale=0.0, translation=0.0, backend=backend)
    same = augment_lib.random_affine(tf.constant(images), seed, **still)
    assert same.dtype == tf.uint8
    np.testing.assert_array_equal(same, images)
    mirrored = augment_lib.random_affine(tf.constant(images), seed, flip=True, **still)
    assert mirrored_or_kept(mirrored.numpy(), images)


def test_affine_backends_agree():
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    smooth = np.stack([128 + 100 * np.sin(xx / 5 + k) * np.cos(yy / 7) for k in range(3)], -1)
    images = tf.constant(np.stack([smooth] * 4))
    seed = tf.constant([5, 6], tf.int64)
    kwargs = dict(rotation=15.0, scale=0.15, translation=0.1, flip=True)
    a = augment_lib.random_affine(images, seed, backend="opencv", **kwargs).numpy()
    b = augment_lib.random_affine(images, seed, backend="keras", **kwargs).numpy()
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert np.abs(a[inner] - b[inner]).max() < 3.0  # same map; opencv quantises coordinates to 1/32 pixel
    assert np.abs(a - smooth).mean() > 5.0  # and it did move the pixels


def test_augment_batch_range_and_scaling():
    rng = np.random.default_rng(3)
    images = tf.constant(rng.integers(0, 256, (8, 12, 12, 3)).astype(np.uint8))
    out = augment_lib.augment_batch(images, tf.constant([3, 4], tf.int64), augment_lib.options(True))
    assert out.shape == images.shape and out.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0 and float(tf.reduce_max(out)) <= 255
    unit = augment_lib.augment_batch(images, tf.constant([3, 4], tf.int64), augment_lib.options(True),
                                     scale=1 / 127.5, offset=-1.0)
    np.testing.assert_allclose(unit, out / 127.5 - 1.0, atol=1e-5)
    plain = augment_lib.color_jitter(images, tf.constant([1, 1], tf.int64), brightness=0.0, contrast=0.0)
    np.testing.assert_allclose(plain, tf.cast(images, tf.float32))


def test_a_database_without_attributes_streams(tmp_path):
    """TensorFlow 2.21 crashes unbatching (b, 0) tensors; a classes-only folder (JAFFE) must still stream."""
    import cv2

    from dmtl.data import reader, records

    image = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    examples = [records.serialize_example(image, i % 3, [], "x", f"{i}.png") for i in range(10)]
    records.write_shard(tmp_path / "train-00000.tfrecord", examples)
    records.write_json_atomic(tmp_path / "dataset.json", {
        "format": records.FORMAT, "schema": {"name": "x", "class_names": ["a", "b", "c"], "attribute_names": []},
        "image_size": [8, 8], "splits": {"train": {"shards": ["train-00000.tfrecord"], "examples": 10}}})
    ds = reader.make_dataset([str(tmp_path)], "train", 4, training=True, mixaugment={"alpha": 0.2})
    images, labels = next(iter(ds))
    assert images.shape == (8, 8, 8, 3) and labels["attributes"].shape == (8, 0)
    _, labels = next(iter(reader.make_dataset([str(tmp_path)], "train", 4)))
    assert labels["classes"].numpy().tolist() == [0, 1, 2, 0]
