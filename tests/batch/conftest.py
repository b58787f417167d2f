"""Fixtures of the batch tests."""

import pytest

from ..conftest import write_sim_fits


@pytest.fixture
def frames(tmp_path):
    """Four small simulated frames in tmp_path/in."""
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        write_sim_fits(d / f"f{i}.fits", seed=i, shape=(24, 28))
    return d
