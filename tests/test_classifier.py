"""The classifier thread and the ONNX Runtime backend, on a real tiny exported model (`tiny_model`)."""
import json
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.backends import open_backend
from runtime.backends.onnxruntime import BackendError
from runtime.classifier import Classifier, CropRequest
from runtime.config import ClassifierConfig
from runtime.metadata import ModelMetadataError


class RecordingBackend:
    """The real backend, with the batch shapes it receives recorded and an optional gate to hold a batch."""

    def __init__(self, backend, gate: threading.Event | None = None):
        self.backend, self.info, self.max_batch = backend, backend.info, backend.max_batch
        self.shapes: list[tuple] = []
        self.gate = gate

    def run(self, images):
        self.shapes.append(images.shape)
        if self.gate is not None:
            self.gate.wait(5.0)
        return self.backend.run(images)

    def close(self):
        self.backend.close()


def crops(count, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def wait_for_results(classifier, count, timeout=10.0):
    results, deadline = [], time.monotonic() + timeout
    while len(results) < count and time.monotonic() < deadline:
        results += classifier.results()
        time.sleep(0.005)
    return results


def test_requests_are_batched_and_each_result_matches_its_crop(tiny_model):
    backend = open_backend(tiny_model, ClassifierConfig(intra_op_threads=1))
    size = backend.info.input_size
    images = crops(5, size)
    recording = RecordingBackend(backend)
    classifier = Classifier(recording, max_batch=4, batch_wait=0.3, queue_size=8)
    for track_id, image in enumerate(images):  # queued before the thread starts: one full batch, then the rest
        assert classifier.submit(CropRequest(track_id, image, quality=0.5, timestamp=1.0 + track_id))
    classifier.start()
    results = wait_for_results(classifier, 5)
    classifier.stop()
    # a batch-1 warm-up, then one full batch and the rest
    assert recording.shapes == [(1, size, size, 3), (4, size, size, 3), (1, size, size, 3)]
    assert sorted(r.track_id for r in results) == [0, 1, 2, 3, 4]
    assert classifier.classifications == 5 and classifier.batches == 2 and classifier.idle()
    alone = backend.run(images)  # batched results equal the crops' own results
    for result in results:
        assert result.timestamp == 1.0 + result.track_id and result.quality == 0.5
        for task in ("age", "gender", "emotion"):
            np.testing.assert_allclose(result.logits[task], alone[task][result.track_id], rtol=1e-4, atol=1e-5)


def test_a_busy_classifier_refuses_requests_instead_of_queueing_them(tiny_model):
    gate = threading.Event()
    backend = RecordingBackend(open_backend(tiny_model, ClassifierConfig(intra_op_threads=1)), gate)
    size = backend.info.input_size
    classifier = Classifier(backend, max_batch=2, batch_wait=0.0, queue_size=2)
    classifier.start()
    accepted = [classifier.submit(CropRequest(i, crop, 1.0, 0.0)) for i, crop in enumerate(crops(8, size))]
    assert sum(accepted) <= classifier.max_outstanding == 4 and not accepted[-1]
    assert classifier.capacity() == 0
    gate.set()
    results = wait_for_results(classifier, sum(accepted))
    classifier.stop()
    assert len(results) == sum(accepted) and classifier.capacity() == 2


def test_session_uses_the_configured_threads(tiny_model):
    backend = open_backend(tiny_model, ClassifierConfig(backend="onnxruntime", intra_op_threads=1, inter_op_threads=1))
    assert backend.session.get_providers() == ["CPUExecutionProvider"]
    assert backend.max_batch == 8
    with pytest.raises(ValueError, match=r"expected uint8 \[N, 32, 32, 3\] crops"):
        backend.run(np.zeros((1, 16, 16, 3), np.uint8))


def with_metadata(tiny_model, tmp_path, change):
    model = onnx.load(str(tiny_model))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in change(props).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    path = tmp_path / "changed.onnx"
    onnx.save(model, str(path))
    return path


def test_models_without_usable_facecue_metadata_are_refused(tiny_model, tmp_path):
    config = ClassifierConfig()
    no_metadata = with_metadata(tiny_model, tmp_path, lambda props: {})
    with pytest.raises(ModelMetadataError, match="has no 'facecue' metadata: it is not a facecue model"):
        open_backend(no_metadata, config)

    def future_version(props):
        document = json.loads(props["facecue"])
        document["format_version"] = 99
        return {"facecue": json.dumps(document)}

    with pytest.raises(ModelMetadataError, match="unknown facecue format_version 99"):
        open_backend(with_metadata(tiny_model, tmp_path, future_version), config)


def test_other_onnx_models_and_non_models_are_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(other))
    with pytest.raises(ModelMetadataError, match="other.onnx has no 'facecue' metadata"):
        open_backend(other, ClassifierConfig())
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(BackendError, match="notes.onnx is not a readable ONNX model"):
        open_backend(text, ClassifierConfig(backend="onnxruntime"))
    with pytest.raises(FileNotFoundError, match="model file not found"):
        open_backend(tmp_path / "missing.onnx", ClassifierConfig())


def test_an_unavailable_provider_is_named(tiny_model):
    with pytest.raises(BackendError, match=r"\['NoSuchExecutionProvider'\] not available"):
        open_backend(tiny_model, ClassifierConfig(providers=["NoSuchExecutionProvider"]))


def test_stop_cancels_the_session_and_is_not_an_error(tiny_model):
    backend = open_backend(tiny_model, ClassifierConfig(backend="onnxruntime", intra_op_threads=1))
    size = backend.info.input_size
    classifier = Classifier(backend, max_batch=2, batch_wait=0.0, queue_size=2)
    classifier.start()
    classifier.submit(CropRequest(1, crops(1, size)[0], 1.0, 0.0))
    classifier.stop()
    assert classifier.error is None
    with pytest.raises(Exception, match="terminate"):  # ONNX Runtime's RunOptions.terminate aborts runs
        backend.run(crops(1, size))
