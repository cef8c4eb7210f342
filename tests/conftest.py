import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DMTL_SHARED_DATA", REPO.parent / "shared" / "data"))


# The quick loop (`pytest -n 2 -m "not slow" tests`, README) leaves out the tests below: each takes more than about
# 4 s on 2 cores in the full suite (`.ci/run` prints the 15 slowest), mostly training, exporting or starting other
# processes. The full suite runs them all. A name without brackets covers every parametrized case.
SLOW = {
    "test_multiprocess.py": "*",
    "test_backends.py": "*",
    "test_end_to_end.py": {
        "test_onnx_and_litert_exports_equal_the_keras_model_and_carry_their_metadata",
        "test_size_mismatch_resizes_and_null_size_takes_the_data_size", "test_compare_writes_the_paper_tables",
        "test_mirrored_strategy_from_the_command_line_equals_the_one_device_step",
        "test_class_subset_trains_and_a_fresh_process_evaluates_every_architecture",
        "test_killed_training_resumes_from_last_epoch", "test_savedmodel_serves_uint8_with_tensorflow_alone",
        "test_float16_policy_wraps_the_optimizer_in_loss_scaling", "test_every_baseline_method_trains_through_train_py",
        "test_train_with_local_imagenet_format_weights_and_imagenet_offline",
        "test_keras_and_savedmodel_give_identical_metrics", "test_cli_start_is_quiet_one_line_error_in_a_fresh_process",
        "test_related_methods_train_through_train_py_and_appear_in_a_compare_table",
        "test_partial_label_baselines_train_from_the_st_rows_of_a_compare",
        "test_mixed_precision_trains_with_finite_losses_and_exports_float32",
        "test_kill_during_the_final_save_resumes_to_the_save_without_retraining"},
    "test_weighting.py": {"test_every_weighting_under_mirrored_strategy_equals_the_single_device_step",
                          "test_method_trains_with_fit_and_coupling"},
    "test_conformance.py": {"test_mirrored_step_for_every_combination", "test_onnx_export_equals_keras",
                            "test_backbone", "test_method"},
    "test_preprocessing.py": {"test_beam_build_of_jaffe_equals_the_local_build", "test_mtcnn_finds_faces_in_jaffe",
                              "test_no_face_image_is_recorded_as_no_face",
                              "test_detected_landmarks_land_on_the_template",
                              "test_redetected_aligned_faces_sit_on_the_template",
                              "test_killed_build_leaves_no_worker_running",
                              "test_serialized_examples_are_the_same_bytes_in_every_process",
                              "test_retinaface_runs_one_forward_pass_on_random_weights"},
    "test_folders.py": {"test_a_second_train_on_a_locked_run_folder_is_one_line_and_touches_nothing",
                        "test_a_full_disk_is_one_line_leaves_no_temporaries_and_a_rerun_resumes"},
    "test_related_methods.py": {"test_gan_step_updates_generators_once_and_discriminator_twice_with_finite_losses"},
    "test_model.py": {"test_local_weights_file_loads_into_the_backbone"},
    "test_bench_gpu.py": "*",
    "test_folds.py": {"test_compare_runs_four_folds_from_one_build"},
    "test_teacher_reliability.py": {"test_validated_reliability_trains_through_the_command_line_and_lands_in_the_history"},
    "test_predict.py": {"test_photos_of_a_folder_find_faces_and_the_photo_without_one_is_no_face",
                        "test_a_video_gives_one_row_per_frame_with_increasing_times",
                        "test_a_video_gives_one_track_per_face_and_detect_every_carries_faces_between_detections",
                        "test_onnx_inference_needs_no_tensorflow"},
}
# conformance pairs kept in the quick loop: one per architecture, each with the plain sum
QUICK_CONFORMANCE = {"ew-shared"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        wanted = SLOW.get(Path(str(item.fspath)).name, ())
        name = item.originalname or item.name
        case = item.name[len(name):].strip("[]")
        if name == "test_method" and case in QUICK_CONFORMANCE:
            continue
        if wanted == "*" or name in wanted or item.name in wanted:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real development datasets in ../shared/data (never copied into the repo)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real development data not found at {SHARED_DATA} (set DMTL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A run (nc, 1 epoch) on a small demo build, with its SavedModel (RUN/export) and ONNX (RUN/export-onnx)
    exports; made once per test process and only read by the tests that share it (``root/run``, ``root/data``)."""
    from dmtl.cli import export, train
    from tests.fixtures import TINY, demo_build

    root = tmp_path_factory.mktemp("trained")
    demo_build(root, 16, 16, 8, 12)
    run = root / "run"
    assert train.main(["--database", "demo", "--data", str(root / "data"), "--out", str(run), "--setting", "nc",
                       "--epochs", "1", *TINY, "--set", "run_eagerly=true"]) == 0
    assert export.main(["--run", str(run), "--format", "onnx"]) == 0
    return root
