"""core.model_card: which model made a prediction, and the warnings a toy or weak model must carry."""

from __future__ import annotations

from core.model_card import model_card
from core.results import ModelInfo


def info(num_classes=50, **meta) -> ModelInfo:
    return ModelInfo(name="AudioCNN (x)", checkpoint_id="abcdef0123456789", trained=True,
                     num_classes=num_classes, meta=meta)


def test_a_full_esc50_model_names_its_run_accuracy_and_protocol_without_warnings():
    card = model_card(info(run_name="baseline", epoch=87, test_accuracy=0.842, val_accuracy=0.9,
                           protocol="holdout", val_fold=4))
    assert card.summary == ("Model: run `baseline`, 50 classes, epoch 87, test accuracy 84.2% (holdout), "
                            "checkpoint `abcdef012345`.")
    assert card.warnings == []


def test_validation_accuracy_is_called_optimistic():
    card = model_card(info(run_name="r", val_accuracy=0.75, val_fold=5, protocol="fixed-schedule"))
    assert "validation accuracy 75.0% on fold 5, fixed-schedule (chosen on that fold: optimistic)" in card.summary


def test_a_five_class_toy_run_warns_about_its_classes():
    card = model_card(info(num_classes=5, run_name="demo", val_accuracy=0.995, val_fold=5))
    assert card.warnings == ["This model was trained on only 5 classes: every clip is called one of them, "
                             "however unlike they sound (ESC-50 has 50)."]


def test_a_low_score_warns_and_hostile_meta_is_left_out():
    card = model_card(info(run_name="weak", test_accuracy=0.31))
    assert card.warnings == ["This model scored 31%: its top class is wrong more often than right."]
    card = model_card(info(run_name=["x"] * 10, test_accuracy=float("nan"), val_accuracy=7, epoch=True))
    assert card.summary == "Model: run `AudioCNN (x)`, 50 classes, no recorded accuracy, checkpoint `abcdef012345`."
    assert card.warnings == []
