import pytest

from leadtemp.core.config import load_params, params_from_dict
from leadtemp.core.errors import ConfigError


def test_repo_params_load_and_flatten(params):
    flat = params.flat()
    assert flat["snapshots.horizon_days"] == "auto"
    assert all(isinstance(v, (int, float, str)) or v is None for v in flat.values())


def test_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="unknown keys.*horizn_days"):
        params_from_dict({"snapshots": {"horizn_days": 30}})


def test_wrong_type_and_range_are_refused():
    with pytest.raises(ConfigError, match="horizon_days"):
        params_from_dict({"snapshots": {"horizon_days": "soon"}})
    with pytest.raises(ConfigError, match="calibration.method"):
        params_from_dict({"calibration": {"method": "magic"}})
    with pytest.raises(ConfigError, match="more than one role"):
        params_from_dict({"data": {"categorical": ["a"], "excluded": ["a"]}})


def test_missing_params_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")
