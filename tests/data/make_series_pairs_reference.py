"""Write tests/data/series_pairs_reference.json: every sample and the per-band statistics of the
former special-case readers (SloveniaSeries, SSL4EOSeries, PairedS1S2) at commit f050ae8, before
they became source files. Run once at that commit (``python tests/data/make_series_pairs_reference.py``);
tests/test_series_sources.py compares the source-file datasets with it."""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from eolab.data.bands import S2_L2A
from eolab.data.pairs import PairedS1S2
from eolab.data.paths import data_root
from eolab.data.stats import compute_normalization
from eolab.data.timeseries import SloveniaSeries, SSL4EOSeries

OUT = Path(__file__).resolve().parent / "series_pairs_reference.json"
CASES = {
    "slovenia": [{"patch": 64, "stride": 32, "num_dates": 4, "seed": 0},
                 {"patch": 32, "stride": 16, "num_dates": 6, "seed": 1}],
    "ssl4eo_series": [{"patch": 64, "stride": 32, "bands": list(S2_L2A)},
                      {"patch": 32, "stride": 48, "bands": ["B04", "B03", "B02", "B08"]}],
    "s1s2": [{"patch": 64, "stride": 32, "s2_bands": list(S2_L2A)},
             {"patch": 32, "stride": 32, "s2_bands": ["B02", "B03", "B04", "B08"]}],
}


def describe(sample: dict) -> dict:
    """Every field of a sample: tensors by dtype, shape and sha256 of their bytes; the rest as JSON."""
    out = {}
    for key, value in sample.items():
        if isinstance(value, torch.Tensor):
            a = value.numpy()
            out[key] = {"dtype": str(a.dtype), "shape": list(a.shape),
                        "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    out["_keys"] = list(sample)
    return out


def build(name: str, case: dict, root: Path):
    if name == "slovenia":
        return SloveniaSeries(root, **case)
    if name == "ssl4eo_series":
        return SSL4EOSeries(root, **{**case, "bands": tuple(case["bands"])})
    return PairedS1S2(root, **{**case, "s2_bands": tuple(case["s2_bands"])})


def main() -> None:
    root = data_root()
    ref = {}
    for name, cases in CASES.items():
        ref[name] = []
        for case in cases:
            ds = build(name, case, root)
            norm = compute_normalization(ds, seed=0, corpus=name)
            ref[name].append({"case": case, "len": len(ds), "samples": [describe(ds[i]) for i in range(len(ds))],
                              "normalization": norm.to_dict()})
            print(name, case, len(ds))
    OUT.write_text(json.dumps(ref, indent=1) + "\n")


if __name__ == "__main__":
    main()
