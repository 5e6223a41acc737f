"""``configs/gpu_check.yaml`` is ``configs/gpu_smollm2.yaml`` (the GPU recipe) with only its budget changed."""

from __future__ import annotations

from pathlib import Path

from recdata.config import load_yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "gpu_smollm2.yaml"
CHECK = ROOT / "configs" / "gpu_check.yaml"

# (section, key) the check may set differently from the recipe, or set where the recipe does not: how long and how
# often, how many users, batch sizes of decoding, workers, logging and report switches. Nothing here changes what
# the recipe trains per step or how it decodes.
BUDGET_KEYS = {
    ("", "name"),                                   # its own run folder
    ("train", "max_train_seconds"),                 # a time guard on the GPU machine
    ("train", "ranking_eval_users"),                # users per ranking validation
    ("train", "dataloader_num_workers"),            # input pipeline processes
    ("train", "include_num_input_tokens_seen"),     # logging: tokens seen
    ("train", "tensorboard"),                       # report switch
    ("train", "loss_curve"),                        # plot switch
    ("evaluate", "max_examples"),                   # test users scored
    ("evaluate", "batch_size"),                     # users per beam-search batch (same beams, same ranking)
}


def _flat(config: dict) -> dict[tuple[str, str], object]:
    """``{(section, key): value}``; top-level scalars under section ""."""
    flat = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update({(name, key): v for key, v in value.items()})
            if not value:
                flat[(name, "")] = {}  # an empty section (export: {}) is still a section
        else:
            flat[("", name)] = value
    return flat


def test_gpu_check_is_the_gpu_recipe_with_only_budget_keys_changed():
    recipe, check = _flat(load_yaml(RECIPE)), _flat(load_yaml(CHECK))
    differ = sorted(key for key in set(recipe) | set(check)
                    if recipe.get(key, "<unset>") != check.get(key, "<unset>") and key not in BUDGET_KEYS)
    assert not differ, (f"{CHECK.name} differs from {RECIPE.name} in recipe keys {differ}: make the same change in "
                        f"both, or add a budget key to BUDGET_KEYS in {Path(__file__).name}")


def test_budget_keys_name_keys_that_exist():
    """A stale entry would let a future recipe key of that name differ unnoticed."""
    present = set(_flat(load_yaml(RECIPE))) | set(_flat(load_yaml(CHECK)))
    assert not sorted(BUDGET_KEYS - present)
