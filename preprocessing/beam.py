"""The build as an Apache Beam pipeline: the same adapter -> load -> detect -> align -> encode steps, the same shard
format, ``manifest.csv`` and ``dataset.json`` as the local process pool, on any Beam runner.

    dmtl build --database affwild2 --root RAW --out DATA --runner beam --workers 8
    dmtl build ... --runner beam --pipeline-options "--runner=FlinkRunner --flink_master=host:8081"

The pipeline: the pending shards' labelled rows in chunks -> ``Reshuffle`` -> :class:`DetectFaces` (the detector is
built once per worker in ``DoFn.setup``, never per image) -> grouped by shard -> :class:`WriteShard` (examples in
table order, the shard and its manifest part each written atomically, exactly as the local build writes them). The
driver then merges the manifest and writes ``dataset.json``, as the local build does, so a build interrupted on
either runner resumes on either. Without ``--pipeline-options`` it runs on the DirectRunner in multi-process mode
with ``--workers`` processes (in this process when 0). Workers write into ``--out`` directly: on a cluster it must be
a file system every worker mounts. (TensorFlow Datasets' Beam builders would impose their own split/shard layout and
metadata; this keeps the project's format, resumable shard by shard.)
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from dmtl.preprocessing.process import Settings


def _import_beam():
    try:
        import apache_beam as beam
    except ImportError:
        raise ImportError("--runner beam needs Apache Beam: pip install 'dmtl[beam]' (or apache-beam)") from None
    return beam


def pipeline_options(workers: int, options: str | None):
    """Beam options from a command-line string; default: the DirectRunner, multi-process with ``workers``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    quiet = ["--default_sdk_harness_log_level=WARNING"]
    if options:
        return PipelineOptions([*quiet, *shlex.split(options)])
    if workers <= 0:
        return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory", *quiet])
    return PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                            f"--direct_num_workers={int(workers)}", *quiet])


def _dofns():
    beam = _import_beam()

    class DetectFaces(beam.DoFn):
        """(shard file, row records) -> (shard file, (row, Outcome)) per row; one detector per worker."""

        def __init__(self, settings: Settings, detector_options: dict):
            self.settings, self.detector_options = settings, dict(detector_options)

        def setup(self):
            from dmtl.preprocessing.process import init_worker

            init_worker(self.settings, self.detector_options)

        def process(self, element):
            from dmtl.preprocessing.process import process_chunk

            shard_file, rows = element
            for row, outcome in zip(rows, process_chunk(rows)):
                yield shard_file, (row["row"], outcome)

    class WriteShard(beam.DoFn):
        """(shard file, [(row, Outcome)]) -> the shard and its manifest part, written atomically."""

        def __init__(self, out_dir: str, shards: dict, detector: str):
            self.out_dir, self.shards, self.detector = out_dir, shards, detector

        def process(self, element):
            from dmtl.preprocessing.shards import write_shard_files

            shard_file, outcomes = element
            split, rows = self.shards[shard_file]
            write_shard_files(Path(self.out_dir), shard_file, split, rows, dict(outcomes), self.detector)
            yield shard_file

    return beam, DetectFaces, WriteShard


def run(table, out_dir: Path, pending, settings: Settings, detector_options: dict, workers: int,
        options: str | None = None) -> dict:
    """Builds the ``pending`` shards with a Beam pipeline; returns the timing summary the local build returns."""
    from dmtl.preprocessing.shards import CHUNK_ROWS, RowRecords, write_shard_files

    import logging

    beam, DetectFaces, WriteShard = _dofns()
    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # its per-worker start-up warnings
    rows_of = RowRecords(table)
    wanted = [c for c in ("landmarks", "bbox_x", "bbox_y", "bbox_w", "bbox_h") if c in table.frame]
    shards, chunks = {}, []
    for shard in pending:
        records_ = rows_of(shard.rows)
        shards[shard.file] = (shard.split, records_)
        geometry = table.frame.loc[shard.rows, wanted].to_dict("records")  # one lookup per shard
        labelled = [dict(row, **extra) for row, extra in zip(records_, geometry) if row["labelled"]]
        if not labelled:  # nothing to detect: written here, as the local build does
            write_shard_files(out_dir, shard.file, shard.split, records_, {}, settings.detector)
        chunks += [(shard.file, labelled[i:i + CHUNK_ROWS]) for i in range(0, len(labelled), CHUNK_ROWS)]
    total = sum(len(rows) for _, rows in chunks)
    start = time.perf_counter()
    if chunks:
        with beam.Pipeline(options=pipeline_options(workers, options)) as pipeline:
            _ = (pipeline
                 | "rows" >> beam.Create(chunks, reshuffle=False)
                 | "spread" >> beam.Reshuffle()
                 | "detect, align, encode" >> beam.ParDo(DetectFaces(settings, detector_options))
                 | "by shard" >> beam.GroupByKey()
                 | "write shards" >> beam.ParDo(WriteShard(str(out_dir), {s: shards[s] for s, _ in chunks},
                                                           settings.detector)))
    seconds = time.perf_counter() - start
    return {"images_processed": total, "seconds": round(seconds, 3), "startup_seconds": 0.0,
            "images_per_second": round(total / seconds, 3) if seconds > 0 and total else 0.0}
