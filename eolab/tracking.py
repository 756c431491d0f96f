"""Experiment tracking: a run's parameters, per-step metrics and final metrics in Lightning's loggers.

The run's ``logger`` parameter picks one:

- ``none`` (default): nothing beyond the run folder's own files.
- ``csv``: ``<run folder>/csv/metrics.csv`` and ``hparams.yaml`` (Lightning's ``CSVLogger``).
- ``tensorboard``: event files in ``<run folder>/tensorboard/``, or, with ``tracking_uri`` set to a
  folder, in ``<tracking_uri>/<ablation>/<run id>/`` (``tensorboard --logdir`` either).
- ``mlflow``: an MLflow run on the tracking server ``tracking_uri`` (or ``$MLFLOW_TRACKING_URI``),
  in the experiment named after the ablation, named after the run id.

Grouping: a run folder of the ablation runner is ``results/<ablation>/runs/<run id>``, so the
ablation's name and the run id come from ``output_dir`` (a run elsewhere is filed under ``eolab``).
Every step's ``train/*`` (loss and its parts) and ``health/*`` values (embedding spread, effective
rank, in-loop k-NN accuracy) reach the logger through Lightning; the record's metrics follow as
``final/<name>`` when the record is written.

Secrets: credentials in a tracking URI (``user:password@host`` or ``?password=...``) are replaced by
``***`` wherever eolab writes or shows the URI (logged parameters, record.json, the config's repr).
MLflow also reads ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` from the environment,
which keeps them out of the URI altogether; an ablation spec may not carry them (papermill writes a
run's parameters into its notebook).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .secrets import redact, url_secrets

LOGGERS = ("none", "csv", "tensorboard", "mlflow")
DEFAULT_EXPERIMENT = "eolab"


def redact_uri(uri: str) -> str:
    """``uri`` with any password (``user:password@``, a secret query value, a malformed URL's
    credentials) replaced by ``***``: the one redaction of ``eolab.secrets``."""
    return redact(uri, url_secrets(uri)) if uri else uri


def has_secret(uri: str) -> bool:
    """True when ``uri`` carries a password or a secret query value."""
    return redact_uri(uri) != uri


def run_names(output_dir: str | Path) -> tuple[str, str]:
    """(experiment, run name): the ablation's name and the run id for a runner's run folder."""
    out = Path(output_dir).resolve()
    experiment = out.parent.parent.name if out.parent.name == "runs" and out.parent.parent.name else DEFAULT_EXPERIMENT
    return experiment, out.name


def make_loggers(logger: str, tracking_uri: str, output_dir: str | Path) -> list:
    """The Lightning loggers of a run's ``logger`` parameter (empty for ``none``)."""
    if logger not in LOGGERS:
        raise ValueError(f"parameter 'logger' must be one of {LOGGERS}, got {logger!r}")
    if logger == "none":
        return []
    out = Path(output_dir)
    experiment, run_name = run_names(out)
    if logger == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return [CSVLogger(save_dir=str(out), name="csv", version="")]
    if logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        if tracking_uri:
            return [TensorBoardLogger(save_dir=tracking_uri, name=experiment, version=run_name, default_hp_metric=False)]
        return [TensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False)]
    try:
        import mlflow  # noqa: F401  (MLFlowLogger fails late and vaguely without it)
        from lightning.pytorch.loggers import MLFlowLogger
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"parameter 'logger' is 'mlflow' but {exc.name} is not installed "
                                  "(pip install mlflow)") from exc
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise ValueError("parameter 'tracking_uri' must name the MLflow tracking server when logger is 'mlflow' "
                         "(or set $MLFLOW_TRACKING_URI)")
    if has_secret(uri):  # MLflow prints "View run ... at: <uri>" when a run ends
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return [MLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=uri,
                         tags={"eolab.ablation": experiment, "eolab.run_id": run_name})]


def loggable_params(params: dict) -> dict:
    """Run parameters as a logger may keep them: the tracking URI redacted, output_dir dropped."""
    out = {k: v for k, v in params.items() if k != "output_dir"}
    if "tracking_uri" in out:
        out["tracking_uri"] = redact_uri(str(out["tracking_uri"]))
    return out


def log_params(loggers: list, params: dict) -> None:
    """The run's parameters (redacted) into every logger."""
    for lg in loggers:
        lg.log_hyperparams(loggable_params(params))


def log_final(loggers: list, metrics: dict, step: int) -> None:
    """The record's finite numeric metrics as ``final/<name>`` at ``step``, then close each logger."""
    values = {f"final/{k}": float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
    for lg in loggers:
        if values:
            lg.log_metrics(values, step=step)
        lg.finalize("success")
