"""The tf.data input pipeline: TFRecord shards -> aligned labels -> (augmented, mixed) batches in [-1, 1].

Labels are aligned by name to the run's lists: a source's attribute columns are re-ordered into
``attribute_names`` (an attribute the source does not annotate is -1 for all its images) and its class indices
are mapped into ``class_names`` (an image whose class is not in ``class_names`` is an error; unlabelled
images, -1, stay -1). Images are decoded to uint8 and scaled as ``x / 127.5 - 1``.

Training (``training=True``): shard order and examples shuffled per source with ``seed``, sources mixed by
:mod:`dmtl.data.mixing`, batches augmented (:mod:`dmtl.data.augment`) and optionally expanded by MixAugment
(:mod:`dmtl.data.mixaugment`: B real + B virtual images, classes then (2B, K) soft targets).
Evaluation (``training=False``): sources one after the other in the order given, shards in dataset.json order,
no shuffling or augmentation, int class labels, the last partial batch kept.
"""
from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from dmtl.data import mixing as mixing_lib
from dmtl.data import records
from dmtl.labels import MISSING

AUTOTUNE = tf.data.AUTOTUNE
PARSE_BATCH = 256
REQUIRE = ("classes", "attributes", "any")


# ---------------------------------------------------------------- sources and counts
def source_dirs(data_dirs_or_sources) -> tuple[list[Path], list[float] | None]:
    """A folder, a list of folders, or ``{folder: weight}`` -> (folders, weights or None)."""
    if isinstance(data_dirs_or_sources, (str, Path)):
        return [Path(data_dirs_or_sources)], None
    if isinstance(data_dirs_or_sources, dict):
        return [Path(d) for d in data_dirs_or_sources], [float(w) for w in data_dirs_or_sources.values()]
    dirs = [Path(d) for d in data_dirs_or_sources]
    if not dirs:
        raise ValueError("no data folders given")
    return dirs, None


def example_counts(data_dirs_or_sources, fold: int | None = None) -> dict[str, int]:
    """Examples per split (from dataset.json), summed over the folders (of ``fold`` where a folder has folds)."""
    counts: dict[str, int] = {}
    for d in source_dirs(data_dirs_or_sources)[0]:
        info = records.read_dataset_json(d)
        entries = info["splits"]
        if fold is not None and info.get("folds"):
            entries = info["folds"]["splits"][str(check_fold(d, info, fold))]
        for split, entry in entries.items():
            counts[split] = counts.get(split, 0) + int(entry.get("examples", 0))
    return counts


def steps_per_epoch(data_dirs_or_sources, split: str, batch_size: int, drop_remainder: bool = False,
                    fold: int | None = None) -> int:
    """Batches in one pass over ``split``: floor (drop_remainder) or ceil of examples / batch_size, at least 1."""
    n = example_counts(data_dirs_or_sources, fold).get(split, 0)
    return max(1, n // batch_size if drop_remainder else math.ceil(n / batch_size))


def default_names(dirs) -> tuple[list[str], list[str]]:
    """Class names of the first folder that has classes, and the union of attribute names in folder order."""
    class_names, attribute_names = [], []
    for d in dirs:
        schema = records.read_dataset_json(d)["schema"]
        if not class_names:
            class_names = list(schema.get("class_names") or [])
        attribute_names += [a for a in schema.get("attribute_names") or [] if a not in attribute_names]
    return class_names, attribute_names


def _size(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return int(value), int(value)
    h, w = value
    return int(h), int(w)


def check_fold(data_dir, info: dict, fold) -> int:
    """``fold`` as an int within the folder's folds (a clear error otherwise)."""
    count = int(info["folds"]["count"])
    if not 0 <= int(fold) < count:
        raise ValueError(f"{data_dir}: fold {fold} out of range: the folder has folds 0..{count - 1}")
    return int(fold)


def fold_paths(data_dir, info: dict, fold: int, split: str) -> list[str]:
    """Image paths of ``split`` in ``fold`` (from the folder's ``folds.csv``)."""
    path = Path(data_dir) / info["folds"].get("file", records.FOLDS_CSV)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found, though {Path(data_dir) / records.DATASET_JSON} lists folds: "
                                f"the folder is incomplete; rebuild it")
    frame = _folds_table(str(path.resolve()), path.stat().st_mtime_ns)
    return frame.loc[frame[str(fold)] == split, "path"].tolist()


@functools.lru_cache(maxsize=8)
def _folds_table(path: str, mtime_ns: int):
    """``folds.csv`` read once per file version (a run reads it for every split and pipeline it builds)."""
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False)


