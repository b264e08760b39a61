"""Worker of ``benchmarks/reference.py``: one training run inside the reference venv (fuxictr 2.3.10 + torch CPU).

Started by the driver as ``<venv python> benchmarks/reference.py --worker ...``; imports fuxictr and the model's
source (``model_zoo/<model>/src`` of ``--fuxictr-src``, or the DLF authors' ``models.py`` of ``--dlf-src``) and
drives a run like ``model_zoo/<model>/run_expid.py`` / the authors' ``main_ctr/main_run.py``: seed_everything ->
FeatureProcessor + build_dataset (CSV -> parquet) -> FeatureMap -> model -> RankDataLoader -> ``model.fit``, with
hooks that only observe (one JSON line per epoch: valid AUC/logloss, LRs, mean train loss, elapsed seconds).

The DLF authors' code (Keffee/DLF) runs on the 2.3.10 wheel unchanged (``dlf_setup`` says why and lists how a run
differs from their ``main_run.py``). Their ``BaseModel`` is their own copy of FuxiCTR's (same method names:
``train_step``, ``evaluate``, ``checkpoint_and_earlystop``, ``fit``, same ``_epoch_index`` / ``_stopping_steps``),
so the same observing hooks apply.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def dlf_setup(dlf_src: str) -> dict[str, str]:
    """Make the authors' DLF code importable; returns how this run differs from their ``main_run.py`` (logged).

    No compatibility shim is needed with the fuxictr 2.3.10 wheel: the authors' ``models.py`` / ``layers.py`` /
    ``DLF_layers.py`` / ``utils.py`` import and run unchanged (their ``BaseModel`` is their own copy, using only
    ``get_optimizer``, ``get_loss``, ``get_regularizer``, ``get_device``, ``Monitor`` and ``FeatureMap`` attributes
    that 2.3.10 still has; the 2.3.10 loaders yield the ``{column: tensor}`` batches their ``get_inputs`` reads and
    support ``len()`` as their ``fit`` needs). Nothing here changes the model, its initialisation, loss,
    regulariser, optimiser, LR rule or early stopping.
    """
    # models.py does `from layers import ...` and `from DLF_layers import *`, layers.py `from utils import ...`:
    # top-level names resolved from the checkout's root, as main_run.py does with sys.path.append(parent_dir).
    sys.path.insert(0, os.path.abspath(dlf_src))
    return {
        "model": "models.DLF(feature_map, pretrained_codes=None, **params): main_run.py's call with its default "
                 "--embedding base (no VQ codes, no pretrained tables)",
        "token_counts": "num_emb_lcb = num_emb_fmb = num_emb_att = 32, as main_run.py forces after reading the "
                        "yaml (whose 16 never runs)",
        "hyper_parameters": "ours (configs/frappe/dlf_authors_sizes.yaml) instead of DLF_default's Criteo_x1 "
                            "values: d 10 (not "
                            "64), batch 4096 (not 10000), embedding_regularizer 0.05 (not 0), monitor AUC (not "
                            "AUC - logloss)",
        "seed": "seed_everything(seed) is called, as model_zoo's run_expid.py does; main_run.py has it commented "
                "out (its runs are unseeded)",
        "verbose": "0 (main_run.py's default 1 only adds tqdm bars)",
        "label_table": "the authors' FeatureEmbeddingDict always adds an unused nn.Embedding(2, d) named 'label' "
                       "(never looked up: get_inputs drops the label column); it is counted in `parameters` and "
                       "shrunk by the whole-table regulariser, with no effect on predictions",
    }


def worker(a: argparse.Namespace) -> None:
    """One training run in the reference venv; appends JSON lines to ``a.events``."""
    from benchmarks.reference import COMMON, FIELDS, FUXICTR_VERSION, MODELS

    spec = MODELS[a.model]
    params = dict(COMMON, **spec["params"])
    notes: dict = {}
    if a.model == "dlf":
        notes = dlf_setup(a.dlf_src)
        import models as model_source  # type: ignore[import-not-found]  # the authors' models.py
    else:
        zoo = os.path.join(os.path.abspath(a.fuxictr_src), spec["zoo_dir"])
        sys.path.insert(0, zoo)  # `import src` = model_zoo/<model>/src, as run_expid.py does from its own folder
        import src as model_source  # type: ignore[import-not-found]
    import fuxictr
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    assert fuxictr.__version__ == FUXICTR_VERSION, fuxictr.__version__
    work = os.path.abspath(a.work_dir)
    params.update(
        model=spec["model"], model_id=f"{spec['model']}_frappe_seed{a.seed}", seed=a.seed, epochs=a.epochs,
        dataset_id="frappe_reference", data_root=os.path.join(work, "data"), data_format="csv",
        train_data=os.path.join(a.csv_dir, "train.csv"), valid_data=os.path.join(a.csv_dir, "valid.csv"),
        test_data=None, model_root=os.path.join(work, "checkpoints"), gpu=-1,
        feature_cols=[{"name": list(FIELDS), "active": True, "dtype": "str", "type": "categorical"}],
        label_col={"name": "label", "dtype": "float"},
    )
    log = open(a.events, "a")

    def emit(**kw: object) -> None:
        log.write(json.dumps(kw) + "\n")
        log.flush()

    emit(event="params", params=params, **({"differences_from_main_run": notes} if notes else {}))
    t0 = time.time()
    seed_everything(seed=params["seed"])
    feature_encoder = FeatureProcessor(**params)
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(feature_encoder, **params)
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    vocab = {k: v.get("vocab_size") for k, v in feature_map.features.items()}
    os.makedirs(os.path.join(params["model_root"], params["dataset_id"]), exist_ok=True)  # the checkpoint's dir
    extra = {"pretrained_codes": None} if a.model == "dlf" else {}  # main_run.py's call, `--embedding base`
    model = getattr(model_source, params["model"])(feature_map, **extra, **params)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    emit(event="model", vocab_size=vocab, table_rows=sum(vocab.values()), parameters=n_params,
         preprocess_s=round(time.time() - t0, 1))
    # The PyPI 2.3.10 wheel's RankDataLoader is a function returning (train_gen, valid_gen) (Ray Data parquet
    # loaders); the repository's run_expid.py expects the older class with make_iterator(): accept both.
    loaders = RankDataLoader(feature_map, stage="train", **params)
    train_gen, valid_gen = loaders.make_iterator() if hasattr(loaders, "make_iterator") else loaders

    # Observing hooks (instance attributes; the class methods stay FuxiCTR's / the authors').
    cls = type(model)
    acc = {"loss": 0.0, "steps": 0}

    def train_step(batch_data):  # noqa: ANN001
        loss = cls.train_step(model, batch_data)
        acc["loss"] += float(loss.item())
        acc["steps"] += 1
        return loss

    def evaluate(data_generator, metrics=None):  # noqa: ANN001
        return cls.evaluate(model, data_generator, metrics=params["metrics"])  # AUC + logloss every epoch

    def checkpoint_and_earlystop(logs, min_delta=1e-6):  # noqa: ANN001
        lr = model.optimizer.param_groups[0]["lr"]
        cls.checkpoint_and_earlystop(model, logs, min_delta=min_delta)
        emit(event="eval", epoch=model._epoch_index + 1, auc=float(logs["AUC"]), logloss=float(logs["logloss"]),
             lr=lr, lr_after=model.optimizer.param_groups[0]["lr"], improved=model._stopping_steps == 0,
             train_loss=acc["loss"] / max(acc["steps"], 1), elapsed_s=round(time.time() - t0, 1))
        acc["loss"], acc["steps"] = 0.0, 0

    model.train_step = train_step
    model.evaluate = evaluate
    model.checkpoint_and_earlystop = checkpoint_and_earlystop
    model.fit(train_gen, validation_data=valid_gen, **params)
    final = cls.evaluate(model, valid_gen, metrics=params["metrics"])  # the best checkpoint, reloaded by fit()
    emit(event="final", auc=float(final["AUC"]), logloss=float(final["logloss"]), elapsed_s=round(time.time() - t0, 1))
    log.close()
