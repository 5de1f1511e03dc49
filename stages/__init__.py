"""The pipeline's stages: each module is one DVC stage, `python -m stages.<name> <item>` (see dvc.yaml)."""