class SourceSplit:
    """One data folder's split: shard paths, size and the name alignment to the requested label lists."""

    def __init__(self, data_dir, split: str, class_names, attribute_names, unlisted_classes: str = "error",
                 fold: int | None = None):
        """``unlisted_classes``: what an image of a class the requested list lacks becomes: an ``error`` (class
        lists that disagree between sources), or ``missing`` (the user selected a subset of the classes: such an
        image keeps its attribute labels and counts as class-unlabelled).

        ``fold``: the cross-validation fold whose ``split`` to read, for a folder built with folds (``folds.csv``):
        every shard is read and the examples of the fold's split kept. A folder without folds has one fixed split
        and ignores it (the run plan refuses a fold for such a folder unless its path named the fold)."""
        if unlisted_classes not in ("error", "missing"):
            raise ValueError(f"unlisted_classes must be 'error' or 'missing', not {unlisted_classes!r}")
        self.unlisted_classes = unlisted_classes
        self.dir = Path(data_dir)
        info = records.read_dataset_json(self.dir)
        schema = info["schema"]
        self.split = split
        self.fold = None
        self.keep_paths = None
        if fold is not None and info.get("folds"):
            self.fold = check_fold(self.dir, info, fold)
            self.entry = info["folds"]["splits"][str(self.fold)].get(split, {})
            listed = [s for name in info["splits"] for s in info["splits"][name].get("shards", [])]
            self.shards = [str(self.dir / s) for s in listed] if self.entry.get("examples") else []
            self.keep_paths = fold_paths(self.dir, info, self.fold, split)
        else:
            self.entry = info["splits"].get(split, {})
            self.shards = [str(self.dir / s) for s in self.entry.get("shards", [])]
        self.image_size = _size(info.get("image_size"))
        self.source_classes = list(schema.get("class_names") or [])
        self.source_attributes = list(schema.get("attribute_names") or [])
        target = {name: i for i, name in enumerate(class_names)}
        # index = source class (with -1 sent to the extra last slot) -> requested class or -1
        self.class_map = np.array([target.get(c, MISSING) for c in self.source_classes] + [MISSING], np.int64)
        self.unknown_classes = [c for c in self.source_classes if c not in target]
        position = {name: i for i, name in enumerate(self.source_attributes)}
        # index = requested attribute -> source column, or the extra last column (all -1) when absent
        self.attribute_index = np.array([position.get(a, len(self.source_attributes)) for a in attribute_names],
                                        np.int64)

    def select(self, serialized: tf.data.Dataset) -> tf.data.Dataset:
        """Keeps the serialized examples of this split (all of them, unless a fold is chosen)."""
        if self.keep_paths is None:
            return serialized
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.keep_paths, tf.string), tf.ones(len(self.keep_paths), tf.int64)), default_value=0)
        spec = {"path": tf.io.FixedLenFeature([], tf.string, default_value="")}
        return serialized.filter(lambda s: table.lookup(tf.io.parse_single_example(s, spec)["path"]) > 0)

    def records(self) -> tf.data.Dataset:
        """The split's serialized examples in evaluation (shard) order."""
        return self.select(tf.data.TFRecordDataset(self.shards))

    def size(self, require: str | None) -> int:
        key = {"classes": "class_labelled", "attributes": "attribute_labelled"}.get(require or "", "examples")
        return int(self.entry.get(key, self.entry.get("examples", 0)))

    def align(self, serialized):
        """Batch of serialized examples -> (encoded images, {"classes" (b,) int64, "attributes" (b, M) float32})."""
        spec = records.feature_spec(len(self.source_attributes))
        parsed = tf.io.parse_example(serialized, {k: spec[k] for k in ("image", "class_label", "attributes")})
        raw = parsed["class_label"]
        n_source = len(self.source_classes)
        slot = tf.where((raw >= 0) & (raw < n_source), raw, n_source)
        in_range = tf.debugging.assert_less(
            raw, tf.constant(n_source, tf.int64),
            message=f"{self.dir}: class label beyond the {n_source} classes of its schema")
        with tf.control_dependencies([in_range]):
            slot = tf.identity(slot)
        classes = tf.gather(tf.constant(self.class_map), slot)
        if self.unknown_classes and self.unlisted_classes == "error":
            bad = (raw >= 0) & (classes < 0)
            check = tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(bad)),
                [f"{self.dir}: images of classes {self.unknown_classes} but the requested class list lacks them; "
                 f"offending source class indices:", tf.boolean_mask(raw, bad)], summarize=8)
            with tf.control_dependencies([check]):
                classes = tf.identity(classes)
        attributes = tf.reshape(parsed["attributes"], [-1, len(self.source_attributes)])
        padded = tf.concat([attributes, tf.fill([tf.shape(raw)[0], 1], float(MISSING))], axis=1)
        attributes = tf.gather(padded, tf.constant(self.attribute_index), axis=1)
        return parsed["image"], {"classes": classes, "attributes": attributes}


