"""Evidence for why ``strategy: multi-worker`` is not offered: Keras 3's TensorFlow trainer fails under
``tf.distribute.MultiWorkerMirroredStrategy`` on the smallest possible model, before any dmtl code is involved.

Two worker processes on 127.0.0.1 (a standard ``TF_CONFIG``) fit a one-layer model on a dataset distributed with
``distribute_datasets_from_function`` (as dmtl distributes its data). Writes
``bench/results/multiworker_keras.json`` with the Keras / TensorFlow versions and each worker's outcome.

    python bench/multiworker_keras_repro.py
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

WORKER = textwrap.dedent("""
    import json, os, sys, traceback
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras, numpy as np
    keras.config.disable_traceback_filtering()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.ones((32, 4), np.float32), np.zeros((32, 3), np.float32)
    data = strategy.distribute_datasets_from_function(
        lambda context: tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat())
    try:
        model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
        print(json.dumps({"fit": "ok"}))
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if "keras" in f.filename and "traceback_utils" not in f.filename]
        print(json.dumps({"fit": "failed", "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}",
                          "keras_frame": f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}"
                          if frames else None}))
""").replace("Path(", "__import__('pathlib').Path(")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    import keras
    import tensorflow as tf

    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True))
    outcomes = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=300)
            line = next((l for l in reversed(out.splitlines()) if l.startswith("{")), "{}")
            outcomes.append(json.loads(line))
        except subprocess.TimeoutExpired:
            process.kill()
            outcomes.append({"fit": "timed out after 300 s"})
    report = {"keras": keras.__version__, "tensorflow": tf.__version__, "workers": outcomes,
              "what": "MultiWorkerMirroredStrategy, 2 workers on 127.0.0.1, Dense(3) on (4,) inputs, model.fit"}
    out = Path(__file__).parent / "results" / "multiworker_keras.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
