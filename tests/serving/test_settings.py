"""The serving YAML: one file naming every served family's model, read by `patron serve
--serving` and by the server from $PATRON_SERVING_FILE; a bad value is one line naming its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_serving_yaml_names_the_models_its_experiments_register():
    settings = ServingSettings.from_file(ROOT / "experiments" / "serving" / "synthetic.yaml")
    registered = set()
    for path in (ROOT / "experiments").glob("*/synthetic*.yaml"):
        doc = yaml.safe_load(path.read_text()) or {}
        if isinstance(doc, dict) and doc.get("registered_model"):
            registered.add(doc["registered_model"])
    assert {"churn", "propensity", "nbo", "uplift", "clv"} <= set(settings.models)
    for family, spec in settings.models.items():
        assert spec.registered_model in registered, family  # a model some experiment trains


def test_variables_expand_and_campaign_files_are_relative_to_the_yaml(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "serving.yaml"
    path.write_text(
        "models:\n"
        "  churn: {registered_model: '${CHURN_MODEL}', dataset: synthetic}\n"
        "reload_interval_s: ${RELOAD_S:-7}\n"
        "campaigns: {spring: campaigns/spring.yaml}\n"
    )
    monkeypatch.setenv("CHURN_MODEL", "churn-prod")
    monkeypatch.delenv("RELOAD_S", raising=False)
    settings = ServingSettings.from_file(path)
    assert settings.models["churn"].registered_model == "churn-prod"
    assert settings.reload_interval_s == 7.0
    assert settings.campaigns["spring"] == str((folder / "campaigns" / "spring.yaml").resolve())
    # the server process reads the same file from the environment
    env = {"PATRON_SERVING_FILE": str(path), "PATRON_SERVING": json.dumps({"models": {}})}
    assert ServingSettings.from_env(env) == settings


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "models:\n  churn: {registered_model: m, dataset: d, shadw_alias: x}\n",
            "models.churn.shadw_alias",
        ),
        ("models:\n  churn: {registered_model: m}\n", "models.churn.dataset"),
        ("models:\n  churn: {registered_model: m, dataset: d}\nmax_batch: 0\n", "max_batch"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "serving.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        ServingSettings.from_file(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and f": {key}: " in message


def test_neither_variable_set_says_how_to_start():
    with pytest.raises(RuntimeError, match="PATRON_SERVING_FILE"):
        ServingSettings.from_env({})