def _decoder(source_size, target_size):
    """Encoded bytes -> uint8 (H, W, 3); resized (bilinear) when the folder's size differs from the target."""
    resize = target_size is not None and source_size != target_size

    def decode(encoded, labels):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        if resize:
            image = tf.image.resize(image, target_size, antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        if target_size is not None:
            image = tf.ensure_shape(image, [*target_size, 3])
        return image, labels

    return decode


def _keep_required(require: str):
    """Batched filter: keeps the rows of a parsed batch that carry the ``require``d labels."""
    def keep(images, labels):
        has_class = labels["classes"] >= 0
        has_attribute = tf.reduce_any(labels["attributes"] >= 0, axis=1)
        mask = {"classes": has_class, "attributes": has_attribute, "any": has_class | has_attribute}[require]
        return tf.boolean_mask(images, mask), {k: tf.boolean_mask(v, mask) for k, v in labels.items()}

    return keep


@tf.function(jit_compile=True)
def _to_unit_range(images):
    """uint8 -> float32 x / 127.5 - 1 in one XLA pass (clipped: XLA's reciprocal multiply can give 1 + 1e-7)."""
    return tf.clip_by_value(tf.cast(images, tf.float32) / 127.5 - 1.0, -1.0, 1.0)


def _unbatch(ds, num_attributes: int) -> tf.data.Dataset:
    """``unbatch`` of (images, labels) that survives M = 0: TensorFlow 2.21 crashes (segmentation fault) when it
    unbatches a (b, 0) tensor, so without attributes none are carried through and an empty (0,) vector is added
    afterwards."""
    if num_attributes:
        return ds.unbatch()
    ds = ds.map(lambda images, labels: (images, labels["classes"])).unbatch()
    return ds.map(lambda image, classes: (image, {"classes": classes, "attributes": tf.zeros([0], tf.float32)}))


def _source_dataset(source: SourceSplit, *, training: bool, seed, shuffle_buffer: int, require, target_size,
                    cache, targets=None) -> tf.data.Dataset:
    """One folder's unbatched (uint8 image, labels) stream (shuffled when training; not repeated).

    ``targets``: labels replacing the folder's own, one row per example in evaluation (shard) order.
    """
    if not source.shards:
        raise ValueError(f"{source.dir}: split {source.split!r} has no shards")
    if targets is not None:
        images = source.records().batch(PARSE_BATCH).map(
            lambda serialized: source.align(serialized)[0], num_parallel_calls=AUTOTUNE).unbatch()
        ds = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(targets))
        if training and shuffle_buffer and shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return ds.map(_decoder(source.image_size, target_size), num_parallel_calls=AUTOTUNE)
    if training:
        files = tf.data.Dataset.from_tensor_slices(source.shards).shuffle(len(source.shards), seed=seed)
        serialized = source.select(files.interleave(tf.data.TFRecordDataset, cycle_length=min(len(source.shards), 8),
                                                    num_parallel_calls=AUTOTUNE, deterministic=True))
    else:
        serialized = source.records()
    shuffle = training and shuffle_buffer and shuffle_buffer > 1
    if shuffle and not cache:  # shuffle the small encoded records, decode after
        serialized = serialized.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    align = source.align
    if require:
        keep = _keep_required(require)
        align = lambda serialized: keep(*source.align(serialized))  # noqa: E731
    ds = _unbatch(serialized.batch(PARSE_BATCH).map(align, num_parallel_calls=AUTOTUNE), len(source.attribute_index))
    ds = ds.map(_decoder(source.image_size, target_size), num_parallel_calls=AUTOTUNE)
    if cache:
        key = hashlib.sha1(str(source.dir.resolve()).encode()).hexdigest()[:10]
        split = source.split if source.fold is None else f"{source.split}-fold{source.fold}"
        ds = ds.cache(f"{cache}.{split}.{source.dir.name}-{key}" if isinstance(cache, (str, Path)) else "")
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds


# ---------------------------------------------------------------- public API
def load_split(data_dir, split: str, attribute_names=None, class_names=None, image_size=None,
               fold: int | None = None) -> tf.data.Dataset:
    """Unbatched (uint8 image (H, W, 3), {"classes": int64, "attributes": float32 (M,)}) in shard order.

    ``attribute_names`` / ``class_names`` default to the folder's own schema; labels are aligned to them by name.
    """
    if class_names is None or attribute_names is None:
        default_classes, default_attributes = default_names([data_dir])
        class_names = default_classes if class_names is None else class_names
        attribute_names = default_attributes if attribute_names is None else attribute_names
    source = SourceSplit(data_dir, split, list(class_names), list(attribute_names), fold=fold)
    return _source_dataset(source, training=False, seed=None, shuffle_buffer=0, require=None,
                           target_size=_size(image_size) or source.image_size, cache=False)


