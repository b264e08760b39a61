"""Worker of ``benchmarks/peers.py``: one peer model's training step timed inside the FuxiCTR venv.

Started by the driver as ``<FuxiCTR venv python> benchmarks/peers_worker.py --model M --data batches.npz ...``;
imports only the standard library, numpy, torch and the peer's code (FuxiCTR 2.3.10 + ``model_zoo/<model>/src`` of
``--fuxictr-src``, the DLF authors' ``models.py`` of ``--dlf-src``, set up as ``benchmarks/reference_worker.py``
does, or the TF4CTR authors' ``TF4CTRv2`` of ``--tf4ctr-src`` on the FuxiCTR 2.0.1 copy their checkout ships).
Builds a ``FeatureMap`` of the batches' categorical fields (written as FuxiCTR's ``feature_map.json``), the model
with the driver's hyper-parameters, and times ``model.train_step`` (forward, BCE loss + regularisers, backward,
gradient clipping, Adam on every parameter: FuxiCTR's own step) on the cached batches, cycling, with
``benchmarks/timing.py``'s loop. Prints one JSON line: samples/s per window, the square fp32 GEMM rate measured just
before, parameters.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build_model(a: argparse.Namespace, names: list[str], vocab: list[int], work: str) -> tuple[object, object]:
    params = json.loads(a.params)
    if a.source == "dlf":
        from reference_worker import dlf_setup

        dlf_setup(a.dlf_src)
        import models as model_source  # type: ignore[import-not-found]  # the authors' models.py
    elif a.source == "tf4ctr":
        # The authors' checkout ships its own FuxiCTR (2.0.1), which must shadow the 2.3.10 wheel; their
        # src/__init__.py imports a module missing from the repository, so the model file is imported alone.
        root = os.path.abspath(a.tf4ctr_src)
        sys.path[:0] = [root, os.path.join(root, "TF4CTR", "TF4CTR_torch", "src")]
        model_source = importlib.import_module(a.model_class)
    else:
        sys.path.insert(0, os.path.join(os.path.abspath(a.fuxictr_src), a.zoo_dir))
        import src as model_source  # type: ignore[import-not-found]
    from fuxictr.features import FeatureMap

    data_dir = os.path.join(work, "peers")
    os.makedirs(data_dir, exist_ok=True)
    features = [{n: {"source": "", "type": "categorical", "padding_idx": 0, "vocab_size": v}}
                for n, v in zip(names, vocab, strict=True)]
    fm_json = os.path.join(data_dir, "feature_map.json")
    with open(fm_json, "w") as f:
        json.dump({"dataset_id": "peers", "num_fields": len(names), "total_features": sum(vocab),
                   "input_length": len(names), "labels": ["label"], "features": features}, f)
    feature_map = FeatureMap("peers", data_dir)
    feature_map.load(fm_json, params)
    params.update(model_id=f"{a.model}_peers", model_root=os.path.join(work, "checkpoints"), gpu=-1, verbose=0)
    extra = {"pretrained_codes": None} if a.source == "dlf" else {}
    model = getattr(model_source, a.model_class)(feature_map, **extra, **params)
    model._max_gradient_norm = params["max_gradient_norm"]  # what fit() sets before its first train_step
    return model, feature_map


def make_batches(source: str, feature_map: object, names: list[str], ids: object, labels: object) -> list[object]:
    """The peer's batch format: ``{column: tensor}`` (FuxiCTR 2.3.x), or for FuxiCTR 2.0.1 (the TF4CTR authors'
    copy) one int64 tensor [B, columns] laid out by the feature map's column index, the label in its column."""
    import torch

    if source != "tf4ctr":
        return [{**{n: torch.from_numpy(ids[k, j]) for j, n in enumerate(names)},
                 "label": torch.from_numpy(labels[k])} for k in range(ids.shape[0])]
    index = feature_map.column_index  # type: ignore[attr-defined]
    out = []
    for k in range(ids.shape[0]):
        batch = torch.empty(ids.shape[2], len(index), dtype=torch.int64)
        for j, n in enumerate(names):
            batch[:, index[n]] = torch.from_numpy(ids[k, j])
        batch[:, index["label"]] = torch.from_numpy(labels[k]).long()
        out.append(batch)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--model-class", required=True)
    p.add_argument("--source", choices=("fuxictr", "dlf", "tf4ctr"), required=True)
    p.add_argument("--zoo-dir", default="")
    p.add_argument("--params", required=True, help="JSON hyper-parameters")
    p.add_argument("--data", required=True, help="batches.npz of the driver")
    p.add_argument("--fuxictr-src", default="")
    p.add_argument("--dlf-src", default="")
    p.add_argument("--tf4ctr-src", default="")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--window-seconds", type=float, default=6.0)
    p.add_argument("--gemm-n", type=int, default=2048)
    a = p.parse_args()

    import logging

    import numpy as np
    import torch
    from timing import gemm_gflops, time_steps

    logging.basicConfig(level=logging.WARNING)
    data = np.load(a.data)
    ids, labels, names = data["ids"], data["labels"], [str(n) for n in data["names"]]  # ids [K, F, B]
    vocab = [int(v) for v in data["vocab"]]
    peak = gemm_gflops(a.gemm_n, a.gemm_n, a.gemm_n, 0.5)
    torch.manual_seed(2019)
    with tempfile.TemporaryDirectory() as work:
        model, feature_map = build_model(a, names, vocab, work)
        batches = make_batches(a.source, feature_map, names, ids, labels)
        data_iter = itertools.cycle(batches)
        model.train()  # type: ignore[attr-defined]

        def step() -> None:
            model.train_step(next(data_iter))  # type: ignore[attr-defined]

        elapsed, steps = time_steps(step, 1, a.windows, a.window_seconds, 1)
    batch = ids.shape[2]
    print(json.dumps({"samples_per_s": [steps * batch / t for t in elapsed], "square_peak_gflops": peak,
                      "parameters": sum(q.numel() for q in model.parameters()),  # type: ignore[attr-defined]
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
