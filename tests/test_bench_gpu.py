"""bench/gpu.py keeps working: its tiny setting runs on CPU under JAX with TensorFlow unimportable (the lent GPU
machines have none) and writes every row, or the reason a row was refused."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCK_TENSORFLOW = textwrap.dedent("""
    import runpy, sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("No module named 'tensorflow'")
    sys.meta_path.insert(0, Block())
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


def test_gpu_benchmark_runs_tiny_on_jax_without_tensorflow(tmp_path):
    runner = tmp_path / "no_tensorflow.py"
    runner.write_text(BLOCK_TENSORFLOW)
    out = tmp_path / "gpu.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(runner), str(REPO / "bench" / "gpu.py"), "--tiny", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["setup"]["backend"] == "jax" and result["setup"]["tensorflow_imported"] is False
    speeds = result["images_per_second_median"]
    assert set(speeds) >= {"a_plain_fit", "b_multitask_no_coupling", "c_multitask_coupling"}
    assert all(v > 0 for v in speeds.values())
    assert result["training_flops_per_image"] > 0
    # the gradient-level row: measured, or refused with the reason (no TensorFlow here)
    row = "d_gradient_level_aligned_mtl"
    assert (row in speeds) != (row in result["refused"])
    if row in result["refused"]:
        assert "TensorFlow" in result["refused"][row]