def make_dataset(data_dirs_or_sources, split: str, batch_size: int, training: bool = False, *,
                 attribute_names=None, class_names=None, shuffle_buffer: int = 2048, seed: int = 0,
                 augment=None, mixaugment=None, mixing=None, repeat: bool | None = None,
                 drop_remainder: bool | None = None, cache=False, require: str | None = None,
                 image_size=None, threads: int | None = None, targets=None,
                 unlisted_classes: str = "error", fold: int | None = None) -> tf.data.Dataset:
    """Batches of (float32 images in [-1, 1], {"classes", "attributes"}), prefetched.

    ``targets``: one ``{"classes": (N, K) or (N,), "attributes": (N, M)}`` per folder, replacing its labels
    (rows in evaluation order, e.g. soft labels from teachers); ``require`` is then not applied.

    ``augment``: bool / None / dict (see :func:`dmtl.data.augment.options`); ``mixaugment``: None or
    ``{alpha}`` (training only; each batch becomes B real + B virtual images). ``mixing``: 'proportional'
    (default), 'balanced' or one weight per folder (also given as ``{folder: weight}``). ``repeat`` and
    ``drop_remainder`` default to ``training``. ``require``: 'classes' | 'attributes' | 'any' keeps only
    images carrying that label; when None, training keeps images with any label and evaluation keeps all.
    ``cache``: True (memory) or a file prefix, caching decoded images. ``image_size``: target (H, W) (default
    the first folder's); ``threads``: a private tf.data thread pool of that size (and intra-op parallelism 1).
    ``fold``: the cross-validation fold whose ``split`` is read, in folders built with folds.
    """
    from dmtl.data.augment import make_augmenter
    from dmtl.data.mixaugment import make_mixaugment

    dirs, dict_weights = source_dirs(data_dirs_or_sources)
    if dict_weights is not None:
        if mixing is not None and not isinstance(mixing, str):
            raise ValueError("give mixing weights either as {folder: weight} or as mixing=[...], not both")
        mixing = dict_weights if mixing is None else mixing
    mixing = "proportional" if mixing is None else mixing
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    if require is not None and require not in REQUIRE:
        raise ValueError(f"require must be one of {REQUIRE} or None, not {require!r}")
    require = require or ("any" if training else None)
    default_classes, default_attributes = default_names(dirs)
    class_names = list(default_classes if class_names is None else class_names)
    attribute_names = list(default_attributes if attribute_names is None else attribute_names)

    sources = [SourceSplit(d, split, class_names, attribute_names, unlisted_classes, fold) for d in dirs]
    if targets is not None and len(targets) != len(sources):
        raise ValueError(f"targets: one label set per data folder ({len(sources)}), got {len(targets)}")
    targets = targets or [None] * len(sources)
    sources_with_data = [s for s in sources if s.shards]
    if not sources_with_data:
        raise ValueError(f"split {split!r} has no shards in {[str(d) for d in dirs]}")
    target_size = _size(image_size) or next((s.image_size for s in sources_with_data if s.image_size), None)

    if training:
        weights = mixing_lib.mixing_weights([s.size(require) if s.shards else 0 for s in sources], mixing)
        streams = [_source_dataset(s, training=True, seed=None if seed is None else seed + i,
                                   shuffle_buffer=shuffle_buffer, require=require, target_size=target_size,
                                   cache=cache, targets=t) if s.shards else tf.data.Dataset.range(0)
                   for i, (s, t) in enumerate(zip(sources, targets))]
        ds = mixing_lib.mix_sources(streams, weights, seed=seed, repeat=repeat)
    else:
        streams = [_source_dataset(s, training=False, seed=None, shuffle_buffer=0, require=require,
                                   target_size=target_size, cache=cache) for s in sources_with_data]
        ds = streams[0]
        for other in streams[1:]:
            ds = ds.concatenate(other)
        if repeat:
            ds = ds.repeat()

    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True)
    augmenter = make_augmenter(augment, seed or 0, scale=1.0 / 127.5, offset=-1.0) if training else None
    mixer = make_mixaugment(mixaugment, len(class_names), seed or 0) if training else None

    def finish(index, batch):
        images, labels = batch  # uint8; augmentation and the scaling x / 127.5 - 1 in one pass
        if augmenter is not None:
            images = augmenter(index, images)
        else:
            images = _to_unit_range(images)
        if mixer is not None:
            images, labels = mixer(index, images, labels)
        return images, labels

    ds = ds.enumerate().map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    if threads:
        options.threading.private_threadpool_size = int(threads)
        options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options).prefetch(AUTOTUNE)
