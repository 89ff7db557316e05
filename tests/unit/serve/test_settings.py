"""prodcat serve reads serve/config.yaml: its proxy_location and http_options reach serve.start."""

from __future__ import annotations

import pytest

from prodcat.serve.settings import load_serve_config, start_options

pytestmark = pytest.mark.unit


def test_the_repository_config_is_honoured_whole():
    config = load_serve_config()
    options = start_options(config)
    assert options["proxy_location"] == config["proxy_location"]
    assert options["http_options"] == config["http_options"]


def test_flags_win_over_the_config_and_defaults_fill_the_rest():
    options = start_options({"proxy_location": "EveryNode", "http_options": {"port": 9000}},
                            host="0.0.0.0")
    assert options == {"proxy_location": "EveryNode",
                       "http_options": {"host": "0.0.0.0", "port": 9000}}
    assert start_options({}, port=8123) == {"proxy_location": "HeadOnly",
                                            "http_options": {"host": "127.0.0.1", "port": 8123}}


def test_an_unknown_proxy_location_names_the_valid_ones():
    with pytest.raises(ValueError, match="'Everywhere' is not one of HeadOnly, EveryNode, Disabled"):
        start_options({"proxy_location": "Everywhere"})


def test_the_valid_proxy_locations_are_ray_serves():
    from ray.serve.config import ProxyLocation

    from prodcat.serve.settings import PROXY_LOCATIONS

    assert set(PROXY_LOCATIONS) == {p.value for p in ProxyLocation}
