"""Preprocessing: a database as published → aligned, resized faces in TFRecord shards (see ``build``).

``dmtl build --database NAME --root RAW_DIR --out DATA_DIR`` runs it from the command line;
:func:`preprocessing.pipeline.build` is the same thing for an :class:`~dmtl.databases.base.AnnotationTable` in
memory. Nothing heavy is imported with the package: TensorFlow comes with ``build`` (the shard writer), and a
detector's framework (TensorFlow for MTCNN, ONNX Runtime for RetinaFace) only where that detector is built.
"""
__all__ = ["BuildMismatchError", "build"]


def __getattr__(name):
    if name in __all__:
        import importlib

        _module = importlib.import_module("dmtl.preprocessing.pipeline")

        return getattr(_module, name)
    raise AttributeError(f"module 'dmtl.preprocessing' has no attribute {name!r}")
