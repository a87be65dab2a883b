"""Which model made a prediction, in real Chromium (issue 14, point 6).

Before: a 5-class toy checkpoint served as the embedded default, and a dog
clip came back "Rooster 99.5%" with no word about the model. Here the
dashboard loads such a checkpoint (a tiny AudioCNN saved by core.checkpoint,
meta as core.training writes it) and Predict must name the run and warn.
"""

from __future__ import annotations

import pytest
from audio_factory import wav_bytes
from conftest import stop_process

from .conftest import start_dashboard

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def toy_app(chromium, tmp_path_factory) -> str:
    from core.checkpoint import save_checkpoint
    from core.features import FeatureConfig
    from core.model import AudioCNN, ModelConfig

    tmp = tmp_path_factory.mktemp("toy-model")
    model = AudioCNN(ModelConfig(num_classes=5, stem_channels=8, widths=(8, 16), depths=(1, 1)))
    save_checkpoint(tmp / "best.pt", model, FeatureConfig(), ["dog", "rooster", "pig", "cow", "frog"],
                    meta={"run_name": "toy-demo", "epoch": 3, "val_accuracy": 0.995, "val_fold": 5,
                          "protocol": "fixed-schedule", "test_accuracy": None})
    (tmp / "runs").mkdir()
    url, proc = start_dashboard({"AUDIO_CNN_CHECKPOINT": str(tmp / "best.pt"), "AUDIO_CNN_RUNS_DIR": str(tmp / "runs"),
                                 "AUDIO_CNN_CLIPS_DIR": str(tmp / "clips")})
    yield url
    stop_process(proc)


def test_predict_names_the_model_and_warns_about_a_five_class_toy(new_page, toy_app, tmp_path):
    from playwright.sync_api import expect

    wav = tmp_path / "dog.wav"
    wav.write_bytes(wav_bytes(2.0, freq=440.0, seed=1))
    page = new_page()
    page.goto(toy_app)
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(wav))
    expect(page.get_by_text("analysed by AudioCNN")).to_be_visible()
    main = page.locator("[data-testid=stMain]")
    expect(main.get_by_text("Model: run toy-demo, 5 classes, epoch 3, validation accuracy 99.5% on fold 5"))\
        .to_be_visible()
    expect(main.get_by_text("This model was trained on only 5 classes")).to_be_visible()
    expect(page.locator("[data-testid=stSidebar]").get_by_text("trained on only 5 classes")).to_be_visible()
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    clip = page.url.split("clip=")[1].split("&")[0]
    page.goto(f"{toy_app}/feature_maps?clip={clip}")  # every screen with the model's output says it too
    expect(page.locator("[data-testid=stMain]").get_by_text("This model was trained on only 5 classes"))\
        .to_be_visible()
