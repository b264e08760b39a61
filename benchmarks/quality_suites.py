"""The quality benchmark's suites: which rows (config + overrides) each suite runs, and the published numbers
shown beside them (docs/models.md#published-numbers)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import common

QUICK_OVERRIDES = ("dataset.synthetic_rows=3000", "training.epochs=1", "model.hidden_units=[16]",
                   "model.num_cross_layers=1", "training.batch_size=512")

# Published numbers, docs/models.md#published-numbers: (source + protocol, AUC, logloss or None).
DLF_PAPER = "DLF paper (d=64, batch 10k, 5-run mean, full data)"
BARS_X1 = "BARS x1 leaderboard (tuned, d=10, full data)"
BARS_X4 = "BARS x4_001 (d=16, full data)"
TF4CTR_PAPER = "TF4CTR paper (d=16, full data; AUC only)"
TF4CTR_T2 = "TF4CTR paper Table II (d=16, full data; AUC only)"
DLF_ABLATION = "DLF paper Table 3, Criteo / Avazu AUC only (no Frappe ablation published)"
Ref = tuple[str, float, float | None]
PUBLISHED: dict[tuple[str, str], list[Ref]] = {
    ("frappe", "dnn"): [(BARS_X1, 0.9833, 0.1622)],
    ("frappe", "dcnv2"): [(DLF_PAPER, 0.9717, 0.2137), (BARS_X1, 0.9845, 0.1491), (TF4CTR_PAPER, 0.9845, None)],
    ("frappe", "dlf"): [(DLF_PAPER, 0.9812, 0.1679)],
    ("frappe", "tf4ctr"): [(TF4CTR_PAPER, 0.9872, None)],
    ("frappe", "dualmlp_bce"): [(TF4CTR_T2, 0.9837, None)],
    ("frappe", "dualmlp_tf"): [(TF4CTR_T2, 0.9855, None)],
    ("criteo", "dnn"): [(BARS_X1, 0.8137, 0.4382), (BARS_X4, 0.8140, 0.4380)],
    ("criteo", "dcnv2"): [(DLF_PAPER, 0.8085, 0.4431), (BARS_X1, 0.8142, 0.4378), (BARS_X4, 0.814514, 0.437631),
                          (TF4CTR_PAPER + ", Criteo_x4", 0.8140, None)],
    ("criteo", "dlf"): [(DLF_PAPER, 0.8106, 0.4412)],
    ("criteo", "tf4ctr"): [(TF4CTR_PAPER + ", Criteo_x4", 0.8150, None)],
    ("avazu", "dnn"): [(BARS_X1, 0.7638, 0.3674), (BARS_X4, 0.7928, 0.3722)],
    ("avazu", "dcnv2"): [(DLF_PAPER, 0.7565, 0.3722), (BARS_X1, 0.7656, 0.3664), (BARS_X4, 0.793146, 0.371865)],
    ("avazu", "dlf"): [(DLF_PAPER, 0.7601, 0.3706)],
}
# Short names for the Markdown table (the CSV carries the full protocol text); the legend goes under the table.
CODES = {DLF_PAPER: "DLF paper", BARS_X1: "BARS x1", BARS_X4: "BARS x4", TF4CTR_PAPER: "TF4CTR paper",
         TF4CTR_PAPER + ", Criteo_x4": "TF4CTR paper, Criteo_x4", TF4CTR_T2: "TF4CTR Table II",
         DLF_ABLATION: "DLF Table 3, Criteo / Avazu"}
DLF_ABLATIONS = {"full": "0.8106 / 0.7601", "w/o gate": "0.8095 / 0.7591", "w/o RLI": "0.8091 / 0.7590",
                 "w/o NAF": "0.8083 / 0.7575", "w/o RLI+NAF": "0.8084 / 0.7563"}



@dataclass(frozen=True)
class Row:
    """One table row: a config plus overrides, run once per seed."""

    label: str
    dataset: str  # frappe | criteo | avazu | synthetic
    config: str  # path relative to the repository root
    overrides: tuple[str, ...] = ()
    published_key: str = ""  # key into PUBLISHED with the dataset
    ablation: str = ""  # key into DLF_ABLATIONS
    note: str = ""
    throughput: bool = True  # measure the batch-4096 fwd+bwd column for this row (dlf/tf4ctr suites)

    def published(self, short: bool = False) -> str:
        """Published AUC / logloss with their protocol (``short``: the protocol's short name, see CODES)."""
        refs = PUBLISHED.get((self.dataset, self.published_key), [])
        parts = [f"{auc:.4f}" + (f" / {ll:.4f}" if ll is not None else "") + f" ({CODES[src] if short else src})"
                 for src, auc, ll in refs]
        if self.ablation:
            parts.append(f"{DLF_ABLATIONS[self.ablation]} ({CODES[DLF_ABLATION] if short else DLF_ABLATION})")
        return "; ".join(parts)



def dlf_variants(form: str) -> list[Row]:
    """Full + the four ablations of one DLF form on Frappe (authors' "full" = naf: true)."""
    base = ("model.form=" + form, "model.naf=true")
    note = "full = naf: true (the authors' default model has no attention)" if form == "authors" else ""
    variants = [
        ("full", (), note),
        ("w/o gate", ("model.gate=false",), ""),
        ("w/o RLI", ("model.rli=false",), ""),
        ("w/o NAF", ("model.naf=false",), ""),
        ("w/o RLI+NAF", ("model.rli=false", "model.naf=false"), ""),
    ]
    rows = []
    for name, extra, n in variants:
        overrides = base + extra  # later overrides win (model.naf=false after model.naf=true)
        rows.append(Row(f"DLF {form} {name}", "frappe", "configs/frappe/dlf.yaml", overrides,
                        published_key="dlf" if name == "full" else "", ablation=name, note=n))
    return rows


def suite_rows(suite: str, quick: bool) -> tuple[list[Row], list[str]]:
    """(rows, notes about rows deliberately left out)."""
    if quick:
        return [Row("DCNv2 (synthetic, quick)", "synthetic", "configs/synthetic/dcnv2.yaml", QUICK_OVERRIDES)], []
    if suite == "models":
        rows, notes = [], []
        names = {"dnn": "DNN", "dcnv2": "DCNv2", "dlf": "DLF (authors)", "tf4ctr": "TF4CTR"}
        for dataset, title in (("frappe", "Frappe"), ("criteo", "Criteo head"), ("avazu", "Avazu head")):
            for model, name in names.items():
                cfg = f"configs/{dataset}/{model}.yaml"
                if not os.path.exists(os.path.join(common.REPO_ROOT, cfg)):
                    notes.append(f"{name} on {title}: skipped, no {cfg} (TF4CTR has no Avazu config)")
                    continue
                rows.append(Row(f"{name} / {title}", dataset, cfg, published_key=model, throughput=False))
        return rows, notes
    if suite == "dlf":
        rows = [Row("DCNv2", "frappe", "configs/frappe/dcnv2.yaml", published_key="dcnv2"),
                Row("DNN", "frappe", "configs/frappe/dnn.yaml", published_key="dnn")]
        forms = dlf_variants("authors") + dlf_variants("paper")
        # The full models first, then the ablations: a suite cut short still has the headline comparison.
        return rows + [r for r in forms if r.ablation == "full"] + [r for r in forms if r.ablation != "full"], []
    if suite == "tf4ctr":
        dlf_encoder = ("model.complex_encoder={name: dlf, form: authors}",)
        return [
            Row("DualMLP BCE", "frappe", "configs/frappe/dualmlp_bce.yaml", published_key="dualmlp_bce"),
            Row("DualMLP TF loss", "frappe", "configs/frappe/dualmlp_tf.yaml", published_key="dualmlp_tf"),
            Row("TF4CTR SER+WSF", "frappe", "configs/frappe/tf4ctr.yaml", published_key="tf4ctr"),
            Row("TF4CTR SER+WSF, DLF complex encoder", "frappe", "configs/frappe/tf4ctr.yaml", dlf_encoder,
                note="complex encoder = DLF over-arch (authors' form, its config defaults) instead of the MLP"),
            Row("DCNv2 (reference)", "frappe", "configs/frappe/dcnv2.yaml", published_key="dcnv2"),
        ], []
    raise ValueError(f"unknown suite {suite!r}")
