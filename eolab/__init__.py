"""eolab: a workbench for ablation studies of Earth-observation foundation-model pre-training."""
