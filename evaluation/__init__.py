"""Evaluation: the lmms-eval model plugin and `pairuni eval`'s runner, held-out evaluation
(the quickstart's and ``train.eval_every``'s), generation-benchmark writers (GenEval,
T2I-CompBench, WISE) and the scores computed here (HPS, CLIP score, toy judge).

Layer: above ``rewards`` (it scores with the reward models), below ``deploy`` (the CLI and
the driver call it). ``evaluation.lmms_model`` / ``evaluation.lmms_run`` import lmms-eval
and run in the environment that has it (``.venv-eval``, README "Evaluate").
"""
