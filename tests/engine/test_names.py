"""engine/names.py, the torch-free names Blender's menus read, against the models that own them."""
from __future__ import annotations

import pytest

from engine import names
from engine.models import check_scheduler, model_spec


def test_each_models_samplers_are_the_ones_it_declares():
    """names.MODEL_SCHEDULERS is a copy for Blender's Sampler menu; the registry is the authority."""
    assert tuple(names.MODEL_SCHEDULERS) == names.MODELS
    for model in names.MODELS:
        assert names.MODEL_SCHEDULERS[model] == model_spec(model).schedulers, model
        for scheduler in names.SCHEDULERS:
            if scheduler in names.MODEL_SCHEDULERS[model]:
                check_scheduler(model, scheduler)
            else:
                with pytest.raises(ValueError, match="samples with"):
                    check_scheduler(model, scheduler)


def test_the_embedded_model_builds_exactly_the_samplers_the_table_offers():
    """The menu offered Heun, which the embedded model's make_scheduler refuses."""
    from engine.models.embedded.model import EmbeddedConfig, EmbeddedModel

    model = EmbeddedModel(EmbeddedConfig())
    for scheduler in names.MODEL_SCHEDULERS["embedded"]:
        assert model.make_scheduler(scheduler) is not None
    for scheduler in set(names.SCHEDULERS) - set(names.MODEL_SCHEDULERS["embedded"]):
        with pytest.raises(ValueError, match=f"unknown scheduler '{scheduler}'"):
            model.make_scheduler(scheduler)


def test_scheduler_items_are_blender_enum_items_with_stable_numbers():
    for model in names.MODELS:
        items = names.scheduler_items(model)
        assert [item[0] for item in items] == [s for s in names.SCHEDULERS if s in model_spec(model).schedulers]
        for identifier, label, description, number in items:
            assert names.SCHEDULER_ITEMS[number] == (identifier, label, description)  # same number in every menu
    assert "heun" not in {item[0] for item in names.scheduler_items("embedded")}
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        names.scheduler_items("nope")
