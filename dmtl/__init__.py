"""dmtl: multi-task learning of classification tasks with little or no annotation overlap.

Reimplements Kollias, Sharmanska & Zafeiriou, "Distribution Matching for Multi-Task Learning of
Classification Tasks: a Large-Scale Study on Faces & Beyond" (AAAI 2024).

The public names load on first use (``import dmtl`` imports neither TensorFlow nor Keras):

* ``dmtl.load(path)``: a trained model (a run folder, a preset folder, ``hf://ORG/NAME``, ``kaggle://...``, an
  ONNX export, or a SavedModel with ``trust_savedmodel=True``) as a :class:`dmtl.inference.Predictor`;
  ``dmtl.save_to_preset(run, out)`` writes a run as a preset (keras-hub's layout with a model card); its ``predict_faces(inputs)`` gives a pandas
  DataFrame with the same columns as ``dmtl predict``'s CSV;
* ``MultiTaskModel``, ``get_coupling``, ``RECIPES``, ``multitask_loss``: the model, the coupling losses (L_DM,
  L_SCA and the related methods' terms), their named recipes, and Eq. 1 with the couplings for a Keras model of
  your own (call it from its ``compute_loss``); ``losses``: the paper's equations; ``relatedness``: p(attribute | class)
  (``du_et_al_2014``, from annotations, informativeness).
"""
__version__ = "0.1.0"

_LAZY = {"load": "dmtl.inference:load", "Predictor": "dmtl.inference:Predictor",
         "MultiTaskModel": "dmtl.model:MultiTaskModel", "get_coupling": "dmtl.coupling:get_coupling",
         "RECIPES": "dmtl.coupling:RECIPES", "multitask_loss": "dmtl.coupling:multitask_loss",
         "save_to_preset": "dmtl.training.exports:save_to_preset",
         "losses": "dmtl.losses", "relatedness": "dmtl.relatedness"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'dmtl' has no attribute {name!r}")
    module, _, attribute = _LAZY[name].partition(":")
    value = importlib.import_module(module)
    return getattr(value, attribute) if attribute else value
