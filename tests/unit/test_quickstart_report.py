"""The quickstart's held-out report: what it measures on images, what it prints, the grid."""

from __future__ import annotations

import numpy as np

from deploy.quickstart import REPORTED, _by_category, image_grid, report_lines, start_end


def _result(strict: list[bool], shape_terms: float) -> dict:
    return {
        "und_accuracy": 0.5,
        "und_accuracy_sampled": 0.25,
        "und_answered_sampled": 1.0,
        "und_accuracy_by_category": {"colour": 1.0, "position": 0.0},
        "und_accuracy_sampled_by_category": {"colour": 0.5, "position": 0.0},
        "gen_reward": 0.1,
        "gen_terms": {"background": 1.0, "colour": 1.0, "shape": shape_terms, "position": 0.5},
        "gen_strict_success": float(np.mean(strict)),
        "gen_strict_by_shape": {"cross": 0.0, "dot": float(np.mean(strict))},
        "gen_strict_by_image": strict,
        "gen_distinct_per_prompt": 2.0,
        "images": np.zeros((len(strict), 8, 8, 3), np.uint8),
    }


def test_by_category_averages_within_each_category():
    assert _by_category([1, 0, 1, 1], ["b", "a", "b", "a"]) == {"a": 0.5, "b": 1.0}


def test_start_end_reports_every_measure_and_the_printout_names_each_term():
    before, after = _result([False] * 4, 0.2), _result([True, True, False, False], 0.6)
    s = start_end(before, after)
    assert set(s) == {f"{k}_{e}" for k in REPORTED for e in ("start", "end")}
    assert s["gen_strict_success_start"] == 0.0 and s["gen_strict_success_end"] == 0.5
    text = "\n".join(report_lines(s))
    assert "strict success (all four terms 1)  0.000 ->  0.500  (+0.500)" in text
    assert "term: shape                        0.200 ->  0.600  (+0.400)" in text
    assert "strict success, dot prompts" in text and "sampled, position questions" in text


def test_grid_is_written(tmp_path):
    before, after = _result([False] * 4, 0.2), _result([True, False, True, True], 0.6)
    out = image_grid(
        before,
        after,
        ["a red dot in the top left on a white background"] * 2,
        2,
        tmp_path / "grid.png",
    )
    assert out.is_file() and out.stat().st_size > 1000


def test_base_model_is_the_toy_model_of_model_arch(tmp_path):
    """The quickstart's base model is the family's toy-world model of the configured shape,
    and it round-trips through the directory evaluation reloads (``build_policy``)."""
    import dataclasses

    from deploy.config import RunConfig, load_config
    from deploy.quickstart import build_base_model
    from models.registry import build_policy
    from models.showo_vq import CellPalette

    cfg = load_config(
        RunConfig,
        "deploy/configs/quickstart.yaml",
        ["model.arch=showo", "quickstart.tiny_layers=1", "model.diffusion.steps=4"],
    )
    path = build_base_model(cfg, tmp_path / "base")
    m = build_policy(dataclasses.replace(cfg.model, path=str(path)))
    assert type(m).__name__ == "ShowoModel" and isinstance(m.vq, CellPalette)
    assert m.net.showo.config.num_hidden_layers == 1 and m.settings.steps == 4
    img = np.zeros((64, 64, 3), np.uint8)
    img[:16, :16] = (255, 0, 0)  # one red cell on black: a palette image decodes to itself
    assert np.array_equal(m.decode_images(m.encode_images([img])), img[None])
