"""The single-task teachers that S-T NC MT, KD-MTL and self-adaptive pseudo-labelling learn from: the two ST runs of
the same configuration (setting ``st-classes`` and ``st-attributes``).

Either given (option ``teachers: {classes: RUN, attributes: RUN}``, finished runs, e.g. a comparison's ST rows of the
same seed), or trained as resumable sub-runs of the run folder (``teachers/st-classes``, ``teachers/st-attributes``).
"""
from __future__ import annotations

from pathlib import Path

SETTINGS = {"classes": "st-classes", "attributes": "st-attributes"}


class TeacherError(ValueError):
    """A given teacher run is missing, unfinished or of another setting."""


def check_teacher(task: str, run_dir) -> Path:
    """``run_dir`` as a finished ST run of ``task`` (its ``model.keras`` and ``config.yaml`` exist, setting
    ``st-<task>``); raises :class:`TeacherError` with one line otherwise."""
    import yaml

    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file() or not (run_dir / "config.yaml").is_file():
        raise TeacherError(f"teachers.{task}: {run_dir} is not a finished run (no model.keras / config.yaml): train "
                           f"it first with `dmtl train --setting {SETTINGS[task]}`, or leave teachers unset")
    try:
        setting = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("setting")
    except (OSError, yaml.YAMLError, AttributeError) as error:
        raise TeacherError(f"teachers.{task}: {run_dir / 'config.yaml'} cannot be read ({error})") from None
    if setting != SETTINGS[task]:
        raise TeacherError(f"teachers.{task}: {run_dir} was trained in setting {setting!r}, not {SETTINGS[task]!r}")
    return run_dir


def check_teachers(teachers) -> None:
    """Validates the option's shape (a mapping with both tasks) before a run starts."""
    if teachers is None:
        return
    if not isinstance(teachers, dict) or set(teachers) != set(SETTINGS):
        raise TeacherError(f"teachers: expected {{classes: RUN, attributes: RUN}} (two finished ST runs), got "
                           f"{teachers!r}")


def single_task_teachers(context, teachers=None) -> dict:
    """``{"classes": run dir, "attributes": run dir}``: the given runs (checked) or the run's own teacher sub-runs,
    trained (or resumed) now through ``context.train_run`` with no label completion and no auxiliary term."""
    check_teachers(teachers)
    if teachers is not None:
        return {task: str(check_teacher(task, teachers[task])) for task in SETTINGS}
    out = {}
    for task, setting in SETTINGS.items():
        teacher_dir = Path(context.run_dir) / "teachers" / setting
        context.train_run({"setting": setting, "label_completion": "none", "label_completion_options": {},
                           "auxiliary": {}}, teacher_dir)
        out[task] = str(teacher_dir)
    return out
