"""KD-MTL, knowledge distillation for multi-task learning (Li & Bilen, ECCV Workshops 2020; code VICO-UoE/KD4MTL).

Each task has a single-task teacher, trained first and then frozen (here the two ST runs of the same configuration,
:mod:`dmtl.teachers`). A small task-specific adaptor A_t (a linear map without bias: the authors' 1x1 convolution on
these pooled features, Xavier-normal initialised) aligns the multi-task network's shared feature with each teacher's
feature of the same image, both L2-normalised:

    L_KD = sum_t lambda_t || A_t(f_s(x)) / ||A_t(f_s(x))|| - f_t(x) / ||f_t(x)|| ||^2
(:func:`dmtl.losses.kd_mtl_terms`),

so the shared network keeps what each single-task model knew. It needs no labels: every image contributes. Its
gradient reaches the shared network and the adaptors, never the heads or the (frozen) teachers. From the authors'
code: lambda_t = 1 per task (their third, surface-normal task had 2), the 1e-6 in the normalisation, the adaptors'
initialisation. Their adaptors have their own Adam optimiser (lr 0.1, weight decay 5e-4); here they train with the
model's optimiser, like every auxiliary network in dmtl (one optimiser per run). The teachers run in inference mode
on every training batch (two extra forward passes) and are saved with the run, never exported.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from dmtl import losses
from dmtl.coupling.base import Coupling, shared_vector

TASKS = ("classes", "attributes")


class KnowledgeDistillation(Coupling):
    """KD-MTL's feature distillation from the frozen single-task teachers.

    ``teachers``: ``{classes: RUN, attributes: RUN}`` (finished ST runs), or unset: the run trains them first as
    its sub-runs ``teachers/st-*`` (``dmtl compare`` passes its own ST rows of the same seed)."""

    name = "kd_mtl"
    needs_relatedness = False
    needs_images = True
    uses_teachers = True
    requires = frozenset({"shared_features", "tape"})
    auxiliary = ("kd-mtl", "KD-MTL")

    def __init__(self, teachers=None, where: str = "all", **common):
        super().__init__(where=where, **common)
        if where != "all":
            raise ValueError("kd_mtl: the teachers need no labels, every image contributes (where: all)")
        from dmtl.teachers import check_teachers
        check_teachers(teachers)
        self.teachers = None if teachers is None else {task: str(teachers[task]) for task in TASKS}
        self.teacher_networks, self.adaptors = {}, {}

    @classmethod
    def prepare(cls, options, context):
        from dmtl.teachers import single_task_teachers
        return {**options, "teachers": single_task_teachers(context, options.get("teachers"))}

    def build_layers(self, model, feature_shape):
        created = []
        for task in TASKS:
            # the teacher: the student's backbone architecture, its weights from the ST run (initialise), frozen
            teacher = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model.backbone))
            teacher.trainable = False
            teacher_shape = teacher.compute_output_shape(model.backbone.input_shape)
            adaptor = layers.Dense(int(teacher_shape[-1]), use_bias=False, kernel_initializer="glorot_normal",
                                   name=f"kd_mtl_adaptor_{task}", dtype="float32")
            adaptor.build((None, int(feature_shape[-1])))
            self.teacher_networks[task], self.adaptors[task] = teacher, adaptor
            created += [teacher, adaptor]
        return created

    def initialise(self, model, load_run) -> None:
        """Copies each teacher run's backbone weights into its frozen network."""
        if self.teachers is None:
            return
        from dmtl.teachers import TeacherError, check_teacher
        for task in TASKS:
            loaded = load_run(check_teacher(task, self.teachers[task]))
            try:
                self.teacher_networks[task].set_weights(loaded.backbone.get_weights())
            except ValueError as error:
                raise TeacherError(f"teachers.{task}: {self.teachers[task]} has another backbone than this run "
                                   f"({str(error).splitlines()[0][:120]})") from None

    def terms(self, y, predictions, relatedness, features=None, images=None):
        if images is None:
            raise ValueError("kd_mtl: the teachers need the batch's images (a training step that passes images=)")
        student = shared_vector(features)
        out = []
        for task in TASKS:
            teacher = shared_vector(self.teacher_networks[task](images, training=False))
            values = losses.kd_mtl_terms(self.adaptors[task](student), teacher)
            out.append((values, ops.ones_like(values)))
        return out

    def options(self):
        return {"teachers": self.teachers}
